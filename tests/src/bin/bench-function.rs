//! The function the `function_cpu` benchmark runs (`tests/benches/function_cpu.rs`).
//!
//! `BENCH_MODE=traced`: the handler runs under `lambda_xray_tracing::run` (the
//! `## handler` subsegment, `ColdStart`/`Service` annotations, the response
//! captured as metadata) and opens 10 child subsegments with one annotation
//! each. Any other value: plain `lambda_runtime::run(service_fn(..))` doing the
//! same non-tracing work. Payload `{"n": <u64>}`, response `{"sum": <u64>}`.
//! `BENCH_CHILDREN` sets the number of child subsegments (default 10).
//! `BENCH_RUNTIME=current_thread` runs it on tokio's single-threaded runtime
//! instead of `#[tokio::main]`'s multi-threaded one.

use std::hint::black_box;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Request {
    n: u64,
}

#[derive(Serialize)]
struct Response {
    sum: u64,
}

/// The work of one step: a little arithmetic the optimiser cannot drop.
fn step(seed: u64, i: u64) -> u64 {
    black_box(seed.wrapping_mul(31).wrapping_add(i))
}

async fn untraced(event: LambdaEvent<Request>) -> Result<Response, Error> {
    let mut sum = 0u64;
    for i in 0..10 {
        sum = sum.wrapping_add(step(event.payload.n, i));
    }
    Ok(Response { sum })
}

async fn traced(event: LambdaEvent<Request>) -> Result<Response, Error> {
    let mut sum = 0u64;
    // Read once: an environment lookup per invocation would be counted as tracing.
    static CHILDREN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let children = *CHILDREN.get_or_init(|| std::env::var("BENCH_CHILDREN").ok().and_then(|v| v.parse().ok()).unwrap_or(10));
    for i in 0..children {
        let sub = lambda_xray_tracing::begin_subsegment("step");
        let _ = sub.put_annotation("index", i);
        sum = sum.wrapping_add(step(event.payload.n, i));
        sub.end();
    }
    Ok(Response { sum })
}

fn main() -> Result<(), Error> {
    // `#[tokio::main]`'s runtime (multi-threaded), or with
    // `BENCH_RUNTIME=current_thread` the single-threaded one.
    let runtime = match std::env::var("BENCH_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    runtime.block_on(async {
        if std::env::var("BENCH_MODE").as_deref() == Ok("traced") {
            lambda_xray_tracing::run(service_fn(traced)).await
        } else {
            lambda_runtime::run(service_fn(untraced)).await
        }
    })
}
