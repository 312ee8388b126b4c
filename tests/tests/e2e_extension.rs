//! End-to-end: the real `sample-basic` function (lambda-xray) and the real
//! lambda-xray extension on the local platform, with freeze between
//! invocations, as Lambda runs them.

use std::time::Duration;

use lambda_xray_e2e::platform::{Options, Platform, assert_schema_valid};
use lambda_xray_e2e::{Outcome, flatten, new_trace_header};
use serde_json::json;

const T: Duration = Duration::from_secs(10);

fn sample_with_extension() -> Options {
    Options { function: "sample-basic", ..Options::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_finds_the_extension_and_its_documents_arrive_before_the_freeze() {
    let platform = Platform::start(sample_with_extension()).await;
    let mut roots = Vec::new();
    for name in ["Ada", "Grace", "Linus"] {
        let (header, root, parent) = new_trace_header(true);
        let outcome = platform.invoke_outcome(json!({"name": name}), Some(&header), T).await;
        assert_eq!(outcome, Outcome::Response(json!({"message": format!("Hello, {name}! Visit number 42.")})));
        // `invoke_outcome` returns once both processes called `next` and were
        // frozen: the invocation's documents must already be at the daemon.
        let docs = platform.daemon.documents();
        let handler: Vec<_> = docs.iter().filter(|d| d["trace_id"] == root.as_str() && d["name"] == "## handler").collect();
        assert_eq!(handler.len(), 1, "{name}: handler subsegment not forwarded before the freeze");
        assert_eq!(handler[0]["parent_id"], parent.as_str());
        roots.push(root);
    }
    let (counters, daemon) = platform.shutdown_keep_daemon().await;
    // The library marks each invocation's last document in its header; the
    // daemon gets the plain header.
    for datagram in daemon.datagrams() {
        assert!(datagram.starts_with(b"{\"format\":\"json\",\"version\":1}\n"), "{}", String::from_utf8_lossy(&datagram));
    }
    let docs = daemon.documents();
    assert_schema_valid(&docs);
    // The extension adds each invocation's platform.report as a subsegment of it.
    for root in &roots {
        let entities = flatten(&docs.iter().filter(|d| d["trace_id"] == root.as_str()).cloned().collect::<Vec<_>>());
        let report: Vec<_> = entities.iter().filter(|(_, d)| d["name"] == "Lambda report").collect();
        assert_eq!(report.len(), 1, "report subsegment for {root}");
        assert!(report[0].1["annotations"]["billed_duration_ms"].is_number());
    }
    let counters = counters.expect("counters at shutdown");
    assert_eq!(counters["dropped"], 0);
    assert_eq!(counters["malformed"], 0);
    assert_eq!(counters["buffered"], 0);
    // The library found the extension's Unix socket and sent everything there.
    assert!(counters["received"].as_u64() >= Some(3), "{counters}");
    assert_eq!(counters["received_unix"], counters["received"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_the_same_without_the_extension_or_after_it_dies() {
    let expected = Outcome::Response(json!({"message": "Hello, Ada! Visit number 42."}));
    let absent = Platform::start(Options { extension: false, ..sample_with_extension() }).await;
    let (header, root, _) = new_trace_header(true);
    assert_eq!(absent.invoke_outcome(json!({"name": "Ada"}), Some(&header), T).await, expected);
    // Without the extension the function sends to the daemon itself.
    let docs = absent.daemon.wait_for(T, |d| d.iter().any(|d| d["trace_id"] == root.as_str())).await.expect("direct to the daemon");
    assert_schema_valid(&docs);

    let mut killed = Platform::start(Options { freeze: false, ..sample_with_extension() }).await;
    assert_eq!(killed.invoke_outcome(json!({"name": "Ada"}), Some(&new_trace_header(true).0), T).await, expected);
    killed.kill_extension().await;
    // The extension's port now refuses; the first send there is lost, and
    // from the refusal on the function sends to the daemon it was given.
    for _ in 0..3 {
        assert_eq!(killed.invoke_outcome(json!({"name": "Ada"}), Some(&new_trace_header(true).0), T).await, expected);
    }
    let (header, root, _) = new_trace_header(true);
    assert_eq!(killed.invoke_outcome(json!({"name": "Ada"}), Some(&header), T).await, expected);
    killed
        .daemon
        .wait_for(T, |d| d.iter().any(|d| d["trace_id"] == root.as_str() && d["name"] == "## handler"))
        .await
        .expect("after the extension died, documents reach the daemon directly");
}
