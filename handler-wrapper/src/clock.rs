//! Time as X-Ray documents carry it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Current time as X-Ray wants it: epoch seconds with microsecond resolution.
pub(crate) fn now_seconds() -> f64 {
    // u64 microseconds (good for 584,000 years) convert to f64 exactly and
    // much faster than u128.
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(d.subsec_micros())))
        .unwrap_or(0);
    micros as f64 / 1e6
}
