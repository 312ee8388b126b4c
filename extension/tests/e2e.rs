//! End-to-end tests: the real extension and a real function binary on a
//! local Lambda platform. See `common/mod.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lambda_xray_e2e::platform as common;

use std::time::Duration;

use common::{LONG, Options, Platform, assert_schema_valid};
use serde_json::json;

/// Documents recorded in an invocation reach the daemon before the extension
/// calls `next`: once the platform has frozen both processes, they are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_reach_daemon_before_next() {
    let platform = Platform::start(Options::default()).await;
    for round in 1..=3 {
        let (_, response) = platform.invoke(json!({"docs": 5, "echo": round})).await;
        assert_eq!(response, json!({"sent": 5, "echo": round}));
        platform.wait_frozen().await;
        // Frozen: nothing more can be sent, so whatever is due must be there.
        assert!(
            platform.daemon.wait_for_count(5 * round, Duration::from_secs(5)).await,
            "round {round}: only {} documents before the freeze",
            platform.daemon.count()
        );
    }
    let counters = platform.shutdown().await.unwrap();
    assert_eq!(counters["received"], 15);
    assert_eq!(counters["dropped"], 0);
}

/// The (request id, seq) pairs of the fixture's documents, checking each is unique.
fn fixture_keys(documents: &[serde_json::Value]) -> std::collections::BTreeSet<(String, u64)> {
    let mut keys = std::collections::BTreeSet::new();
    for d in documents {
        let meta = &d["metadata"]["fixture"];
        let key = (meta["request_id"].as_str().unwrap().to_owned(), meta["seq"].as_u64().unwrap());
        assert!(keys.insert(key.clone()), "duplicate document {key:?}");
    }
    keys
}

/// SHUTDOWN with buffered documents: all are forwarded within the deadline.
/// (Periodic flushing with a long interval keeps them buffered until then,
/// which also shows the first test can fail: here they are not there while frozen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_forwards_everything_buffered() {
    let platform = Platform::start(Options {
        extension_env: vec![
            ("LAMBDA_XRAY_EXTENSION_FLUSH", "periodic".into()),
            ("LAMBDA_XRAY_EXTENSION_FLUSH_INTERVAL_MS", "600000".into()),
        ],
        ..Options::default()
    })
    .await;
    platform.invoke(json!({"docs": 200, "pad": 200})).await;
    platform.wait_frozen().await;
    assert_eq!(platform.daemon.count(), 0, "periodic mode must not flush yet");
    let started = std::time::Instant::now();
    let daemon_docs = {
        let counters = platform_shutdown_keep_daemon(platform).await;
        let (counters, daemon) = counters;
        assert_eq!(counters["received"], 200);
        assert_eq!(counters["buffered"], 0);
        assert_eq!(counters["dropped"], 0);
        daemon.documents()
    };
    assert!(started.elapsed() < Duration::from_millis(2000), "shutdown took {:?}, over Lambda's 2 s", started.elapsed());
    let fixture: Vec<_> = daemon_docs.iter().filter(|d| d["name"] == "fixture-work").cloned().collect();
    assert_eq!(fixture_keys(&fixture).len(), 200);
    assert_schema_valid(&daemon_docs);
}

/// Shuts the platform down and hands back the counters and the daemon.
async fn platform_shutdown_keep_daemon(mut platform: Platform) -> (serde_json::Value, lambda_xray_e2e::Daemon) {
    let daemon = std::mem::replace(&mut platform.daemon, lambda_xray_e2e::Daemon::start().unwrap());
    let counters = platform.shutdown().await.unwrap();
    (counters, daemon)
}

/// Daemon unreachable during an invocation, back later: the documents arrive
/// on a later flush, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_daemon_documents_arrive_later() {
    let daemon_addr = lambda_xray_e2e::Daemon::unreachable_addr().unwrap();
    let platform = Platform::start(Options { function_daemon: Some(daemon_addr), ..Options::default() }).await;
    let extension = platform.extension.as_ref().unwrap();
    let (first, _) = platform.invoke(json!({"docs": 30})).await;
    assert!(extension.wait_for_line("unreachable", LONG).await, "the refusal is noticed");
    let daemon = lambda_xray_e2e::Daemon::start_at(daemon_addr).unwrap();
    let (second, _) = platform.invoke(json!({"docs": 30})).await;
    platform.wait_frozen().await;
    assert!(daemon.wait_for_count(60, Duration::from_secs(5)).await);
    let keys = fixture_keys(&daemon.documents().into_iter().filter(|d| d["name"] == "fixture-work").collect::<Vec<_>>());
    for request_id in [&first, &second] {
        for seq in 0..30 {
            assert!(keys.contains(&(request_id.clone(), seq)), "lost {request_id}/{seq}");
        }
    }
    assert_eq!(keys.len(), 60);
    assert_schema_valid(&daemon.documents());
    let counters = platform.shutdown().await.unwrap();
    assert_eq!(counters["dropped"], 0);
}

