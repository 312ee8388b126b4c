//! When the extension calls `next` at the end of an invocation, and that every
//! wait is bounded: the function's `invocation_done` message, the Telemetry
//! API's `platform.runtimeDone` as the fallback, telemetry absent, late,
//! rejected or on another port, a function that floods after its response,
//! and the memory bound while the forwarder is stalled.
//!
//! Time bounds asserted here are behavioural and far from the measured
//! figures (a wait that should not happen is seconds long; the benchmark,
//! `tests/benches/post_runtime.rs`, measures the real tail).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use lambda_simulator::DeliveryPolicy;
use lambda_xray_e2e::platform::{self as common, LONG, Options, PLATFORM_EVENTS, Platform};
use lambda_xray_e2e::{Daemon, Outcome};
use serde_json::json;

/// The fixture's documents that reached the daemon, as (request id, seq).
fn fixture_keys(daemon: &Daemon) -> std::collections::BTreeSet<(String, u64)> {
    daemon
        .documents()
        .iter()
        .filter(|d| d["name"] == "fixture-work")
        .map(|d| (d["metadata"]["fixture"]["request_id"].as_str().unwrap().to_owned(), d["metadata"]["fixture"]["seq"].as_u64().unwrap()))
        .collect()
}

/// Waits (the stand-in daemon reads on a thread of its own) until every
/// document `0..docs` of each invocation has arrived, or says which did not.
async fn expect_all(daemon: &Daemon, request_ids: &[String], docs: u64) {
    let all_there = || {
        let keys = fixture_keys(daemon);
        request_ids.iter().all(|id| (0..docs).all(|seq| keys.contains(&(id.clone(), seq))))
    };
    if common::wait_until(Duration::from_secs(5), all_there).await {
        return;
    }
    let keys = fixture_keys(daemon);
    for id in request_ids {
        for seq in 0..docs {
            assert!(keys.contains(&(id.clone(), seq)), "lost {id}/{seq}; have {}", keys.len());
        }
    }
}

async fn post_runtime(platform: &Platform, request_id: &str) -> Duration {
    platform.post_runtime(request_id).await.expect("post-runtime time measured")
}

fn telemetry(policy: DeliveryPolicy, events: &[&'static str]) -> Vec<(&'static str, DeliveryPolicy)> {
    let mut all = common::lambda_telemetry();
    for (event, p) in &mut all {
        if events.contains(event) {
            *p = policy;
        }
    }
    all
}

/// Three invocations of `docs` documents each, `request` the rest of their
/// payload, with `platform.runtimeDone` 10 s late: each ends without waiting
/// for it, and when both processes are frozen (nothing more can be sent) all
/// the documents so far are at the daemon.
async fn ends_without_runtime_done_with_everything_forwarded(docs: u64, request: serde_json::Value) {
    let platform = Platform::start(Options {
        clock: true,
        telemetry: telemetry(DeliveryPolicy::Delay(Duration::from_secs(10)), &["platform.runtimeDone"]),
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for round in 1..=3u64 {
        let started = Instant::now();
        let mut payload = request.clone();
        payload["docs"] = json!(docs);
        payload["echo"] = json!(round);
        let (request_id, response) = platform.invoke(payload).await;
        assert_eq!(response, json!({"sent": docs, "echo": round}));
        platform.wait_frozen().await;
        assert!(started.elapsed() < Duration::from_secs(5), "round {round} waited for the late runtimeDone: {:?}", started.elapsed());
        assert!(post_runtime(&platform, &request_id).await < Duration::from_secs(5));
        ids.push(request_id);
        expect_all(&platform.daemon, &ids, docs).await;
    }
    let counters = platform.shutdown().await.unwrap();
    assert_eq!(counters["received"], 3 * docs);
    assert_eq!(counters["dropped"], 0);
}

/// With the function's `invocation_done`, the extension neither waits for the
/// Telemetry API nor leaves anything behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_message_ends_the_wait_with_everything_forwarded() {
    ends_without_runtime_done_with_everything_forwarded(20, json!({"pad": 300, "done": true})).await;
}

/// Documents over UDP and the end over the Unix socket (the library's path
/// once the Unix queue was full): the extension reads what UDP holds before
/// it acts on the end, so nothing is left behind at the freeze.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_over_the_unix_socket_waits_for_the_documents_over_udp() {
    ends_without_runtime_done_with_everything_forwarded(200, json!({"pad": 100, "done": true, "done_over_unix": true})).await;
}

/// No Telemetry API delivery at all and a function that never says it is
/// done: the first invocation waits at most the extension's patience, later
/// ones not at all, and no document is lost (what arrives after `next` goes
/// with a later flush).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_absent_next_within_the_bound_nothing_lost() {
    let platform =
        Platform::start(Options { clock: true, telemetry: telemetry(DeliveryPolicy::Suppress, &PLATFORM_EVENTS), ..Options::default() })
            .await;
    let timeout = Duration::from_secs(20);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let request_id = platform.start_invocation(json!({"docs": 10}), Some(&lambda_xray_e2e::new_trace_header(true).0), timeout).await;
        let outcome = platform.finish_invocation(&request_id, timeout).await;
        assert!(matches!(outcome, Outcome::Response(ref r) if r["sent"] == 10), "{outcome:?}");
        // The deadline bound would be 19.9 s; the patience is 0.5 s.
        let tail = post_runtime(&platform, &request_id).await;
        assert!(tail < Duration::from_secs(5), "{request_id}: next {tail:?} after the runtime");
        ids.push(request_id);
    }
    let extension = platform.extension.as_ref().unwrap();
    assert!(extension.lines().iter().any(|l| l.contains("no Telemetry API delivery")), "the silence is logged");
    let (counters, daemon) = platform.shutdown_keep_daemon().await;
    expect_all(&daemon, &ids, 10).await;
    assert_eq!(counters.unwrap()["dropped"], 0);
}

