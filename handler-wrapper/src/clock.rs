//! Time as X-Ray documents carry it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Current time as X-Ray wants it: epoch seconds with microsecond resolution.
pub(crate) fn now_seconds() -> f64 {
    // u64 microseconds (good for 584,000 years) convert to f64 exactly and
    // much faster than u128.
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    micros as f64 / 1e6
}
