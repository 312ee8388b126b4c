//! The current trace context, and carrying it across `.await`, tasks and threads.
//!
//! The context lives in a thread-local while code runs. Futures wrapped in
//! [`WithTrace`] own their context and swap it in for each poll (and back out
//! afterwards), so it survives `.await` points and moves between worker
//! threads with the task. A subsegment begun inside such a future changes the
//! future's own context, so it stays current across later `.await`s too.

use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::SystemTime;

use crate::config::{self, Config, ContextMissing};
use crate::emitter::{self, Emitter};
use crate::invocation::{Invocation, NodeRef, StreamLimits};
use lambda_xray_wire::EntityId;
use lambda_xray_wire::{SamplingDecision, TraceHeader};

/// An unsampled invocation: nothing is recorded, the decision is propagated.
#[derive(Debug)]
pub(crate) struct Unsampled {
    pub(crate) header: TraceHeader,
    pub(crate) noop_ids: bool,
}

/// What the current code runs under.
#[derive(Clone, Default)]
pub(crate) enum Current {
    /// Not inside any invocation.
    #[default]
    Outside,
    /// Inside an invocation that is not traced (no or malformed header,
    /// passthrough, or tracing disabled): everything is a silent no-op.
    Untraced,
    /// Inside an unsampled invocation; `id` is the current entity's id (zero
    /// with `AWS_XRAY_NOOP_ID`).
    Unsampled { inv: Arc<Unsampled>, id: EntityId },
    /// Inside a sampled invocation; `node` is the current subsegment, `None`
    /// for the Lambda segment itself.
    Sampled { inv: Arc<Invocation>, node: Option<(NodeRef, EntityId)> },
}

impl Current {
    /// Whether both designate the same entity of the same invocation.
    #[cfg(feature = "tracing-bridge")]
    pub(crate) fn same_as(&self, other: &Current) -> bool {
        match (self, other) {
            (Current::Outside, Current::Outside) | (Current::Untraced, Current::Untraced) => true,
            (Current::Unsampled { inv: a, id: x }, Current::Unsampled { inv: b, id: y }) => Arc::ptr_eq(a, b) && x == y,
            (Current::Sampled { inv: a, node: x }, Current::Sampled { inv: b, node: y }) => Arc::ptr_eq(a, b) && x == y,
            _ => false,
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Current> = const { RefCell::new(Current::Outside) };
}

/// Set once the first invocation starts: before that we are in init, where
/// subsegments are dropped silently as the reference SDKs do.
static INVOCATION_SEEN: AtomicBool = AtomicBool::new(false);
/// `context_missing` of the configuration the latest invocation started with
/// (0: none yet; then 1, 2, 3 for `RuntimeError`, `LogError`, `IgnoreError`):
/// a call with no context belongs to no invocation, so it follows the one the
/// process is running, whose config may have been passed in.
static CONTEXT_MISSING: AtomicU8 = AtomicU8::new(0);

/// Runs `f` on the thread's current context.
pub(crate) fn with_current<T>(f: impl FnOnce(&mut Current) -> T) -> Option<T> {
    CURRENT.try_with(|c| c.try_borrow_mut().ok().map(|mut c| f(&mut c))).ok().flatten()
}

/// Swaps `ctx` with the thread's current context.
pub(crate) fn swap_current(ctx: &mut Current) {
    let _ = CURRENT.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            std::mem::swap(&mut *c, ctx);
        }
    });
}

/// Applies `AWS_XRAY_CONTEXT_MISSING` for a call made outside any context.
/// `panics` is true for the infallible API.
pub(crate) fn context_missing(what: &str, panics: bool) {
    if !INVOCATION_SEEN.load(Ordering::Relaxed) {
        tracing::debug!(target: "lambda_xray", "{what} outside an invocation (init): dropped");
        return;
    }
    let strategy = match CONTEXT_MISSING.load(Ordering::Relaxed) {
        1 => ContextMissing::RuntimeError,
        2 => ContextMissing::LogError,
        3 => ContextMissing::IgnoreError,
        _ => config::global().context_missing,
    };
    match strategy {
        ContextMissing::RuntimeError if panics => {
            panic!("lambda_xray: {what} with no trace context (AWS_XRAY_CONTEXT_MISSING=RUNTIME_ERROR)")
        }
        ContextMissing::RuntimeError | ContextMissing::LogError => {
            tracing::error!(target: "lambda_xray", "{what} with no trace context: nothing recorded (carry the context into spawned tasks with `in_current_trace`)")
        }
        ContextMissing::IgnoreError => {}
    }
}

