//! ETAs that learn, in this node: the learned estimates of every tenant (loaded at start,
//! updated here as deliveries complete, re-read from the database every
//! `eta.refresh_s` so other nodes' lessons arrive) and the road graph, when an OSM extract
//! is configured, for road-aware distances.
//!
//! Every ETA the server gives — tracking, the catalog's `eta_s`, the dispatcher's pricing
//! and a catalog order's `ready_at` — asks this module, and falls back to the configured
//! defaults (`dispatch.speed_mps`, the menu's prep times) where nothing has been learned.

use crate::state::AppState;
use anyhow::Context;
use lastmile_core::learned::{hour_of, lesson, speed_keys, DeliveryObservation, LearningPolicy, PlannedPrep, ZoneCell};
use lastmile_core::{EtaModel, GeoPoint, LearnedEta, Order, TenantId};
use lastmile_geo::RoadGraph;
use lastmile_storage::{Db, EstimateKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `eta.*` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EtaConfig {
    /// Learn prep and travel times from completed deliveries. Off: the defaults always.
    pub learning: bool,
    /// Weight of each new delivery once an estimate has `1 / alpha` samples.
    pub alpha: f64,
    /// Deliveries an estimate needs before it replaces the next coarser one (zone and hour
    /// → zone → city and hour → city → the default).
    pub min_samples: i64,
    /// Seconds a kitchen's queue adds to a catalog order's readiness per order it is
    /// already preparing.
    pub load_per_order_s: f64,
    /// How often learned estimates are re-read from the database (other nodes' lessons).
    pub refresh_s: u64,
    /// An OpenStreetMap extract whose roads measure trips (default: `geocoding.osm_pbf`,
    /// else `web.osm_pbf`); none: straight line × `dispatch.detour_factor`.
    pub osm_pbf: Option<PathBuf>,
}

impl Default for EtaConfig {
    fn default() -> Self {
        let p = LearningPolicy::default();
        Self {
            learning: true,
            alpha: p.alpha,
            min_samples: p.min_samples,
            load_per_order_s: 60.0,
            refresh_s: 30,
            osm_pbf: None,
        }
    }
}

impl EtaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) || self.min_samples < 1 || self.refresh_s == 0 {
            return Err("eta.alpha must be in (0, 1], eta.min_samples and eta.refresh_s at least 1".into());
        }
        if !(0.0..=3600.0).contains(&self.load_per_order_s) {
            return Err("eta.load_per_order_s must be between 0 and 3600".into());
        }
        Ok(())
    }

    fn policy(&self) -> LearningPolicy {
        LearningPolicy { alpha: self.alpha, min_samples: self.min_samples, ..LearningPolicy::default() }
    }
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Etas {
    /// Readers take a short std lock; nothing awaits inside.
    learned: Arc<RwLock<HashMap<TenantId, LearnedEta>>>,
    base: EtaModel,
    policy: LearningPolicy,
    learning: bool,
    load_per_order_s: f64,
    refresh: Duration,
    roads: Option<Arc<RoadGraph>>,
    /// Road lengths between graph nodes already routed (a store → door leg is asked on
    /// every fix of its driver). Cleared when it reaches [`ROUTE_CACHE`] entries; std
    /// Mutex: held for one map operation.
    routes: Arc<Mutex<RouteCache>>,
}

/// Road length (None: unreachable) by (from node, to node).
type RouteCache = HashMap<(u32, u32), Option<f64>>;

/// Most routes [`Etas`] remembers.
const ROUTE_CACHE: usize = 100_000;

impl Etas {
    /// The defaults from the configuration; the road graph is read here when configured.
    pub async fn from_config(cfg: &crate::config::Config) -> anyhow::Result<Etas> {
        let path =
            cfg.eta.osm_pbf.clone().or_else(|| cfg.geocoding.osm_pbf.clone()).or_else(|| cfg.web.osm_pbf.clone());
        let roads = match path {
            None => None,
            Some(p) => {
                let shown = p.display().to_string();
                let g = tokio::task::spawn_blocking(move || RoadGraph::from_pbf_file(&p))
                    .await?
                    .with_context(|| format!("building the road graph from {shown}"))?;
                tracing::info!(nodes = g.len(), edges = g.edge_count(), "road graph for ETAs built");
                Some(Arc::new(g))
            }
        };
        Ok(Etas {
            learned: Arc::default(),
            base: EtaModel {
                detour_factor: cfg.dispatch.detour_factor,
                speed_mps: cfg.dispatch.speed_mps,
                ..EtaModel::default()
            },
            policy: cfg.eta.policy(),
            learning: cfg.eta.learning,
            load_per_order_s: cfg.eta.load_per_order_s,
            refresh: Duration::from_secs(cfg.eta.refresh_s),
            roads,
            routes: Arc::default(),
        })
    }

    pub fn base(&self) -> EtaModel {
        self.base
    }

    pub fn load_per_order_s(&self) -> f64 {
        self.load_per_order_s
    }

    pub async fn load(&self, db: &Db) -> anyhow::Result<()> {
        let all = db.learned_etas().await?;
        *self.learned.write().unwrap_or_else(|p| p.into_inner()) = all;
        Ok(())
    }

