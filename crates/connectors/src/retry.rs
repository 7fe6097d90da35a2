//! When to try a failed sync again. The worker stores the attempt count with the job and asks
//! [`RetrySchedule::delay`] for the next wait; `None` means the schedule is used up and the
//! job goes to the dead letters.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    /// The first waits, in order.
    pub steps: Vec<Duration>,
    /// After the steps, wait this long each time (None = stop after the steps).
    pub then_every: Option<Duration>,
    /// Stop once the nominal waits would add up to more than this.
    pub give_up_after: Duration,
    /// Each wait is scaled by a random factor in `1 ± jitter` so retries of many jobs that
    /// failed together (a platform outage) do not arrive together.
    pub jitter: f64,
}

impl Default for RetrySchedule {
    /// DESIGN's defaults: about 1 s, 5 s, 30 s, 2 min, 10 min, 30 min, then hourly up to 24 h.
    fn default() -> Self {
        let secs = Duration::from_secs;
        RetrySchedule {
            steps: vec![secs(1), secs(5), secs(30), secs(120), secs(600), secs(1800)],
            then_every: Some(secs(3600)),
            give_up_after: secs(24 * 3600),
            jitter: 0.2,
        }
    }
}

impl RetrySchedule {
    /// The wait after failed attempt number `attempt` (1 = the first attempt failed), without
    /// jitter. `None` when the schedule is used up.
    pub fn nominal(&self, attempt: u32) -> Option<Duration> {
        let mut total = Duration::ZERO;
        let mut wait = Duration::ZERO;
        for n in 1..=attempt.max(1) {
            wait = match self.steps.get(n as usize - 1) {
                Some(step) => *step,
                None => self.then_every?,
            };
            total += wait;
            if total > self.give_up_after {
                return None;
            }
        }
        Some(wait)
    }

    /// [`RetrySchedule::nominal`] with jitter applied.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Option<Duration> {
        let nominal = self.nominal(attempt)?;
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 { rng.gen_range(1.0 - jitter..=1.0 + jitter) } else { 1.0 };
        Some(nominal.mul_f64(factor))
    }

    /// The wait honouring a platform's `Retry-After` as well: never earlier than it asked.
    pub fn delay_respecting<R: Rng + ?Sized>(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Option<Duration> {
        let wait = self.delay(attempt, rng)?;
        Some(retry_after.map_or(wait, |asked| wait.max(asked)))
    }

    /// How many attempts the schedule allows in all (the first one included).
    pub fn max_attempts(&self) -> u32 {
        (1..).find(|n| self.nominal(*n).is_none()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn default_steps_then_hourly_until_a_day() {
        let s = RetrySchedule::default();
        let mins = |m: u64| Duration::from_secs(m * 60);
        assert_eq!(s.nominal(1), Some(Duration::from_secs(1)));
        assert_eq!(s.nominal(2), Some(Duration::from_secs(5)));
        assert_eq!(s.nominal(3), Some(Duration::from_secs(30)));
        assert_eq!(s.nominal(4), Some(mins(2)));
        assert_eq!(s.nominal(5), Some(mins(10)));
        assert_eq!(s.nominal(6), Some(mins(30)));
        assert_eq!(s.nominal(7), Some(mins(60)));
        // 2,556 s of steps plus 23 hours fit in 24 h; a 24th hour does not.
        assert_eq!(s.nominal(29), Some(mins(60)));
        assert_eq!(s.nominal(30), None);
        assert_eq!(s.max_attempts(), 30);
        let total: Duration = (1..30).filter_map(|n| s.nominal(n)).sum();
        assert!(total <= Duration::from_secs(24 * 3600));
        assert!(total > Duration::from_secs(23 * 3600));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let s = RetrySchedule::default();
        let mut rng = StdRng::seed_from_u64(7);
        let waits: Vec<Duration> = (0..200).map(|_| s.delay(3, &mut rng).unwrap()).collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_secs(24) && *w <= Duration::from_secs(36)));
        assert!(waits.iter().any(|w| *w != waits[0]), "jitter must vary the waits");
        assert_eq!(s.delay(30, &mut rng), None);
    }

    #[test]
    fn a_configured_list_without_repeat_ends_after_its_steps() {
        let s = RetrySchedule {
            steps: vec![Duration::from_millis(10), Duration::from_millis(20)],
            then_every: None,
            give_up_after: Duration::from_secs(60),
            jitter: 0.0,
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(s.delay(1, &mut rng), Some(Duration::from_millis(10)));
        assert_eq!(s.delay(2, &mut rng), Some(Duration::from_millis(20)));
        assert_eq!(s.delay(3, &mut rng), None);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let s = RetrySchedule { jitter: 0.0, ..RetrySchedule::default() };
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(s.delay_respecting(1, Some(Duration::from_secs(7)), &mut rng), Some(Duration::from_secs(7)));
        assert_eq!(s.delay_respecting(3, Some(Duration::from_secs(7)), &mut rng), Some(Duration::from_secs(30)));
    }
}
