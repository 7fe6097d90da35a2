//! No order left stuck with a driver who cannot deliver it. A driver who signs off or is
//! revoked loses their not-yet-picked-up orders at once (the status change or revocation
//! commits with the release); a driver silent longer than `dispatch.abandon_s` loses them
//! on this worker's next sweep, and is marked offline so matching skips them. Picked-up
//! orders of a revoked or silent driver are flagged for ops (`order_needs_attention`).
//!
//! The sweep reads holdings from the database, so an order whose release was interrupted
//! (a revoked driver's, say) is taken back on the next round; silence is judged from the
//! live view of the fleet, which in a cluster is every node's word (the driver's last message or request).

use crate::state::AppState;
use lastmile_core::{DriverId, TenantId};
use lastmile_storage::{Abandon, Recovered};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the sweep runs (at most; a short `abandon_s` makes it run sooner).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub fn log_recovered(driver: &DriverId, cause: Abandon, r: &Recovered) {
    if !r.is_empty() {
        tracing::info!(driver = %driver, cause = cause.as_str(), released = r.released.len(), flagged = r.flagged.len(),
            "took back a driver's orders");
    }
}

/// The driver set themselves offline: persist it and release what they had not picked up.
pub async fn sign_off(state: &AppState, tenant: &TenantId, driver: &DriverId) -> lastmile_storage::Result<Recovered> {
    let r = state.db.sign_off_driver(tenant, driver).await?;
    log_recovered(driver, Abandon::SignedOff, &r);
    Ok(r)
}

pub async fn run(state: AppState, shutdown: CancellationToken) {
    let every = SWEEP_EVERY.min(Duration::from_secs(state.cfg.dispatch.abandon_s).max(Duration::from_millis(100)));
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        if let Err(e) = sweep_once(&state).await {
            tracing::warn!(error = %format!("{e:#}"), "recovery sweep failed");
        }
    }
    tracing::debug!("recovery worker stopped");
}

/// One round: take back the orders of revoked drivers, and of drivers silent longer than
/// `dispatch.abandon_s`. Returns what was taken back.
pub async fn sweep_once(state: &AppState) -> anyhow::Result<Recovered> {
    let grace = Duration::from_secs(state.cfg.dispatch.abandon_s);
    let mut drivers: BTreeMap<DriverId, (TenantId, Abandon)> = BTreeMap::new();
    for held in state.db.held_orders().await? {
        let cause = if held.driver_revoked {
            Abandon::Revoked
        } else {
            // A driver this node knows nothing about is judged by the node that does; in a
            // cluster, by the node matching their tenant (presence is the cluster's view).
            if !state.cluster.holds(&held.tenant_id) {
                continue;
            }
            match state.fleet.driver(&held.driver_id) {
                Some(live) if live.last_seen.elapsed() > grace => Abandon::Silent,
                _ => continue,
            }
        };
        drivers.insert(held.driver_id, (held.tenant_id, cause));
    }
    let mut total = Recovered::default();
    for (driver, (tenant, cause)) in drivers {
        if cause == Abandon::Silent {
            // Not dispatchable until they are heard from again.
            tracing::info!(driver = %driver, "driver silent past dispatch.abandon_s: marking offline");
            state.fleet.set_status(&tenant, &driver, "offline");
            if let Err(e) = state.db.set_driver_status(&tenant, &driver, "offline").await {
                tracing::warn!(error = %e, driver = %driver, "marking a silent driver offline failed");
            }
        }
        let r = state.db.abandon_driver_orders(&tenant, &driver, cause).await?;
        log_recovered(&driver, cause, &r);
        total.released.extend(r.released);
        total.flagged.extend(r.flagged);
    }
    Ok(total)
}
