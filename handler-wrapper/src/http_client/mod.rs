//! Tracing for outgoing HTTP requests: one `remote` subsegment per request,
//! and the trace header carried to the callee.
//!
//! - [`XRayReqwestMiddleware`] (feature `reqwest`) for `reqwest` clients
//!   built with `reqwest-middleware`;
//! - [`XRayClientLayer`] (feature `hyper-client`) for `hyper`-based clients
//!   and any other `tower` service taking `http::Request`s.
//!
//! Per request (each attempt, when a retry middleware or layer sits outside
//! this one) it records a subsegment named after the host, `namespace:
//! "remote"`, with `http.request` (`method`, `url` without credentials,
//! `traced: true` when the client is built with `.traced(true)`, meaning the
//! callee continues the trace) and `http.response` (`status`,
//! `content_length` from the response's `Content-Length`). The subsegment
//! ends when the response head arrives; bodies are never recorded. 4xx →
//! `error`, 429 → `throttle` + `error`, 5xx → `fault`; a connection error or
//! timeout → `fault` with the error chain in `cause`; a request whose future is
//! dropped before its response → `fault` with cause `RequestCancelled`.
//!
//! The request's `X-Amzn-Trace-Id` names the request's subsegment as
//! `Parent` (any value already there is replaced). Unsampled: nothing
//! recorded, the header carries `Sampled=0`. Untraced (tracing disabled):
//! the request is left alone. Outside any invocation (e.g. during start-up),
//! as for the other calls, `AWS_XRAY_CONTEXT_MISSING` decides whether that is
//! logged, and the request is left alone. The request and its outcome are
//! never changed otherwise.

#[cfg(feature = "reqwest")]
mod reqwest;
#[cfg(feature = "hyper-client")]
mod tower;

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use self::reqwest::XRayReqwestMiddleware;
#[cfg(feature = "hyper-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper-client")))]
pub use self::tower::{XRayClientFuture, XRayClientLayer, XRayClientService};

use crate::cause::{cause_from_error, cause_from_message};
use crate::context::{Current, context_missing, current};
use crate::document::{HttpRequest, MAX_NAME_LEN, MAX_STRING_LEN, truncate};
use crate::subsegment::Subsegment;

/// The trace header's HTTP name.
const TRACE_HEADER: &str = "x-amzn-trace-id";

/// One outgoing request being traced.
pub(crate) struct OutgoingCall {
    /// `None` once the outcome is recorded.
    sub: Option<Subsegment>,
    /// The `X-Amzn-Trace-Id` to send.
    header: Option<String>,
}

/// What is known of a request before it is sent.
pub(crate) struct RequestInfo<'a> {
    pub(crate) method: &'a str,
    /// Host name (the subsegment's name).
    pub(crate) host: &'a str,
    /// Builds the URL without credentials (only called when recorded).
    pub(crate) url: &'a dyn Fn() -> String,
    pub(crate) traced: bool,
}

impl OutgoingCall {
    /// Begins the request's subsegment under the current context; `None`
    /// when nothing is to be recorded or sent (untraced, or outside any
    /// invocation).
    pub(crate) fn begin(info: RequestInfo<'_>) -> Option<OutgoingCall> {
        let ctx = current();
        match &ctx.0 {
            Current::Outside => {
                context_missing("HTTP request", false);
                return None;
            }
            Current::Untraced => return None,
            Current::Unsampled { .. } | Current::Sampled { .. } => {}
        }
        let name = if info.host.is_empty() { "remote" } else { truncate(info.host, MAX_NAME_LEN) };
        let (sub, child) = ctx.begin_subsegment(name);
        let header = child.trace_header().map(|h| h.to_string());
        if sub.is_sampled() {
            let request = HttpRequest {
                method: Some(info.method.to_owned()),
                url: Some(truncate(&(info.url)(), MAX_STRING_LEN).to_owned()),
                traced: info.traced.then_some(true),
                ..Default::default()
            };
            sub.update(|d| {
                d.namespace = Some("remote".to_owned());
                d.http.get_or_insert_with(Default::default).request = Some(request);
            });
        }
        Some(OutgoingCall { sub: Some(sub), header })
    }

    /// Puts the trace header on the request (replacing any value).
    pub(crate) fn inject(&self, headers: &mut http::HeaderMap) {
        if let Some(value) = self.header.as_deref().and_then(|h| http::HeaderValue::from_str(h).ok()) {
            headers.insert(TRACE_HEADER, value);
        }
    }

    /// Records the response head and ends the subsegment.
    pub(crate) fn responded(mut self, status: u16, content_length: Option<u64>) {
        if let Some(sub) = self.sub.take() {
            sub.update(|d| {
                d.apply_http_status(status);
                if let Some(length) = content_length {
                    d.set_content_length(length);
                }
            });
        }
    }

    /// Records a request that got no response (connection error, timeout)
    /// and ends the subsegment.
    pub(crate) fn failed(mut self, err: &(dyn std::error::Error + 'static), type_name: &str) {
        if let Some(sub) = self.sub.take()
            && sub.is_sampled()
        {
            let cause = cause_from_error(err, Some(type_name), None);
            sub.update(|d| d.fail(cause));
        }
    }
}

impl Drop for OutgoingCall {
    fn drop(&mut self) {
        // Neither outcome was recorded: the request's future was dropped.
        if let Some(sub) = self.sub.take() {
            sub.update(|d| {
                d.fail_unless_caused(|| {
                    cause_from_message("RequestCancelled", "the request ended before its response: its future was dropped", None)
                })
            });
        }
    }
}