    pub async fn run_refresher(self, db: Db, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.refresh);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            if let Err(e) = self.load(&db).await {
                tracing::warn!(error = %e, "re-reading learned ETAs failed");
            }
        }
    }

    fn with<T>(&self, tenant: &TenantId, f: impl FnOnce(&LearnedEta) -> T, none: T) -> T {
        let g = self.learned.read().unwrap_or_else(|p| p.into_inner());
        match g.get(tenant) {
            Some(l) if self.learning => f(l),
            _ => none,
        }
    }

    /// Metres a driver covers from `from` to `to`: along the roads where there is a road
    /// graph, else straight line × detour factor. Learned speeds are in these metres.
    pub fn drive_m(&self, from: &GeoPoint, to: &GeoPoint) -> f64 {
        let straight = from.distance_m(to) * self.base.detour_factor;
        let Some(g) = &self.roads else { return straight };
        let (a, b) = (g.nearest_node(from), g.nearest_node(to));
        let known = self.routes.lock().unwrap_or_else(|p| p.into_inner()).get(&(a, b)).copied();
        let length = known.unwrap_or_else(|| {
            let length = g.shortest_path(a, b).map(|p| p.length_m);
            let mut cache = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= ROUTE_CACHE {
                cache.clear();
            }
            cache.insert((a, b), length);
            length
        });
        match length {
            // The way from each point to its nearest road node counts as straight line.
            Some(l) => l + from.distance_m(&g.point(a)) + to.distance_m(&g.point(b)),
            None => straight,
        }
    }

    /// Driving speed (m/s) for a trip at `now_ms`: learned for its zone and hour, or the default.
    pub fn speed_mps(&self, tenant: &TenantId, from: &GeoPoint, to: &GeoPoint, now_ms: i64) -> f64 {
        let hour = hour_of(now_ms);
        self.with(tenant, |l| l.speed_mps(&self.policy, from, to, hour), None).unwrap_or(self.base.speed_mps)
    }

    /// Seconds of driving from `from` to `to`.
    pub fn travel_s(&self, tenant: &TenantId, from: &GeoPoint, to: &GeoPoint, now_ms: i64) -> f64 {
        self.drive_m(from, to) / self.speed_mps(tenant, from, to, now_ms).max(0.1)
    }

    /// The model the dispatcher prices candidates with: the tenant's city-wide speed at
    /// this hour (thousands of pairs per tick: no per-pair routing).
    pub fn city_model(&self, tenant: &TenantId, now_ms: i64) -> EtaModel {
        let hour = hour_of(now_ms);
        let speed = self.with(tenant, |l| l.city_speed_mps(&self.policy, hour), None);
        EtaModel { speed_mps: speed.unwrap_or(self.base.speed_mps), ..self.base }
    }

    /// How much longer than planned the store's kitchen takes (1 with nothing learned).
    pub fn prep_factor(&self, tenant: &TenantId, store: &str) -> f64 {
        self.with(tenant, |l| l.prep_factor(&self.policy, store), 1.0)
    }

    /// Seconds from now until the customer has the order, for the catalog: the store's
    /// prep (as learned) and the drive.
    pub fn delivery_eta_s(
        &self,
        tenant: &TenantId,
        store: &str,
        from: &GeoPoint,
        to: &GeoPoint,
        prep_s: i64,
        now_ms: i64,
    ) -> i64 {
        let prep = prep_s.max(0) as f64 * self.prep_factor(tenant, store);
        (prep + self.travel_s(tenant, from, to, now_ms)).round() as i64
    }

    /// Dropoff ETA (seconds from now) of a delivery whose driver is at `driver`: to the
    /// store, waiting for readiness, handling, and on to the door; or, once picked up,
    /// straight to the door.
    pub fn dropoff_in_s(
        &self,
        tenant: &TenantId,
        driver: &GeoPoint,
        pickup: Option<&GeoPoint>,
        dropoff: &GeoPoint,
        ready_in_s: f64,
        now_ms: i64,
    ) -> f64 {
        let m = self.base;
        match pickup {
            None => self.travel_s(tenant, driver, dropoff, now_ms) + m.dropoff_handling_s,
            Some(p) => {
                self.travel_s(tenant, driver, p, now_ms).max(ready_in_s.max(0.0))
                    + m.pickup_handling_s
                    + self.travel_s(tenant, p, dropoff, now_ms)
                    + m.dropoff_handling_s
            }
        }
    }
}

/// How near the store a driver's fix must be to count as arriving there.
const ARRIVED_WITHIN_M: f64 = 100.0;

/// After a pickup: note the moment (server clock), for learning. Best effort — a lost
/// note costs one lesson, never the pickup.
pub async fn after_pickup(state: &AppState, order: &Order) {
    if !state.etas.learning {
        return;
    }
    if let Err(e) = state.db.record_pickup(&order.tenant_id, &order.id, state.clock.now_ms()).await {
        tracing::warn!(order = %order.id, error = %e, "recording the pickup time failed");
    }
}