/// A handle on a trace context: cheap to clone, carried into tasks and threads.
///
/// Get the running one with [`current`]; start one per invocation with
/// [`TraceContext::for_invocation`] (the handler layer does this for you).
#[derive(Clone, Default)]
pub struct TraceContext(pub(crate) Current);

impl std::fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.0 {
            Current::Outside => "outside",
            Current::Untraced => "untraced",
            Current::Unsampled { .. } => "unsampled",
            Current::Sampled { .. } => "sampled",
        };
        f.debug_tuple("TraceContext").field(&kind).field(&self.trace_header().map(|h| h.to_string())).finish()
    }
}

/// The context of the running code.
pub fn current() -> TraceContext {
    TraceContext(with_current(|c| c.clone()).unwrap_or_default())
}

impl TraceContext {
    /// Starts the context of one invocation from its trace header (the value of
    /// `Lambda-Runtime-Trace-Id`; `None` or malformed means "not traced"),
    /// using the process-wide settings and emitter.
    pub fn for_invocation(trace_header: Option<&str>, deadline: Option<SystemTime>) -> Self {
        let config = config::global();
        if !config.enabled {
            INVOCATION_SEEN.store(true, Ordering::Relaxed);
            return TraceContext(Current::Untraced);
        }
        Self::for_invocation_with(trace_header, deadline, config, emitter::global())
    }

    /// Like [`TraceContext::for_invocation`] with explicit settings and emitter.
    pub fn for_invocation_with(trace_header: Option<&str>, deadline: Option<SystemTime>, config: &Config, emitter: Arc<Emitter>) -> Self {
        let strategy = match config.context_missing {
            ContextMissing::RuntimeError => 1,
            ContextMissing::LogError => 2,
            ContextMissing::IgnoreError => 3,
        };
        CONTEXT_MISSING.store(strategy, Ordering::Relaxed);
        INVOCATION_SEEN.store(true, Ordering::Relaxed);
        if !config.enabled {
            return TraceContext(Current::Untraced);
        }
        let header = match trace_header.map(TraceHeader::parse) {
            Some(Ok(h)) => h,
            Some(Err(e)) => {
                tracing::debug!(target: "lambda_xray", "ignoring trace header: {e}");
                return TraceContext(Current::Untraced);
            }
            None => return TraceContext(Current::Untraced),
        };
        let ctx = match (header.root().cloned(), header.parent(), header.sampled()) {
            (Some(root), Some(parent), SamplingDecision::Sampled) => {
                let limits = StreamLimits { max_children: config.stream_max_children, max_bytes: config.stream_max_bytes };
                let inv = Invocation::new(header, root, parent, emitter, limits, config.noop_ids);
                if let Some(deadline) = deadline {
                    inv.arm_deadline(deadline, config.deadline_margin);
                }
                Current::Sampled { inv, node: None }
            }
            (Some(_), _, SamplingDecision::NotSampled) => {
                // The current entity is the Lambda segment, whose id the header carries.
                let id = header.parent().unwrap_or(EntityId::NOOP);
                Current::Unsampled { inv: Arc::new(Unsampled { header, noop_ids: config.noop_ids }), id }
            }
            // Passthrough (Root only), `Sampled=?` or no Root: not traced.
            _ => Current::Untraced,
        };
        TraceContext(ctx)
    }

    /// The same trace, unsampled from here on: nothing recorded under the
    /// returned context, and its [`trace_header`](TraceContext::trace_header)
    /// carries `Sampled=0` with `Parent` = this context's current entity (and
    /// the inbound extra keys). What the reference SDKs call a subsegment
    /// "without sampling"; used for SQS messages whose producer did not sample
    /// them. Contexts that are already unsampled or untraced are returned as they are.
    pub fn unsampled(&self) -> TraceContext {
        match &self.0 {
            Current::Sampled { inv, node } => {
                let id = node.map(|(_, id)| id).unwrap_or(inv.segment_id);
                let header = inv.downstream_header(Some(id));
                TraceContext(Current::Unsampled { inv: Arc::new(Unsampled { header, noop_ids: inv.noop_ids }), id })
            }
            other => TraceContext(other.clone()),
        }
    }

