//! Subsegments: begin/end with a guard, closure and async scopes, and recording
//! annotations, metadata, errors and HTTP status on them.

use std::borrow::Cow;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use serde::Serialize;

use crate::cause::{cause_from_error, cause_from_message, short_type_name};
use crate::context::{Current, context_missing, run_in, with_current};
use crate::document::{AnnotationValue, DEFAULT_METADATA_NAMESPACE, Document, validate_annotation_key, validate_metadata_namespace};
use crate::error::TraceError;
use crate::invocation::{Invocation, NodeRef};
use lambda_xray_wire::EntityId;
use lambda_xray_wire::TraceHeader;

enum Inner {
    /// Not recorded (unsampled with no-op ids, untraced, or no context).
    Noop,
    /// Unsampled with real ids (`AWS_XRAY_NOOP_ID=false`): only the id is tracked, for propagation.
    Unsampled { id: EntityId, prev: EntityId },
    /// Recorded.
    Sampled { inv: Arc<Invocation>, node: NodeRef, id: EntityId, prev: Option<(NodeRef, EntityId)> },
}

/// An open subsegment. It is the current entity until it ends, which happens
/// when it is dropped or [`Subsegment::end`] is called. Dropped during a
/// panic, it is marked `fault`.
#[must_use = "a subsegment ends as soon as it is dropped"]
pub struct Subsegment {
    inner: Inner,
}

impl std::fmt::Debug for Subsegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subsegment").field("id", &self.id()).field("sampled", &self.is_sampled()).finish()
    }
}

/// Opens `name` as a child of `cur`, making it current in `cur`.
fn begin_in(cur: &mut Current, name: &str) -> Result<Inner, ()> {
    match cur {
        Current::Outside => Err(()),
        Current::Untraced => Ok(Inner::Noop),
        Current::Unsampled { inv, id } => {
            if inv.noop_ids {
                Ok(Inner::Noop)
            } else {
                let new = EntityId::random();
                let prev = std::mem::replace(id, new);
                Ok(Inner::Unsampled { id: new, prev })
            }
        }
        Current::Sampled { inv, node } => {
            let (r, id) = inv.begin(node.map(|(r, _)| r), name);
            let prev = node.replace((r, id));
            Ok(Inner::Sampled { inv: inv.clone(), node: r, id, prev })
        }
    }
}

/// Opens a subsegment under `ctx` without touching the thread's current
/// context; `ctx` becomes the context in which it is current. `None` when
/// `ctx` is outside any invocation.
#[cfg(feature = "tracing-bridge")]
pub(crate) fn begin_child(ctx: &mut Current, name: &str) -> Option<Subsegment> {
    begin_in(ctx, name).ok().map(|inner| Subsegment { inner })
}

/// Runs `f` on the document of the current subsegment, if it is recorded.
#[cfg(feature = "tracing-bridge")]
pub(crate) fn with_current_doc(f: impl FnOnce(&mut Document) + Send + 'static) {
    let target = with_current(|c| match c {
        Current::Sampled { inv, node: Some((r, _)) } => Some((inv.clone(), *r)),
        _ => None,
    })
    .flatten();
    if let Some((inv, r)) = target {
        inv.edit(r, f);
    }
}

/// Begins a subsegment named `name` under the current entity and makes it
/// current; it ends when the guard is dropped or [`Subsegment::end`] is
/// called. Characters X-Ray rejects are removed from the name, which is cut
/// to 200 characters.
///
/// ```
/// let sub = lambda_xray_tracing::begin_subsegment("charge card");
/// sub.put_annotation("amount_cents", 1250).ok();
/// if let Err(e) = "x".parse::<u32>() {
///     sub.record_error(&e);
/// }
/// sub.end();
/// ```
///
/// Outside any invocation this applies `AWS_XRAY_CONTEXT_MISSING` (and panics
/// only under `RUNTIME_ERROR`); use [`try_begin_subsegment`] for a `Result`.
pub fn begin_subsegment(name: &str) -> Subsegment {
    match with_current(|c| begin_in(c, name)) {
        Some(Ok(inner)) => Subsegment { inner },
        _ => {
            context_missing("begin_subsegment", true);
            Subsegment { inner: Inner::Noop }
        }
    }
}

