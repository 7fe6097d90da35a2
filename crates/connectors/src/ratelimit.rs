//! Client-side rate limiting per (platform, store): a token bucket sized to the platform's
//! published limit, plus a pause when the platform answers 429 (`Retry-After`, or
//! BigCommerce's `X-Rate-Limit-Time-Reset-Ms`).
//!
//! Written here rather than with `governor` because it must follow tokio's clock (paused
//! time in tests) and carry the server-imposed pause beside the bucket; it is a few lines.

use std::time::Duration;
use tokio::time::Instant;

/// A refill rate and a capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub per_second: f64,
    pub burst: u32,
}

impl Bucket {
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Bucket { per_second, burst }
    }
}

#[derive(Debug, Clone)]
pub struct TokenBucket {
    bucket: Bucket,
    tokens: f64,
    refilled_at: Instant,
    paused_until: Option<Instant>,
}

impl TokenBucket {
    /// Starts full.
    pub fn new(bucket: Bucket, now: Instant) -> Self {
        TokenBucket { bucket, tokens: f64::from(bucket.burst), refilled_at: now, paused_until: None }
    }

    pub fn bucket(&self) -> Bucket {
        self.bucket
    }

    /// Switch to another size (the store changed tier), keeping what is left.
    pub fn resize(&mut self, bucket: Bucket, now: Instant) {
        self.refill(now);
        self.bucket = bucket;
        self.tokens = self.tokens.min(f64::from(bucket.burst));
    }

    /// The platform said to stop until `until`; a later pause wins over an earlier one.
    pub fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    /// How long the platform-imposed pause still lasts.
    pub fn paused_for(&self, now: Instant) -> Option<Duration> {
        self.paused_until.filter(|until| *until > now).map(|until| until - now)
    }

    /// Take `n` tokens now, or say how long until they would be there (nothing is taken).
    /// A request larger than the bucket is treated as a full bucket, so it can succeed.
    pub fn try_take(&mut self, n: u32, now: Instant) -> Result<(), Duration> {
        if let Some(wait) = self.paused_for(now) {
            return Err(wait);
        }
        self.refill(now);
        let wanted = f64::from(n.min(self.bucket.burst));
        if self.tokens >= wanted {
            self.tokens -= wanted;
            return Ok(());
        }
        if self.bucket.per_second <= 0.0 {
            return Err(Duration::MAX);
        }
        Err(Duration::from_secs_f64((wanted - self.tokens) / self.bucket.per_second))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.bucket.per_second).min(f64::from(self.bucket.burst));
        self.refilled_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_the_rate() {
        let t = Instant::now();
        let mut b = TokenBucket::new(Bucket::new(2.0, 40), t);
        for _ in 0..40 {
            assert_eq!(b.try_take(1, t), Ok(()));
        }
        assert_eq!(b.try_take(1, t), Err(Duration::from_millis(500)));
        assert_eq!(b.try_take(1, t + Duration::from_millis(500)), Ok(()));
        assert_eq!(b.try_take(2, t + Duration::from_millis(500)), Err(Duration::from_secs(1)));
    }

    #[test]
    fn refill_never_exceeds_the_burst() {
        let t = Instant::now();
        let mut b = TokenBucket::new(Bucket::new(10.0, 10), t);
        let later = t + Duration::from_secs(3600);
        for _ in 0..10 {
            assert_eq!(b.try_take(1, later), Ok(()));
        }
        assert!(b.try_take(1, later).is_err());
    }

    #[test]
    fn a_pause_blocks_until_it_ends_and_the_later_pause_wins() {
        let t = Instant::now();
        let mut b = TokenBucket::new(Bucket::new(10.0, 10), t);
        b.pause_until(t + Duration::from_secs(7));
        b.pause_until(t + Duration::from_secs(3));
        assert_eq!(b.paused_for(t), Some(Duration::from_secs(7)));
        assert_eq!(b.try_take(1, t + Duration::from_secs(2)), Err(Duration::from_secs(5)));
        assert_eq!(b.try_take(1, t + Duration::from_secs(7)), Ok(()));
        assert_eq!(b.paused_for(t + Duration::from_secs(7)), None);
    }

    #[test]
    fn oversized_requests_take_a_full_bucket() {
        let t = Instant::now();
        let mut b = TokenBucket::new(Bucket::new(1.0, 2), t);
        assert_eq!(b.try_take(5, t), Ok(()));
        assert_eq!(b.try_take(5, t), Err(Duration::from_secs(2)));
    }
}
