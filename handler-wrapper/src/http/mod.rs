//! Tracing for HTTP functions on [`lambda_http`] (feature `lambda-http`):
//! API Gateway REST and HTTP APIs, Function URLs, ALB and WebSocket APIs,
//! `axum` routers included, with buffered or streamed responses.
//!
//! One line instead of `lambda_http::run`:
//!
//! ```no_run
//! use lambda_http::{service_fn, Body, Error, Request, Response};
//!
//! async fn handler(request: Request) -> Result<Response<Body>, Error> {
//!     Ok(Response::new(format!("hello {}", request.uri().path()).into()))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Error> {
//!     lambda_xray_tracing::http::run(service_fn(handler)).await
//! }
//! ```
//!
//! Everything [`XRayLayer`] records for an invocation is recorded, and the
//! `## <handler>` subsegment also gets X-Ray's `http` block:
//! `http.request` (`method`; `url`, the full URL `lambda_http` rebuilt from the
//! event; `user_agent`; `client_ip`, the caller's `sourceIp` as API Gateway
//! saw it, or for ALB the first `X-Forwarded-For` address with
//! `x_forwarded_for: true`) and `http.response` (`status`, `content_length`,
//! the body's length in bytes). The status sets the flags: 4xx → `error`,
//! 429 → `throttle` and `error`, 5xx → `fault`. Bodies are never recorded
//! (`capture_response` does not apply to HTTP handlers); a handler error
//! (which Lambda reports as a function error) is recorded as for
//! [`XRayLayer`].
//!
//! Streamed responses ([`run_with_streaming_response`]) are traced to the end
//! of the stream: the handler subsegment ends, with the number of bytes
//! streamed, when the body does (see [`TracedBody`]), and every frame passes
//! through unchanged.
//!
//! To configure the handler subsegment, build the layer from an
//! [`XRayLayer`]: `HttpLayer::from(XRayLayer::new().handler_name("api"))`.

mod body;
mod request;

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use lambda_http::{Body, IntoResponse, Request, RequestExt, Response};
use lambda_runtime::Diagnostic;
use tower::{Layer, Service};

pub use body::TracedBody;

use crate::layer::{InvocationScope, Settings, XRayLayer, record_handler_error};

/// What `IntoResponse::into_response` returns.
type ResponseFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Traces a `lambda_http` service whose responses are buffered (anything
/// `IntoResponse`, as `lambda_http::run` takes). See the [module docs](self).
///
/// ```no_run
/// use lambda_http::{service_fn, Body, Error, Request, Response};
/// use tower::Layer;
///
/// # async fn main_() -> Result<(), Error> {
/// let traced = lambda_xray_tracing::http::HttpLayer::from(lambda_xray_tracing::XRayLayer::new().handler_name("api"))
///     .layer(service_fn(|_request: Request| async { Ok::<_, Error>(Response::new(Body::from("ok"))) }));
/// lambda_http::run(traced).await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HttpLayer {
    settings: Arc<Settings>,
}

impl HttpLayer {
    /// A layer configured from the environment, as [`XRayLayer::new`].
    pub fn new() -> Self {
        HttpLayer::from(XRayLayer::new())
    }
}

impl Default for HttpLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl From<XRayLayer> for HttpLayer {
    /// The HTTP layer with `layer`'s settings (names, emitter, config).
    fn from(layer: XRayLayer) -> Self {
        HttpLayer { settings: layer.settings().clone() }
    }
}

impl<S> Layer<S> for HttpLayer {
    type Service = HttpService<S>;
    fn layer(&self, inner: S) -> HttpService<S> {
        HttpService { inner, settings: self.settings.clone() }
    }
}

/// The service [`HttpLayer`] produces: the handler's responses, converted to
/// `Response<Body>` as `lambda_http` would convert them.
#[derive(Debug, Clone)]
pub struct HttpService<S> {
    inner: S,
    settings: Arc<Settings>,
}

