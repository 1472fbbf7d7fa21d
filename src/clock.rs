//! The one clock: every expiry, timestamp and "last sync" in `ase` is Unix
//! time in milliseconds from here, so a value written by one process compares
//! with one read by another.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds (0 if the system clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
