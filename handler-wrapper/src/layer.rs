//! The `tower` layer that traces each `lambda_runtime` invocation, and a
//! one-line `run` replacement.

use std::any::Any;
use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, UNIX_EPOCH};

use lambda_runtime::{Diagnostic, IntoFunctionResponse, LambdaEvent};
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};

use crate::config::{self, Config};
use crate::context::{Current, TraceContext, run_in};
use crate::emitter::{self, Emitter};
use crate::subsegment::{Subsegment, begin_subsegment, error_type_name, record_panic};

/// True until the first invocation of the process starts.
static COLD_START: AtomicBool = AtomicBool::new(true);

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    subsegment_name: String,
    /// `<handler> response` and `<handler> error`: the metadata keys.
    response_key: String,
    error_key: String,
    service: String,
    capture_response: bool,
    capture_error: bool,
    config: Option<Config>,
    emitter: Option<Arc<Emitter>>,
}

impl Settings {
    fn from_config(c: &Config, config: Option<Config>, emitter: Option<Arc<Emitter>>) -> Self {
        Settings {
            subsegment_name: format!("## {}", c.handler_name),
            response_key: format!("{} response", c.handler_name),
            error_key: format!("{} error", c.handler_name),
            service: c.service_name.clone(),
            capture_response: c.capture_response,
            capture_error: c.capture_error,
            config,
            emitter,
        }
    }
}

/// A [`tower::Layer`] that traces every invocation of the wrapped handler.
///
/// Per invocation it reads the trace header (from `Context::xray_trace_id`,
/// falling back to `_X_AMZN_TRACE_ID`), opens a `## <handler>` subsegment under
/// the segment Lambda records, annotates it with `ColdStart` and `Service`,
/// captures the response or error as metadata, marks a handler error or panic
/// as `fault`, and sends the finished subtree to the daemon before the
/// response is returned. The handler's result is passed through unchanged,
/// and a panic propagates exactly as it would without the layer.
///
/// ```no_run
/// use lambda_runtime::{service_fn, Error, LambdaEvent};
/// use serde_json::Value;
/// use tower::Layer;
///
/// async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
///     Ok(event.payload)
/// }
///
/// # async fn main_() -> Result<(), Error> {
/// let layer = lambda_xray_tracing::XRayLayer::new().handler_name("orders").capture_response(false);
/// lambda_runtime::run(layer.layer(service_fn(handler))).await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct XRayLayer {
    settings: Arc<Settings>,
}

impl Default for XRayLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl XRayLayer {
    /// A layer configured from the environment (see the README), sending
    /// through the process-wide emitter.
    pub fn new() -> Self {
        XRayLayer { settings: Arc::new(Settings::from_config(config::global(), None, None)) }
    }

    /// A layer that uses `config` for everything: the handler subsegment's
    /// name, the `Service` annotation, what is captured, and for each
    /// invocation sampling, ids, stream limits and the deadline margin; it
    /// sends through an emitter of its own made from `config` (its daemon
    /// and extension addresses). The environment is not read.
    ///
    /// ```no_run
    /// # use lambda_runtime::{service_fn, Error, LambdaEvent};
    /// # use tower::Layer;
    /// # async fn handler(e: LambdaEvent<serde_json::Value>) -> Result<serde_json::Value, Error> { Ok(e.payload) }
    /// # async fn main_() -> Result<(), Error> {
    /// let mut config = lambda_xray_tracing::Config::default();
    /// config.handler_name = "orders".into();
    /// config.capture_response = false;
    /// let traced = lambda_xray_tracing::XRayLayer::from_config(config).layer(service_fn(handler));
    /// lambda_runtime::run(traced).await
    /// # }
    /// ```
    pub fn from_config(config: Config) -> Self {
        let emitter = Arc::new(Emitter::from_config(&config));
        XRayLayer { settings: Arc::new(Settings::from_config(&config, Some(config.clone()), Some(emitter))) }
    }