/// Starts the invocation of `req` and calls `inner` under it, with the
/// request described on the handler subsegment.
fn start<S: Service<Request>>(inner: &mut S, settings: &Settings, req: Request) -> (S::Future, InvocationScope) {
    let begun = match req.lambda_context_ref() {
        Some(context) => settings.begin(context),
        // Called outside `lambda_http` (a test): the environment's header.
        None => settings.begin(&lambda_runtime::Context::default()),
    };
    let described = begun.is_sampled().then(|| request::describe(&req));
    let (future, scope) = begun.start(settings, || inner.call(req));
    if let (Some(described), Some(sub)) = (described, scope.subsegment()) {
        sub.update(|d| d.http.get_or_insert_with(Default::default).request = Some(described));
    }
    (future, scope)
}

/// Records the response's status and length on the handler subsegment.
fn record_status(scope: &InvocationScope, status: u16, content_length: Option<u64>) {
    if let Some(sub) = scope.subsegment() {
        sub.update(|d| {
            d.apply_http_status(status);
            if let Some(length) = content_length {
                d.set_content_length(length);
            }
        });
    }
}

impl<S, R> Service<Request> for HttpService<S>
where
    S: Service<Request, Response = R>,
    S::Error: Debug + 'static,
    R: IntoResponse,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = HttpInvocation<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (inner, scope) = start(&mut self.inner, &self.settings, req);
        HttpInvocation { inner, converting: None, scope, settings: self.settings.clone() }
    }
}

pin_project_lite::pin_project! {
    /// The future of one traced HTTP invocation with a buffered response.
    #[must_use = "futures do nothing unless polled"]
    pub struct HttpInvocation<F> {
        #[pin]
        inner: F,
        converting: Option<ResponseFuture>,
        scope: InvocationScope,
        settings: Arc<Settings>,
    }
}

impl<F> Debug for HttpInvocation<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpInvocation").finish_non_exhaustive()
    }
}

fn body_len(body: &Body) -> u64 {
    match body {
        Body::Empty => 0,
        Body::Text(s) => s.len() as u64,
        Body::Binary(b) => b.len() as u64,
        // `Body` is non-exhaustive.
        _ => 0,
    }
}

impl<F, R, E> Future for HttpInvocation<F>
where
    F: Future<Output = Result<R, E>>,
    R: IntoResponse,
    E: Debug + 'static,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let Some(converting) = this.converting.as_mut() {
                return match this.scope.run(|| converting.as_mut().poll(cx)) {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(response)) => {
                        *this.converting = None;
                        record_status(this.scope, response.status().as_u16(), Some(body_len(response.body())));
                        this.scope.complete(|_| {});
                        Poll::Ready(Ok(response))
                    }
                    Err(payload) => {
                        this.scope.panicked(&*payload);
                        std::panic::resume_unwind(payload)
                    }
                };
            }
            let inner = this.inner.as_mut();
            match this.scope.run(|| inner.poll(cx)) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Ok(response))) => match this.scope.run(|| response.into_response()) {
                    Ok(converting) => *this.converting = Some(converting),
                    Err(payload) => {
                        this.scope.panicked(&*payload);
                        std::panic::resume_unwind(payload)
                    }
                },
                Ok(Poll::Ready(Err(e))) => {
                    let settings = &**this.settings;
                    this.scope.complete(|sub| record_handler_error(sub, settings, &e));
                    return Poll::Ready(Err(e));
                }
                Err(payload) => {
                    this.scope.panicked(&*payload);
                    std::panic::resume_unwind(payload)
                }
            }
        }
    }
}

/// Traces a `lambda_http` service that streams its responses (as
/// `lambda_http::run_with_streaming_response` takes): the handler
/// subsegment stays open until the body ends. See [`TracedBody`].
#[derive(Debug, Clone)]
pub struct StreamingHttpLayer {
    settings: Arc<Settings>,
}

