//! The outbox relay: publishes committed events to the bus in commit order, then marks
//! them published. At least once: a crash between publish and mark republishes, and
//! consumers deduplicate by event id. Also the retention sweeper.

use crate::state::AppState;
use lastmile_bus::EventBus;
use lastmile_storage::{now_ms, Db, Retained};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 500;

pub async fn run(db: Db, bus: Arc<dyn EventBus>, shutdown: CancellationToken) {
    let notify = db.outbox_notify();
    loop {
        match relay_batch(&db, bus.as_ref()).await {
            // Again at once: more may have become publishable meanwhile.
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "outbox relay failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    // One last pass so events committed during shutdown go out now rather than at restart.
    let _ = relay_batch(&db, bus.as_ref()).await;
    tracing::debug!("outbox relay stopped");
}

/// Publish one batch of unpublished events, in order; returns how many went out.
pub async fn relay_batch(db: &Db, bus: &dyn EventBus) -> anyhow::Result<usize> {
    let events = db.next_publishable_events(BATCH).await?;
    if events.is_empty() {
        return Ok(0);
    }
    for e in &events {
        bus.publish(e).await?;
    }
    let n = events.len();
    // Exactly these rows (one below the last `seq` that commits meanwhile is still
    // unpublished), marked in the same commit that queues them for the tenants' webhook
    // endpoints, so each event reaches each subscribed endpoint's queue once.
    let queued = db.fan_out_and_mark_published(events).await?;
    metrics::counter!("lastmile_events_published_total").increment(n as u64);
    if queued > 0 {
        metrics::counter!("lastmile_webhook_deliveries_queued_total").increment(queued as u64);
    }
    Ok(n)
}

/// Every `retention.interval_s`: delete what is past its retention (raw payloads, then each
/// table of `lastmile_storage::Retained`) in bounded batches, so no delete holds the writer
/// long and a large backlog drains over several rounds.
pub async fn run_retention(state: AppState, shutdown: CancellationToken) {
    let cfg = state.cfg.retention.clone();
    let mut interval = tokio::time::interval(Duration::from_secs(cfg.interval_s.max(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        let now = now_ms();
        let cutoff = now - state.cfg.raw_payload_retention_days as i64 * DAY_MS;
        match state.db.purge_raw_payloads(cutoff).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "raw payloads past retention removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "raw payload retention failed"),
        }
        for what in Retained::ALL {
            let cutoff = match what {
                Retained::Events => now - cfg.events_days as i64 * DAY_MS,
                Retained::Inbox => now - cfg.inbox_days as i64 * DAY_MS,
                Retained::Offers => now - cfg.offers_days as i64 * DAY_MS,
                Retained::Locations => now - cfg.locations_days as i64 * DAY_MS,
                Retained::IdempotencyKeys => now,
            };
            let pruned = prune_table(&state, what, cutoff, cfg.batch.max(1), &shutdown).await;
            if pruned > 0 {
                tracing::info!(table = what.table(), pruned, "rows past retention removed");
            }
        }
    }
}

/// At most [`MAX_BATCHES`] batches of one table per round (the rest waits for the next).
async fn prune_table(state: &AppState, what: Retained, cutoff: i64, batch: i64, shutdown: &CancellationToken) -> u64 {
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        if shutdown.is_cancelled() {
            break;
        }
        match state.db.prune(what, cutoff, batch).await {
            Ok(n) => {
                total += n;
                metrics::counter!("lastmile_retention_pruned_total", "table" => what.table()).increment(n);
                if (n as i64) < batch {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(table = what.table(), error = %e, "retention failed");
                break;
            }
        }
        // Let other writes in between batches.
        tokio::task::yield_now().await;
    }
    total
}

const DAY_MS: i64 = 86_400_000;
const MAX_BATCHES: usize = 100;
