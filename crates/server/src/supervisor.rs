//! Background workers under supervision. Each worker (relay, dispatcher, GPS flusher,
//! sync-back, events out, the NATS consumers, retention, …) runs in its own task; when it
//! ends or panics before shutdown, the supervisor logs it, marks it unhealthy (so `/readyz`
//! reports it), waits a backoff that doubles up to [`MAX_BACKOFF`], and starts it again. A
//! restarted worker counts as healthy again once it has run for [`STABLE_AFTER`], which
//! also resets its backoff.

use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// How one worker is doing, as `/readyz` shows it.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct WorkerHealth {
    pub healthy: bool,
    /// Times it ended or panicked and was started again.
    pub restarts: u64,
    /// Why it last stopped, if it ever did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// Every supervised worker's health, by name.
#[derive(Clone, Default)]
pub struct Workers {
    health: Arc<Mutex<BTreeMap<&'static str, WorkerHealth>>>,
}

impl Workers {
    fn update(&self, name: &'static str, f: impl FnOnce(&mut WorkerHealth)) {
        let mut map = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(name).or_insert(WorkerHealth { healthy: true, restarts: 0, last_failure: None });
        f(entry);
    }

    /// A copy of every worker's health.
    pub fn snapshot(&self) -> BTreeMap<&'static str, WorkerHealth> {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The workers that are not healthy now.
    pub fn unhealthy(&self) -> Vec<&'static str> {
        self.snapshot().into_iter().filter(|(_, h)| !h.healthy).map(|(n, _)| n).collect()
    }

    /// Run `make()`'s future under supervision in `set` until `shutdown`.
    pub fn supervise<F, Fut>(&self, set: &mut JoinSet<()>, name: &'static str, shutdown: CancellationToken, make: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.update(name, |_| {});
        let workers = self.clone();
        set.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                let mut task = tokio::spawn(make());
                let stable = tokio::time::sleep(STABLE_AFTER);
                tokio::pin!(stable);
                let mut counted_stable = false;
                let ended = loop {
                    tokio::select! {
                        ended = &mut task => break ended,
                        _ = &mut stable, if !counted_stable => {
                            counted_stable = true;
                            backoff = FIRST_BACKOFF;
                            workers.update(name, |h| h.healthy = true);
                        }
                    }
                };
                if shutdown.is_cancelled() {
                    return;
                }
                let why = match ended {
                    Ok(()) => "it ended".to_owned(),
                    Err(e) if e.is_panic() => format!("it panicked: {}", lastmile_core::text::panic_message(e.into_panic().as_ref())),
                    Err(e) => format!("it was cancelled: {e}"),
                };
                tracing::error!(worker = name, reason = %why, retry_in_ms = backoff.as_millis() as u64, "worker stopped; restarting");
                metrics::counter!("lastmile_worker_restarts_total", "worker" => name).increment(1);
                workers.update(name, |h| {
                    h.healthy = false;
                    h.restarts += 1;
                    h.last_failure = Some(why);
                });
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }
}

impl Workers {
    /// [`Workers::supervise`] for the common worker shape `run(state, shutdown)`.
    pub fn supervise_with<F, Fut>(
        &self,
        set: &mut JoinSet<()>,
        name: &'static str,
        state: &crate::state::AppState,
        shutdown: &CancellationToken,
        run: F,
    ) where
        F: Fn(crate::state::AppState, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (state, stop) = (state.clone(), shutdown.clone());
        self.supervise(set, name, shutdown.clone(), move || run(state.clone(), stop.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Let the supervisor's tasks run up to their next timer.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_panics_or_ends_is_restarted_with_backoff_and_reported_until_stable() {
        let workers = Workers::default();
        let mut set = JoinSet::new();
        let shutdown = CancellationToken::new();
        let starts = Arc::new(AtomicU32::new(0));
        let s = starts.clone();
        let stop = shutdown.clone();
        workers.supervise(&mut set, "flaky", shutdown.clone(), move || {
            let n = s.fetch_add(1, Ordering::SeqCst);
            let stop = stop.clone();
            async move {
                match n {
                    0 => panic!("first run fails"),
                    1 => {} // ends on its own
                    _ => stop.cancelled().await,
                }
            }
        });
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        let h = &workers.snapshot()["flaky"];
        assert!(!h.healthy && h.restarts == 1, "{h:?}");
        assert!(h.last_failure.as_deref().unwrap_or_default().contains("first run fails"), "{h:?}");
        assert_eq!(workers.unhealthy(), ["flaky"]);

        // The first backoff, then the second run ends by itself: a longer backoff.
        tokio::time::advance(FIRST_BACKOFF).await;
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert_eq!(workers.snapshot()["flaky"].restarts, 2);
        assert!(workers.snapshot()["flaky"].last_failure.as_deref() == Some("it ended"));
        tokio::time::advance(FIRST_BACKOFF).await;
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "the backoff doubled");
        tokio::time::advance(FIRST_BACKOFF).await;
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);

        // Still unhealthy until it has run for STABLE_AFTER.
        assert!(!workers.snapshot()["flaky"].healthy);
        tokio::time::advance(STABLE_AFTER).await;
        settle().await;
        assert!(workers.snapshot()["flaky"].healthy);
        assert!(workers.unhealthy().is_empty());

        // Shutdown stops it for good: no restart, no failure recorded.
        shutdown.cancel();
        while set.join_next().await.is_some() {}
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert_eq!(workers.snapshot()["flaky"].restarts, 2);
    }
}