/// Daemon unreachable and more documents than the bound: the oldest are
/// dropped, the drop count matches what never arrived, the newest arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_bound_drops_are_counted() {
    const BOUND: usize = 20_000;
    let daemon_addr = lambda_xray_e2e::Daemon::unreachable_addr().unwrap();
    let platform = Platform::start(Options {
        function_daemon: Some(daemon_addr),
        extension_env: vec![("LAMBDA_XRAY_EXTENSION_BUFFER_BYTES", BOUND.to_string())],
        ..Options::default()
    })
    .await;
    let (request_id, _) = platform.invoke(json!({"docs": 60, "pad": 700})).await;
    let extension = platform.extension.as_ref().unwrap();
    assert!(extension.wait_for_line("dropped documents", LONG).await);
    let daemon = lambda_xray_e2e::Daemon::start_at(daemon_addr).unwrap();
    platform.invoke(json!({"docs": 0})).await;
    platform.wait_frozen().await;
    let arrived = || daemon.datagrams().into_iter().filter(|d| String::from_utf8_lossy(d).contains("fixture-work")).collect::<Vec<_>>();
    assert!(common::wait_until(Duration::from_secs(5), || !arrived().is_empty()).await);
    let documents: Vec<_> = daemon.documents().into_iter().filter(|d| d["name"] == "fixture-work").collect();
    let keys = fixture_keys(&documents);
    let arrived_bytes: usize = arrived().iter().map(Vec::len).sum();
    let smallest = arrived().iter().map(Vec::len).min().unwrap();
    // Drop-oldest: what arrived is the newest run of documents that fits.
    let seqs: Vec<u64> = keys.iter().map(|(_, s)| *s).collect();
    let first = 60 - seqs.len() as u64;
    assert_eq!(seqs, (first..60).collect::<Vec<_>>(), "the newest survive");
    assert!(keys.iter().all(|(id, _)| id == &request_id));
    assert!(arrived_bytes <= BOUND);
    assert!(arrived_bytes + smallest > BOUND - 2_000, "kept as many as fit");
    let counters = platform.shutdown().await.unwrap();
    assert_eq!(counters["received"], 60);
    assert_eq!(counters["dropped"].as_u64().unwrap(), 60 - keys.len() as u64, "drop count = documents that never arrived");
}

/// Garbage, bad headers, non-UTF-8 and oversized datagrams are rejected and
/// counted; the extension keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_are_counted_and_survived() {
    let platform =
        Platform::start(Options { extension_env: vec![("LAMBDA_XRAY_EXTENSION_MAX_DATAGRAM_BYTES", "4000".into())], ..Options::default() })
            .await;
    let intake: std::net::SocketAddr = std::fs::read_to_string(&platform.marker).unwrap().parse().unwrap();
    let junk: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"hello".to_vec(),
        b"{\"format\":\"json\",\"version\":1}".to_vec(),
        b"{\"format\":\"json\",\"version\":2}\n{\"id\":\"a\",\"trace_id\":\"b\"}".to_vec(),
        b"{\"format\":\"json\",\"version\":1}\n[1,2,3]".to_vec(),
        b"{\"format\":\"json\",\"version\":1}\n{\"id\":\"a\",\"trace_id\":".to_vec(),
        b"{\"format\":\"json\",\"version\":1}\n{\"id\":\"\xff\xfe\",\"trace_id\":\"b\"}".to_vec(),
        b"{\"format\":\"lambda-xray-control\",\"version\":1}\nnope".to_vec(),
        vec![b'x'; 60_000],
        [b"{\"format\":\"json\",\"version\":1}\n{\"id\":\"a\",\"trace_id\":\"b\",\"pad\":\"".as_slice(), &[b'y'; 10_000], b"\"}"].concat(),
    ];
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for datagram in &junk {
        socket.send_to(datagram, intake).unwrap();
    }
    // 2 documents too big for the 4000-byte limit, 7 junk datagrams from the function.
    platform.invoke(json!({"docs": 2, "pad": 5000, "garbage": 7})).await;
    let (_, response) = platform.invoke(json!({"docs": 10, "echo": "still here"})).await;
    assert_eq!(response, json!({"sent": 10, "echo": "still here"}));
    platform.wait_frozen().await;
    assert!(platform.daemon.wait_for_count(10, Duration::from_secs(5)).await);
    assert_eq!(platform.daemon.fixture_documents().len(), 10);
    assert_schema_valid(&platform.daemon.documents());
    let counters = platform.shutdown().await.unwrap();
    assert_eq!(counters["malformed"], junk.len() as u64 + 2 + 7);
    assert_eq!(counters["received"], 10);
}

/// Extension absent, or killed mid-way: the function's responses are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_responses_unchanged_without_extension() {
    let payloads: Vec<_> = (0..4).map(|i| json!({"docs": 3, "echo": {"n": i, "s": "x"}})).collect();

    let absent = Platform::start(Options { extension: false, ..Options::default() }).await;
    let mut without = Vec::new();
    for p in &payloads {
        without.push(absent.invoke(p.clone()).await.1);
    }
    // Without the extension the function sends to the daemon directly.
    assert!(absent.daemon.wait_for_count(12, Duration::from_secs(5)).await);
    assert_schema_valid(&absent.daemon.documents());
    absent.shutdown().await;

    let mut killed = Platform::start(Options {
        extension_ready_timeout: Duration::from_millis(500),
        // The simulator cannot thaw a process that no longer exists.
        freeze: false,
        ..Options::default()
    })
    .await;
    let mut with = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        if i == 2 {
            killed.kill_extension().await;
        }
        with.push(killed.invoke(p.clone()).await.1);
    }
    assert_eq!(with, without);
    assert_eq!(with[0], json!({"sent": 3, "echo": {"n": 0, "s": "x"}}), "the fixture answered");
    killed.shutdown().await;
}

