//! Rate limits and bulkheads: per credential for the API, per store for intake (so one
//! store flooding cannot slow the others).

use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Limits {
    per_credential: DefaultKeyedRateLimiter<String>,
    per_store: DefaultKeyedRateLimiter<String>,
    store_concurrency: usize,
    /// One semaphore per store, created on first use. A std Mutex: held only to look up.
    store_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("max(1) is non-zero")
}

impl Limits {
    pub fn new(per_second: u32, burst: u32, store_per_second: u32, store_concurrency: usize) -> Self {
        Self {
            per_credential: RateLimiter::keyed(Quota::per_second(nz(per_second)).allow_burst(nz(burst))),
            per_store: RateLimiter::keyed(Quota::per_second(nz(store_per_second)).allow_burst(nz(store_per_second))),
            store_concurrency,
            store_slots: Mutex::new(HashMap::new()),
        }
    }

    fn check(limiter: &DefaultKeyedRateLimiter<String>, key: &str) -> Result<(), ApiError> {
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::rate_limited(wait.as_secs_f64().ceil() as u64)
        })
    }

    pub fn check_credential(&self, key: &str) -> Result<(), ApiError> {
        Self::check(&self.per_credential, key)
    }

    /// Rate and concurrency for one store's intake; the permit is held for the request.
    pub fn enter_store(&self, store: &str) -> Result<OwnedSemaphorePermit, ApiError> {
        Self::check(&self.per_store, store)?;
        let sem = {
            let mut slots = self.store_slots.lock().expect("limits mutex poisoned");
            slots.entry(store.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(self.store_concurrency))).clone()
        };
        sem.try_acquire_owned().map_err(|_| {
            let mut e = ApiError::rate_limited(1);
            e.code = "store_busy";
            e.message = "this store has too many deliveries in flight; retry shortly".into();
            e
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_limit_answers_429_with_retry_after() {
        let l = Limits::new(1, 2, 10, 2);
        assert!(l.check_credential("a").is_ok());
        assert!(l.check_credential("a").is_ok());
        let e = l.check_credential("a").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(e.retry_after_s.unwrap() >= 1);
        assert!(l.check_credential("b").is_ok(), "other credentials are unaffected");
    }

    #[test]
    fn store_bulkhead_bounds_concurrency_per_store() {
        let l = Limits::new(100, 100, 100, 2);
        let _a = l.enter_store("s1").unwrap();
        let _b = l.enter_store("s1").unwrap();
        assert_eq!(l.enter_store("s1").unwrap_err().code, "store_busy");
        assert!(l.enter_store("s2").is_ok(), "one store's flood leaves others alone");
    }
}