/// Like [`begin_subsegment`], but returns `Err(ContextMissing)` outside any
/// invocation instead of applying `AWS_XRAY_CONTEXT_MISSING`.
pub fn try_begin_subsegment(name: &str) -> Result<Subsegment, TraceError> {
    match with_current(|c| begin_in(c, name)) {
        Some(Ok(inner)) => Ok(Subsegment { inner }),
        _ => Err(TraceError::ContextMissing),
    }
}

impl crate::context::TraceContext {
    /// Begins a subsegment named `name` as a child of this context's current
    /// entity, without touching the thread's current context. Returns the
    /// guard and the context to run the subsegment's work under
    /// (`child.wrap(fut)` or `child.enter()`), whose
    /// [`trace_header`](crate::TraceContext::trace_header) names the new
    /// subsegment as `Parent`.
    ///
    /// For integrations whose work is not one lexical scope (an SDK call that
    /// spans several hooks, concurrent calls in one handler). Unsampled or
    /// untraced contexts give a no-op guard and an equivalent context; outside
    /// any invocation both are no-ops and nothing is logged.
    pub fn begin_subsegment(&self, name: &str) -> (Subsegment, crate::context::TraceContext) {
        let mut child = self.0.clone();
        let inner = begin_in(&mut child, name).unwrap_or(Inner::Noop);
        (Subsegment { inner }, crate::context::TraceContext(child))
    }
}

impl Subsegment {
    /// The subsegment's id (`None` when not recorded with an id).
    pub fn id(&self) -> Option<EntityId> {
        match &self.inner {
            Inner::Noop => None,
            Inner::Unsampled { id, .. } | Inner::Sampled { id, .. } => Some(*id),
        }
    }

    /// Whether this subsegment is recorded.
    pub fn is_sampled(&self) -> bool {
        matches!(self.inner, Inner::Sampled { .. })
    }

    /// A library edit (no user code in `f`; see `Invocation::edit`).
    fn edit(&self, f: impl FnOnce(&mut Document) + Send + 'static) {
        if let Inner::Sampled { inv, node, .. } = &self.inner {
            inv.edit(*node, f);
        }
    }

    /// Adds an annotation (indexed, filterable). Keys: 1-500 ASCII letters,
    /// digits or `_`; a bad key returns an error and records nothing. Values:
    /// strings (capped at 1000 chars), numbers or booleans.
    pub fn put_annotation(&self, key: &str, value: impl Into<AnnotationValue>) -> Result<(), TraceError> {
        validate_annotation_key(key)?;
        if self.is_sampled() {
            // Inline for keys up to 24 bytes: no allocation.
            let (key, value) = (compact_str::CompactString::new(key), value.into());
            self.edit(move |d| d.annotations.insert_valid(key, value));
        }
        Ok(())
    }

