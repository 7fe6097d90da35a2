//! Driver GPS: validation, the per-driver rate cap (bursts coalesce to the newest fix),
//! the live index update, and batched persistence of positions, history and ETAs.

use crate::state::AppState;
use chrono::{DateTime, Utc};
use lastmile_core::{DriverId, GeoPoint, Order, OrderStatus, TenantId};
use lastmile_storage::{from_ms, to_ms, ActiveDelivery, LocationSample};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Faster than this between two fixes is not a car in a city (≈ 250 km/h).
const MAX_PLAUSIBLE_MPS: f64 = 70.0;
/// Phones' clocks drift; further ahead than this is an error.
const MAX_FUTURE_MS: i64 = 30_000;

/// One GPS fix from the driver's device.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct Fix {
    pub lat: f64,
    pub lng: f64,
    pub accuracy_m: Option<f64>,
    pub heading: Option<f64>,
    pub speed_mps: Option<f64>,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FixOutcome {
    Accepted,
    Coalesced,
    Rejected { code: &'static str, message: String },
}

impl FixOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            FixOutcome::Accepted => "accepted",
            FixOutcome::Coalesced => "coalesced",
            FixOutcome::Rejected { .. } => "rejected",
        }
    }
}

fn reject(code: &'static str, message: impl Into<String>) -> FixOutcome {
    FixOutcome::Rejected { code, message: message.into() }
}

/// A fix from a phone that has been offline may be this old, and no older.
const MAX_PAST_MS: i64 = 24 * 3600 * 1000;
/// Bounds of the optional fields (docs/api.md lists them): beyond these a value says
/// nothing useful about a position and only poisons ETAs and maps.
const MAX_ACCURACY_M: f64 = 100_000.0;
const MAX_SPEED_MPS: f64 = 100.0;

/// The plausibility rules for one fix, apart from the driver's previous fixes.
pub fn plausible(fix: &Fix, now_ms: i64) -> Result<(), FixOutcome> {
    let within = |v: Option<f64>, lo: f64, hi: f64| v.is_none_or(|x| x.is_finite() && (lo..=hi).contains(&x));
    if !within(fix.accuracy_m, 0.0, MAX_ACCURACY_M) {
        return Err(reject("invalid_location", format!("accuracy_m must be between 0 and {MAX_ACCURACY_M} metres")));
    }
    if !within(fix.speed_mps, 0.0, MAX_SPEED_MPS) {
        return Err(reject("invalid_location", format!("speed_mps must be between 0 and {MAX_SPEED_MPS}")));
    }
    if !within(fix.heading, 0.0, 360.0) {
        return Err(reject("invalid_location", "heading must be between 0 and 360 degrees"));
    }
    let at = to_ms(fix.recorded_at);
    if at > now_ms + MAX_FUTURE_MS {
        return Err(reject("timestamp_in_future", "recorded_at is in the future"));
    }
    if at < now_ms - MAX_PAST_MS {
        return Err(reject("stale_location", "recorded_at is more than 24 hours old"));
    }
    Ok(())
}

/// Check one fix and, if it passes, put it into the live index (or hold it as the newest
/// fix of a burst). Never touches the database.
pub fn accept(state: &AppState, tenant: &TenantId, driver: &DriverId, fix: &Fix) -> FixOutcome {
    let outcome = check_and_apply(state, tenant, driver, fix);
    metrics::counter!("lastmile_gps_updates_total", "result" => outcome.label()).increment(1);
    outcome
}

fn check_and_apply(state: &AppState, tenant: &TenantId, driver: &DriverId, fix: &Fix) -> FixOutcome {
    let point = match GeoPoint::new(fix.lat, fix.lng) {
        Ok(p) => p,
        Err(e) => return reject("invalid_location", e.to_string()),
    };
    if let Err(rejected) = plausible(fix, state.clock.now_ms()) {
        return rejected;
    }
    let at = to_ms(fix.recorded_at);
    let min_interval = Duration::from_millis(state.cfg.gps_min_interval_ms);
    state.fleet.with_driver(tenant, driver, |d| {
        d.last_seen = Instant::now();
        let newest = d.pending.map(|(_, t)| t).unwrap_or(d.last_fix_ms).max(d.last_fix_ms);
        if at <= newest && d.point.is_some() {
            return reject("stale_location", "recorded_at is not newer than the last location");
        }
        let reference = d.pending.or(d.point.map(|p| (p, d.last_fix_ms)));
        if let Some((prev, prev_at)) = reference {
            let dt = ((at - prev_at) as f64 / 1000.0).max(0.001);
            let dist = prev.distance_m(&point);
            if dist > 50.0 && dist / dt > MAX_PLAUSIBLE_MPS {
                return reject("implausible_jump", format!("{dist:.0} m in {dt:.1} s is not plausible"));
            }
        }
        let capped = !min_interval.is_zero() && d.last_accept.is_some_and(|t| t.elapsed() < min_interval);
        if capped {
            d.pending = Some((point, at));
            return FixOutcome::Coalesced;
        }
        d.point = Some(point);
        d.last_fix_ms = at;
        d.pending = None;
        d.last_accept = Some(Instant::now());
        d.moved = true;
        FixOutcome::Accepted
    })
}

/// Every second: apply coalesced fixes whose window passed, persist moved positions and
/// the history of drivers on active orders, refresh ETAs, and wake tracking streams.
pub async fn run_flusher(state: AppState, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = interval.tick() => false,
        };
        if let Err(e) = flush_once(&state).await {
            tracing::warn!(error = %format!("{e:#}"), "location flush failed");
        }
        if stop {
            break;
        }
    }
}

