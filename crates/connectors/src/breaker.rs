//! A circuit breaker as a pure state machine: the caller passes the time in (tokio's
//! `Instant`, so tests can pause and advance the clock) and reports each call's result.
//!
//! Closed → Open after `consecutive_failures` failures in a row, or when at least
//! `min_calls` calls in the last `window` failed at `failure_rate` or worse. Open rejects
//! calls for `open_for`, then lets one probe through (half-open): its success closes the
//! breaker, its failure opens it again. Slow calls count as failures: the hub reports a call
//! slower than the tier's slow-call threshold as [`CallResult::Failure`].

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// How long a caller is told to wait while another call is the half-open probe.
const PROBE_BUSY_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row; 0 turns the rule off.
    pub consecutive_failures: u32,
    /// Open when the failure share over the window reaches this (0.5 = 50%)...
    pub failure_rate: f64,
    /// ...and the window holds at least this many calls; 0 turns the rule off.
    pub min_calls: u32,
    pub window: Duration,
    /// How long an open breaker rejects calls before letting a probe through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    /// DESIGN's sync-back defaults: 5 in a row, or ≥ 50% of ≥ 10 calls in a minute; probe after 30 s.
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 10,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(30),
        }
    }
}

impl BreakerConfig {
    /// For a whole hosted platform (all its stores together): no consecutive rule, since one
    /// broken store must not stop the others, and a larger sample for the rate rule.
    pub fn platform_default() -> Self {
        BreakerConfig { consecutive_failures: 0, min_calls: 30, ..BreakerConfig::default() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of the `lastmile_integration_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge_value(&self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// What a finished call tells the breaker about the platform's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    Success,
    Failure,
    /// Says nothing about health (rate limited, or the caller gave up first). Releases a
    /// half-open probe without changing state.
    Neutral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    Rejected { retry_in: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open {
        since: Instant,
    },
    /// `probe_started` is `Some` while a probe is out. A probe that never reports back (its
    /// caller was dropped) is replaced after `open_for`, so the breaker cannot stick.
    HalfOpen {
        probe_started: Option<Instant>,
    },
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    phase: Phase,
    consecutive: u32,
    /// (when, failed) for calls inside the window, oldest first.
    window: VecDeque<(Instant, bool)>,
}

impl CircuitBreaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        CircuitBreaker { cfg, phase: Phase::Closed, consecutive: 0, window: VecDeque::new() }
    }

    /// The state as of `now`: an open breaker whose wait is over reports half-open.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { since } if now >= since + self.cfg.open_for => BreakerState::HalfOpen,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// May a call go out now? An allowed call must be followed by [`CircuitBreaker::record`].
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.phase {
            Phase::Closed => Admission::Allowed,
            Phase::Open { since } => {
                let probe_at = since + self.cfg.open_for;
                if now >= probe_at {
                    self.phase = Phase::HalfOpen { probe_started: Some(now) };
                    Admission::Allowed
                } else {
                    Admission::Rejected { retry_in: probe_at - now }
                }
            }
            Phase::HalfOpen { probe_started: Some(started) } if now < started + self.cfg.open_for => {
                Admission::Rejected { retry_in: PROBE_BUSY_RETRY }
            }
            Phase::HalfOpen { .. } => {
                self.phase = Phase::HalfOpen { probe_started: Some(now) };
                Admission::Allowed
            }
        }
    }

    /// Report how an admitted call ended. Returns the new state when it changed.
    pub fn record(&mut self, now: Instant, result: CallResult) -> Option<BreakerState> {
        let before = self.state(now);
        match (self.phase, result) {
            (_, CallResult::Neutral) => {
                if let Phase::HalfOpen { .. } = self.phase {
                    self.phase = Phase::HalfOpen { probe_started: None };
                }
            }
            (Phase::HalfOpen { .. }, CallResult::Success) => self.close(),
            (Phase::HalfOpen { .. }, CallResult::Failure) => {
                self.consecutive += 1;
                self.phase = Phase::Open { since: now };
            }
            // A call admitted before the breaker opened, finishing late: count it, change nothing.
            (Phase::Open { .. }, CallResult::Success) => self.consecutive = 0,
            (Phase::Open { .. }, CallResult::Failure) => self.consecutive += 1,
            (Phase::Closed, result) => {
                let failed = result == CallResult::Failure;
                self.consecutive = if failed { self.consecutive + 1 } else { 0 };
                self.window.push_back((now, failed));
                self.prune(now);
                if self.should_trip() {
                    self.phase = Phase::Open { since: now };
                    self.window.clear();
                }
            }
        }
        let after = self.state(now);
        (after != before).then_some(after)
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.consecutive = 0;
        self.window.clear();
    }

    fn prune(&mut self, now: Instant) {
        while self.window.front().is_some_and(|(at, _)| *at + self.cfg.window <= now) {
            self.window.pop_front();
        }
    }

    fn should_trip(&self) -> bool {
        if self.cfg.consecutive_failures > 0 && self.consecutive >= self.cfg.consecutive_failures {
            return true;
        }
        let calls = self.window.len();
        if self.cfg.min_calls == 0 || calls < self.cfg.min_calls as usize {
            return false;
        }
        let failures = self.window.iter().filter(|(_, failed)| *failed).count();
        failures as f64 / calls as f64 >= self.cfg.failure_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> (CircuitBreaker, Instant) {
        (CircuitBreaker::new(BreakerConfig::default()), Instant::now())
    }

    fn call(b: &mut CircuitBreaker, now: Instant, result: CallResult) {
        assert_eq!(b.admit(now), Admission::Allowed);
        b.record(now, result);
    }

    #[test]
    fn opens_after_five_consecutive_failures_not_four() {
        let (mut b, t) = breaker();
        for _ in 0..4 {
            call(&mut b, t, CallResult::Failure);
        }
        assert_eq!(b.state(t), BreakerState::Closed);
        assert_eq!(b.admit(t), Admission::Allowed);
        assert_eq!(b.record(t, CallResult::Failure), Some(BreakerState::Open));
        assert_eq!(b.admit(t), Admission::Rejected { retry_in: Duration::from_secs(30) });
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let (mut b, t) = breaker();
        for _ in 0..4 {
            call(&mut b, t, CallResult::Failure);
        }
        call(&mut b, t, CallResult::Success);
        for _ in 0..4 {
            call(&mut b, t, CallResult::Failure);
        }
        assert_eq!(b.state(t), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 4);
    }

    #[test]
    fn opens_at_half_failures_over_ten_calls_in_the_window() {
        let (mut b, t) = breaker();
        // S F S F ... so the consecutive rule never fires: 4 of 9 failed.
        for i in 0..9 {
            call(&mut b, t, if i % 2 == 1 { CallResult::Failure } else { CallResult::Success });
        }
        assert_eq!(b.state(t), BreakerState::Closed);
        call(&mut b, t, CallResult::Failure);
        assert_eq!(b.state(t), BreakerState::Open, "5 of 10 failed");
    }

    #[test]
    fn stays_closed_below_half_or_below_ten_calls() {
        let (mut b, t) = breaker();
        // 5 of 9 failed: above the rate, but too few calls to judge.
        for i in 0..9 {
            call(&mut b, t, if i % 2 == 0 { CallResult::Failure } else { CallResult::Success });
        }
        assert_eq!(b.state(t), BreakerState::Closed);
        let (mut b, t) = breaker();
        // 4 of 10 failed.
        for i in 0..10 {
            call(&mut b, t, if i % 5 < 2 { CallResult::Failure } else { CallResult::Success });
        }
        assert_eq!(b.state(t), BreakerState::Closed);
    }

    #[test]
    fn calls_older_than_the_window_do_not_count() {
        let (mut b, t) = breaker();
        for _ in 0..4 {
            call(&mut b, t, CallResult::Failure);
            call(&mut b, t, CallResult::Success);
        }
        let later = t + Duration::from_secs(61);
        for _ in 0..2 {
            call(&mut b, later, CallResult::Failure);
            call(&mut b, later, CallResult::Success);
        }
        assert_eq!(b.state(later), BreakerState::Closed, "only 4 calls are inside the window");
    }

    #[test]
    fn half_opens_after_the_wait_and_one_probe_success_closes() {
        let (mut b, t) = breaker();
        for _ in 0..5 {
            call(&mut b, t, CallResult::Failure);
        }
        let almost = t + Duration::from_secs(29);
        assert_eq!(b.state(almost), BreakerState::Open);
        assert_eq!(b.admit(almost), Admission::Rejected { retry_in: Duration::from_secs(1) });
        let probe = t + Duration::from_secs(30);
        assert_eq!(b.state(probe), BreakerState::HalfOpen);
        assert_eq!(b.admit(probe), Admission::Allowed);
        assert!(matches!(b.admit(probe), Admission::Rejected { .. }), "only one probe at a time");
        assert_eq!(b.record(probe, CallResult::Success), Some(BreakerState::Closed));
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.admit(probe), Admission::Allowed);
    }

    #[test]
    fn a_failed_probe_reopens_for_another_full_wait() {
        let (mut b, t) = breaker();
        for _ in 0..5 {
            call(&mut b, t, CallResult::Failure);
        }
        let probe = t + Duration::from_secs(30);
        call(&mut b, probe, CallResult::Failure);
        assert_eq!(b.state(probe), BreakerState::Open);
        assert_eq!(b.admit(probe + Duration::from_secs(10)), Admission::Rejected { retry_in: Duration::from_secs(20) });
    }

    #[test]
    fn a_neutral_probe_releases_the_slot_and_a_lost_probe_is_replaced() {
        let (mut b, t) = breaker();
        for _ in 0..5 {
            call(&mut b, t, CallResult::Failure);
        }
        let probe = t + Duration::from_secs(30);
        assert_eq!(b.admit(probe), Admission::Allowed);
        b.record(probe, CallResult::Neutral);
        assert_eq!(b.state(probe), BreakerState::HalfOpen);
        assert_eq!(b.admit(probe), Admission::Allowed, "neutral result freed the probe slot");
        // This probe never reports back; after another open_for a new one may go.
        assert!(matches!(b.admit(probe + Duration::from_secs(29)), Admission::Rejected { .. }));
        assert_eq!(b.admit(probe + Duration::from_secs(30)), Admission::Allowed);
    }

    #[test]
    fn neutral_results_do_not_count_toward_opening() {
        let (mut b, t) = breaker();
        for _ in 0..20 {
            call(&mut b, t, CallResult::Neutral);
        }
        for _ in 0..4 {
            call(&mut b, t, CallResult::Failure);
        }
        assert_eq!(b.state(t), BreakerState::Closed);
    }

    #[test]
    fn platform_default_ignores_runs_but_trips_on_rate() {
        let t = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::platform_default());
        for _ in 0..29 {
            call(&mut b, t, CallResult::Failure);
        }
        assert_eq!(b.state(t), BreakerState::Closed, "29 calls are below the platform's min_calls");
        call(&mut b, t, CallResult::Failure);
        assert_eq!(b.state(t), BreakerState::Open);
    }
}