/// `platform.runtimeDone` far later than the invocation's deadline, for a
/// function that never says it is done: `next` comes by the deadline (minus
/// the margin), the invocation still succeeds, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_late_next_by_the_deadline_nothing_lost() {
    let platform = Platform::start(Options {
        clock: true,
        telemetry: telemetry(DeliveryPolicy::Delay(Duration::from_secs(30)), &["platform.runtimeDone"]),
        ..Options::default()
    })
    .await;
    let timeout = Duration::from_secs(3);
    let header = lambda_xray_e2e::new_trace_header(true).0;
    let started = Instant::now();
    let request_id = platform.start_invocation(json!({"docs": 10}), Some(&header), timeout).await;
    let outcome = platform.finish_invocation(&request_id, timeout).await;
    assert!(matches!(outcome, Outcome::Response(_)), "{outcome:?}");
    let elapsed = started.elapsed();
    assert!(elapsed < timeout + Duration::from_secs(2), "held past the deadline: {elapsed:?}");
    // It did wait for runtimeDone while there was time (telemetry is alive).
    assert!(post_runtime(&platform, &request_id).await > Duration::from_secs(1));
    platform.wait_frozen().await;
    expect_all(&platform.daemon, std::slice::from_ref(&request_id), 10).await;
    let extension = platform.extension.as_ref().unwrap();
    assert!(extension.lines().iter().any(|l| l.contains("before its deadline")), "{:?}", extension.lines());
    platform.shutdown().await;
}

/// A telemetry batch with a record type nobody knows yet (the
/// `lambda-extension` crate rejects such a batch whole, with its
/// `runtimeDone`), and a body that is not a batch at all: the first is used,
/// the second answered 400, and the extension keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_batches_with_unknown_records_are_used() {
    let platform = Platform::start(Options {
        clock: true,
        // The platform's own runtimeDone never comes: only ours can end the wait.
        telemetry: telemetry(DeliveryPolicy::Suppress, &["platform.runtimeDone"]),
        ..Options::default()
    })
    .await;
    let port = platform.telemetry_port().expect("telemetry port in the ready line");
    let timeout = Duration::from_secs(20);
    let header = lambda_xray_e2e::new_trace_header(true).0;
    let request_id = platform.start_invocation(json!({"docs": 5, "spread_ms": 100}), Some(&header), timeout).await;

    let garbage = post(port, b"{\"not\": \"a batch\"}".to_vec()).await;
    assert_eq!(garbage, 400);
    // Let the function finish: the extension is now waiting for a runtimeDone
    // the platform will never send.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(platform.daemon.count(), 0, "nothing is flushed before the end is known");
    let batch = json!([
        {"time": "2026-12-01T00:00:00.000Z", "type": "platform.somethingNew", "record": {"requestId": request_id, "whatever": [1, 2]}},
        {"time": "2026-12-01T00:00:00.000Z", "type": "platform.runtimeDone", "record": {"requestId": request_id, "status": "success"}},
    ]);
    assert_eq!(post(port, serde_json::to_vec(&batch).unwrap()).await, 200);
    let outcome = platform.finish_invocation(&request_id, timeout).await;
    assert!(matches!(outcome, Outcome::Response(_)), "{outcome:?}");
    let tail = post_runtime(&platform, &request_id).await;
    assert!(tail < Duration::from_secs(5), "the batch's runtimeDone was not used: next {tail:?} after the runtime");
    platform.wait_frozen().await;
    expect_all(&platform.daemon, std::slice::from_ref(&request_id), 5).await;
    let (_, _, log) = platform.shutdown_with_log().await;
    let summary = log.into_iter().find(|l| l.contains("telemetry batches")).unwrap_or_default();
    // The garbage body was rejected; the unknown record (and the platform's
    // own records the extension has no use for) skipped, not the batch.
    assert!(summary.contains("rejected 1,"), "{summary}");
    let skipped: u64 = summary.rsplit_once("records skipped ").and_then(|(_, n)| n.trim().parse().ok()).unwrap();
    assert!(skipped >= 1, "{summary}");
}

