//! What the extension adds to every invocation after the function's response:
//! Lambda's `PostRuntimeExtensionsDuration` (here from the runtime's response
//! to the extension's `next`), billed and blocking the environment's next request.
//!
//! Runs the release binaries on the local platform (`lambda_xray_e2e::platform`)
//! with the Telemetry API modelled as Lambda delivers it (no event sooner than
//! 25 ms), freeze between invocations, and a timing proxy in front of the
//! Lambda APIs for microsecond figures:
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo bench -p lambda-xray-e2e --bench post_runtime      # or scripts/bench.sh
//! ```
//!
//! `POST_RUNTIME_INVOCATIONS` sets the number of invocations per case (300).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use lambda_xray_e2e::platform::{Options, Platform};
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn case(label: &str, function: &'static str, extension: bool, payload: serde_json::Value, n: usize) {
    let platform = Platform::start(Options { extension, function, clock: true, ..Options::default() }).await;
    let mut post = Vec::with_capacity(n);
    for _ in 0..n {
        let (request_id, _) = platform.invoke(payload.clone()).await;
        let clock_post = platform.post_runtime(&request_id).await;
        post.push(if extension { clock_post.expect("extension next timed") } else { Duration::ZERO });
    }
    let (counters, daemon) = platform.shutdown_keep_daemon().await;
    post.sort();
    println!(
        "BENCH post-runtime {label}: {n} invocations: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms \
         datagrams at the daemon {}, extension counters {}",
        ms(percentile(&post, 0.5)),
        ms(percentile(&post, 0.99)),
        ms(post[post.len() - 1]),
        daemon.count(),
        counters.map_or("-".to_owned(), |c| c.to_string()),
    );
}

fn main() {
    let n: usize = std::env::var("POST_RUNTIME_INVOCATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let ada = json!({"name": "Ada"});
        case("sample-basic with the extension", "sample-basic", true, ada.clone(), n).await;
        case("sample-basic without the extension", "sample-basic", false, ada, n).await;
        // A function that never says its documents are sent (another
        // language, an older library): the extension waits for runtimeDone.
        case("fixture function (no done message) with the extension", "test-fixture-function", true, json!({"docs": 10}), n / 3).await;
    });
}
