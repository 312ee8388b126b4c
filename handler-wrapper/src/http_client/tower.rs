//! The `tower` layer for `hyper`-based clients.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};

use super::{OutgoingCall, RequestInfo};

/// Traces every request through a `tower` service taking `http::Request`s:
/// a `hyper_util` legacy `Client`, or any stack built on `hyper`. See the
/// [module docs](super).
///
/// ```ignore
/// use tower::ServiceBuilder;
/// let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
/// let mut traced = ServiceBuilder::new().layer(lambda_xray_tracing::http_client::XRayClientLayer::new()).service(client);
/// let response = tower::ServiceExt::oneshot(traced, request).await?;
/// ```
///
/// The wrapped service's error must be a `std::error::Error` (its chain is
/// the cause of a failed request): put layers whose error is boxed
/// (`tower::timeout`) outside this one.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct XRayClientLayer {
    traced: bool,
}

impl XRayClientLayer {
    /// A layer for calls to services that do not continue the trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the callees continue the trace (`http.request.traced`).
    pub fn traced(mut self, traced: bool) -> Self {
        self.traced = traced;
        self
    }
}

impl<S> ::tower::Layer<S> for XRayClientLayer {
    type Service = XRayClientService<S>;
    fn layer(&self, inner: S) -> XRayClientService<S> {
        XRayClientService { inner, traced: self.traced }
    }
}

/// The service [`XRayClientLayer`] produces.
#[derive(Debug, Clone)]
pub struct XRayClientService<S> {
    inner: S,
    traced: bool,
}

impl<S, B, RB> ::tower::Service<Request<B>> for XRayClientService<S>
where
    S: ::tower::Service<Request<B>, Response = Response<RB>>,
    S::Error: std::error::Error + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = XRayClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let call = {
            let uri = req.uri();
            let without_credentials = || {
                let mut url = String::new();
                if let Some(scheme) = uri.scheme_str() {
                    url.push_str(scheme);
                    url.push_str("://");
                }
                if let Some(host) = uri.host() {
                    url.push_str(host);
                }
                if let Some(port) = uri.port() {
                    url.push(':');
                    url.push_str(port.as_str());
                }
                url.push_str(uri.path_and_query().map_or("/", |p| p.as_str()));
                url
            };
            let info = RequestInfo {
                method: req.method().as_str(),
                host: uri.host().unwrap_or_default(),
                url: &without_credentials,
                traced: self.traced,
            };
            OutgoingCall::begin(info)
        };
        if let Some(call) = &call {
            call.inject(req.headers_mut());
        }
        XRayClientFuture { inner: self.inner.call(req), call }
    }
}

pin_project_lite::pin_project! {
    /// The future of one traced request.
    #[must_use = "futures do nothing unless polled"]
    pub struct XRayClientFuture<F> {
        #[pin]
        inner: F,
        call: Option<OutgoingCall>,
    }
}

impl<F> std::fmt::Debug for XRayClientFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XRayClientFuture").finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for XRayClientFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: std::error::Error + 'static,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = this.inner.poll(cx);
        if let Poll::Ready(result) = &polled
            && let Some(call) = this.call.take()
        {
            match result {
                Ok(response) => {
                    let length = response.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
                    call.responded(response.status().as_u16(), length);
                }
                Err(e) => call.failed(e, std::any::type_name::<E>()),
            }
        }
        polled
    }
}
