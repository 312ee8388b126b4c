//! Tracing for the AWS SDK for Rust (feature `aws-sdk`): every operation a
//! client runs becomes one `aws` subsegment, and the request carries the trace
//! header on to the service.
//!
//! Attach [`XRayInterceptor`] once, when building a client's config:
//!
//! ```ignore
//! let shared = aws_config::load_from_env().await;
//! let sqs = aws_sdk_sqs::Client::from_conf(
//!     aws_sdk_sqs::config::Builder::from(&shared).interceptor(lambda_xray_tracing::XRayInterceptor::new()).build(),
//! );
//! ```
//!
//! Per operation (retries included) it records a subsegment named after the
//! service (`SQS`, `DynamoDB`, `S3`...), `namespace: "aws"`, `aws.operation`,
//! `aws.region`, `aws.request_id`, `aws.retries`, `aws.id_2` (S3), the
//! per-operation fields of its table (`aws_sdk/fields.rs`) and `http.response` (`status`,
//! `content_length`). Errors: 4xx → `error`, 429 or a throttling error code →
//! `throttle` + `error`, 5xx → `fault`, with the service's error code and
//! message as a remote exception in `cause`; connection failures and timeouts
//! → `fault` with the error chain in `cause`.
//!
//! The subsegment is a child of the trace context current when the call is
//! made ([`crate::current`]), and the request's `X-Amzn-Trace-Id` names it as
//! `Parent` (set before the SDK's recursion-detection interceptor, which only
//! fills an empty header). Unsampled: no subsegment, the header carries
//! `Sampled=0`. Untraced: the header is left alone. The interceptor never
//! changes the outcome of a call: every hook returns `Ok`, and a panic inside
//! one is caught and logged.

pub(crate) mod fields;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::context::{Error as OpError, Output};
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata, OrchestratorError};
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

use crate::cause::{cause_from_error, cause_from_message};
use crate::clock::now_seconds;
use crate::context::{Current, TraceContext, context_missing, current};
use crate::document::{Aws, Cause, Document, MAX_MESSAGE_LEN, truncate};
use crate::subsegment::Subsegment;
use fields::{Message, Side};

/// The trace header's HTTP name.
const TRACE_HEADER: &str = "x-amzn-trace-id";

/// Error codes the AWS SDKs treat as throttling.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "AWS.SimpleQueueService.RequestThrottled",
];

/// The X-Ray interceptor for AWS SDK clients: attach it once per client config
/// with `.interceptor(XRayInterceptor::new())`. See the [module docs](self).
///
/// ```
/// let config = aws_sdk_sqs::Config::builder()
///     .behavior_version_latest()
///     .region(aws_sdk_sqs::config::Region::new("eu-west-1"))
///     .interceptor(lambda_xray_tracing::XRayInterceptor::new())
///     .build();
/// let sqs = aws_sdk_sqs::Client::from_conf(config);
/// # drop(sqs);
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct XRayInterceptor {}

impl XRayInterceptor {
    /// A new interceptor. It has no settings: what it records follows the
    /// trace context current when each call is made.
    pub fn new() -> Self {
        XRayInterceptor {}
    }
}

/// Per-operation state, kept in the operation's config bag.
struct CallState {
    /// The context current when the call was made.
    ctx: TraceContext,
    /// When the call was made.
    start: f64,
    /// The subsegment (a no-op guard when unsampled).
    sub: Option<Subsegment>,
    /// Service id and operation name, once known.
    names: Option<(String, String)>,
    /// The `X-Amzn-Trace-Id` to send.
    header: Option<String>,
    /// Whether the request's fields were recorded.
    request_read: bool,
}

impl fmt::Debug for CallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XRayCallState").field("sub", &self.sub).field("header", &self.header).finish()
    }
}

impl Storable for CallState {
    type Storer = StoreReplace<Self>;
}

impl Drop for CallState {
    fn drop(&mut self) {
        // The completion hooks did not run: the operation timed out (the SDK
        // drops the whole operation) or the caller dropped the future.
        if let Some(sub) = self.sub.take() {
            sub.update(|d| {
                d.fail_unless_caused(|| {
                    cause_from_message(
                        "OperationCancelled",
                        "the call ended before completing: operation timeout, or its future was dropped",
                        None,
                    )
                });
            });
        }
    }
}

/// Runs a hook body, never letting a panic out of it.
fn guarded(hook: &str, f: impl FnOnce()) -> Result<(), BoxError> {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::error!(target: "lambda_xray", "XRayInterceptor::{hook} panicked; the call goes on untraced");
    }
    Ok(())
}

fn aws_mut(d: &mut Document) -> &mut Aws {
    d.aws.get_or_insert_with(Default::default)
}

