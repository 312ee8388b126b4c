//! Per-message tracing for SQS-triggered functions (feature `sqs`).
//!
//! One Lambda invocation carries a batch of messages, each sent under its own
//! producer's sampling decision (SQS keeps the sender's `X-Amzn-Trace-Id` in
//! the `AWSTraceHeader` system attribute). A [`MessageScope`] follows that
//! decision: a sampled message gets a normal `Processing Message` subsegment
//! (annotations `message_id` and `producer_trace_id`); an unsampled one gets an
//! unsampled scope: nothing is recorded under it, and SDK calls made inside it
//! send `Sampled=0` (the "oversampling mitigation" of the reference SDKs). An
//! invocation that is itself unsampled or untraced stays so for every message.
//!
//! ```no_run
//! use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
//! use lambda_runtime::{Error, LambdaEvent};
//!
//! async fn handler(event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
//!     Ok(lambda_xray_tracing::sqs::process_batch(event.payload, |msg: SqsMessage| async move {
//!         let body = msg.body.unwrap_or_default();
//!         if body.is_empty() { return Err("empty message"); }
//!         Ok(())
//!     })
//!     .await)
//! }
//! ```

use std::fmt;
use std::future::Future;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

use crate::context::{TraceContext, current};
use crate::subsegment::{Subsegment, error_type_name};
use lambda_xray_wire::{SamplingDecision, TraceHeader};

/// The name of the per-message subsegment, as in the reference SDKs' examples.
pub const MESSAGE_SUBSEGMENT: &str = "Processing Message";

/// The system attribute SQS fills from the sender's `X-Amzn-Trace-Id`.
pub const TRACE_HEADER_ATTRIBUTE: &str = "AWSTraceHeader";

/// The producer's trace header of a message, parsed strictly (`None` when
/// absent or malformed).
pub fn message_trace_header(msg: &SqsMessage) -> Option<TraceHeader> {
    msg.attributes.get(TRACE_HEADER_ATTRIBUTE).and_then(|v| TraceHeader::parse(v).ok())
}

/// Whether the producer sampled the message: its `AWSTraceHeader` parses and
/// has a `Root` and `Sampled=1` (not a substring test: `Sampled=10` or a
/// malformed header is not sampled).
pub fn is_message_sampled(msg: &SqsMessage) -> bool {
    message_trace_header(msg).is_some_and(|h| h.root().is_some() && h.sampled() == SamplingDecision::Sampled)
}

/// The scope of one message: a subsegment when the message and the invocation
/// are sampled, an unsampled scope otherwise. Run the message's work under it
/// with [`MessageScope::run`] (or `scope.context().enter()` on a thread); it
/// ends when dropped or with [`MessageScope::end`].
///
/// ```
/// use aws_lambda_events::event::sqs::SqsMessage;
/// use lambda_xray_tracing::sqs::{MessageScope, TRACE_HEADER_ATTRIBUTE, is_message_sampled};
///
/// let mut msg = SqsMessage::default();
/// msg.attributes.insert(
///     TRACE_HEADER_ATTRIBUTE.to_owned(),
///     "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1".to_owned(),
/// );
/// assert!(is_message_sampled(&msg));
/// let scope = MessageScope::begin(&msg); // outside an invocation: records nothing
/// scope.subsegment().put_annotation("queue", "orders").ok();
/// scope.end();
/// ```
#[derive(Debug)]
#[must_use = "the scope ends as soon as it is dropped"]
pub struct MessageScope {
    sub: Subsegment,
    ctx: TraceContext,
}

impl MessageScope {
    /// Begins the scope of `msg` under the current trace context.
    pub fn begin(msg: &SqsMessage) -> Self {
        Self::begin_under(&current(), msg)
    }