    /// Adds metadata under the `default` namespace.
    pub fn put_metadata<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), TraceError> {
        self.put_metadata_in(DEFAULT_METADATA_NAMESPACE, key, value)
    }

    /// Adds metadata under `namespace` (not starting with `AWS.`). The value is
    /// serialised to JSON now.
    pub fn put_metadata_in<T: Serialize + ?Sized>(&self, namespace: &str, key: &str, value: &T) -> Result<(), TraceError> {
        validate_metadata_namespace(namespace)?;
        if !self.is_sampled() {
            return Ok(());
        }
        let raw = serde_json::value::to_raw_value(value).map_err(|e| TraceError::MetadataNotSerializable(e.to_string()))?;
        // Inline up to 24 bytes each: no allocation.
        let (namespace, key) = (compact_str::CompactString::new(namespace), compact_str::CompactString::new(key));
        self.edit(move |d| d.metadata.insert_valid(namespace, key, raw));
        Ok(())
    }

    /// Records an error and its `source()` chain in `cause`, and marks the
    /// subsegment `fault` (use [`Subsegment::set_http_status`] or
    /// [`Subsegment::set_error_flags`] for client errors).
    #[track_caller]
    pub fn record_error<E: std::error::Error + 'static>(&self, err: &E) {
        self.record_error_at(err, Some(std::any::type_name::<E>()), Location::caller());
    }

    /// [`Self::record_error`] with the type name and the caller's location given.
    fn record_error_at(&self, err: &(dyn std::error::Error + 'static), type_name: Option<&str>, at: &Location<'_>) {
        if !self.is_sampled() {
            return;
        }
        let cause = cause_from_error(err, type_name, Some(at));
        self.edit(move |d| d.fail(cause));
    }

    /// Records a `dyn Error` (type name unknown) in `cause` and marks `fault`.
    #[track_caller]
    pub fn record_dyn_error(&self, err: &(dyn std::error::Error + 'static)) {
        self.record_error_at(err, None, Location::caller());
    }

    /// Records a failure given as type and message and marks `fault`.
    pub fn record_failure(&self, kind: &str, message: &str) {
        if !self.is_sampled() {
            return;
        }
        let cause = cause_from_message(kind, message, None);
        self.edit(move |d| d.fail(cause));
    }

    /// Sets `http.response.status` and the matching flag: 429 → throttle +
    /// error, 4xx → error, 5xx → fault.
    pub fn set_http_status(&self, status: u16) {
        self.edit(move |d| d.apply_http_status(status));
    }

    /// Sets the error, throttle and fault flags directly.
    pub fn set_error_flags(&self, error: bool, throttle: bool, fault: bool) {
        self.edit(move |d| {
            d.error = error;
            d.throttle = throttle;
            d.fault = fault;
        });
    }

    /// Edits the underlying document (namespace, http, aws...). Does nothing
    /// when not sampled. For integrations; prefer the typed methods.
    ///
    /// `f` runs without any lock held, so it may call the library: edits of
    /// this subsegment made inside it (`put_annotation`, `record_error`...)
    /// are applied right after `f` returns, and subsegments begun inside it
    /// are its children. Only an `update` of this same subsegment inside `f`
    /// does nothing (and returns `false`). Returns whether `f` ran.
    pub fn update(&self, f: impl FnOnce(&mut Document)) -> bool {
        match &self.inner {
            Inner::Sampled { inv, node, .. } => inv.update(*node, f),
            _ => false,
        }
    }

    /// The header to send downstream from this subsegment.
    pub fn trace_header(&self) -> Option<TraceHeader> {
        match &self.inner {
            Inner::Sampled { inv, id, .. } => Some(inv.downstream_header(Some(*id))),
            _ => crate::context::current_trace_header(),
        }
    }

    /// Ends the subsegment now.
    pub fn end(self) {}

    fn finish(&mut self) {
        match std::mem::replace(&mut self.inner, Inner::Noop) {
            Inner::Noop => {}
            Inner::Unsampled { id, prev } => {
                with_current(|c| {
                    if let Current::Unsampled { id: cur, .. } = c
                        && *cur == id
                    {
                        *cur = prev;
                    }
                });
            }
            Inner::Sampled { inv, node, prev, .. } => {
                if std::thread::panicking() {
                    inv.edit(node, |d| {
                        d.fail_unless_caused(|| cause_from_message("panic", "panicked while this subsegment was open", None))
                    });
                }
                with_current(|c| {
                    if let Current::Sampled { inv: cur_inv, node: cur } = c
                        && Arc::ptr_eq(cur_inv, &inv)
                        && cur.map(|(r, _)| r) == Some(node)
                    {
                        *cur = prev;
                    }
                });
                inv.end(node);
            }
        }
    }
}

impl Drop for Subsegment {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Runs `f` inside a subsegment named `name` and returns what it returns.
///
/// ```
/// let total = lambda_xray_tracing::trace("add up", || {
///     lambda_xray_tracing::put_annotation("items", 2).ok();
///     1 + 2
/// });
/// assert_eq!(total, 3); // outside an invocation nothing is recorded
/// ```
pub fn trace<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let _sub = begin_subsegment(name);
    f()
}

/// Runs `fut` inside a subsegment named `name`, begun at the first poll under
/// the context current then, and ended when the future completes or is dropped.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let order = lambda_xray_tracing::in_subsegment("load order", async {
///     lambda_xray_tracing::put_annotation("order_id", "o-123").ok();
///     "o-123"
/// })
/// .await;
/// assert_eq!(order, "o-123");
/// # });
/// ```
pub fn in_subsegment<F: Future>(name: impl Into<Cow<'static, str>>, fut: F) -> InSubsegment<F> {
    InSubsegment { inner: fut, name: name.into(), state: None }
}

pin_project_lite::pin_project! {
    /// A future running inside its own subsegment; see [`in_subsegment`].
    #[must_use = "futures do nothing unless polled"]
    pub struct InSubsegment<F> {
        #[pin]
        inner: F,
        name: Cow<'static, str>,
        // The subsegment and the context the future runs under.
        state: Option<(Subsegment, Current)>,
    }
}

impl<F> std::fmt::Debug for InSubsegment<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InSubsegment").field("name", &self.name).finish()
    }
}

