//! Load: 10,000 documents/s for 10 s through the extension, end of
//! invocation flushing, as Lambda drives it. Prints rate and RSS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{LONG, Options, Platform, assert_schema_valid};
use serde_json::json;

const RATE: f64 = 10_000.0;
const SECONDS: f64 = 10.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_10k_documents_per_second_for_10_seconds() {
    let platform = Platform::start(Options::default()).await;
    let extension = platform.extension.as_ref().unwrap();
    let (idle_rss, _) = extension.rss_kib();

    let start = Instant::now();
    let mut sent = 0u64;
    let mut invocations = 0u64;
    let mut peak_rss = 0;
    let mut last = 0.1;
    while start.elapsed().as_secs_f64() < SECONDS {
        // Keep the running average at RATE: each invocation sends what is due
        // by its end (guessed from the previous one), spread over ~90 ms
        // like a busy handler would.
        let began = Instant::now();
        let due = ((start.elapsed().as_secs_f64() + last) * RATE) as u64;
        let docs = due.saturating_sub(sent).min(10_000);
        let (_, response) = platform
            .invoke(json!({"docs": docs, "pad": 100, "spread_ms": 90}))
            .await;
        sent += response["sent"].as_u64().unwrap();
        last = began.elapsed().as_secs_f64();
        invocations += 1;
        peak_rss = peak_rss.max(extension.rss_kib().0);
    }
    let elapsed = start.elapsed();
    let (_, hwm) = extension.rss_kib();

    // Frozen after the last invocation: everything must already be there.
    let arrived = || platform.daemon.fixture_documents().len() as u64;
    assert!(
        common::wait_until(Duration::from_secs(10), || arrived() >= sent).await,
        "only {} of {sent} documents arrived",
        arrived()
    );
    let documents = platform.daemon.documents();
    let sample: Vec<_> = documents.iter().step_by(97).cloned().collect();
    assert_schema_valid(&sample);
    let ids: std::collections::HashSet<_> = documents
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), documents.len(), "no duplicates");

    let counters = platform.shutdown().await.unwrap();
    let rate = sent as f64 / elapsed.as_secs_f64();
    println!(
        "LOAD: {sent} documents in {invocations} invocations over {elapsed:.2?} = {rate:.0} documents/s; \
         extension RSS idle {idle_rss} KiB, max sampled {peak_rss} KiB, VmHWM {hwm} KiB; counters {counters}"
    );
    assert_eq!(counters["dropped"], 0, "zero loss below the bound");
    assert_eq!(counters["malformed"], 0);
    assert_eq!(counters["received"].as_u64().unwrap(), sent);
    assert!(sent as f64 >= RATE * SECONDS * 0.95, "rate too low: {rate:.0}/s");
    // Debug build; the README reports the release build's figures.
    assert!(hwm < 64 * 1024, "RSS unbounded: {hwm} KiB");
    let _ = LONG;
}