    /// What this layer was configured with (for the HTTP layers built on it).
    #[cfg_attr(not(feature = "lambda-http"), allow(dead_code))]
    pub(crate) fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    fn edit(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(Arc::make_mut(&mut self.settings));
        self
    }

    /// Names the handler subsegment `## <name>`.
    pub fn handler_name(self, name: &str) -> Self {
        self.edit(|s| {
            s.subsegment_name = format!("## {name}");
            s.response_key = format!("{name} response");
            s.error_key = format!("{name} error");
        })
    }

    /// Sets the `Service` annotation and metadata namespace.
    pub fn service(self, name: &str) -> Self {
        self.edit(|s| s.service = name.to_owned())
    }

    /// Whether to record the response as metadata.
    pub fn capture_response(self, on: bool) -> Self {
        self.edit(|s| s.capture_response = on)
    }

    /// Whether to record the error as metadata.
    pub fn capture_error(self, on: bool) -> Self {
        self.edit(|s| s.capture_error = on)
    }

    /// Uses `config` for each invocation (sampling, ids, stream limits,
    /// deadline margin) and sends through `emitter`, instead of the
    /// process-wide ones (tests, or sending somewhere else). The names and
    /// capture choices set on this builder stay; [`XRayLayer::from_config`]
    /// takes those from the config too.
    pub fn with_emitter(self, config: Config, emitter: Arc<Emitter>) -> Self {
        self.edit(|s| {
            s.config = Some(config);
            s.emitter = Some(emitter);
        })
    }
}

impl<S> Layer<S> for XRayLayer {
    type Service = XRayService<S>;
    fn layer(&self, inner: S) -> XRayService<S> {
        XRayService { inner, settings: self.settings.clone() }
    }
}

/// The service [`XRayLayer`] produces.
#[derive(Debug, Clone)]
pub struct XRayService<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S, A, R> Service<LambdaEvent<A>> for XRayService<S>
where
    S: Service<LambdaEvent<A>, Response = R>,
    S::Error: Debug + 'static,
    R: Serialize,
{
    type Response = R;
    type Error = S::Error;
    type Future = TracedInvocation<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, event: LambdaEvent<A>) -> Self::Future {
        let settings = self.settings.clone();
        let begun = settings.begin(&event.context);
        // Some services do work in `call` itself: run it under the subsegment.
        let (inner, scope) = begun.start(&settings, || self.inner.call(event));
        TracedInvocation { inner, scope, settings }
    }
}

/// An invocation whose context is made but whose handler subsegment is not
/// begun yet (see [`Settings::begin`]).
pub(crate) struct Begun {
    ctx: TraceContext,
    done: Option<InvocationDone>,
}

impl Settings {
    /// Makes one invocation's context: the trace header from `context`,
    /// falling back to `_X_AMZN_TRACE_ID`, its deadline and request id.
    pub(crate) fn begin(&self, context: &lambda_runtime::Context) -> Begun {
        // The Context is per invocation (and the only source in concurrent
        // mode); the environment variable is the fallback.
        let from_env;
        let header = match context.xray_trace_id.as_deref() {
            Some(h) => Some(h),
            None => {
                from_env = std::env::var("_X_AMZN_TRACE_ID").ok();
                from_env.as_deref()
            }
        };
        let deadline = (context.deadline > 0).then(|| UNIX_EPOCH + Duration::from_millis(context.deadline));
        let (ctx, done) = match (&self.config, &self.emitter) {
            (Some(c), Some(e)) => {
                let ctx = TraceContext::for_invocation_with(header, deadline, c, e.clone());
                (ctx, c.enabled.then(|| e.clone()))
            }
            _ => {
                let ctx = TraceContext::for_invocation(header, deadline);
                (ctx, config::global().enabled.then(emitter::global))
            }
        };
        // Only the extension takes the end-of-invocation message.
        let done =
            done.filter(|e| e.sends_to_extension()).map(|emitter| InvocationDone { emitter, request_id: Some(context.request_id.clone()) });
        Begun { ctx, done }
    }
}