/// POSTs `body` to the extension's Telemetry API listener; the status code.
async fn post(port: u16, body: Vec<u8>) -> u16 {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let request = hyper::Request::post(format!("http://127.0.0.1:{port}/")).body(Full::new(bytes::Bytes::from(body))).unwrap();
    client.request(request).await.unwrap().status().as_u16()
}

/// The configured telemetry port is taken: the extension listens on another
/// one and subscribes with it, so telemetry still arrives (the
/// `Lambda report` subsegments show it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_port_taken_another_is_used() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let platform =
        Platform::start(Options { extension_env: vec![("LAMBDA_XRAY_EXTENSION_TELEMETRY_PORT", port.to_string())], ..Options::default() })
            .await;
    let other = platform.telemetry_port().unwrap();
    assert_ne!(other, port);
    for _ in 0..2 {
        platform.invoke(json!({"docs": 3})).await;
    }
    let extension = platform.extension.as_ref().unwrap();
    assert!(extension.lines().iter().any(|l| l.contains(&format!("telemetry port {port} is not available"))));
    let counters = platform.shutdown().await.unwrap();
    // runtimeDone ended the waits (no done message from this function) and
    // the reports were turned into subsegments.
    assert!(counters["enriched"].as_u64().unwrap() >= 1, "{counters}");
    drop(taken);
}

/// A function that keeps sending documents for 5 s after its response cannot
/// hold the extension's `next` for that long: each drain and flush takes a
/// bounded batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_function_cannot_delay_next() {
    let platform = Platform::start(Options { clock: true, ..Options::default() }).await;
    let (request_id, _) = platform.invoke(json!({"docs": 5, "done": true, "flood_ms": 5000})).await;
    let tail = post_runtime(&platform, &request_id).await;
    assert!(tail < Duration::from_millis(2500), "next {tail:?} after the runtime, while the flood lasts 5 s");
    platform.wait_frozen().await;
    expect_all(&platform.daemon, std::slice::from_ref(&request_id), 5).await;
    // Still serving, and still bounded while the flood (thawed again) goes on.
    let (second, response) = platform.invoke(json!({"docs": 5, "done": true, "echo": 2})).await;
    assert_eq!(response, json!({"sent": 5, "echo": 2}));
    let tail = post_runtime(&platform, &second).await;
    assert!(tail < Duration::from_millis(2500), "second invocation: next {tail:?} after the runtime");
    platform.shutdown().await;
}

