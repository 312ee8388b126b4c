//! End-to-end: `sample-instrumented` (a function instrumented with `tracing`,
//! plus `SubsegmentLayer`) produces the expected subsegment tree.

use std::time::Duration;

use lambda_xray_e2e::platform::{Options, Platform};
use lambda_xray_e2e::{Outcome, flatten, new_trace_header, parse_datagram, schema};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instrumented_spans_become_a_schema_valid_subsegment_tree() -> Result<(), lambda_xray_e2e::Error> {
    let function =
        Platform::start(Options { extension: false, freeze: false, function: "sample-instrumented", ..Options::default() }).await;
    let daemon = &function.daemon;

    // Unsampled: same answer, nothing sent.
    let unsampled = function.invoke_outcome(json!({"items": 3}), Some(&new_trace_header(false).0), T).await;
    assert_eq!(unsampled, Outcome::Response(json!({"total": 36})));

    let (header, root, parent) = new_trace_header(true);
    let outcome = function.invoke_outcome(json!({"items": 3, "bad_item": 1}), Some(&header), T).await;
    assert_eq!(outcome, Outcome::Response(json!({"total": 24})));
    let docs = daemon.wait_for(T, |d| d.iter().any(|d| d["name"] == "## handler" && d["trace_id"] == root.as_str())).await?;
    let docs = {
        let settled = daemon.settle(Duration::from_millis(200)).await?;
        assert!(settled.len() >= docs.len());
        settled
    };
    for raw in daemon.datagrams() {
        schema::validate(&parse_datagram(&raw)?)?;
    }
    assert!(docs.iter().all(|d| d["trace_id"] == root.as_str()), "the unsampled invocation sent something");

    let entities = flatten(&docs);
    let by_name = |n: &str| -> Vec<(String, Value)> { entities.iter().filter(|(_, d)| d["name"] == n).cloned().collect() };
    let id_of = |n: &str| by_name(n).first().map(|(_, d)| d["id"].as_str().unwrap_or("").to_owned()).unwrap_or_default();

    let handler = by_name("## handler");
    assert_eq!(handler.len(), 1);
    assert_eq!(handler[0].0, parent);
    let order = by_name("handle_order");
    assert_eq!(order.len(), 1);
    assert_eq!(order[0].0, id_of("## handler"));
    assert_eq!(order[0].1["annotations"]["items"], 3);

    let items = by_name("price_item");
    assert_eq!(items.len(), 3);
    for (p, d) in &items {
        assert_eq!(p, &id_of("handle_order"));
        let item = d["annotations"]["item"].as_u64().unwrap_or(99);
        assert_eq!(d["metadata"]["tracing"]["sku"], format!("sku-{item}"));
        if item == 1 {
            assert_eq!(d["fault"], true);
            assert_eq!(d["annotations"]["bad"], true);
            let msg = d["cause"]["exceptions"][0]["message"].as_str().unwrap_or("");
            assert!(msg.starts_with("price lookup failed"), "{msg}");
        } else {
            assert!(d.get("fault").is_none(), "{d:#}");
        }
    }
    // The spawned, instrumented task and the explicit subsegment nest under the span.
    eprintln!("{}", lambda_xray_e2e::waterfall::terminal(&lambda_xray_e2e::waterfall::layout(&docs)));
    for child in ["quote_shipping", "persist order"] {
        let found = by_name(child);
        assert_eq!(found.len(), 1, "{child}");
        assert_eq!(found[0].0, id_of("handle_order"), "{child}");
    }
    // The runtime's own spans are not there.
    assert!(entities.iter().all(|(_, d)| !d["name"].as_str().unwrap_or("").contains("Lambda runtime")));
    assert_eq!(entities.len(), 7);
    Ok(())
}
