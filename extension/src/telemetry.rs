//! The Telemetry API: our own listener and subscription.
//!
//! The `lambda-extension` crate (1.1) has its own listener, but it does not
//! fit an extension that must never stall the sandbox: it binds in a task
//! that panics when the port is taken and accepts one connection per bind,
//! panicking on an accept error (after which no batch is ever taken again),
//! and it deserialises each batch into a closed enum, so one record of a type
//! it does not know (a new `platform.*` event) makes it answer 400 and lose
//! the whole batch, `platform.runtimeDone` included. Here:
//!
//! * the port is bound first (a busy one is replaced by a free one) and the
//!   subscription names the port actually bound;
//! * accept errors are logged and the loop goes on;
//! * a batch is read record by record: unknown types and records that do not
//!   parse are skipped (counted), the rest is used.
//!
//! Whatever still goes wrong (Lambda stops delivering), the forwarder notices
//! the silence and stops waiting for telemetry (see `forwarder.rs`).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lambda_extension::LogBuffering;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::enrich::{Report, TraceHeader};
use crate::forwarder::ForwarderHandle;

/// Largest batch body read. Lambda's batches reach about twice `maxBytes`
/// (256 KiB here) plus record metadata.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// The shortest buffering Lambda allows: events arrive 25 ms after they happen.
pub const BUFFERING: LogBuffering = LogBuffering { timeout_ms: 25, max_bytes: 262_144, max_items: 1_000 };
/// Telemetry API schema version asked for.
const SCHEMA_VERSION: &str = "2022-12-13";

/// One record of a batch that the extension uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `platform.start`: the invocation began.
    Start {
        /// The invocation.
        request_id: String,
    },
    /// `platform.runtimeDone`: the runtime finished the invocation.
    RuntimeDone {
        /// The invocation.
        request_id: String,
    },
    /// `platform.report`, with the trace header it carries, if any.
    Report(Report, Option<TraceHeader>),
}

/// What one batch held.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    /// The records the extension uses, in order.
    pub events: Vec<Event>,
    /// Records skipped: unknown or unused types, and records that did not parse.
    pub skipped: usize,
}

/// Counts of what the listener took in (one set per process).
pub static STATS: Stats = Stats { batches: AtomicU64::new(0), rejected: AtomicU64::new(0), skipped: AtomicU64::new(0) };

/// Counts of what the listener took in.
#[derive(Debug)]
pub struct Stats {
    /// Batches received.
    pub batches: AtomicU64,
    /// Bodies that were not a JSON array of records (answered 400).
    pub rejected: AtomicU64,
    /// Records skipped (see [`Batch::skipped`]).
    pub skipped: AtomicU64,
}