impl Intercept for XRayInterceptor {
    fn name(&self) -> &'static str {
        "XRayInterceptor"
    }

    fn read_before_execution(&self, _context: &BeforeSerializationInterceptorContextRef<'_>, cfg: &mut ConfigBag) -> Result<(), BoxError> {
        guarded("read_before_execution", || {
            // Already started (the interceptor is attached twice, e.g. client and operation).
            // The state lives in the interceptor layer: look only there (a `load` scans every layer).
            if cfg.get_mut_from_interceptor_state::<CallState>().is_some() {
                return;
            }
            let ctx = current();
            match &ctx.0 {
                Current::Outside => context_missing("AWS SDK call", false),
                Current::Untraced => {}
                Current::Unsampled { .. } | Current::Sampled { .. } => {
                    let start = if ctx.is_sampled() { now_seconds() } else { 0.0 };
                    cfg.interceptor_state().store_put(CallState { ctx, start, sub: None, names: None, header: None, request_read: false });
                }
            }
        })
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        guarded("read_before_serialization", || begin(cfg))
    }

    fn modify_before_retry_loop(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        guarded("modify_before_retry_loop", || {
            if let Some(header) = cfg.get_mut_from_interceptor_state::<CallState>().and_then(|s| s.header.as_deref()) {
                // Replaces any value: ours names this call's subsegment.
                let _ = context.request_mut().headers_mut().try_insert(TRACE_HEADER, header.to_owned());
            }
        })
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        guarded("read_before_transmit", || {
            let Some(state) = cfg.get_mut_from_interceptor_state::<CallState>() else { return };
            if state.request_read {
                return;
            }
            state.request_read = true;
            let (Some(sub), Some((service, operation))) = (&state.sub, &state.names) else { return };
            if !sub.is_sampled() || !fields::has_fields(service, operation, Side::Request) {
                return;
            }
            let request = context.request();
            let header = |name: &str| request.headers().get(name);
            let msg = Message { uri: request.uri(), header: &header, body: request.body().bytes() };
            sub.update(|d| fields::record(service, operation, Side::Request, &msg, aws_mut(d)));
        })
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        guarded("read_after_execution", || {
            // The operation failed before serialization: begin now, to record the failure.
            begin(cfg);
            let attempts = cfg.load::<RequestAttempts>().map(|a| a.attempts());
            let Some(state) = cfg.get_mut_from_interceptor_state::<CallState>() else { return };
            let Some(sub) = state.sub.take() else { return };
            if !sub.is_sampled() {
                return;
            }
            let (service, operation) = state.names.clone().unwrap_or_default();
            sub.update(|d| finish(d, &service, &operation, attempts, context.response(), context.output_or_error()));
        })
    }
}

/// Begins the call's subsegment once the operation's metadata is in the bag.
fn begin(cfg: &mut ConfigBag) {
    let sampled = match cfg.get_mut_from_interceptor_state::<CallState>() {
        Some(state) if state.names.is_none() => state.ctx.is_sampled(),
        _ => return,
    };
    // Unsampled calls only need the header: no names (and no allocation for them).
    let (service, operation) = match cfg.load::<Metadata>().filter(|_| sampled) {
        Some(m) => (m.service().to_owned(), m.name().to_owned()),
        None if sampled => ("AWS".to_owned(), String::new()),
        None => (String::new(), String::new()),
    };
    let region = if sampled { cfg.load::<aws_types::region::Region>().map(|r| r.as_ref().to_owned()) } else { None };
    let Some(state) = cfg.get_mut_from_interceptor_state::<CallState>() else { return };
    let (sub, child) = state.ctx.begin_subsegment(&service);
    state.header = child.trace_header().map(|h| h.to_string());
    if sampled {
        let start = state.start;
        sub.update(|d| {
            d.start_time = start;
            d.namespace = Some("aws".to_owned());
            let aws = aws_mut(d);
            aws.operation = (!operation.is_empty()).then(|| operation.clone());
            aws.region = region;
        });
    }
    state.sub = Some(sub);
    state.names = Some((service, operation));
}

