//! `tracing` spans as subsegments (cargo feature `tracing-bridge`).
//!
//! Add [`SubsegmentLayer`] to your subscriber and spans created inside a
//! sampled invocation become subsegments of the current trace context:
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//! tracing_subscriber::registry()
//!     .with(lambda_xray_tracing::tracing_bridge::SubsegmentLayer::new())
//!     .init();
//! ```
//!
//! - Nesting follows the span tree, and the bridge shares one context with the
//!   explicit API: while a span is entered its subsegment is the current
//!   entity, so `begin_subsegment` and `in_subsegment` inside it nest under it,
//!   and spans created inside an explicit subsegment nest under that.
//!   `.instrument(span)` carries the context across `.await` and into
//!   `tokio::spawn`ed tasks, as it carries the span.
//! - Span fields become annotations when the key is a valid annotation key
//!   and the value a string, number or bool; anything else (and `?debug` /
//!   `%display` values) becomes metadata under the `tracing` namespace.
//! - An ERROR-level event inside a span is recorded in the subsegment's
//!   `cause` (its `error` field's chain, if it has one) and marks it `fault`.
//! - Outside an invocation, or in an unsampled one, spans record nothing.
//!
//! **Choosing spans.** By default spans from the runtime's and SDK's own
//! crates (`lambda_runtime`, `lambda_runtime_api_client`, `hyper`,
//! `hyper_util`, `h2`, `tower`, `reqwest`, `aws_smithy_*`, `aws_sdk_*`,
//! `aws_config`, `rustls`) are skipped, so they don't flood traces. Adjust
//! with [`SubsegmentLayer::skip_target`], [`SubsegmentLayer::only_targets`]
//! and [`SubsegmentLayer::min_level`], or attach any `tracing_subscriber`
//! per-layer filter (`SubsegmentLayer::new().with_filter(Targets::new()...)`).

use std::cell::RefCell;
use std::fmt::Debug;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::cause::{cause_from_error, cause_from_message};
use crate::context::{Current, swap_current, with_current};
use crate::document::{Cause, Document, truncate, validate_annotation_key};
use crate::subsegment::{Subsegment, begin_child, with_current_doc};

/// Targets skipped by default: the runtime's, HTTP stack's and AWS SDK's own spans.
pub const DEFAULT_SKIPPED_TARGETS: &[&str] = &[
    "lambda_runtime",
    "lambda_runtime_api_client",
    "lambda_xray",
    "hyper",
    "hyper_util",
    "h2",
    "tower",
    "reqwest",
    "rustls",
    "aws_smithy",
    "aws_sdk",
    "aws_config",
];

/// A `tracing_subscriber` layer that turns spans into subsegments.
///
/// ```
/// use lambda_xray_tracing::tracing_bridge::SubsegmentLayer;
/// use tracing_subscriber::prelude::*;
///
/// let subscriber = tracing_subscriber::registry().with(SubsegmentLayer::new().min_level(tracing::Level::INFO));
/// tracing::subscriber::with_default(subscriber, || {
///     let _span = tracing::info_span!("load order", order_id = "o-123").entered();
/// });
/// ```
#[derive(Debug, Clone)]
pub struct SubsegmentLayer {
    skip: Vec<String>,
    only: Option<Vec<String>>,
    min_level: Level,
}

impl Default for SubsegmentLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl SubsegmentLayer {
    /// Spans of every level, except those of [`DEFAULT_SKIPPED_TARGETS`].
    pub fn new() -> Self {
        SubsegmentLayer { skip: DEFAULT_SKIPPED_TARGETS.iter().map(|s| (*s).to_owned()).collect(), only: None, min_level: Level::TRACE }
    }

    /// Also skips spans whose target starts with `prefix`.
    pub fn skip_target(mut self, prefix: &str) -> Self {
        self.skip.push(prefix.to_owned());
        self
    }

    /// Only spans whose target starts with one of `prefixes` (e.g. your crate's name).
    pub fn only_targets(mut self, prefixes: &[&str]) -> Self {
        self.only = Some(prefixes.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    /// Only spans at `level` or more important (`INFO` keeps INFO, WARN, ERROR).
    pub fn min_level(mut self, level: Level) -> Self {
        self.min_level = level;
        self
    }

    fn wanted(&self, meta: &tracing::Metadata<'_>) -> bool {
        let target = meta.target();
        let matches = |p: &String| target.starts_with(p.as_str()) && target[p.len()..].chars().next().is_none_or(|c| c == ':' || c == '_');
        *meta.level() <= self.min_level && !self.skip.iter().any(matches) && self.only.as_ref().is_none_or(|only| only.iter().any(matches))
    }
}

/// What a span that became a subsegment keeps in its extensions.
struct SpanSubsegment {
    sub: Subsegment,
    /// The context the span's code runs under (the subsegment is current in it).
    ctx: Current,
}

thread_local! {
    /// For each entered span, innermost last: the context it displaced and the
    /// span context it was entered with.
    static DISPLACED: RefCell<Vec<(Current, Current)>> = const { RefCell::new(Vec::new()) };
}

/// Writes span fields onto a subsegment document.
struct FieldWriter<'a>(&'a mut Document);

impl FieldWriter<'_> {
    fn annotate(&mut self, field: &Field, value: crate::AnnotationValue) {
        if validate_annotation_key(field.name()).is_ok() {
            self.0.annotations.insert_valid(field.name(), value);
        } else {
            self.metadata(field, &value);
        }
    }
    fn metadata<T: serde::Serialize + ?Sized>(&mut self, field: &Field, value: &T) {
        if let Ok(raw) = serde_json::value::to_raw_value(value) {
            self.0.metadata.insert_valid("tracing", field.name(), raw);
        }
    }
    /// A formatted value as metadata, cut to [`MAX_FIELD_BYTES`].
    fn text(&mut self, field: &Field, mut text: String) {
        cap_text(&mut text);
        self.metadata(field, &text);
    }
}

