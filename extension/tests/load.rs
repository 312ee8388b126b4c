//! Load: 10,000 documents/s for 10 s through the extension, end of
//! invocation flushing, as Lambda drives it. Prints rate and RSS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lambda_xray_e2e::platform as common;

use std::io::Write;
use std::time::Instant;

use common::{Options, Platform, assert_schema_valid};
use serde_json::json;

const RATE: f64 = 10_000.0;
const SECONDS: f64 = 10.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_10k_documents_per_second_for_10_seconds() {
    let mut platform = Platform::start(Options::default()).await;
    let extension = platform.extension.as_ref().unwrap();
    let extension_pid = extension.pid;
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
        let docs = due.saturating_sub(sent).min(4_000);
        let (_, response) = platform.invoke(json!({"docs": docs, "pad": 100, "spread_ms": docs / 15})).await;
        sent += response["sent"].as_u64().unwrap();
        last = began.elapsed().as_secs_f64();
        invocations += 1;
        peak_rss = peak_rss.max(platform.extension.as_ref().unwrap().rss_kib().0);
    }
    let elapsed = start.elapsed();
    let (_, hwm) = platform.extension.as_ref().unwrap().rss_kib();
    let cpu = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("").split(' ').collect();
        fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    let cpu_ticks = (cpu(extension_pid), cpu(platform.function.pid));

    // Frozen after the last invocation, so the extension cannot send more:
    // what is still coming was already in the daemon's socket.
    common::wait_until(std::time::Duration::from_secs(10), || platform.daemon.count() as u64 >= sent + invocations - 1).await;
    let arrived = platform.daemon.fixture_documents().len() as u64;
    let daemon = std::mem::replace(&mut platform.daemon, lambda_xray_e2e::Daemon::start().unwrap());
    let counters = platform.shutdown().await.unwrap();
    let rate = sent as f64 / elapsed.as_secs_f64();
    // Written straight to stderr, which the test harness does not capture,
    // so the figures show in a plain `cargo test` run.
    let _ = writeln!(
        std::io::stderr(),
        "LOAD: {sent} documents in {invocations} invocations over {elapsed:.2?} = {rate:.0} documents/s; \
         extension RSS idle {idle_rss} KiB, max sampled {peak_rss} KiB, VmHWM {hwm} KiB; CPU ticks (extension, function) {cpu_ticks:?}; counters {counters}"
    );
    assert_eq!(counters["dropped"], 0, "zero loss below the bound");
    assert_eq!(counters["received"].as_u64().unwrap(), sent, "intake lost none");
    assert_eq!(arrived, sent, "all arrived before the last freeze");
    let documents = daemon.documents();
    let sample: Vec<_> = documents.iter().step_by(97).cloned().collect();
    assert_schema_valid(&sample);
    let ids: std::collections::HashSet<_> = documents.iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), documents.len(), "no duplicates");
    assert_eq!(counters["malformed"], 0);
    assert_eq!(counters["received"].as_u64().unwrap(), sent);
    assert!(sent as f64 >= RATE * SECONDS * 0.95, "rate too low: {rate:.0}/s");
    // Debug build; the README reports the release build's figures.
    assert!(hwm < 64 * 1024, "RSS unbounded: {hwm} KiB");
}
