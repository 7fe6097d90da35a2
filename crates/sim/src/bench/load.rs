//! Load shapes: closed loop (N requests always in flight: the peak rate) and open loop
//! (requests started on a fixed schedule, latency counted from the scheduled start so a
//! stalled server cannot hide its queue). Both stop by themselves and report progress.

use crate::stats::{latency_histogram, Percentiles};
use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One request: `n` is its sequence number; resolves to whether it succeeded.
pub type Request = Arc<dyn Fn(u64) -> BoxFuture<'static, bool> + Send + Sync>;

#[derive(Debug, Clone)]
pub struct LoadResult {
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub latency: Percentiles,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// std Mutex: one record per request, never held across an await.
    hist: Mutex<Histogram<u64>>,
}

impl Tally {
    fn new() -> Arc<Tally> {
        Arc::new(Tally { ok: AtomicU64::new(0), failed: AtomicU64::new(0), hist: Mutex::new(latency_histogram()) })
    }
    fn record(&self, ok: bool, took: Duration) {
        if ok {
            self.ok.fetch_add(1, Relaxed);
            self.hist.lock().unwrap_or_else(|p| p.into_inner()).saturating_record((took.as_micros() as u64).max(1));
        } else {
            self.failed.fetch_add(1, Relaxed);
        }
    }
    fn result(&self, elapsed: Duration) -> LoadResult {
        LoadResult {
            ok: self.ok.load(Relaxed),
            failed: self.failed.load(Relaxed),
            elapsed,
            latency: Percentiles::of(&self.hist.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }
}

/// Print `label: t s, n ok (rate/s), failed` every two seconds until `done`.
fn progress(label: String, tally: Arc<Tally>, start: Instant, done: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every =
            tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(2), Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = done.cancelled() => break,
                _ = every.tick() => {
                    let (ok, failed) = (tally.ok.load(Relaxed), tally.failed.load(Relaxed));
                    let t = start.elapsed().as_secs_f64();
                    eprintln!("    {label}: {t:>5.1} s  {ok} ok ({:.0}/s), {failed} failed", ok as f64 / t);
                }
            }
        }
    })
}

/// `concurrency` workers each send requests back to back for `duration`.
pub async fn closed_loop(
    label: &str,
    concurrency: usize,
    duration: Duration,
    request: Request,
    stop: &CancellationToken,
) -> LoadResult {
    let tally = Tally::new();
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let done = stop.child_token();
    let reporter = progress(label.to_owned(), tally.clone(), start, done.clone());
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (tally, seq, request, done) = (tally.clone(), seq.clone(), request.clone(), done.clone());
        workers.spawn(async move {
            while Instant::now() < deadline && !done.is_cancelled() {
                let n = seq.fetch_add(1, Relaxed);
                let t = Instant::now();
                let ok = request(n).await;
                tally.record(ok, t.elapsed());
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    done.cancel();
    let _ = reporter.await;
    tally.result(elapsed)
}

/// Start `rate` requests per second for `duration` (at most `max_in_flight` at once;
/// beyond that the schedule slips and the latency shows it).
pub async fn open_loop(
    label: &str,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    request: Request,
    stop: &CancellationToken,
) -> LoadResult {
    let tally = Tally::new();
    let start = Instant::now();
    let done = stop.child_token();
    let reporter = progress(label.to_owned(), tally.clone(), start, done.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let total = (rate * duration.as_secs_f64()).ceil() as u64;
    let mut tasks = tokio::task::JoinSet::new();
    let t0 = tokio::time::Instant::now();
    for n in 0..total {
        let due = t0 + Duration::from_secs_f64(n as f64 / rate);
        tokio::select! {
            _ = done.cancelled() => break,
            _ = tokio::time::sleep_until(due) => {}
        }
        let Ok(permit) = slots.clone().acquire_owned().await else { break };
        let (tally, request) = (tally.clone(), request.clone());
        tasks.spawn(async move {
            let ok = request(n).await;
            tally.record(ok, due.elapsed());
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    done.cancel();
    let _ = reporter.await;
    tally.result(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn loops_count_and_stop_by_themselves() {
        let req: Request = Arc::new(|n| async move { n % 10 != 0 }.boxed());
        let stop = CancellationToken::new();
        let closed = closed_loop("t", 4, Duration::from_millis(50), req.clone(), &stop).await;
        assert!(closed.ok > 0 && closed.failed > 0);
        let open = open_loop("t", 200.0, Duration::from_millis(200), 8, req, &stop).await;
        assert_eq!(open.ok + open.failed, 40);
        assert_eq!(open.failed, 4);
    }
}