/// Longest formatted field value (`Debug`, `Display` of an error) a span
/// records; longer ones are cut and end with `…`.
pub const MAX_FIELD_BYTES: usize = 4096;
/// Most exceptions one subsegment's `cause` collects from ERROR events;
/// later events still mark it `fault` and are counted in the last
/// exception's `skipped`.
pub const MAX_EVENT_EXCEPTIONS: usize = 32;

/// Cuts `text` to [`MAX_FIELD_BYTES`] on a char boundary, marking the cut.
fn cap_text(text: &mut String) {
    if text.len() > MAX_FIELD_BYTES {
        let mut end = MAX_FIELD_BYTES - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.annotate(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.annotate(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.annotate(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.annotate(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.annotate(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.text(field, format!("{value:?}"));
    }
}

/// Collects an ERROR event's message and error.
#[derive(Default)]
struct EventReader {
    message: String,
    fields: Vec<String>,
    cause: Option<crate::document::CauseDetails>,
}

impl Visit for EventReader {
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.cause.is_none() {
            self.cause = Some(cause_from_error(value, None, None));
        }
        let mut text = format!("{}={value}", field.name());
        cap_text(&mut text);
        self.fields.push(text);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let mut text = if field.name() == "message" { format!("{value:?}") } else { format!("{}={value:?}", field.name()) };
        cap_text(&mut text);
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.push(text);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let mut text = if field.name() == "message" { value.to_owned() } else { format!("{}={value}", field.name()) };
        cap_text(&mut text);
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.push(text);
        }
    }
}

impl<S> Layer<S> for SubsegmentLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // Cheap exits first: unsampled or outside an invocation costs a thread-local read.
        if !crate::context::is_sampled() && attrs.parent().is_none() {
            return;
        }
        if !self.wanted(attrs.metadata()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        // An explicit parent with a subsegment wins; otherwise the current context
        // (an entered span's subsegment, or an explicit subsegment).
        let mut parent_ctx = attrs
            .parent()
            .and_then(|p| ctx.span(p))
            .and_then(|p| p.extensions().get::<SpanSubsegment>().map(|s| s.ctx.clone()))
            .or_else(|| with_current(|c| c.clone()))
            .unwrap_or_default();
        if !matches!(parent_ctx, Current::Sampled { .. }) {
            return;
        }
        let Some(sub) = begin_child(&mut parent_ctx, attrs.metadata().name()) else { return };
        sub.update(|doc| attrs.record(&mut FieldWriter(doc)));
        span.extensions_mut().insert(SpanSubsegment { sub, ctx: parent_ctx });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(state) = span.extensions().get::<SpanSubsegment>()
        {
            state.sub.update(|doc| values.record(&mut FieldWriter(doc)));
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR || !crate::context::is_sampled() {
            return;
        }
        let mut reader = EventReader::default();
        event.record(&mut reader);
        let message = if reader.fields.is_empty() { reader.message } else { format!("{} ({})", reader.message, reader.fields.join(", ")) };
        let mut cause = reader.cause.unwrap_or_else(|| cause_from_message("error event", truncate(&message, 1000), None));
        if let Some(first) = cause.exceptions.first_mut()
            && first.message.as_deref() != Some(message.as_str())
            && !message.is_empty()
        {
            first.message = Some(truncate(&message, 1000).to_owned());
        }
        let target = event.metadata().target();
        if let Some(first) = cause.exceptions.first_mut().filter(|e| e.kind.is_none()) {
            first.kind = Some(target.to_owned());
        }
        with_current_doc(move |doc| {
            doc.fault = true;
            match &mut doc.cause {
                Some(Cause::Details(existing)) => {
                    let room = MAX_EVENT_EXCEPTIONS.saturating_sub(existing.exceptions.len());
                    let extra = cause.exceptions.len().saturating_sub(room) as u32;
                    existing.exceptions.extend(cause.exceptions.into_iter().take(room));
                    if let Some(last) = existing.exceptions.last_mut().filter(|_| extra > 0) {
                        last.skipped = Some(last.skipped.unwrap_or(0).saturating_add(extra));
                    }
                }
                _ => doc.cause = Some(Cause::Details(cause)),
            }
        });
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(state) = ext.get_mut::<SpanSubsegment>() else { return };
        // Cloned, not taken: the same span may be entered on several threads at once.
        let entered_with = state.ctx.clone();
        let mut ctx = entered_with.clone();
        swap_current(&mut ctx);
        // `ctx` now holds what was current before: restore it on exit.
        let _ = DISPLACED.try_with(|d| d.borrow_mut().push((ctx, entered_with)));
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(state) = ext.get_mut::<SpanSubsegment>() else { return };
        let Some((mut previous, entered_with)) = DISPLACED.try_with(|d| d.borrow_mut().pop()).ok().flatten() else { return };
        swap_current(&mut previous);
        // `previous` now holds the span's context, with any subsegment begun
        // inside it and still open (so it stays current after an `.await`).
        // Keep it unless another thread changed the span's context meanwhile.
        if state.ctx.same_as(&entered_with) {
            state.ctx = previous;
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(state) = span.extensions_mut().remove::<SpanSubsegment>()
        {
            // Ends the subsegment.
            drop(state);
        }
    }
}
