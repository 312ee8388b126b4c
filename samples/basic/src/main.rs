//! A Lambda function traced with `lambda-xray`.
//!
//! Every invocation gets a `## handler` subsegment (added by the wrapper) and,
//! inside it, the subsegments this code opens. The payload picks what happens:
//!
//! - `{"name": "Ada"}`: looks up a profile (async subsegment with an
//!   annotation and metadata), renders a greeting (closure subsegment), and
//!   writes an audit record in a spawned task that keeps the trace context;
//! - `{"fail": true}`: the handler returns an error (the subsegment is marked
//!   `fault` with the error chain as its cause);
//! - `{"panic": true}`: the handler panics (recorded as `fault`, then the
//!   panic propagates as it would without tracing);
//! - `{"children": 250}`: opens that many small subsegments;
//! - `{"metadata_kb": 200}`: attaches that much metadata, spread over a few
//!   subsegments, to show documents being split under the 64 KiB datagram limit;
//! - `{"sleep_ms": 1500}`: sleeps inside a subsegment (to see the deadline flush).

use std::time::Duration;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use lambda_xray_tracing::{FutureExt, in_subsegment, put_annotation, put_metadata_in, trace};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize)]
struct Request {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    fail: bool,
    #[serde(default)]
    panic: bool,
    #[serde(default)]
    children: usize,
    #[serde(default)]
    metadata_kb: usize,
    #[serde(default)]
    sleep_ms: u64,
}

#[derive(Debug, Serialize)]
struct Response {
    message: String,
}

/// An error with a cause, to show how error chains are recorded.
#[derive(Debug)]
struct ProfileError {
    user: String,
    source: std::num::ParseIntError,
}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "profile of {} is corrupt", self.user)
    }
}

impl std::error::Error for ProfileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

async fn load_profile(name: &str, corrupt: bool) -> Result<u32, ProfileError> {
    in_subsegment("load profile", async {
        // Annotations are indexed: filter traces with `annotation.user = "Ada"`.
        let _ = put_annotation("user", name);
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Still inside "load profile" after the await.
        let _ = put_metadata_in("profile", "source", &serde_json::json!({"table": "users", "cached": false}));
        let raw = if corrupt { "not-a-number" } else { "42" };
        raw.parse::<u32>().map_err(|source| {
            let err = ProfileError { user: name.to_owned(), source };
            let _ = lambda_xray_tracing::record_error(&err);
            err
        })
    })
    .await
}

async fn handler(event: LambdaEvent<Request>) -> Result<Response, Error> {
    let req = event.payload;
    if req.panic {
        panic!("the sample was asked to panic");
    }
    let name = req.name.unwrap_or_else(|| "world".to_owned());
    let visits = load_profile(&name, req.fail).await?;

    let message = trace("render greeting", || {
        let _ = put_annotation("visits", visits);
        format!("Hello, {name}! Visit number {visits}.")
    });

    // A spawned task keeps the trace context with `in_current_trace`.
    let audit = tokio::spawn(
        in_subsegment("write audit record", async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let _ = put_annotation("audited", true);
        })
        .in_current_trace(),
    );
    let _ = audit.await;

    for i in 0..req.children {
        let child = lambda_xray_tracing::begin_subsegment("child");
        let _ = child.put_annotation("index", i);
    }

    if req.metadata_kb > 0 {
        // Four subsegments share the requested size.
        let per_part = req.metadata_kb * 1024 / 4;
        for part in 0..4 {
            let sub = lambda_xray_tracing::begin_subsegment("bulk metadata");
            let _ = sub.put_metadata_in("bulk", "blob", &"x".repeat(per_part));
            let _ = sub.put_annotation("part", part);
        }
    }

    if req.sleep_ms > 0 {
        in_subsegment("slow work", tokio::time::sleep(Duration::from_millis(req.sleep_ms))).await;
    }

    Ok(Response { message })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // The one line that adds tracing. (`SAMPLE_WITHOUT_TRACING` runs the same
    // handler untraced; the tests use it to show tracing changes nothing.)
    if std::env::var_os("SAMPLE_WITHOUT_TRACING").is_some() {
        return lambda_runtime::run(service_fn(handler)).await;
    }
    lambda_xray_tracing::run(service_fn(handler)).await
}
