//! Wall-clock time as run dirs, locks and the scheduler record it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in whole seconds.
pub fn unix_now() -> u64 {
    unix_seconds() as u64
}

/// Unix time in seconds, with sub-second precision.
pub fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
