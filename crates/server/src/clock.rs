//! The server's clock for the deadlines it stores and checks (offer expiry, readiness,
//! dispatch waits): wall time read once at start, advanced by tokio's monotonic clock.
//!
//! Why not `Utc::now()` everywhere: deadlines must follow tokio's timers, so a test that
//! pauses and advances tokio time (`tokio::time::advance`) moves offer expiry with the
//! dispatcher's ticks. In production tokio's clock is the monotonic clock, so this stays
//! within the wall clock's NTP steps (slews move both alike).

use lastmile_storage::now_ms;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix ms when the clock was made.
    wall_at_start_ms: i64,
    /// tokio's instant at the same moment; paused/advanced tokio time moves it.
    start: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self { wall_at_start_ms: now_ms(), start: Instant::now() }
    }

    /// Unix milliseconds now, by this clock.
    pub fn now_ms(&self) -> i64 {
        self.wall_at_start_ms + self.start.elapsed().as_millis() as i64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
