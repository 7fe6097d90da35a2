//! The outbox relay: publishes committed events to the bus in commit order, then marks
//! them published. At least once: a crash between publish and mark republishes, and
//! consumers deduplicate by event id. Also the retention sweeper.

use crate::state::AppState;
use lastmile_bus::EventBus;
use lastmile_storage::{now_ms, Db};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 500;

pub async fn run(db: Db, bus: Arc<dyn EventBus>, shutdown: CancellationToken) {
    let notify = db.outbox_notify();
    loop {
        match relay_batch(&db, bus.as_ref()).await {
            Ok(n) if n as i64 == BATCH => continue,
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
    let events = db.unpublished_events(BATCH).await?;
    let Some(last) = events.last().map(|e| e.seq) else { return Ok(0) };
    for e in &events {
        bus.publish(e).await?;
    }
    let n = events.len();
    // Marking the batch published also queues it for the tenants' webhook endpoints, in
    // the same commit, so each event reaches each subscribed endpoint's queue once.
    let queued = db.fan_out_and_mark_published(events, last).await?;
    metrics::counter!("lastmile_events_published_total").increment(n as u64);
    if queued > 0 {
        metrics::counter!("lastmile_webhook_deliveries_queued_total").increment(queued as u64);
    }
    Ok(n)
}

/// Hourly: drop archived raw payloads past their retention.
pub async fn run_retention(state: AppState, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        let cutoff = now_ms() - state.cfg.raw_payload_retention_days as i64 * 86_400_000;
        match state.db.purge_raw_payloads(cutoff).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "raw payloads past retention removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "raw payload retention failed"),
        }
    }
}
