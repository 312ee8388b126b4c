//! Library calls made while the library runs user code, and flags that must
//! not be lost: no deadlock (each scenario runs on a thread of its own and
//! must finish within a bound), nothing dropped.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use lambda_runtime::{Context, LambdaEvent, service_fn};
use lambda_xray_tracing::{Config, Emitter, MemoryTransport, TraceContext, XRayLayer};
use serde_json::{Value, json};
use tower::{Layer, Service};

mod common;
use common::catch_unwind;

const HEADER: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

/// Runs `f` on a thread of its own; fails if it has not returned within 10 s
/// (a deadlock: the thread is left behind).
fn within_bound<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("deadlock: not done after 10 s"))
}

fn invocation(cap: &MemoryTransport) -> TraceContext {
    TraceContext::for_invocation_with(Some(HEADER), None, &Config::default(), Arc::new(Emitter::new(cap.clone())))
}

fn by_name(docs: &[Value], name: &str) -> Value {
    fn find(d: &Value, name: &str) -> Option<Value> {
        if d["name"] == name {
            return Some(d.clone());
        }
        d["subsegments"].as_array()?.iter().find_map(|c| find(c, name))
    }
    docs.iter().find_map(|d| find(d, name)).unwrap_or_else(|| panic!("no {name} in {docs:#?}"))
}

#[test]
fn library_calls_inside_update_do_not_deadlock_and_are_applied() {
    let cap = MemoryTransport::default();
    let ctx = invocation(&cap);
    let ran = within_bound(move || {
        let _entered = ctx.enter();
        let sub = lambda_xray_tracing::begin_subsegment("edited");
        let ran = sub.update(|doc| {
            doc.namespace = Some("remote".into());
            // The same subsegment, through the handle and as the current one.
            sub.put_annotation("through_handle", 1).ok();
            lambda_xray_tracing::put_annotation("through_current", true).ok();
            sub.record_failure("Kind", "recorded inside update");
            // A child begun and ended inside.
            lambda_xray_tracing::trace("child of edited", || ());
            // Its own update inside: does nothing.
            let nested = sub.update(|d| d.user = Some("never".into()));
            doc.origin = Some(format!("nested update ran: {nested}"));
        });
        sub.end();
        ran
    });
    assert!(ran);
    let docs = cap.documents();
    let edited = by_name(&docs, "edited");
    assert_eq!(edited["namespace"], "remote");
    assert_eq!(edited["origin"], "nested update ran: false");
    assert!(edited.get("user").is_none());
    assert_eq!(edited["annotations"]["through_handle"], 1);
    assert_eq!(edited["annotations"]["through_current"], true);
    assert_eq!(edited["fault"], true);
    assert_eq!(edited["cause"]["exceptions"][0]["message"], "recorded inside update");
    assert_eq!(edited["subsegments"][0]["name"], "child of edited");
}

#[test]
fn a_panic_inside_update_keeps_the_document() {
    let cap = MemoryTransport::default();
    let ctx = invocation(&cap);
    within_bound(move || {
        let _entered = ctx.enter();
        let sub = lambda_xray_tracing::begin_subsegment("survives");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sub.update(|doc| {
                doc.namespace = Some("remote".into());
                panic!("inside update");
            })
        }));
        assert!(panicked.is_err());
        sub.put_annotation("after", 1).ok();
    });
    let doc = by_name(&cap.documents(), "survives");
    assert_eq!(doc["namespace"], "remote");
    assert_eq!(doc["annotations"]["after"], 1);
}

/// An error whose `source()` is itself.
#[derive(Debug)]
struct Cyclic;

impl std::fmt::Display for Cyclic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("round and round")
    }
}

impl std::error::Error for Cyclic {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self)
    }
}

#[test]
fn a_cyclic_source_chain_is_cut() {
    let cap = MemoryTransport::default();
    let ctx = invocation(&cap);
    within_bound(move || {
        let _entered = ctx.enter();
        let sub = lambda_xray_tracing::begin_subsegment("cyclic");
        sub.record_error(&Cyclic);
    });
    let doc = by_name(&cap.documents(), "cyclic");
    let exceptions = doc["cause"]["exceptions"].as_array().cloned().unwrap_or_default();
    assert_eq!(exceptions.len(), 10, "the first 10 of the chain");
    assert!(exceptions.iter().all(|e| e["message"] == "round and round"));
    assert!(exceptions[9]["skipped"].as_u64().is_some_and(|n| n > 0));
}

#[tokio::test]
async fn subsegments_the_handler_leaves_open_at_a_panic_are_marked_fault() {
    let cap = MemoryTransport::default();
    let layer = XRayLayer::new().handler_name("test").with_emitter(Config::default(), Arc::new(Emitter::new(cap.clone())));
    let gate = Arc::new(tokio::sync::Notify::new());
    let task_gate = gate.clone();
    let mut svc = layer.layer(service_fn(move |_e: LambdaEvent<Value>| {
        let gate = task_gate.clone();
        async move {
            // A task of the invocation, still running when the handler
            // panics: its subsegment ends later, when no panic is visible.
            let _task = lambda_xray_tracing::spawn(lambda_xray_tracing::in_subsegment("spawned", async move { gate.notified().await }));
            // Held across an await, and an `in_subsegment` scope: dropped
            // while the panic unwinds.
            let held = lambda_xray_tracing::begin_subsegment("held by the future");
            let result = lambda_xray_tracing::in_subsegment("scope", async {
                tokio::task::yield_now().await;
                if lambda_xray_tracing::is_sampled() {
                    panic!("deep down");
                }
                Ok::<Value, lambda_runtime::Error>(json!(null))
            })
            .await;
            drop(held);
            result
        }
    }));
    let mut ctx = Context::default();
    ctx.xray_trace_id = Some(HEADER.to_owned());
    let panicked = catch_unwind(svc.call(LambdaEvent::new(json!({}), ctx))).await;
    assert!(panicked.is_err());
    gate.notify_one();
    for _ in 0..1000 {
        if cap.documents().iter().any(|d| d["name"] == "spawned") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let docs = cap.documents();
    assert_eq!(by_name(&docs, "## test")["cause"]["exceptions"][0]["message"], "deep down");
    for name in ["## test", "held by the future", "scope", "spawned"] {
        let doc = by_name(&docs, name);
        assert_eq!(doc["fault"], true, "{name}: {doc:#}");
        assert!(doc["cause"]["exceptions"][0]["message"].is_string(), "{name}: {doc:#}");
    }
}