impl Begun {
    /// Whether the invocation is recorded.
    #[cfg_attr(not(feature = "lambda-http"), allow(dead_code))]
    pub(crate) fn is_sampled(&self) -> bool {
        self.ctx.is_sampled()
    }

    /// Begins the handler subsegment with its annotations, then runs `call`
    /// (the service's own `call`) under it.
    pub(crate) fn start<T>(self, settings: &Settings, call: impl FnOnce() -> T) -> (T, InvocationScope) {
        let Begun { ctx, done } = self;
        let cold_start = COLD_START.swap(false, Ordering::Relaxed);
        let entered = ctx.enter();
        let sub = begin_subsegment(&settings.subsegment_name);
        if sub.is_sampled() {
            let _ = sub.put_annotation("ColdStart", cold_start);
            let _ = sub.put_annotation("Service", settings.service.as_str());
        }
        let called = call();
        let running = crate::context::current().0;
        drop(entered);
        (called, InvocationScope { ctx: running, sub: Some(sub), invocation: ctx, done })
    }
}

/// One invocation's tracing, from its start to the end of its handler
/// subsegment. Dropped unfinished (the future was dropped), the handler
/// subsegment ends then and the end-of-invocation message is still sent.
pub(crate) struct InvocationScope {
    ctx: Current,
    sub: Option<Subsegment>,
    invocation: TraceContext,
    // Last: dropped (so sent) after everything above, the handler
    // subsegment included.
    done: Option<InvocationDone>,
}

impl InvocationScope {
    /// Runs `f` (a poll of the handler's work) under the invocation's
    /// context, catching a panic.
    pub(crate) fn run<T>(&mut self, f: impl FnOnce() -> T) -> std::thread::Result<T> {
        run_in(&mut self.ctx, || std::panic::catch_unwind(AssertUnwindSafe(f)))
    }

    /// The handler subsegment, until the invocation completes.
    #[cfg_attr(not(feature = "lambda-http"), allow(dead_code))]
    pub(crate) fn subsegment(&self) -> Option<&Subsegment> {
        self.sub.as_ref()
    }

    /// Ends the invocation: `record` writes the outcome on the handler
    /// subsegment, which then ends and is sent, marking the end of the
    /// invocation for the extension. Only the first call does anything.
    pub(crate) fn complete(&mut self, record: impl FnOnce(&Subsegment)) {
        let Some(sub) = self.sub.take() else { return };
        self.invocation.finish();
        // The subsegment ends inside, so that its datagram carries the end of the invocation.
        end_invocation(&mut self.done, move || {
            record(&sub);
            drop(sub);
        });
    }

    /// Ends the invocation after the handler panicked: the handler
    /// subsegment and every subsegment still open are marked `fault`.
    pub(crate) fn panicked(&mut self, payload: &(dyn Any + Send)) {
        let Some(sub) = self.sub.take() else { return };
        self.invocation.finish();
        // Subsegments the handler's future still holds end when it is
        // dropped, after the panic was caught: mark them now.
        self.invocation.fault_open();
        end_invocation(&mut self.done, move || {
            record_panic(&sub, payload);
            drop(sub);
        });
    }
}

/// Tells the extension, when dropped, that the invocation's documents are
/// all sent (see `Emitter::send_invocation_done`), unless the handler
/// subsegment's document already said so (`request_id` taken).
struct InvocationDone {
    emitter: Arc<Emitter>,
    request_id: Option<String>,
}

impl Drop for InvocationDone {
    fn drop(&mut self) {
        if let Some(request_id) = self.request_id.take() {
            self.emitter.send_invocation_done(&request_id);
        }
    }
}

/// Runs `end` (which ends the handler subsegment, the invocation's last
/// document) so that its datagram also marks the end of the invocation, then
/// sends the end-of-invocation control message if no datagram did. One
/// datagram instead of two for a sampled invocation.
fn end_invocation(done: &mut Option<InvocationDone>, end: impl FnOnce()) {
    match done.as_mut().and_then(|d| d.request_id.take()) {
        Some(request_id) => {
            let ((), left) = emitter::with_invocation_done(request_id, end);
            if let Some(d) = done.as_mut() {
                d.request_id = left;
            }
        }
        None => end(),
    }
    drop(done.take());
}