/// Records the outcome of the call on its document.
fn finish(
    d: &mut Document,
    service: &str,
    operation: &str,
    attempts: Option<u32>,
    response: Option<&HttpResponse>,
    outcome: Option<Result<&Output, &OrchestratorError<OpError>>>,
) {
    if let Some(attempts) = attempts {
        aws_mut(d).retries = Some(attempts.saturating_sub(1));
    }
    let status = response.map(|r| r.status().as_u16());
    if let Some(r) = response {
        let headers = r.headers();
        let body = r.body().bytes();
        let request_id = ["x-amzn-requestid", "x-amz-request-id", "x-amzn-request-id"]
            .iter()
            .find_map(|h| headers.get(*h).map(str::to_owned))
            .or_else(|| body.and_then(|b| std::str::from_utf8(b).ok()).and_then(|b| fields::xml_element(b, "RequestId")));
        let aws = aws_mut(d);
        aws.request_id = request_id.map(|s| truncate(&s, crate::document::MAX_STRING_LEN).to_owned());
        if let Some(id2) = headers.get("x-amz-id-2") {
            aws.id_2 = Some(truncate(id2, crate::document::MAX_STRING_LEN).to_owned());
        }
        let content_length = headers.get("content-length").and_then(|v| v.trim().parse::<u64>().ok()).or(body.map(|b| b.len() as u64));
        if let Some(status) = status {
            d.apply_http_status(status);
        }
        if let Some(http) = d.http.as_mut()
            && let Some(resp) = http.response.as_mut()
        {
            resp.content_length = content_length;
        }
    }
    match outcome {
        Some(Ok(_)) => {
            if let Some(r) = response
                && fields::has_fields(service, operation, Side::Response)
            {
                let headers = r.headers();
                let header = |name: &str| headers.get(name);
                let msg = Message { uri: "", header: &header, body: r.body().bytes() };
                fields::record(service, operation, Side::Response, &msg, aws_mut(d));
            }
        }
        Some(Err(err)) => match (response, status) {
            // The service answered with an error.
            (Some(r), Some(status)) if status >= 300 => {
                let (code, message) = service_error(r);
                let code = code.unwrap_or_else(|| format!("HTTP {status}"));
                if THROTTLING_CODES.contains(&code.as_str()) {
                    d.throttle = true;
                    d.error = true;
                }
                let message = message.unwrap_or_else(|| err.to_string());
                let mut cause = cause_from_message(&code, truncate(&message, MAX_MESSAGE_LEN), None);
                for e in &mut cause.exceptions {
                    e.remote = true;
                }
                d.cause = Some(Cause::Details(cause));
            }
            // No answer (connection refused, DNS, timeout) or one that could not be read.
            _ => {
                let kind = if err.is_timeout_error() || err.as_connector_error().is_some_and(|c| c.is_timeout()) {
                    "TimeoutError"
                } else if err.is_connector_error() {
                    "DispatchFailure"
                } else if err.is_response_error() {
                    "ResponseError"
                } else {
                    "SdkError"
                };
                d.fail(cause_from_error(err, Some(kind), None));
            }
        },
        None => {}
    }
}

/// The error code and message of an error response, whatever the protocol.
fn service_error(r: &HttpResponse) -> (Option<String>, Option<String>) {
    let headers = r.headers();
    let body = r.body().bytes().and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("");
    let json: Option<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(body).ok();
    let json_str = |keys: &[&str]| -> Option<String> {
        let m = json.as_ref()?;
        keys.iter().find_map(|k| m.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
    };
    // `com.amazonaws.sqs#QueueDoesNotExist`, `ResourceNotFoundException:http://...`
    let clean = |code: &str| -> String {
        let code = code.rsplit('#').next().unwrap_or(code);
        code.split(':').next().unwrap_or(code).trim().to_owned()
    };
    let code = json_str(&["__type", "code", "Code"])
        .or_else(|| headers.get("x-amzn-errortype").map(str::to_owned))
        .or_else(|| fields::xml_element(body, "Code"))
        .or_else(|| headers.get("x-amzn-query-error").map(|v| v.split(';').next().unwrap_or(v).to_owned()))
        .map(|c| clean(&c))
        .filter(|c| !c.is_empty());
    let message = json_str(&["message", "Message", "errorMessage"]).or_else(|| fields::xml_element(body, "Message"));
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        let mut r = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body.to_owned()));
        for (k, v) in headers {
            r.headers_mut().insert(k.to_string(), v.to_string());
        }
        r
    }

    #[test]
    fn error_codes_from_every_protocol() {
        let json = response(400, &[], r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"nope"}"#);
        assert_eq!(service_error(&json), (Some("QueueDoesNotExist".into()), Some("nope".into())));
        let rest = response(404, &[("x-amzn-errortype", "ResourceNotFoundException:http://internal/")], r#"{"Message":"gone"}"#);
        assert_eq!(service_error(&rest), (Some("ResourceNotFoundException".into()), Some("gone".into())));
        let xml = response(503, &[], "<Error><Code>SlowDown</Code><Message>slow</Message></Error>");
        assert_eq!(service_error(&xml), (Some("SlowDown".into()), Some("slow".into())));
        let query = response(400, &[("x-amzn-query-error", "AWS.SimpleQueueService.NonExistentQueue;Sender")], "");
        assert_eq!(service_error(&query), (Some("AWS.SimpleQueueService.NonExistentQueue".into()), None));
    }

    #[test]
    fn throttling_is_throttle_and_error() {
        let r = response(400, &[("x-amzn-requestid", "rid")], r#"{"__type":"ThrottlingException","message":"slow down"}"#);
        let err = OrchestratorError::operation(OpError::erase(std::io::Error::other("x")));
        let mut d = Document::default();
        finish(&mut d, "DynamoDB", "GetItem", Some(3), Some(&r), Some(Err(&err)));
        assert!(d.throttle && d.error && !d.fault);
        let aws = d.aws.as_ref().unwrap();
        assert_eq!((aws.retries, aws.request_id.as_deref()), (Some(2), Some("rid")));
        let Some(Cause::Details(c)) = &d.cause else { panic!("no cause") };
        assert_eq!((c.exceptions[0].kind.as_deref(), c.exceptions[0].remote), (Some("ThrottlingException"), true));
    }
}
