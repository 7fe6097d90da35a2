//! What `GET /v1/integrations` shows per (platform, store): the breaker, the last success
//! and error, counts, and since when the integration has been failing.

use crate::breaker::BreakerState;
use crate::Tier;
use chrono::{DateTime, Utc};
use lastmile_core::Platform;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntegrationHealth {
    pub platform: Platform,
    /// Our store id.
    pub store_key: String,
    pub tier: Tier,
    /// This store's breaker.
    pub breaker: BreakerState,
    /// The breaker for the whole platform (hosted platforms only; `closed` elsewhere). When it
    /// is open, calls to every store of the platform are deferred.
    pub platform_breaker: BreakerState,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Calls in a row that ended in an error of any kind, permanent ones (a revoked token)
    /// included; the breaker itself counts only failures that say the platform is unwell.
    pub consecutive_failures: u32,
    /// Calls that went out (deferred ones did not).
    pub attempts: u64,
    /// Calls that ended in an error of any kind.
    pub failures: u64,
    /// The first error of the current run of errors; `None` after a success.
    pub degraded_since: Option<DateTime<Utc>>,
    /// Set while the platform's 429 pause lasts.
    pub rate_limited_until: Option<DateTime<Utc>>,
    /// Calls to this store in flight now (at most the bulkhead size).
    pub in_flight: usize,
}

/// The running counters behind [`IntegrationHealth`].
#[derive(Debug, Default)]
pub(crate) struct HealthStats {
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub attempts: u64,
    pub failures: u64,
    pub degraded_since: Option<DateTime<Utc>>,
}

impl HealthStats {
    pub fn success(&mut self, at: DateTime<Utc>) {
        self.attempts += 1;
        self.last_success_at = Some(at);
        self.consecutive_failures = 0;
        self.degraded_since = None;
    }

    pub fn error(&mut self, at: DateTime<Utc>, message: &str) {
        self.attempts += 1;
        self.failures += 1;
        self.consecutive_failures += 1;
        self.last_error = Some(message.to_owned());
        self.last_error_at = Some(at);
        self.degraded_since.get_or_insert(at);
    }
}