/// Every forwarded document, the Python SDK's golden datagrams and the
/// extension's own `Lambda report` subsegment included, validates against the
/// schema; golden datagrams are forwarded byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_documents_validate_and_report_is_attached() {
    let platform = Platform::start(Options::default()).await;
    let intake: std::net::SocketAddr = std::fs::read_to_string(&platform.marker).unwrap().parse().unwrap();
    let golden: Vec<Vec<u8>> =
        (1..=7).map(|n| std::fs::read(format!("{}/../fixtures/golden/raw/{n:03}.dgram", env!("CARGO_MANIFEST_DIR"))).unwrap()).collect();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for datagram in &golden {
        socket.send_to(datagram, intake).unwrap();
    }
    let (header, root, parent) = lambda_xray_e2e::new_trace_header(true);
    let (first, _) = platform.invoke_with_header(json!({"docs": 3}), &header).await;
    // The report of an invocation comes after it: it goes out with the next flush.
    platform.invoke(json!({"docs": 1})).await;
    let counters = {
        let (counters, daemon) = platform_shutdown_keep_daemon(platform).await;
        let datagrams = daemon.datagrams();
        for g in &golden {
            assert!(datagrams.contains(g), "golden datagram forwarded unchanged");
        }
        let documents = daemon.documents();
        assert_schema_valid(&documents);
        let report = documents
            .iter()
            .find(|d| d["name"] == "Lambda report" && d["trace_id"] == root.as_str())
            .expect("report subsegment for the first invocation");
        assert_eq!(report["parent_id"], parent.as_str());
        assert_eq!(report["type"], "subsegment");
        assert_eq!(report["metadata"]["lambda"]["request_id"], first.as_str());
        assert_eq!(report["annotations"]["cold_start"], true);
        assert_eq!(report["annotations"]["memory_size_mb"], 128);
        assert!(report["annotations"]["max_memory_used_mb"].as_u64().is_some());
        assert!(report["annotations"]["billed_duration_ms"].as_u64().is_some());
        assert!(report["start_time"].as_f64() <= report["end_time"].as_f64());
        let later: Vec<_> = documents.iter().filter(|d| d["name"] == "Lambda report" && d["trace_id"] != root.as_str()).collect();
        assert!(later.iter().all(|d| d["annotations"]["cold_start"] == false));
        counters
    };
    assert_eq!(counters["received"], 7 + 3 + 1);
    assert_eq!(counters["enriched"], 2);
}

/// Not sampled (`Sampled=0` or no `Parent`): no report subsegment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_invocations_get_no_report() {
    let platform = Platform::start(Options::default()).await;
    platform.invoke_with_header(json!({"docs": 0}), "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0").await;
    platform.invoke_with_header(json!({"docs": 0}), "Root=1-5759e988-bd862e3fe1be46a994272793").await;
    let counters = platform.shutdown().await.unwrap();
    assert_eq!(counters["enriched"], 0);
    assert_eq!(counters["forwarded"], 0);
}

/// Continuous mode forwards while the invocation still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_mode_forwards_without_waiting_for_the_end() {
    let platform = Platform::start(Options {
        extension_env: vec![("LAMBDA_XRAY_EXTENSION_FLUSH", "continuous".into())],
        // Not frozen between invocations, to see what happens in between.
        freeze: false,
        ..Options::default()
    })
    .await;
    let intake: std::net::SocketAddr = std::fs::read_to_string(&platform.marker).unwrap().parse().unwrap();
    platform.invoke(json!({"docs": 0})).await;
    // Sent straight to the intake with no invocation running: forwarded anyway.
    let golden = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden/raw/001.dgram")).unwrap();
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().send_to(&golden, intake).unwrap();
    assert!(common::wait_until(LONG, || platform.daemon.datagrams().contains(&golden)).await, "forwarded between invocations");
    // 10 documents over 5 s: the first ones reach the daemon while the
    // invocation still runs (end-of-invocation mode would hold them).
    {
        let invoke = platform.invoke(json!({"docs": 10, "spread_ms": 5000}));
        tokio::pin!(invoke);
        tokio::select! {
            _ = &mut invoke => panic!("the invocation ended before its documents were forwarded"),
            arrived = platform.daemon.wait_for_count(1 + 3, LONG) => assert!(arrived),
        }
        invoke.await;
    }
    assert!(platform.daemon.wait_for_count(1 + 10, LONG).await);
    let counters = platform.shutdown().await.unwrap();
    assert_eq!(counters["received"], 11);
    assert_eq!(counters["dropped"], 0);
}