/// After a delivery: learn from it (once), persist and apply the lesson here.
pub async fn after_delivery(state: &AppState, order: &Order) {
    if !state.etas.learning {
        return;
    }
    if let Err(e) = learn(state, order).await {
        tracing::warn!(order = %order.id, error = %format!("{e:#}"), "learning from a delivery failed");
    }
}

async fn learn(state: &AppState, order: &Order) -> anyhow::Result<()> {
    let now = state.clock.now_ms();
    let Some(leg) = state.db.delivery_leg(&order.tenant_id, &order.id).await? else { return Ok(()) };
    let Some(picked_up_at) = leg.picked_up_at.filter(|_| leg.delivered_at.is_none()) else { return Ok(()) };
    let Some(dropoff) = order.dropoff.point() else { return Ok(()) };
    let store = state.db.get_store(&order.tenant_id, &order.store_id).await?;
    let pickup = GeoPoint::new(store.pickup_lat, store.pickup_lng)?;
    let etas = &state.etas;
    // Did the driver wait for the food, or come late? Their first fix at the store says.
    let arrived_at = match (&order.driver_id, leg.placed_at) {
        (Some(driver), Some(placed_at)) => {
            state
                .db
                .arrival_at_store(
                    &order.tenant_id,
                    driver,
                    &order.id,
                    &pickup,
                    ARRIVED_WITHIN_M,
                    placed_at..=picked_up_at,
                )
                .await?
        }
        _ => None,
    };
    let obs = DeliveryObservation {
        pickup,
        dropoff,
        drive_m: etas.drive_m(&pickup, &dropoff),
        picked_up_at,
        delivered_at: now,
        planned: leg
            .placed_at
            .zip(leg.planned_prep_s)
            .map(|(placed_at, planned_prep_s)| PlannedPrep { placed_at, planned_prep_s }),
        arrived_at,
    };
    let l = lesson(&etas.base, &etas.policy, &obs);
    let mut samples = Vec::new();
    if let Some(s) = l.speed_mps {
        let zone = ZoneCell::of_trip(&pickup, &dropoff);
        samples.extend(speed_keys(zone, hour_of(picked_up_at)).into_iter().map(|k| (EstimateKey::Speed(k), s)));
    }
    let prep = {
        let g = etas.learned.read().unwrap_or_else(|p| p.into_inner());
        let store = order.store_id.as_str();
        match g.get(&order.tenant_id) {
            Some(known) => known.prep_sample(&etas.policy, store, &l),
            None => LearnedEta::default().prep_sample(&etas.policy, store, &l),
        }
    };
    if let Some(f) = prep {
        samples.push((EstimateKey::Prep(order.store_id.0.clone()), f));
    }
    let Some(now_stand) = state.db.learn_delivery(&order.tenant_id, &order.id, now, samples, etas.policy.alpha).await?
    else {
        return Ok(());
    };
    let mut g = etas.learned.write().unwrap_or_else(|p| p.into_inner());
    let learned = g.entry(order.tenant_id.clone()).or_default();
    for (k, e) in now_stand {
        match k {
            EstimateKey::Speed(s) => learned.speed.insert(s, e),
            EstimateKey::Prep(p) => learned.prep.insert(p, e),
        };
    }
    tracing::debug!(order = %order.id, speed_mps = l.speed_mps, prep_factor = prep, censored = l.prep_censored, "learned from a delivery");
    Ok(())
}

/// What the server has learned for one tenant, for `GET /v1/eta/learned`.
pub fn snapshot(state: &AppState, tenant: &TenantId) -> LearnedEta {
    state.etas.learned.read().unwrap_or_else(|p| p.into_inner()).get(tenant).cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lng: f64) -> GeoPoint {
        GeoPoint::new(lat, lng).unwrap()
    }

    #[tokio::test]
    async fn trips_are_measured_along_the_roads_of_the_configured_extract() {
        let mut cfg = crate::config::Config::default();
        let plain = Etas::from_config(&cfg).await.unwrap();
        cfg.eta.osm_pbf = Some(lastmile_geo::helsinki_pbf_path());
        let roads = Etas::from_config(&cfg).await.unwrap();
        // Kamppi to Kruununhaka: streets wind around the centre's blocks and squares.
        let (a, b) = (p(60.1690, 24.9330), p(60.1720, 24.9560));
        let straight = a.distance_m(&b);
        assert_eq!(plain.drive_m(&a, &b), straight * cfg.dispatch.detour_factor);
        let by_road = roads.drive_m(&a, &b);
        assert!(by_road > straight && by_road < 3.0 * straight, "{by_road} m by road, {straight} m straight");
        assert_ne!(by_road, straight * cfg.dispatch.detour_factor);
        // Asked again (a later fix), the same answer from the route cache.
        assert_eq!(roads.drive_m(&a, &b), by_road);
        assert_eq!(roads.routes.lock().unwrap().len(), 1);
        // Nothing learned: the default speed over those metres.
        let t = TenantId("t".into());
        assert_eq!(roads.travel_s(&t, &a, &b, 0), by_road / cfg.dispatch.speed_mps);
    }
}
