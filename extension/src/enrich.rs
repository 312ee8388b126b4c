//! The `Lambda report` subsegment: the invocation's `platform.report` figures
//! attached to its trace, next to the function's own subsegments.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use serde::Serialize;

/// `Root`, `Parent` and `Sampled` of an `X-Amzn-Trace-Id` value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceHeader {
    /// Trace id.
    pub root: Option<String>,
    /// Id of the segment the invocation's subsegments hang under.
    pub parent: Option<String>,
    /// `Sampled=1`.
    pub sampled: bool,
}

impl TraceHeader {
    /// Parses a header value with the library's strict parser
    /// (`lambda-xray-wire`): a malformed header (a `Root` that is not an X-Ray
    /// trace id, a bad `Parent`...) gives an empty one, so nothing is recorded
    /// under it (the daemon would reject it).
    pub fn parse(value: &str) -> Self {
        match lambda_xray_wire::TraceHeader::parse(value) {
            Ok(h) => TraceHeader {
                root: h.root().map(|r| r.as_str().to_owned()),
                parent: h.parent().map(|p| p.to_string()),
                sampled: h.sampled() == lambda_xray_wire::SamplingDecision::Sampled,
            },
            Err(_) => TraceHeader::default(),
        }
    }

    /// Root and Parent when the invocation is sampled: only then is anything recorded.
    pub fn sampled_ids(&self) -> Option<(&str, &str)> {
        match (self.sampled, &self.root, &self.parent) {
            (true, Some(root), Some(parent)) => Some((root, parent)),
            _ => None,
        }
    }
}

/// The figures of one `platform.report`.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Invocation's request id.
    pub request_id: String,
    /// `success`, `error`, `failure`, `timeout`...
    pub status: String,
    /// Time the platform emitted the report, epoch seconds.
    pub time: f64,
    /// `durationMs`.
    pub duration_ms: f64,
    /// `billedDurationMs`.
    pub billed_duration_ms: u64,
    /// `memorySizeMB`.
    pub memory_size_mb: u64,
    /// `maxMemoryUsedMB`.
    pub max_memory_used_mb: u64,
    /// `initDurationMs`, present on a cold start.
    pub init_duration_ms: Option<f64>,
}

#[derive(Serialize)]
struct Subsegment<'a> {
    name: &'static str,
    id: String,
    trace_id: &'a str,
    parent_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    start_time: f64,
    end_time: f64,
    annotations: Annotations,
    metadata: HashMap<&'static str, Metadata<'a>>,
}

/// Annotation keys use only `[A-Za-z0-9_]`, so they work in filter expressions.
#[derive(Serialize)]
struct Annotations {
    cold_start: bool,
    max_memory_used_mb: u64,
    memory_size_mb: u64,
    billed_duration_ms: u64,
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    init_duration_ms: Option<f64>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    request_id: &'a str,
    status: &'a str,
}

/// Name of the subsegment in the X-Ray console.
pub const SUBSEGMENT_NAME: &str = "Lambda report";

/// Builds the subsegment body (without the daemon header), or `None` when the
/// invocation was not sampled.
///
/// It spans the invocation as the report measures it: it ends when the report
/// was emitted and starts `durationMs` earlier.
pub fn report_subsegment(header: &TraceHeader, report: &Report, cold_start: bool) -> Option<Vec<u8>> {
    let (trace_id, parent_id) = header.sampled_ids()?;
    let end_time = round_micros(report.time);
    let start_time = round_micros(end_time - report.duration_ms / 1000.0);
    let subsegment = Subsegment {
        name: SUBSEGMENT_NAME,
        id: new_id(),
        trace_id,
        parent_id,
        kind: "subsegment",
        start_time,
        end_time,
        annotations: Annotations {
            cold_start,
            max_memory_used_mb: report.max_memory_used_mb,
            memory_size_mb: report.memory_size_mb,
            billed_duration_ms: report.billed_duration_ms,
            duration_ms: report.duration_ms,
            init_duration_ms: report.init_duration_ms,
        },
        metadata: HashMap::from([("lambda", Metadata { request_id: &report.request_id, status: &report.status })]),
    };
    serde_json::to_vec(&subsegment).ok()
}

fn round_micros(seconds: f64) -> f64 {
    (seconds * 1e6).round() / 1e6
}

/// 16 hex digits, random: std's `RandomState` is seeded from the OS, which
/// spares a dependency for ids that need only be unique, not secret.
fn new_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers() {
        let h = TraceHeader::parse("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a:1");
        assert_eq!(h.sampled_ids(), Some(("1-5759e988-bd862e3fe1be46a994272793", "53995c3f42cd8ad8")));
        assert_eq!(TraceHeader::parse("Root=1-5759e988-bd862e3fe1be46a994272793").sampled_ids(), None);
        assert_eq!(TraceHeader::parse("Root=;Parent=;Sampled=1").sampled_ids(), None);
        assert_eq!(TraceHeader::parse(";;garbage==;").sampled_ids(), None);
        assert!(!TraceHeader::parse("Root=1-a-b;Parent=c;Sampled=0").sampled);
        // Not X-Ray ids: nothing would be accepted by the daemon under them.
        for bad in [
            "Root=garbage;Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=1-5759e988-bd862e3fe1be46a99427279;Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=1-5759e988_bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad;Sampled=1",
            "Root=1-5759e988-bd862e3fe1be46a99427279é;Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8adg;Sampled=1",
        ] {
            assert_eq!(TraceHeader::parse(bad).sampled_ids(), None, "{bad}");
        }
    }

    #[test]
    fn builds_subsegment() {
        let header = TraceHeader::parse("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1");
        let report = Report {
            request_id: "r1".into(),
            status: "success".into(),
            time: 1_700_000_000.5,
            duration_ms: 250.0,
            billed_duration_ms: 251,
            memory_size_mb: 128,
            max_memory_used_mb: 40,
            init_duration_ms: Some(12.5),
        };
        let body = report_subsegment(&header, &report, true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "subsegment");
        assert_eq!(v["parent_id"], "53995c3f42cd8ad8");
        assert_eq!(v["id"].as_str().unwrap().len(), 16);
        assert_eq!(v["annotations"]["cold_start"], true);
        assert_eq!(v["annotations"]["init_duration_ms"], 12.5);
        assert_eq!(v["end_time"], 1_700_000_000.5);
        assert_eq!(v["start_time"], 1_700_000_000.25);
        assert_eq!(v["metadata"]["lambda"]["request_id"], "r1");
        let unsampled = TraceHeader::parse("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1");
        assert!(report_subsegment(&unsampled, &report, false).is_none());
    }
}
