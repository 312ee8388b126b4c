//! End-to-end: the real `sample-basic` function (lambda_runtime + lambda-xray)
//! runs as a child process against a local Runtime API, sending to a UDP
//! listener standing in for the X-Ray daemon.

use std::time::Duration;

use lambda_xray_e2e::platform::{Options, Platform};
use lambda_xray_e2e::{Daemon, Outcome, flatten, new_trace_header, parse_datagram, schema};
use serde_json::{Value, json};

type R = Result<(), lambda_xray_e2e::Error>;
const T: Duration = Duration::from_secs(10);

/// `sample-basic` sending straight to the daemon (no extension, no freeze:
/// the extension's own tests cover those).
async fn start(extra: &[(&'static str, String)]) -> Platform {
    let mut function_env = vec![("POWERTOOLS_SERVICE_NAME", "e2e".to_owned())];
    function_env.extend(extra.iter().cloned());
    Platform::start(Options { extension: false, freeze: false, function: "sample-basic", function_env, ..Options::default() }).await
}

/// Every datagram parses as header + JSON and validates against the schema.
fn check_all_datagrams(daemon: &Daemon) -> Result<Vec<Value>, lambda_xray_e2e::Error> {
    let mut docs = Vec::new();
    for d in daemon.datagrams() {
        assert!(d.len() <= 64 * 1024, "datagram of {} bytes", d.len());
        let doc = parse_datagram(&d)?;
        schema::validate(&doc)?;
        docs.push(doc);
    }
    Ok(docs)
}

fn find<'a>(entities: &'a [(String, Value)], name: &str) -> Vec<&'a (String, Value)> {
    entities.iter().filter(|(_, d)| d["name"] == name).collect()
}