/// The memory bound holds while the forwarder is stalled: at SHUTDOWN with the
/// daemon refusing, the forwarder retries every 20 ms until the deadline,
/// while 64 KiB documents keep arriving. The extension's peak RSS stays within
/// its idle RSS plus the buffer bound plus the intake queue's byte bound
/// (plus allocator slack), instead of growing with what arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_while_the_forwarder_is_stalled() {
    const BOUND: usize = 1024 * 1024;
    const QUEUE_BYTES: usize = 512 * 1024;
    let refusing = Daemon::unreachable_addr().unwrap();
    let platform = Platform::start(Options {
        function_daemon: Some(refusing),
        extension_env: vec![("LAMBDA_XRAY_EXTENSION_BUFFER_BYTES", BOUND.to_string())],
        ..Options::default()
    })
    .await;
    platform.invoke(json!({"docs": 3, "done": true})).await;
    let intake: std::net::SocketAddr = std::fs::read_to_string(&platform.marker).unwrap().trim().parse().unwrap();
    let extension_pid = platform.extension.as_ref().unwrap().pid;
    let (idle, _) = platform.extension.as_ref().unwrap().rss_kib();

    // 61 KiB datagrams, as fast as one thread sends them, for 1.5 s.
    let flood = std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let body = json!({"name": "flood", "id": "0000000000000001", "trace_id": "1-5759e988-bd862e3fe1be46a994272793",
            "start_time": 1.0, "end_time": 2.0, "metadata": {"x": {"pad": "x".repeat(60 * 1024)}}});
        let datagram = format!("{{\"format\":\"json\",\"version\":1}}\n{body}");
        let until = Instant::now() + Duration::from_millis(1500);
        let mut sent = 0u64;
        while Instant::now() < until {
            if socket.send_to(datagram.as_bytes(), intake).is_ok() {
                sent += 1;
            }
        }
        sent
    });
    let peak = tokio::spawn(async move {
        let mut peak = 0;
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            let status = std::fs::read_to_string(format!("/proc/{extension_pid}/status")).unwrap_or_default();
            if status.is_empty() {
                break;
            }
            let hwm =
                status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0u64);
            peak = peak.max(hwm);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    });
    // SHUTDOWN: the forwarder keeps retrying the refusing daemon meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counters = platform.shutdown().await.unwrap();
    let sent = flood.join().unwrap();
    let peak = peak.await.unwrap();
    let allowed = idle + ((BOUND + QUEUE_BYTES) / 1024) as u64 + 4 * 1024;
    println!(
        "memory bound: idle {idle} KiB, peak {peak} KiB, allowed {allowed} KiB, flood {sent} datagrams of 61 KiB, counters {counters}"
    );
    assert!(sent > 200, "the flood was too small to show anything: {sent}");
    assert!(peak <= allowed, "peak RSS {peak} KiB over idle {idle} KiB + buffer + queue bound");
    assert!(counters["dropped"].as_u64().unwrap() > 0, "{counters}");
}

/// The function's control message can move where documents go, and anything
/// in the sandbox can send one: a change of address is logged at WARN (the
/// first address at INFO).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_address_change_is_a_warning() {
    let platform = Platform::start(Options::default()).await;
    platform.invoke(json!({"docs": 1, "done": true})).await;
    let intake: std::net::SocketAddr = std::fs::read_to_string(&platform.marker).unwrap().trim().parse().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let control = |address: &str| format!("{{\"format\":\"lambda-xray-control\",\"version\":1}}\n{}", json!({"daemon_address": address}));
    socket.send_to(control("127.0.0.1:4999").as_bytes(), intake).unwrap();
    // Picked up on the next thaw.
    platform.invoke(json!({"docs": 1, "done": true})).await;
    let extension = platform.extension.as_ref().unwrap();
    assert!(extension.wait_for_line("WARN the daemon address changed", LONG).await, "{:?}", extension.lines());
    let lines = extension.lines();
    assert!(lines.iter().any(|l| l.contains("INFO daemon address from the function")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("127.0.0.1:4999")));
    platform.shutdown().await;
}

/// A daemon host name that does not resolve is looked up once, not on every
/// flush (each lookup may take up to a second): the failure is remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_daemon_lookup_is_not_repeated_on_every_flush() {
    let platform = Platform::start(Options {
        extension_env: vec![("LAMBDA_XRAY_EXTENSION_DAEMON_ADDRESS", "no-such-daemon.invalid:2000".into())],
        ..Options::default()
    })
    .await;
    for _ in 0..4 {
        platform.invoke(json!({"docs": 2, "done": true})).await;
    }
    let extension = platform.extension.as_ref().unwrap();
    let lookups = extension.lines().iter().filter(|l| l.contains("cannot resolve the daemon address")).count();
    assert_eq!(lookups, 1, "{:?}", extension.lines());
    let counters = platform.shutdown().await.unwrap();
    // Kept (with the extension's report subsegments), not lost to the failed lookups.
    assert_eq!(counters["received"], 8, "{counters}");
    assert_eq!(counters["buffered"].as_u64(), Some(8 + counters["enriched"].as_u64().unwrap()), "{counters}");
}
