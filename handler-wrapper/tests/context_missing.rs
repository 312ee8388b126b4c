//! `AWS_XRAY_CONTEXT_MISSING=RUNTIME_ERROR` and init-time behaviour. A test
//! binary of its own: it sets the variable before the settings are first read.

use std::sync::Arc;

use lambda_xray_tracing::{Config, Emitter, NullTransport, TraceContext, TraceError};

#[test]
#[allow(unsafe_code)]
fn init_work_is_dropped_and_runtime_error_applies_after() {
    // SAFETY: the only test in this binary, run before any other thread reads the environment.
    unsafe { std::env::set_var("AWS_XRAY_CONTEXT_MISSING", "RUNTIME_ERROR") };

    // Init (before any invocation): dropped silently, even under RUNTIME_ERROR.
    let sub = lambda_xray_tracing::begin_subsegment("init work");
    assert!(!sub.is_sampled());
    drop(sub);

    let ctx = TraceContext::for_invocation_with(
        Some("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"),
        None,
        &Config::from_env(),
        Arc::new(Emitter::new(NullTransport)),
    );
    {
        let _entered = ctx.enter();
        assert!(lambda_xray_tracing::begin_subsegment("inside").is_sampled());
    }

    // After an invocation has started, a call with no context is a runtime error.
    let panicked = std::panic::catch_unwind(|| drop(lambda_xray_tracing::begin_subsegment("lost context")));
    let message = panicked.err().and_then(|p| p.downcast_ref::<String>().cloned()).unwrap_or_default();
    assert!(message.contains("RUNTIME_ERROR"), "{message}");
    assert_eq!(lambda_xray_tracing::try_begin_subsegment("lost").err(), Some(TraceError::ContextMissing));
    assert_eq!(lambda_xray_tracing::put_annotation("k", 1), Err(TraceError::ContextMissing));
}