    /// Begins the scope of `msg` under `parent`.
    pub fn begin_under(parent: &TraceContext, msg: &SqsMessage) -> Self {
        let producer = message_trace_header(msg);
        let sampled = producer.as_ref().is_some_and(|h| h.root().is_some() && h.sampled() == SamplingDecision::Sampled);
        let base = if sampled { parent.clone() } else { parent.unsampled() };
        let (sub, ctx) = base.begin_subsegment(MESSAGE_SUBSEGMENT);
        if sub.is_sampled() {
            if let Some(id) = &msg.message_id {
                let _ = sub.put_annotation("message_id", id.as_str());
            }
            if let Some(root) = producer.as_ref().and_then(|h| h.root()) {
                let _ = sub.put_annotation("producer_trace_id", root.as_str());
            }
            if let Some(arn) = &msg.event_source_arn {
                let _ = sub.put_metadata_in("sqs", "event_source_arn", arn);
            }
        }
        MessageScope { sub, ctx }
    }

    /// Whether anything is recorded for this message.
    pub fn is_sampled(&self) -> bool {
        self.sub.is_sampled()
    }

    /// The context to run the message's work under.
    pub fn context(&self) -> &TraceContext {
        &self.ctx
    }

    /// The message's subsegment (a no-op guard when unsampled), to add
    /// annotations or metadata.
    pub fn subsegment(&self) -> &Subsegment {
        &self.sub
    }

    /// Runs `fut` under the message's context.
    pub async fn run<F: Future>(&self, fut: F) -> F::Output {
        self.ctx.clone().wrap(fut).await
    }

    /// Marks the message's subsegment failed (`fault`, with `kind` and
    /// `message` in `cause`).
    pub fn record_failure(&self, kind: &str, message: &str) {
        self.sub.record_failure(kind, message);
    }

    /// Ends the scope now.
    pub fn end(self) {}
}

/// The records of a batch, each with its scope, begun as the iteration reaches it:
///
/// ```no_run
/// # async fn f(event: aws_lambda_events::event::sqs::SqsEvent) {
/// for (msg, scope) in lambda_xray_tracing::sqs::scopes(&event) {
///     scope.run(async { /* process msg */ }).await;
/// }
/// # }
/// ```
pub fn scopes(event: &SqsEvent) -> impl Iterator<Item = (&SqsMessage, MessageScope)> {
    let parent = current();
    event.records.iter().map(move |m| (m, MessageScope::begin_under(&parent, m)))
}

/// Processes a batch one message at a time, each in its [`MessageScope`], and
/// reports the failures as a partial batch response (the event source mapping
/// needs `FunctionResponseTypes: ReportBatchItemFailures`). A message whose
/// handler returns `Err` is reported and its subsegment marked `fault` with the
/// error. On a FIFO queue (source ARN ending in `.fifo`) the messages after a
/// failure are reported failed without being processed, to keep their order.
pub async fn process_batch<F, Fut, E>(event: SqsEvent, mut handler: F) -> SqsBatchResponse
where
    F: FnMut(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: fmt::Display,
{
    let parent = current();
    let mut response = SqsBatchResponse::default();
    let mut fifo_failed = false;
    for msg in event.records {
        let id = msg.message_id.clone().unwrap_or_default();
        if fifo_failed {
            response.add_failure(id);
            continue;
        }
        let fifo = msg.event_source_arn.as_deref().is_some_and(|a| a.ends_with(".fifo"));
        let scope = MessageScope::begin_under(&parent, &msg);
        if let Err(e) = scope.run(handler(msg)).await {
            scope.record_failure(&error_type_name::<E>(), &e.to_string());
            response.add_failure(id);
            fifo_failed = fifo;
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(header: Option<&str>) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some("m-1".into());
        if let Some(h) = header {
            m.attributes.insert(TRACE_HEADER_ATTRIBUTE.into(), h.into());
        }
        m
    }

    #[test]
    fn sampling_is_parsed_not_substring_matched() {
        let root = "Root=1-5759e988-bd862e3fe1be46a994272793";
        assert!(is_message_sampled(&msg(Some(&format!("{root};Parent=53995c3f42cd8ad8;Sampled=1")))));
        assert!(!is_message_sampled(&msg(Some(&format!("{root};Parent=53995c3f42cd8ad8;Sampled=0")))));
        assert!(!is_message_sampled(&msg(Some(&format!("{root};Parent=53995c3f42cd8ad8;Sampled=10")))));
        assert!(!is_message_sampled(&msg(Some("Foo=Sampled=1"))));
        assert!(!is_message_sampled(&msg(Some("Root=;Sampled=1"))));
        assert!(!is_message_sampled(&msg(None)));
    }
}