    /// Whether this context records anything.
    pub fn is_sampled(&self) -> bool {
        matches!(self.0, Current::Sampled { .. })
    }

    /// The `X-Amzn-Trace-Id` value to send downstream from the current entity:
    /// `Root`, `Parent` = current entity, `Sampled`, and the inbound extra keys.
    /// `None` when the invocation is not traced (nothing must be injected).
    pub fn trace_header(&self) -> Option<TraceHeader> {
        match &self.0 {
            Current::Sampled { inv, node } => Some(inv.downstream_header(node.map(|(_, id)| id))),
            Current::Unsampled { inv, id } => Some(inv.header.with_parent(*id, SamplingDecision::NotSampled)),
            Current::Outside | Current::Untraced => None,
        }
    }

    /// Runs `fut` with this context current on every poll.
    pub fn wrap<F: Future>(self, fut: F) -> WithTrace<F> {
        WithTrace { inner: fut, ctx: self.0 }
    }

    /// Makes this context current on this thread until the guard drops. For
    /// work on other threads: `let _g = ctx.enter();` at the top of the thread.
    pub fn enter(&self) -> EnteredContext {
        let mut previous = self.0.clone();
        swap_current(&mut previous);
        EnteredContext { previous, _not_send: PhantomData }
    }

    /// Ends the invocation's deadline timer (the handler has returned).
    pub(crate) fn finish(&self) {
        if let Current::Sampled { inv, .. } = &self.0 {
            inv.disarm_deadline();
        }
    }

    /// The handler panicked: marks what it left open `fault` (see
    /// `Invocation::fault_open`).
    pub(crate) fn fault_open(&self) {
        if let Current::Sampled { inv, .. } = &self.0 {
            inv.fault_open(&crate::cause::cause_from_message("panic", "the handler panicked while this subsegment was open", None));
        }
    }
}

/// Restores the previous context when dropped. Not `Send`: it belongs to the
/// thread that entered.
#[must_use = "the context is only current while the guard lives"]
pub struct EnteredContext {
    previous: Current,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for EnteredContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnteredContext")
    }
}

impl Drop for EnteredContext {
    fn drop(&mut self) {
        swap_current(&mut self.previous);
    }
}

pin_project_lite::pin_project! {
    /// A future that runs with its own trace context; see [`TraceContext::wrap`].
    #[must_use = "futures do nothing unless polled"]
    pub struct WithTrace<F> {
        #[pin]
        inner: F,
        ctx: Current,
    }
}

impl<F> std::fmt::Debug for WithTrace<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WithTrace")
    }
}

/// Swaps a context back out of the thread-local even if the poll panics.
struct SwapBack<'a>(&'a mut Current);

impl Drop for SwapBack<'_> {
    fn drop(&mut self) {
        swap_current(self.0);
    }
}

/// Runs `f` with `ctx` as the thread's current context. Whatever `f` changes
/// (a subsegment begun and still open) is kept in `ctx`, and the previous
/// context is restored, even if `f` panics. No clone: two swaps.
pub(crate) fn run_in<T>(ctx: &mut Current, f: impl FnOnce() -> T) -> T {
    swap_current(ctx);
    let _back = SwapBack(ctx);
    f()
}

impl<F: Future> Future for WithTrace<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        run_in(this.ctx, || this.inner.poll(cx))
    }
}

/// Carrying the current trace context into futures.
pub trait FutureExt: Future + Sized {
    /// Wraps the future so it runs under the context current now, wherever it
    /// is polled: `tokio::spawn(work().in_current_trace())`.
    fn in_current_trace(self) -> WithTrace<Self> {
        current().wrap(self)
    }
}

impl<F: Future> FutureExt for F {}

/// `tokio::spawn` that carries the current trace context into the task.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(fut.in_current_trace())
}

/// Whether the current invocation is sampled (so recording has any effect).
pub fn is_sampled() -> bool {
    with_current(|c| matches!(c, Current::Sampled { .. })).unwrap_or(false)
}

/// The header to send downstream from the current entity; see
/// [`TraceContext::trace_header`].
pub fn current_trace_header() -> Option<TraceHeader> {
    with_current(|c| TraceContext(c.clone()).trace_header()).flatten()
}
