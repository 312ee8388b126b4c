//! Property tests over what the extension takes from outside: datagrams on
//! the intake socket (documents, marked last documents, control messages),
//! Telemetry API bodies and trace headers. Each gets arbitrary bytes and
//! mutations of valid inputs; none may panic, and what comes out stays
//! within what went in.
//!
//! Cases per property: `LAMBDA_XRAY_FUZZ_CASES` (default 2,048; CI runs the
//! default, `scripts/fuzz.sh` a million).

use proptest::prelude::*;

use crate::enrich::{Report, TraceHeader, report_subsegment};
use crate::telemetry::{Event, parse_batch};
use lambda_xray_wire::{Datagram, MAX_REQUEST_ID, classify, frame};

fn config() -> ProptestConfig {
    let cases = std::env::var("LAMBDA_XRAY_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2048);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

const SEEDS: &[&str] = &[
    "{\"format\":\"json\",\"version\":1}\n{\"name\":\"a\",\"id\":\"53995c3f42cd8ad8\",\"trace_id\":\"1-5759e988-bd862e3fe1be46a994272793\",\"start_time\":1.5,\"in_progress\":true}",
    "{\"format\":\"json\",\"version\":1,\"invocation_done\":\"8476a536-e9f4-11e8-9739-2dfe598c3fcd\"}\n{\"name\":\"b\",\"id\":\"53995c3f42cd8ad8\",\"trace_id\":\"1-5759e988-bd862e3fe1be46a994272793\",\"subsegments\":[]}",
    "{\"format\":\"lambda-xray-control\",\"version\":1}\n{\"daemon_address\":\"tcp:127.0.0.1:2000 udp:127.0.0.1:2001\"}",
    "{\"format\":\"lambda-xray-control\",\"version\":1}\n{\"invocation_done\":\"8476a536-e9f4-11e8-9739-2dfe598c3fcd\"}",
];

const BATCH: &str = r#"[{"time":"2026-12-01T10:00:00Z","type":"platform.start","record":{"requestId":"r1","version":"$LATEST"}},
{"time":"2026-12-01T10:00:00.4Z","type":"platform.runtimeDone","record":{"requestId":"r1","status":"success","spans":[]}},
{"time":"2026-12-01T10:00:00.500Z","type":"platform.report","record":{"requestId":"r1","status":"success",
"metrics":{"durationMs":12.5,"billedDurationMs":13,"memorySizeMB":128,"maxMemoryUsedMB":30,"initDurationMs":4.0},
"tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}}}]"#;

/// `seed` with `edits` applied: (position, op, byte); op 0 replaces, 1
/// inserts, 2 deletes, 3 truncates.
fn mutate(seed: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for &(at, op, byte) in edits {
        let at = if out.is_empty() { 0 } else { at % (out.len() + 1) };
        match op % 4 {
            0 if at < out.len() => out[at] = byte,
            1 => out.insert(at, byte),
            2 if at < out.len() => {
                out.remove(at);
            }
            3 => out.truncate(at),
            _ => {}
        }
    }
    out
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6)
}

/// What `classify` says must hold whatever it was given.
fn check_datagram(datagram: &[u8], max_len: usize) {
    match classify(datagram, max_len) {
        Err(_) => {}
        Ok(kind) => {
            assert!(datagram.len() <= max_len);
            match kind {
                Datagram::Document => {}
                Datagram::LastDocument { request_id, body_at } => {
                    assert!(!request_id.is_empty() && request_id.len() <= MAX_REQUEST_ID);
                    assert!(body_at <= datagram.len());
                    // What is forwarded is itself a plain document.
                    let forwarded = frame(&datagram[body_at..]);
                    assert_eq!(classify(&forwarded, usize::MAX), Ok(Datagram::Document));
                }
                Datagram::Control(m) => {
                    assert!(m.daemon_address.is_some() || m.invocation_done.is_some());
                    let size = m.daemon_address.map_or(0, |a| a.len()) + m.invocation_done.map_or(0, |d| d.len());
                    assert!(size <= datagram.len());
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_datagrams(bytes in proptest::collection::vec(any::<u8>(), 0..2048), max_len in 0usize..4096) {
        check_datagram(&bytes, max_len);
    }

    #[test]
    fn mutated_datagrams(seed in 0..SEEDS.len(), edits in edits()) {
        check_datagram(&mutate(SEEDS[seed].as_bytes(), &edits), 65_535);
    }

    #[test]
    fn arbitrary_telemetry_bodies(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(batch) = parse_batch(&bytes) {
            prop_assert!(batch.events.len() + batch.skipped <= bytes.len() / 2);
        }
    }

    #[test]
    fn mutated_telemetry_bodies(edits in edits()) {
        let body = mutate(BATCH.as_bytes(), &edits);
        if let Ok(batch) = parse_batch(&body) {
            prop_assert!(batch.events.len() + batch.skipped <= 3 + edits.len());
            for event in &batch.events {
                let id = match event {
                    Event::Start { request_id } | Event::RuntimeDone { request_id } => request_id,
                    Event::Report(report, _) => &report.request_id,
                };
                prop_assert!(id.len() <= body.len());
            }
        }
    }

    #[test]
    fn trace_headers_give_valid_reports_or_none(value in "[ -~]{0,120}|(Root=1-[0-9a-fA-F]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=[01])[ -~é]{0,8}|Root=1-[0-9a-fé-]{30,34};Parent=[0-9a-fé]{14,16};Sampled=1") {
        let header = TraceHeader::parse(&value);
        let report = Report {
            request_id: "r".into(), status: "success".into(), time: 1_764_583_200.5, duration_ms: 12.5,
            billed_duration_ms: 13, memory_size_mb: 128, max_memory_used_mb: 30, init_duration_ms: None,
        };
        match (header.sampled_ids(), report_subsegment(&header, &report, false)) {
            (None, body) => prop_assert!(body.is_none()),
            (Some((root, parent)), Some(body)) => {
                let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(doc["trace_id"].as_str(), Some(root));
                prop_assert_eq!(doc["parent_id"].as_str(), Some(parent));
                prop_assert!(root.len() == 35 && parent.len() == 16);
            }
            (Some(_), None) => prop_assert!(false, "sampled ids but no report for {value:?}"),
        }
    }
}