impl StreamingHttpLayer {
    /// A layer configured from the environment, as [`XRayLayer::new`].
    pub fn new() -> Self {
        StreamingHttpLayer::from(XRayLayer::new())
    }
}

impl Default for StreamingHttpLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl From<XRayLayer> for StreamingHttpLayer {
    /// The streaming HTTP layer with `layer`'s settings (names, emitter, config).
    fn from(layer: XRayLayer) -> Self {
        StreamingHttpLayer { settings: layer.settings().clone() }
    }
}

impl<S> Layer<S> for StreamingHttpLayer {
    type Service = StreamingHttpService<S>;
    fn layer(&self, inner: S) -> StreamingHttpService<S> {
        StreamingHttpService { inner, settings: self.settings.clone() }
    }
}

/// The service [`StreamingHttpLayer`] produces: the handler's response with
/// its body wrapped in a [`TracedBody`].
#[derive(Debug, Clone)]
pub struct StreamingHttpService<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S, B> Service<Request> for StreamingHttpService<S>
where
    S: Service<Request, Response = Response<B>>,
    S::Error: Debug + 'static,
{
    type Response = Response<TracedBody<B>>;
    type Error = S::Error;
    type Future = StreamingInvocation<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (inner, scope) = start(&mut self.inner, &self.settings, req);
        StreamingInvocation { inner, scope: Some(scope), settings: self.settings.clone() }
    }
}

pin_project_lite::pin_project! {
    /// The future of one traced HTTP invocation with a streamed response:
    /// it ends with the response head, and the body carries the invocation on.
    #[must_use = "futures do nothing unless polled"]
    pub struct StreamingInvocation<F> {
        #[pin]
        inner: F,
        scope: Option<InvocationScope>,
        settings: Arc<Settings>,
    }
}

impl<F> Debug for StreamingInvocation<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingInvocation").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for StreamingInvocation<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Debug + 'static,
{
    type Output = Result<Response<TracedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let Some(scope) = this.scope.as_mut() else {
            // Polled again after it completed: whatever the handler's future does, untraced.
            return inner.poll(cx).map_ok(|response| response.map(TracedBody::untraced));
        };
        match scope.run(|| inner.poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Ok(response))) => {
                let length = response.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
                record_status(scope, response.status().as_u16(), length);
                let scope = this.scope.take();
                Poll::Ready(Ok(response.map(|body| TracedBody::new(body, scope))))
            }
            Ok(Poll::Ready(Err(e))) => {
                let settings = &**this.settings;
                scope.complete(|sub| record_handler_error(sub, settings, &e));
                *this.scope = None;
                Poll::Ready(Err(e))
            }
            Err(payload) => {
                scope.panicked(&*payload);
                *this.scope = None;
                std::panic::resume_unwind(payload)
            }
        }
    }
}

/// `lambda_http::run` with every invocation traced, the `http` block
/// included: the one-line way in for buffered HTTP functions.
pub async fn run<'a, R, S, E>(handler: S) -> Result<(), lambda_http::Error>
where
    S: Service<Request, Response = R, Error = E>,
    S::Future: Send + 'a,
    R: IntoResponse,
    E: Debug + Into<Diagnostic> + 'static,
{
    lambda_http::run(HttpLayer::new().layer(handler)).await
}

/// `lambda_http::run_with_streaming_response` with every invocation traced
/// to the end of its stream.
pub async fn run_with_streaming_response<'a, S, B, E>(handler: S) -> Result<(), lambda_http::Error>
where
    S: Service<Request, Response = Response<B>, Error = E>,
    S::Future: Send + 'a,
    E: Debug + Into<Diagnostic> + 'static,
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Into<Bytes> + Send,
    B::Error: Into<lambda_http::Error> + Send + Debug,
{
    lambda_http::run_with_streaming_response(StreamingHttpLayer::new().layer(handler)).await
}