#[derive(Deserialize)]
struct RawRecord {
    #[serde(rename = "type")]
    kind: String,
    /// Read leniently: a bad time must not lose the record, let alone the batch.
    #[serde(default)]
    time: serde_json::Value,
    #[serde(default)]
    record: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestRecord {
    request_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportRecord {
    request_id: String,
    #[serde(default)]
    status: String,
    metrics: ReportMetrics,
    #[serde(default)]
    tracing: Option<TraceContext>,
}

#[derive(Deserialize)]
struct ReportMetrics {
    #[serde(rename = "durationMs")]
    duration_ms: f64,
    #[serde(rename = "billedDurationMs")]
    billed_duration_ms: u64,
    #[serde(rename = "memorySizeMB")]
    memory_size_mb: u64,
    #[serde(rename = "maxMemoryUsedMB")]
    max_memory_used_mb: u64,
    #[serde(rename = "initDurationMs", default)]
    init_duration_ms: Option<f64>,
}

#[derive(Deserialize)]
struct TraceContext {
    value: String,
}

/// Reads a batch record by record. `Err` only when the body is not a JSON
/// array of objects with a string `type`.
pub fn parse_batch(body: &[u8]) -> Result<Batch, serde_json::Error> {
    let records: Vec<RawRecord> = serde_json::from_slice(body)?;
    let mut batch = Batch::default();
    for raw in records {
        let event = match raw.kind.as_str() {
            "platform.start" => serde_json::from_value::<RequestRecord>(raw.record).ok().map(|r| Event::Start { request_id: r.request_id }),
            "platform.runtimeDone" => {
                serde_json::from_value::<RequestRecord>(raw.record).ok().map(|r| Event::RuntimeDone { request_id: r.request_id })
            }
            "platform.report" => serde_json::from_value::<ReportRecord>(raw.record).ok().map(|r| {
                let report = Report {
                    request_id: r.request_id,
                    status: r.status,
                    time: serde_json::from_value::<chrono::DateTime<chrono::Utc>>(raw.time)
                        .map_or(0.0, |t| t.timestamp_micros() as f64 / 1e6),
                    duration_ms: r.metrics.duration_ms,
                    billed_duration_ms: r.metrics.billed_duration_ms,
                    memory_size_mb: r.metrics.memory_size_mb,
                    max_memory_used_mb: r.metrics.max_memory_used_mb,
                    init_duration_ms: r.metrics.init_duration_ms,
                };
                Event::Report(report, r.tracing.map(|t| TraceHeader::parse(&t.value)))
            }),
            _ => None,
        };
        match event {
            Some(event) => batch.events.push(event),
            None => batch.skipped += 1,
        }
    }
    Ok(batch)
}

/// Binds the listener on `0.0.0.0:port` (Lambda delivers to
/// `sandbox.localdomain`), or on a free port when that one is busy or 0.
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    if port != 0 {
        match TcpListener::bind(any(port)).await {
            Ok(listener) => return Ok(listener),
            Err(e) => log!(Warn, "telemetry port {port} is not available ({e}); using a free one"),
        }
    }
    TcpListener::bind(any(0)).await
}

impl Stats {
    /// One log line: `telemetry batches N, rejected N, records skipped N`.
    pub fn line(&self) -> String {
        format!(
            "telemetry batches {}, rejected {}, records skipped {}",
            self.batches.load(Relaxed),
            self.rejected.load(Relaxed),
            self.skipped.load(Relaxed)
        )
    }
}

/// Serves the listener for ever, handing what arrives to the forwarder.
pub fn spawn(listener: TcpListener, forwarder: ForwarderHandle) {
    tokio::spawn(async move {
        let mut errors: u64 = 0;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let forwarder = forwarder.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| handle(req, forwarder.clone(), &STATS));
                        if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                            log!(Debug, "telemetry connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    // E.g. out of file descriptors: keep serving, without spinning.
                    errors += 1;
                    if errors.is_power_of_two() {
                        log!(Warn, "telemetry listener accept error ({errors} so far): {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

async fn handle(req: Request<Incoming>, forwarder: ForwarderHandle, stats: &Stats) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = if req.method() != Method::POST {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Err(e) => {
                log!(Warn, "telemetry batch not read: {e}");
                StatusCode::BAD_REQUEST
            }
            Ok(body) => match parse_batch(&body.to_bytes()) {
                Ok(batch) => {
                    stats.batches.fetch_add(1, Relaxed);
                    if batch.skipped > 0 {
                        stats.skipped.fetch_add(batch.skipped as u64, Relaxed);
                    }
                    forwarder.telemetry(batch.events).await;
                    StatusCode::OK
                }
                Err(e) => {
                    stats.rejected.fetch_add(1, Relaxed);
                    log!(Warn, "telemetry batch is not a JSON array of records: {e}");
                    StatusCode::BAD_REQUEST
                }
            },
        }
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Subscription<'a> {
    schema_version: &'static str,
    types: &'a [&'a str],
    buffering: LogBuffering,
    destination: Destination,
}

#[derive(Serialize)]
struct Destination {
    protocol: &'static str,
    #[serde(rename = "URI")]
    uri: String,
}

/// Subscribes to `platform` events, delivered to `port`.
pub async fn subscribe(extension_id: &str, port: u16) -> Result<(), lambda_extension::Error> {
    let body = serde_json::to_vec(&Subscription {
        schema_version: SCHEMA_VERSION,
        types: &["platform"],
        buffering: BUFFERING,
        destination: Destination { protocol: "HTTP", uri: format!("http://sandbox.localdomain:{port}") },
    })?;
    let request = lambda_runtime_api_client::build_request()
        .method(Method::PUT)
        .uri("/2022-07-01/telemetry")
        .header("Lambda-Extension-Identifier", extension_id)
        .header("Content-Type", "application/json")
        .body(lambda_runtime_api_client::body::Body::from(body))?;
    let client = lambda_runtime_api_client::Client::builder().build()?;
    let response = client.call(request).await?;
    if !response.status().is_success() {
        return Err(format!("the Telemetry API refused the subscription: {}", response.status()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"time":"2026-12-01T10:00:00.500Z","type":"platform.report","record":{"requestId":"r1","status":"success",
        "metrics":{"durationMs":12.5,"billedDurationMs":13,"memorySizeMB":128,"maxMemoryUsedMB":30,"initDurationMs":4.0},
        "tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}}}"#;

    #[test]
    fn known_records_are_read() {
        let body = format!(
            r#"[{{"time":"2026-12-01T10:00:00Z","type":"platform.start","record":{{"requestId":"r1","version":"$LATEST"}}}},
               {{"time":"2026-12-01T10:00:00.4Z","type":"platform.runtimeDone","record":{{"requestId":"r1","status":"success"}}}},
               {REPORT}]"#
        );
        let batch = parse_batch(body.as_bytes()).unwrap();
        assert_eq!(batch.skipped, 0);
        assert_eq!(batch.events[0], Event::Start { request_id: "r1".into() });
        assert_eq!(batch.events[1], Event::RuntimeDone { request_id: "r1".into() });
        let Event::Report(report, trace) = &batch.events[2] else { panic!("{:?}", batch.events[2]) };
        assert_eq!(report.request_id, "r1");
        assert_eq!(report.billed_duration_ms, 13);
        assert_eq!(report.init_duration_ms, Some(4.0));
        assert!((report.time - 1_796_119_200.5).abs() < 1e-6, "{}", report.time);
        assert!(trace.as_ref().and_then(TraceHeader::sampled_ids).is_some());
    }

    #[test]
    fn unknown_types_and_bad_records_do_not_lose_the_batch() {
        // The crate's enum rejects this whole batch (400): a type it does not
        // know, and a known type with a record it cannot read.
        let body = br#"[{"time":"2026-12-01T10:00:00Z","type":"platform.somethingNew","record":{"x":[1,2]}},
            {"time":"2026-12-01T10:00:00Z","type":"platform.runtimeDone","record":{"status":"success"}},
            {"type":"function","record":"a log line"},
            {"time":"not a time","type":"platform.start","record":{"requestId":"r3"}},
            {"time":"2026-12-01T10:00:00Z","type":"platform.runtimeDone","record":{"requestId":"r3","status":"timeout","spans":[]}}]"#;
        let batch = parse_batch(body).unwrap();
        assert_eq!(batch.events, vec![Event::Start { request_id: "r3".into() }, Event::RuntimeDone { request_id: "r3".into() }]);
        assert_eq!(batch.skipped, 3);
    }

    #[test]
    fn bodies_that_are_not_batches_are_errors() {
        for body in [&b""[..], b"{}", b"[1]", b"[{\"record\":{}}]", b"\xff"] {
            assert!(parse_batch(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
        assert_eq!(parse_batch(b"[]").unwrap(), Batch::default());
    }
}
