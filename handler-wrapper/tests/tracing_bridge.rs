//! The `tracing` bridge: spans as subsegments, sharing the explicit API's context.

use std::sync::Arc;

use lambda_xray_tracing::tracing_bridge::SubsegmentLayer;
use lambda_xray_tracing::{Config, Emitter, MemoryTransport, TraceContext};
use tracing::Instrument;
use tracing_subscriber::prelude::*;

fn invocation(cap: &MemoryTransport, sampled: bool) -> TraceContext {
    let header = format!("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled={}", u8::from(sampled));
    TraceContext::for_invocation_with(Some(&header), None, &Config::default(), Arc::new(Emitter::new(cap.clone())))
}

#[tracing::instrument(fields(user = "ada", attempt = 2_u64, ok = true, detail = ?vec![1, 2]))]
async fn outer() {
    let _explicit = lambda_xray_tracing::begin_subsegment("explicit");
    // Created inside an explicit subsegment: nests under it, across awaits.
    inner().await;
    tokio::task::yield_now().await;
    lambda_xray_tracing::put_annotation("after_await", true).ok();
}

#[tracing::instrument]
async fn inner() {
    tokio::task::yield_now().await;
    tokio::spawn(async { lambda_xray_tracing::trace("in task", || ()) }.instrument(tracing::info_span!("task span"))).await.ok();
    tracing::error!(code = 7, "inner failed");
}

// Current-thread runtime: `set_default` installs the subscriber for this thread
// only. The spawned task is still polled apart from the main future, so its
// context comes only from the span it is instrumented with. (The end-to-end
// test covers a multi-threaded runtime with a global subscriber.)
#[tokio::test]
async fn spans_and_explicit_subsegments_nest_in_one_tree() {
    let cap = MemoryTransport::default();
    let subscriber = tracing_subscriber::registry().with(SubsegmentLayer::new());
    let _default = tracing::subscriber::set_default(subscriber);
    let ctx = invocation(&cap, true);
    ctx.wrap(async {
        let _root = lambda_xray_tracing::begin_subsegment("## handler");
        outer().await;
        // A span from a skipped target records nothing.
        let _s = tracing::info_span!(target: "lambda_runtime", "Lambda runtime invoke").entered();
    })
    .await;

    let docs = cap.documents();
    assert_eq!(docs.len(), 1, "{docs:#?}");
    let handler = &docs[0];
    let outer = &handler["subsegments"][0];
    assert_eq!(outer["name"], "outer");
    assert_eq!(outer["annotations"]["user"], "ada");
    assert_eq!(outer["annotations"]["attempt"], 2);
    assert_eq!(outer["annotations"]["ok"], true);
    assert_eq!(outer["metadata"]["tracing"]["detail"], "[1, 2]");
    let explicit = &outer["subsegments"][0];
    assert_eq!(explicit["name"], "explicit");
    assert_eq!(explicit["annotations"]["after_await"], true);
    let inner = &explicit["subsegments"][0];
    assert_eq!(inner["name"], "inner");
    assert_eq!(inner["fault"], true);
    assert_eq!(inner["cause"]["exceptions"][0]["message"], "inner failed (code=7)");
    let task_span = &inner["subsegments"][0];
    assert_eq!(task_span["name"], "task span");
    assert_eq!(task_span["subsegments"][0]["name"], "in task");
    assert_eq!(handler["subsegments"].as_array().map(Vec::len), Some(1), "the skipped span added nothing");
}

#[tokio::test]
async fn spans_in_unsampled_invocations_or_outside_record_nothing() {
    let cap = MemoryTransport::default();
    let subscriber = tracing_subscriber::registry().with(SubsegmentLayer::new());
    let _default = tracing::subscriber::set_default(subscriber);
    invocation(&cap, false).wrap(outer()).await;
    outer().await;
    assert!(cap.datagrams().is_empty());
}

#[tokio::test]
async fn target_and_level_choices() {
    let cap = MemoryTransport::default();
    let layer = SubsegmentLayer::new().only_targets(&["tracing_bridge"]).min_level(tracing::Level::INFO);
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    invocation(&cap, true)
        .wrap(async {
            let _root = lambda_xray_tracing::begin_subsegment("## handler");
            let _a = tracing::info_span!("kept").entered();
            let _b = tracing::debug_span!("too detailed").entered();
            let _c = tracing::info_span!(target: "other_crate", "elsewhere").entered();
        })
        .await;
    let docs = cap.documents();
    let names: Vec<&str> = docs[0]["subsegments"].as_array().into_iter().flatten().filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(names, vec!["kept"]);
    assert!(docs[0]["subsegments"][0].get("subsegments").is_none());
}

/// A field value whose `Debug` calls the library and logs (which tracing-core
/// may drop inside a subscriber callback) while the bridge formats it.
struct Loud(usize);

impl std::fmt::Debug for Loud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let _ = lambda_xray_tracing::put_annotation("formatted", true);
        tracing::error!("formatting a loud value");
        f.write_str(&"x".repeat(self.0))
    }
}

#[test]
fn a_field_whose_debug_logs_does_not_deadlock_and_values_are_capped() {
    let cap = MemoryTransport::default();
    let ctx = invocation(&cap, true);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(SubsegmentLayer::new()));
        let _entered = ctx.enter();
        let root = lambda_xray_tracing::begin_subsegment("## handler");
        {
            let span = tracing::info_span!("loud", value = ?Loud(100_000), later = tracing::field::Empty);
            span.record("later", tracing::field::debug(Loud(10)));
            let _in = span.enter();
            for i in 0..100 {
                tracing::error!(attempt = i, "failed again");
            }
        }
        drop(root);
        let _ = tx.send(());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10)).expect("deadlock: not done after 10 s");
    let docs = cap.documents();
    let handler = &docs[0];
    // The annotation made while formatting went to the subsegment current then.
    assert_eq!(handler["annotations"]["formatted"], true);
    let loud = &handler["subsegments"][0];
    assert_eq!(loud["name"], "loud");
    let value = loud["metadata"]["tracing"]["value"].as_str().unwrap_or_default();
    assert_eq!(value.len(), lambda_xray_tracing::tracing_bridge::MAX_FIELD_BYTES, "capped");
    assert!(value.ends_with('…'));
    assert_eq!(loud["metadata"]["tracing"]["later"], "xxxxxxxxxx");
    // 100 ERROR events: the first 32 kept, the rest counted.
    let exceptions = loud["cause"]["exceptions"].as_array().cloned().unwrap_or_default();
    assert_eq!(exceptions.len(), lambda_xray_tracing::tracing_bridge::MAX_EVENT_EXCEPTIONS);
    assert_eq!(exceptions[31]["skipped"], 68);
}