pin_project_lite::pin_project! {
    /// The future of one traced invocation.
    #[must_use = "futures do nothing unless polled"]
    pub struct TracedInvocation<F> {
        #[pin]
        inner: F,
        scope: InvocationScope,
        settings: Arc<Settings>,
    }
}

impl<F> Debug for TracedInvocation<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedInvocation").finish_non_exhaustive()
    }
}

impl<F, R, E> Future for TracedInvocation<F>
where
    F: Future<Output = Result<R, E>>,
    E: Debug + 'static,
    R: Serialize,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        match this.scope.run(|| inner.poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => {
                let settings = &**this.settings;
                this.scope.complete(|sub| record_outcome(sub, settings, &result));
                Poll::Ready(result)
            }
            Err(payload) => {
                this.scope.panicked(&*payload);
                std::panic::resume_unwind(payload)
            }
        }
    }
}

/// Records the response or the error on the handler subsegment.
fn record_outcome<R: Serialize, E: Debug + 'static>(sub: &Subsegment, settings: &Settings, result: &Result<R, E>) {
    if !sub.is_sampled() {
        return;
    }
    match result {
        Ok(response) => {
            if settings.capture_response
                && let Err(e) = sub.put_metadata_in(&settings.service, &settings.response_key, response)
            {
                tracing::debug!(target: "lambda_xray", "response not captured: {e}");
            }
        }
        Err(err) => record_handler_error(sub, settings, err),
    }
}

/// Records the handler's error on its subsegment: `fault`, the error in
/// `cause`, and (if captured) the message as `<handler> error` metadata.
pub(crate) fn record_handler_error<E: Debug + 'static>(sub: &Subsegment, settings: &Settings, err: &E) {
    if !sub.is_sampled() {
        return;
    }
    let any: &dyn Any = err;
    let message = if let Some(boxed) = any.downcast_ref::<lambda_runtime::Error>() {
        sub.record_dyn_error(boxed.as_ref());
        boxed.to_string()
    } else if let Some(d) = any.downcast_ref::<Diagnostic>() {
        sub.record_failure(&d.error_type, &d.error_message);
        d.error_message.clone()
    } else if let Some(s) = any.downcast_ref::<String>() {
        sub.record_failure("String", s);
        s.clone()
    } else if let Some(s) = any.downcast_ref::<&str>() {
        sub.record_failure("str", s);
        (*s).to_owned()
    } else {
        let message = format!("{err:?}");
        sub.record_failure(&error_type_name::<E>(), &message);
        message
    };
    if settings.capture_error {
        let _ = sub.put_metadata_in(&settings.service, &settings.error_key, &message);
    }
}

/// `lambda_runtime::run` with every invocation traced: the one-line way in.
///
/// ```no_run
/// # use lambda_runtime::{service_fn, Error, LambdaEvent};
/// # async fn handler(e: LambdaEvent<serde_json::Value>) -> Result<serde_json::Value, Error> { Ok(e.payload) }
/// # async fn main_() -> Result<(), Error> {
/// lambda_xray_tracing::run(service_fn(handler)).await
/// # }
/// ```
pub async fn run<A, F, R, B, S, D, E>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Service<LambdaEvent<A>, Response = R>,
    F::Future: Future<Output = Result<R, F::Error>>,
    F::Error: Into<Diagnostic> + Debug + 'static,
    A: for<'de> Deserialize<'de>,
    R: IntoFunctionResponse<B, S> + Serialize,
    B: Serialize,
    S: futures_core::Stream<Item = Result<D, E>> + Unpin + Send + 'static,
    D: Into<bytes::Bytes> + Send,
    E: Into<lambda_runtime::Error> + Send + Debug,
{
    lambda_runtime::run(XRayLayer::new().layer(handler)).await
}
