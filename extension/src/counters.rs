//! Counters of what happened to documents, logged as one compact JSON line.
//!
//! Shared atomics rather than actor state: the intake and the forwarder both
//! bump them on their hot paths, and a message per document just to count it
//! would cost more than the counting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Running totals since the extension started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Valid documents taken in.
    pub received: AtomicU64,
    /// Of `received`, those that came over the Unix socket (the library's
    /// path; UDP is for other senders, and for bursts the Unix queue could
    /// not hold).
    pub received_unix: AtomicU64,
    /// Documents sent to the daemon.
    pub forwarded: AtomicU64,
    /// Valid documents lost to the buffer bound (see the drop policy).
    pub dropped: AtomicU64,
    /// Datagrams rejected: garbage, bad header, not UTF-8, oversized.
    pub malformed: AtomicU64,
    /// `Lambda report` subsegments the extension added.
    pub enriched: AtomicU64,
    /// OTLP export is on: the `export_*` counters are reported.
    pub otlp: AtomicBool,
    /// Documents the OTLP endpoint accepted.
    pub exported: AtomicU64,
    /// Documents the OTLP path lost: to its byte bound (oldest first), or in
    /// a request the endpoint refused for good (400, 401, 403, 413, ...).
    pub export_dropped: AtomicU64,
    /// OTLP requests that failed (their documents are kept unless refused).
    pub export_failures: AtomicU64,
    /// Documents that gave no span: `in_progress` ones (the completed
    /// document follows) and ones whose ids do not map.
    pub export_skipped: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// See [`Counters::received`].
    pub received: u64,
    /// See [`Counters::received_unix`].
    pub received_unix: u64,
    /// See [`Counters::forwarded`].
    pub forwarded: u64,
    /// See [`Counters::dropped`].
    pub dropped: u64,
    /// See [`Counters::malformed`].
    pub malformed: u64,
    /// See [`Counters::enriched`].
    pub enriched: u64,
    /// See [`Counters::exported`]; with OTLP export only, as the three below.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exported: Option<u64>,
    /// See [`Counters::export_dropped`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_dropped: Option<u64>,
    /// See [`Counters::export_failures`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_failures: Option<u64>,
    /// See [`Counters::export_skipped`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_skipped: Option<u64>,
    /// Documents still buffered (not yet forwarded), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffered: Option<u64>,
}

impl Counters {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    fn otlp_value(&self, counter: &AtomicU64) -> Option<u64> {
        self.otlp.load(Relaxed).then(|| counter.load(Relaxed))
    }

    /// Reads all counters.
    pub fn snapshot(&self, buffered: Option<u64>) -> Snapshot {
        Snapshot {
            received: self.received.load(Relaxed),
            received_unix: self.received_unix.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            enriched: self.enriched.load(Relaxed),
            exported: self.otlp_value(&self.exported),
            export_dropped: self.otlp_value(&self.export_dropped),
            export_failures: self.otlp_value(&self.export_failures),
            export_skipped: self.otlp_value(&self.export_skipped),
            buffered,
        }
    }
}

impl Snapshot {
    /// The log line: `counters {"received":..}`; tests and log filters key on `counters `.
    pub fn line(&self) -> String {
        format!("counters {}", serde_json::to_string(self).unwrap_or_default())
    }
}
