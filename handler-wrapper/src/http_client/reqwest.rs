//! The `reqwest-middleware` middleware.

use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};

use super::{OutgoingCall, RequestInfo};

/// Traces every request of a `reqwest` client built with
/// `reqwest-middleware`. See the [module docs](super).
///
/// ```no_run
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(lambda_xray_tracing::http_client::XRayReqwestMiddleware::new())
///     .build();
/// # drop(client);
/// ```
///
/// With a retry middleware, add this one after it (`.with(retry).with(xray)`)
/// so that each attempt is its own subsegment.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct XRayReqwestMiddleware {
    traced: bool,
}

impl XRayReqwestMiddleware {
    /// A middleware for calls to services that do not continue the trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the callees continue the trace (`http.request.traced`): X-Ray
    /// then waits for their segment, with this request's subsegment as parent.
    pub fn traced(mut self, traced: bool) -> Self {
        self.traced = traced;
        self
    }
}

#[async_trait::async_trait]
impl Middleware for XRayReqwestMiddleware {
    async fn handle(&self, mut req: Request, extensions: &mut http::Extensions, next: Next<'_>) -> Result<Response> {
        let call = {
            let url = req.url();
            let without_credentials = || {
                let mut url = url.clone();
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.to_string()
            };
            let info = RequestInfo {
                method: req.method().as_str(),
                host: url.host_str().unwrap_or_default(),
                url: &without_credentials,
                traced: self.traced,
            };
            OutgoingCall::begin(info)
        };
        if let Some(call) = &call {
            call.inject(req.headers_mut());
        }
        let result = next.run(req, extensions).await;
        if let Some(call) = call {
            match &result {
                Ok(response) => call.responded(response.status().as_u16(), response.content_length()),
                Err(reqwest_middleware::Error::Reqwest(e)) => call.failed(e, "reqwest::Error"),
                Err(reqwest_middleware::Error::Middleware(e)) => call.failed(e.as_ref(), "reqwest_middleware::Error"),
            }
        }
        result
    }
}