impl<F: Future> Future for InSubsegment<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        if this.state.is_none() {
            let mut ctx = with_current(|c| c.clone()).unwrap_or_default();
            let inner = match begin_in(&mut ctx, this.name) {
                Ok(inner) => inner,
                Err(()) => {
                    context_missing("in_subsegment", true);
                    Inner::Noop
                }
            };
            *this.state = Some((Subsegment { inner }, ctx));
        }
        let Some((_, ctx)) = this.state.as_mut() else { return Poll::Pending };
        let out = run_in(ctx, || this.inner.poll(cx));
        if out.is_ready() {
            // Ends the subsegment.
            *this.state = None;
        }
        out
    }
}

enum Target {
    Node(Arc<Invocation>, NodeRef, EntityId),
    Noop,
}

/// The current subsegment, for the free functions that act on it.
fn current_target(what: &str) -> Result<Target, TraceError> {
    let found = with_current(|c| match c {
        Current::Sampled { inv, node: Some((r, id)) } => Ok(Target::Node(inv.clone(), *r, *id)),
        Current::Sampled { node: None, .. } => Err(TraceError::LambdaSegmentIsReadOnly),
        Current::Untraced | Current::Unsampled { .. } => Ok(Target::Noop),
        Current::Outside => Err(TraceError::ContextMissing),
    })
    .unwrap_or(Err(TraceError::ContextMissing));
    if let Err(TraceError::ContextMissing) = found {
        context_missing(what, false);
    }
    found
}

/// Runs `f` on the current subsegment through a handle that does not end it
/// (`None`: unsampled or untraced, nothing to do): the free functions are the
/// [`Subsegment`] methods applied to the current subsegment.
fn on_current<T>(what: &str, f: impl FnOnce(&Subsegment) -> T) -> Result<Option<T>, TraceError> {
    match current_target(what)? {
        Target::Node(inv, node, id) => {
            let mut view = std::mem::ManuallyDrop::new(Subsegment { inner: Inner::Sampled { inv, node, id, prev: None } });
            let out = f(&view);
            // Never ended by the view: release only what it holds.
            drop(std::mem::replace(&mut view.inner, Inner::Noop));
            Ok(Some(out))
        }
        Target::Noop => Ok(None),
    }
}

/// Adds an annotation to the current subsegment; see [`Subsegment::put_annotation`].
/// On the Lambda segment itself (no subsegment open) this returns
/// [`TraceError::LambdaSegmentIsReadOnly`].
pub fn put_annotation(key: &str, value: impl Into<AnnotationValue>) -> Result<(), TraceError> {
    validate_annotation_key(key)?;
    on_current("put_annotation", |s| s.put_annotation(key, value))?.unwrap_or(Ok(()))
}

/// Adds metadata to the current subsegment under the `default` namespace.
pub fn put_metadata<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), TraceError> {
    put_metadata_in(DEFAULT_METADATA_NAMESPACE, key, value)
}

/// Adds metadata to the current subsegment under `namespace`.
pub fn put_metadata_in<T: Serialize + ?Sized>(namespace: &str, key: &str, value: &T) -> Result<(), TraceError> {
    validate_metadata_namespace(namespace)?;
    on_current("put_metadata", |s| s.put_metadata_in(namespace, key, value))?.unwrap_or(Ok(()))
}

/// Records an error on the current subsegment; see [`Subsegment::record_error`].
#[track_caller]
pub fn record_error<E: std::error::Error + 'static>(err: &E) -> Result<(), TraceError> {
    let at = Location::caller();
    on_current("record_error", |s| s.record_error_at(err, Some(std::any::type_name::<E>()), at))?;
    Ok(())
}

/// Sets the HTTP status (and flag) of the current subsegment.
pub fn set_http_status(status: u16) -> Result<(), TraceError> {
    on_current("set_http_status", |s| s.set_http_status(status))?;
    Ok(())
}

/// Records a captured panic payload on a subsegment (used by the handler layer).
pub(crate) fn record_panic(sub: &Subsegment, payload: &(dyn std::any::Any + Send)) {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".to_owned());
    sub.update(|d| d.fail(cause_from_message("panic", &message, None)));
}

/// The type name to show for an error value of type `E`.
pub(crate) fn error_type_name<E>() -> String {
    short_type_name(std::any::type_name::<E>())
}