fn handler_done(root: &str) -> impl Fn(&[Value]) -> bool + '_ {
    move |docs| docs.iter().any(|d| d["trace_id"] == root && d["name"] == "## handler" && d["end_time"].is_number())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_invocations_nest_under_the_lambda_segment() -> R {
    let function = start(&[]).await;
    let daemon = &function.daemon;
    let mut cold_starts = Vec::new();
    for name in ["Ada", "Grace"] {
        let (header, root, parent) = new_trace_header(true);
        let outcome = function.invoke_outcome(json!({"name": name}), Some(&header), T).await;
        assert_eq!(outcome, Outcome::Response(json!({"message": format!("Hello, {name}! Visit number 42.")})));
        daemon.wait_for(T, handler_done(&root)).await?;
        let docs: Vec<Value> = check_all_datagrams(daemon)?.into_iter().filter(|d| d["trace_id"] == root.as_str()).collect();
        // One closed subtree: one document.
        assert_eq!(docs.len(), 1, "{docs:#?}");
        let handler = &docs[0];
        assert_eq!(handler["type"], "subsegment");
        assert_eq!(handler["parent_id"], parent.as_str());
        assert_eq!(handler["annotations"]["Service"], "e2e");
        assert_eq!(handler["metadata"]["e2e"]["handler response"]["message"], format!("Hello, {name}! Visit number 42."));
        assert!(handler.get("fault").is_none());
        cold_starts.push(handler["annotations"]["ColdStart"].clone());

        let entities = flatten(&docs);
        let handler_id = handler["id"].as_str().unwrap_or_default();
        for child in ["load profile", "render greeting", "write audit record"] {
            let found = find(&entities, child);
            assert_eq!(found.len(), 1, "{child}");
            let (parent_id, doc) = found[0];
            // Nested in the handler, including the spawned task's subsegment.
            assert_eq!(parent_id, handler_id, "{child}");
            assert!(doc["start_time"].as_f64() >= handler["start_time"].as_f64());
            assert!(doc["end_time"].as_f64() <= handler["end_time"].as_f64());
        }
        let (_, profile) = find(&entities, "load profile")[0];
        assert_eq!(profile["annotations"]["user"], name);
        // Put after an `.await`: the context survived it.
        assert_eq!(profile["metadata"]["profile"]["source"]["table"], "users");
        assert_eq!(find(&entities, "write audit record")[0].1["annotations"]["audited"], true);
        assert_eq!(find(&entities, "render greeting")[0].1["annotations"]["visits"], 42);
        daemon.clear();
    }
    assert_eq!(cold_starts, vec![json!(true), json!(false)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_untraced_and_malformed_headers_send_nothing() -> R {
    let function = start(&[]).await;
    let daemon = &function.daemon;
    let expected = Outcome::Response(json!({"message": "Hello, Ada! Visit number 42."}));
    let (unsampled, root, parent) = new_trace_header(false);
    let headers: Vec<Option<String>> = vec![
        Some(unsampled),
        None,
        Some("Root=;".to_owned()),
        Some(format!("Root={root}")),
        Some(format!("Root={root};Parent={parent};Sampled=1;Sampled=1")),
        Some(format!("Root={root};Parent=xyz;Sampled=1")),
        Some("x".repeat(10 * 1024)),
    ];
    for h in &headers {
        let outcome = function.invoke_outcome(json!({"name": "Ada"}), h.as_deref(), T).await;
        assert_eq!(outcome, expected, "header {h:?}");
    }
    // A sampled invocation afterwards proves the daemon path works, and is all that arrives.
    let (header, root, _) = new_trace_header(true);
    function.invoke_outcome(json!({"name": "Ada"}), Some(&header), T).await;
    let docs = daemon.wait_for(T, handler_done(&root)).await?;
    let docs_after = daemon.settle(Duration::from_millis(200)).await?;
    assert_eq!(docs.len(), 1);
    assert_eq!(docs_after.len(), 1);
    assert!(docs_after.iter().all(|d| d["trace_id"] == root.as_str()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_error_is_a_fault_with_the_error_chain() -> R {
    let function = start(&[]).await;
    let daemon = &function.daemon;
    let (header, root, _) = new_trace_header(true);
    let outcome = function.invoke_outcome(json!({"name": "Edsger", "fail": true}), Some(&header), T).await;
    let Outcome::Error { error_message, .. } = &outcome else { panic!("expected an error, got {outcome:?}") };
    assert_eq!(error_message, "profile of Edsger is corrupt");

    daemon.wait_for(T, handler_done(&root)).await?;
    let docs = check_all_datagrams(daemon)?;
    let entities = flatten(&docs);
    let (_, handler) = find(&entities, "## handler")[0];
    assert_eq!(handler["fault"], true);
    let exceptions = handler["cause"]["exceptions"].as_array().cloned().unwrap_or_default();
    assert_eq!(exceptions.len(), 2, "{handler:#}");
    assert_eq!(exceptions[0]["message"], "profile of Edsger is corrupt");
    assert_eq!(exceptions[0]["cause"], exceptions[1]["id"]);
    assert_eq!(exceptions[1]["message"], "invalid digit found in string");
    assert_eq!(exceptions[1]["type"], "ParseIntError");
    assert_eq!(handler["metadata"]["e2e"]["handler error"], "profile of Edsger is corrupt");

    let (_, profile) = find(&entities, "load profile")[0];
    assert_eq!(profile["fault"], true);
    assert_eq!(profile["cause"]["exceptions"][0]["type"], "ProfileError");
    assert!(profile["cause"]["exceptions"][0]["stack"][0]["path"].as_str().unwrap_or("").ends_with("main.rs"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_recorded_and_reported_exactly_as_without_tracing() -> R {
    let traced = start(&[]).await;
    let daemon = &traced.daemon;
    let untraced = start(&[("SAMPLE_WITHOUT_TRACING", "1".to_owned())]).await;
    let (header, root, _) = new_trace_header(true);
    let with = traced.invoke_outcome(json!({"panic": true}), Some(&header), T).await;
    let without = untraced.invoke_outcome(json!({"panic": true}), Some(&new_trace_header(true).0), T).await;
    assert!(matches!(with, Outcome::Error { .. }), "{with:?}");
    assert_eq!(with, without);

    daemon.wait_for(T, handler_done(&root)).await?;
    let docs = check_all_datagrams(daemon)?;
    assert!(docs.iter().all(|d| d["trace_id"] == root.as_str()), "the disabled function sent something");
    let handler = &docs[0];
    assert_eq!(handler["fault"], true);
    assert_eq!(handler["cause"]["exceptions"][0]["message"], "the sample was asked to panic");

    // The function keeps serving.
    let after = traced.invoke_outcome(json!({"name": "Ada"}), Some(&new_trace_header(true).0), T).await;
    assert_eq!(after, Outcome::Response(json!({"message": "Hello, Ada! Visit number 42."})));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_is_split_into_datagrams_under_64_kib() -> R {
    let function = start(&[]).await;
    let daemon = &function.daemon;
    let (header, root, _) = new_trace_header(true);
    function.invoke_outcome(json!({"metadata_kb": 200}), Some(&header), T).await;
    daemon.wait_for(T, handler_done(&root)).await?;
    let sizes: Vec<usize> = daemon.datagrams().iter().map(Vec::len).collect();
    assert!(sizes.len() > 1);
    assert!(sizes.iter().all(|&s| s <= 63 * 1024), "{sizes:?}");
    let docs = check_all_datagrams(daemon)?;
    let entities = flatten(&docs);
    let handler_id = find(&entities, "## handler")[0].1["id"].clone();
    let bulk = find(&entities, "bulk metadata");
    assert_eq!(bulk.len(), 4);
    for (parent, doc) in bulk {
        assert_eq!(parent.as_str(), handler_id.as_str().unwrap_or(""));
        // Not truncated: every byte of each 50 KiB blob arrived.
        assert_eq!(doc["metadata"]["bulk"]["blob"].as_str().map(str::len), Some(200 * 1024 / 4));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_children_stream_out_and_all_arrive_once() -> R {
    let function = start(&[]).await;
    let daemon = &function.daemon;
    let (header, root, _) = new_trace_header(true);
    function.invoke_outcome(json!({"children": 250}), Some(&header), T).await;
    daemon.wait_for(T, handler_done(&root)).await?;
    let docs = check_all_datagrams(daemon)?;
    let entities = flatten(&docs);
    let mut indexes: Vec<i64> = find(&entities, "child").iter().filter_map(|(_, d)| d["annotations"]["index"].as_i64()).collect();
    indexes.sort();
    assert_eq!(indexes, (0..250).collect::<Vec<i64>>());
    // Streamed past the threshold of 100 completed children, not held until the end.
    assert!(docs.len() > 100, "{} documents", docs.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_is_flushed_before_the_deadline_of_a_function_that_times_out() -> R {
    let function = start(&[]).await;
    let daemon = &function.daemon;
    let (header, root, parent) = new_trace_header(true);
    // 1 s deadline, 20 s of work: Lambda would kill it at the deadline.
    let started = std::time::Instant::now();
    let invocation = function.invoke_outcome(json!({"name": "Ada", "sleep_ms": 20_000}), Some(&header), Duration::from_millis(1000));
    tokio::pin!(invocation);
    let flushed = daemon.wait_for(T, |docs| {
        docs.iter().any(|d| d["trace_id"] == root.as_str() && d["name"] == "## handler" && d["in_progress"] == true)
            && docs.iter().any(|d| d["name"] == "slow work" && d["in_progress"] == true)
    });
    let docs = tokio::select! {
        docs = flushed => docs?,
        outcome = &mut invocation => panic!("the invocation ended before the deadline flush: {outcome:?}"),
    };
    let flushed_after = started.elapsed();
    assert!(flushed_after < Duration::from_millis(1500), "flushed after {flushed_after:?}");
    for d in &docs {
        schema::validate(d)?;
    }
    let entities = flatten(&docs);
    let (handler_parent, _) = find(&entities, "## handler")[0];
    assert_eq!(handler_parent, &parent);
    // Completed work is there, complete.
    for done in ["load profile", "render greeting", "write audit record"] {
        let found = find(&entities, done);
        assert_eq!(found.len(), 1, "{done}");
        assert!(found[0].1["end_time"].is_number());
    }
    // The simulator does not enforce timeouts: dropping the platform kills
    // the function, as Lambda would at the deadline.
    Ok(())
}
