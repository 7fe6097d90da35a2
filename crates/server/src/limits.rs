//! Rate limits and bulkheads: per credential for the API, per store for intake (so one
//! store flooding cannot slow the others).

use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Limits {
    per_credential: DefaultKeyedRateLimiter<String>,
    per_store: DefaultKeyedRateLimiter<String>,
    store_concurrency: usize,
    /// How long a delivery may wait for one of its store's slots before `store_busy`: a
    /// burst (a platform re-sending its backlog after an outage) is absorbed in order,
    /// while a sustained flood still gets 429 and never takes another store's slots.
    store_queue_wait: Duration,
    /// One semaphore per store, created on first use. A std Mutex: held only to look up.
    store_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Keys a limiter tracks before it drops the idle ones.
const MAX_TRACKED_KEYS: usize = 10_000;
/// Size of the last pruned map (process-wide: a heuristic for when to prune next).
static PRUNED_TO: AtomicUsize = AtomicUsize::new(0);

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("max(1) is non-zero")
}

impl Limits {
    pub fn new(
        per_second: u32,
        burst: u32,
        store_per_second: u32,
        store_concurrency: usize,
        store_queue_wait: Duration,
    ) -> Self {
        Self {
            per_credential: RateLimiter::keyed(Quota::per_second(nz(per_second)).allow_burst(nz(burst))),
            per_store: RateLimiter::keyed(Quota::per_second(nz(store_per_second)).allow_burst(nz(store_per_second))),
            store_concurrency,
            store_queue_wait,
            store_slots: Mutex::new(HashMap::new()),
        }
    }

    fn check(limiter: &DefaultKeyedRateLimiter<String>, key: &str) -> Result<(), ApiError> {
        // Bounded memory: once many keys are tracked, forget those whose state is back to
        // "full burst available" (they would behave the same if re-created).
        // Pruning is O(keys), so it runs again only after the map has doubled since.
        let len = limiter.len();
        if len > MAX_TRACKED_KEYS && len > 2 * PRUNED_TO.load(Ordering::Relaxed) {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            PRUNED_TO.store(limiter.len(), Ordering::Relaxed);
        }
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::rate_limited(wait.as_secs_f64().ceil() as u64)
        })
    }

    pub fn check_credential(&self, key: &str) -> Result<(), ApiError> {
        Self::check(&self.per_credential, key)
    }

    /// Rate and concurrency for one store's intake; the permit is held for the request.
    /// Over the rate → 429 `rate_limited` at once; all slots taken → wait up to the queue
    /// wait for one, then 429 `store_busy`.
    pub async fn enter_store(&self, store: &str) -> Result<OwnedSemaphorePermit, ApiError> {
        Self::check(&self.per_store, store)?;
        let sem = {
            let mut slots = self.store_slots.lock().expect("limits mutex poisoned");
            slots.entry(store.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(self.store_concurrency))).clone()
        };
        let busy = || {
            let mut e = ApiError::rate_limited(1);
            e.code = "store_busy";
            e.message = "this store has too many deliveries in flight; retry shortly".into();
            e
        };
        if let Ok(permit) = sem.clone().try_acquire_owned() {
            return Ok(permit);
        }
        match tokio::time::timeout(self.store_queue_wait, sem.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out, or (never) closed.
            _ => Err(busy()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_limit_answers_429_with_retry_after() {
        let l = Limits::new(1, 2, 10, 2, Duration::ZERO);
        assert!(l.check_credential("a").is_ok());
        assert!(l.check_credential("a").is_ok());
        let e = l.check_credential("a").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(e.retry_after_s.unwrap() >= 1);
        assert!(l.check_credential("b").is_ok(), "other credentials are unaffected");
    }

    #[test]
    fn many_distinct_keys_do_not_grow_memory_without_bound() {
        let l = Limits::new(1000, 1000, 10, 2, Duration::ZERO);
        for i in 0..(MAX_TRACKED_KEYS * 3) {
            l.check_credential(&format!("k{i}")).unwrap();
        }
        // Keys untouched for a while hold no state worth keeping; a one-request key is
        // "recent" only until its cell has refilled (1 ms here), so most are dropped.
        std::thread::sleep(Duration::from_millis(5));
        l.check_credential("last").unwrap();
        assert!(l.per_credential.len() < MAX_TRACKED_KEYS * 3, "{} keys kept", l.per_credential.len());
    }

    #[tokio::test]
    async fn store_bulkhead_bounds_concurrency_per_store() {
        let l = Limits::new(100, 100, 100, 2, Duration::ZERO);
        let _a = l.enter_store("s1").await.unwrap();
        let _b = l.enter_store("s1").await.unwrap();
        assert_eq!(l.enter_store("s1").await.unwrap_err().code, "store_busy");
        assert!(l.enter_store("s2").await.is_ok(), "one store's flood leaves others alone");
    }

    #[tokio::test]
    async fn a_burst_waits_briefly_for_a_slot_then_gets_store_busy() {
        let l = Arc::new(Limits::new(100, 100, 100, 1, Duration::from_secs(5)));
        let held = l.enter_store("s1").await.unwrap();
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.enter_store("s1").await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(waiter.await.unwrap().is_ok(), "a slot freed within the wait is taken");

        let short = Limits::new(100, 100, 100, 1, Duration::from_millis(30));
        let _held = short.enter_store("s1").await.unwrap();
        let e = short.enter_store("s1").await.unwrap_err();
        assert_eq!((e.code, e.retry_after_s), ("store_busy", Some(1)));
    }
}
