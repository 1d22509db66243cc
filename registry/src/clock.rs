//! The node's notion of wall-clock time.
//!
//! Wall-clock milliseconds are derived from a monotonic tokio `Instant` plus the wall time at
//! start, so heartbeat expiry follows tokio's clock: tests pause and advance it instead of
//! sleeping, and a wall-clock step (NTP) never mass-expires instances.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Monotonic milliseconds anchored to the wall clock at construction.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_wall_ms: u64,
    base: Instant,
}

impl Clock {
    /// A clock anchored now.
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self {
            base_wall_ms: wall,
            base: Instant::now(),
        }
    }

    /// Current time in ms since the Unix epoch (monotonic within this process).
    pub fn now_ms(&self) -> u64 {
        self.base_wall_ms + self.base.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