pub async fn flush_once(state: &AppState) -> anyhow::Result<()> {
    state.fleet.apply_pending(Duration::from_millis(state.cfg.gps_min_interval_ms));
    let moved = state.fleet.take_moved();
    if moved.is_empty() {
        return Ok(());
    }
    let active = state.db.active_deliveries().await?;
    let by_driver: HashMap<&DriverId, Vec<&ActiveDelivery>> = active.iter().fold(HashMap::new(), |mut m, a| {
        m.entry(&a.driver_id).or_default().push(a);
        m
    });
    let mut latest = Vec::with_capacity(moved.len());
    let mut history = Vec::new();
    let mut etas = Vec::new();
    let now = state.clock.now_ms();
    for (driver, tenant, point, at) in moved {
        let sample = LocationSample {
            driver_id: driver.clone(),
            tenant_id: tenant.clone(),
            order_id: None,
            lat: point.lat,
            lng: point.lng,
            recorded_at: at,
        };
        if let Some(orders) = by_driver.get(&driver) {
            for a in orders {
                history.push(LocationSample { order_id: Some(a.order_id.0.clone()), ..sample.clone() });
                if let Some(eta) = eta_for(state, a, point, now) {
                    etas.push((a.tenant_id.clone(), a.order_id.clone(), eta));
                }
                state.hub.bump_order(&a.order_id);
            }
        }
        latest.push(sample);
    }
    state.db.record_locations(latest, history).await?;
    state.db.set_order_etas(etas).await?;
    Ok(())
}

/// Dropoff ETA (unix ms) for an order its driver holds, from the driver's live position;
/// None when the order holds no driver or a position is unknown.
pub async fn live_eta(state: &AppState, order: &Order) -> anyhow::Result<Option<i64>> {
    let Some(driver) = order.driver_id.as_ref().filter(|_| order.status.holds_driver()) else { return Ok(None) };
    let Some(point) = state.fleet.driver(driver).and_then(|d| d.point) else { return Ok(None) };
    let store = state.db.get_store(&order.tenant_id, &order.store_id).await?;
    let a = ActiveDelivery {
        tenant_id: order.tenant_id.clone(),
        driver_id: driver.clone(),
        order_id: order.id.clone(),
        status: order.status,
        pickup_lat: store.pickup_lat,
        pickup_lng: store.pickup_lng,
        dropoff_lat: order.dropoff.lat,
        dropoff_lng: order.dropoff.lng,
        ready_at: to_ms(order.ready_at),
    };
    Ok(eta_for(state, &a, point, state.clock.now_ms()))
}

/// Dropoff ETA (unix ms) for an active delivery given the driver's position, by the
/// learned model (see `eta`).
pub fn eta_for(state: &AppState, a: &ActiveDelivery, driver: GeoPoint, now: i64) -> Option<i64> {
    let dropoff = GeoPoint::new(a.dropoff_lat?, a.dropoff_lng?).ok()?;
    let pickup = match a.status {
        OrderStatus::PickedUp => None,
        _ => Some(GeoPoint::new(a.pickup_lat, a.pickup_lng).ok()?),
    };
    let ready_in_s = (a.ready_at - now) as f64 / 1000.0;
    let secs = state.etas.dropoff_in_s(&a.tenant_id, &driver, pickup.as_ref(), &dropoff, ready_in_s, now);
    Some(now + (secs * 1000.0) as i64)
}

pub fn fmt_ms(ms: i64) -> DateTime<Utc> {
    from_ms(ms)
}

#[cfg(test)]
mod plausibility_tests {
    use super::*;

    fn fix(at_ms: i64) -> Fix {
        Fix {
            lat: 60.17,
            lng: 24.94,
            accuracy_m: Some(5.0),
            heading: Some(90.0),
            speed_mps: Some(8.0),
            recorded_at: from_ms(at_ms),
        }
    }

    #[test]
    fn every_numeric_field_has_bounds() {
        let now = 1_800_000_000_000;
        assert!(plausible(&fix(now), now).is_ok());
        let code = |f: Fix| match plausible(&f, now) {
            Err(FixOutcome::Rejected { code, .. }) => code,
            other => panic!("expected a rejection, got {other:?}"),
        };
        assert_eq!(code(Fix { accuracy_m: Some(1e308), ..fix(now) }), "invalid_location");
        assert_eq!(code(Fix { accuracy_m: Some(-1.0), ..fix(now) }), "invalid_location");
        assert_eq!(code(Fix { heading: Some(1e308), ..fix(now) }), "invalid_location");
        assert_eq!(code(Fix { heading: Some(-0.5), ..fix(now) }), "invalid_location");
        assert_eq!(code(Fix { speed_mps: Some(f64::NAN), ..fix(now) }), "invalid_location");
        assert_eq!(code(Fix { speed_mps: Some(250.0), ..fix(now) }), "invalid_location");
        assert_eq!(code(fix(now + 60_000)), "timestamp_in_future");
        assert_eq!(code(fix(now - 25 * 3600 * 1000)), "stale_location");
        // Year 1.
        assert_eq!(code(Fix { recorded_at: "0001-01-01T00:00:00Z".parse().unwrap(), ..fix(now) }), "stale_location");
        assert!(
            plausible(&Fix { accuracy_m: None, heading: None, speed_mps: None, ..fix(now - 3_600_000) }, now).is_ok()
        );
    }
}
