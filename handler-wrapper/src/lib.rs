//! AWS X-Ray tracing for Rust functions on [`lambda_runtime`].
//!
//! Wrap the handler once and every invocation gets a `## <handler>` subsegment
//! attached to the segment Lambda records for the function (`Tracing: Active`),
//! with `ColdStart` and `Service` annotations, the response or error, and any
//! subsegments, annotations and metadata your code adds:
//!
//! ```no_run
//! use lambda_runtime::{service_fn, Error, LambdaEvent};
//! use serde_json::Value;
//!
//! async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
//!     let order = lambda_xray_tracing::in_subsegment("load order", async {
//!         lambda_xray_tracing::put_annotation("order_id", "o-123")?;
//!         Ok::<_, Error>(event.payload)
//!     })
//!     .await?;
//!     Ok(order)
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Error> {
//!     lambda_xray_tracing::run(service_fn(handler)).await
//! }
//! ```
//!
//! Nothing is recorded or sent for unsampled invocations (`Sampled=0`), but the
//! decision is still available for propagation through
//! [`current_trace_header`]. Tracing never changes what the handler returns.
//!
//! Cargo features:
//! - `aws-sdk`: `XRayInterceptor` (module `aws_sdk`), attached once per AWS
//!   SDK client, records every call as an `aws` subsegment and propagates the
//!   trace header to the called service;
//! - `lambda-http`: module `http`, the same for `lambda_http` functions
//!   (API Gateway, Function URLs, ALB; `axum` included; buffered or
//!   streamed responses), with X-Ray's `http` block;
//! - `reqwest`, `hyper-client`: module `http_client`, one `remote`
//!   subsegment per outgoing HTTP request, with trace header propagation;
//! - `sqs`: module `sqs`, per-message sampling scopes and partial batch
//!   failures for SQS-triggered functions.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "aws-sdk")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws-sdk")))]
pub mod aws_sdk;
mod cause;
mod clock;
mod config;
mod context;
mod deadline;
mod document;
mod emitter;
mod encode;
mod error;
#[cfg(feature = "lambda-http")]
#[cfg_attr(docsrs, doc(cfg(feature = "lambda-http")))]
pub mod http;
#[cfg(any(feature = "reqwest", feature = "hyper-client"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "reqwest", feature = "hyper-client"))))]
pub mod http_client;
mod invocation;
mod layer;
mod pool;
#[cfg(feature = "sqs")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqs")))]
pub mod sqs;
mod subsegment;
#[cfg(feature = "tracing-bridge")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing-bridge")))]
pub mod tracing_bridge;

#[cfg(feature = "aws-sdk")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws-sdk")))]
pub use aws_sdk::XRayInterceptor;
pub use config::{Config, ContextMissing};
pub use context::{EnteredContext, FutureExt, TraceContext, WithTrace, current, current_trace_header, is_sampled, spawn};
pub use document::{
    AnnotationValue, Annotations, Aws, Cause, CauseDetails, DEFAULT_METADATA_NAMESPACE, Document, Exception, Http, HttpRequest,
    HttpResponse, MAX_ANNOTATION_KEY_LEN, MAX_ANNOTATION_VALUE_LEN, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_STRING_LEN, Metadata, Service,
    StackFrame,
};
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use emitter::MemoryTransport;
pub use emitter::{DEFAULT_DAEMON_ADDRESS, Emitter, EmitterStats, MAX_DATAGRAM_BYTES, NullTransport, Transport, UdpTransport};
pub use error::TraceError;
pub use lambda_xray_wire::{EntityId, HeaderError, InvalidId, MAX_HEADER_LEN, SamplingDecision, TraceHeader, TraceId};
pub use layer::{TracedInvocation, XRayLayer, XRayService, run};
pub use subsegment::{
    InSubsegment, Subsegment, begin_subsegment, in_subsegment, put_annotation, put_metadata, put_metadata_in, record_error,
    set_http_status, trace, try_begin_subsegment,
};
