//! Counters of what happened to documents, logged as one compact JSON line.
//!
//! Shared atomics rather than actor state: the intake and the forwarder both
//! bump them on their hot paths, and a message per document just to count it
//! would cost more than the counting.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Running totals since the extension started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Valid documents taken in.
    pub received: AtomicU64,
    /// Documents sent to the daemon.
    pub forwarded: AtomicU64,
    /// Valid documents lost to the buffer bound (see the drop policy).
    pub dropped: AtomicU64,
    /// Datagrams rejected: garbage, bad header, not UTF-8, oversized.
    pub malformed: AtomicU64,
    /// `Lambda report` subsegments the extension added.
    pub enriched: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// See [`Counters::received`].
    pub received: u64,
    /// See [`Counters::forwarded`].
    pub forwarded: u64,
    /// See [`Counters::dropped`].
    pub dropped: u64,
    /// See [`Counters::malformed`].
    pub malformed: u64,
    /// See [`Counters::enriched`].
    pub enriched: u64,
    /// Documents still buffered (not yet forwarded), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffered: Option<u64>,
}

impl Counters {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Reads all counters.
    pub fn snapshot(&self, buffered: Option<u64>) -> Snapshot {
        Snapshot {
            received: self.received.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            enriched: self.enriched.load(Relaxed),
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
