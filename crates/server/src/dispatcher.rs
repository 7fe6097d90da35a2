//! The dispatcher: the live fleet (where every driver is, who is free) and the matching
//! loop that turns waiting orders into offers, per tenant: a round per burst of events
//! (after a short gathering window) and a backstop tick.
//!
//! The live index is a cache rebuilt from the database on start; the database decides
//! (offers and capacity are enforced there), so a stale cache can cost an offer, never
//! correctness.

use crate::config::{Config, MatcherKind};
use crate::state::AppState;
use futures::FutureExt;
use lastmile_bus::Received;
use lastmile_core::{DriverId, EtaModel, Event, EventKind, GeoPoint, OrderId, TenantId};
use lastmile_dispatch::{assign_live, due_orders_live, CostModel, DriverIndex, DriverSource, Matcher, OrderSlot};
use lastmile_storage::{to_ms, Area, Db, DispatchCandidate, StallPolicy};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
// tokio's Instant, not std's: presence and the GPS cap follow tokio's clock, so tests can
// pause and advance it (it is the monotonic clock in production).
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct DriverLive {
    pub tenant_id: TenantId,
    pub status: String,
    pub point: Option<GeoPoint>,
    /// `recorded_at` of the newest accepted fix (ms), to reject older ones.
    pub last_fix_ms: i64,
    /// When we last accepted a fix, for the per-driver cap.
    pub last_accept: Option<Instant>,
    /// Newest fix that arrived inside the cap window; applied when the window ends.
    pub pending: Option<(GeoPoint, i64)>,
    pub last_seen: Instant,
    pub moved: bool,
    /// Wall-clock ms of the newest status change, so a cluster applies status changes
    /// heard from other nodes in the order they happened.
    pub status_at_ms: i64,
    /// Changed or heard from on this node since the fleet was last shared with the
    /// cluster (see `cluster.rs`); other nodes' news never sets it.
    pub share: bool,
}

impl DriverLive {
    /// A driver we know nothing live about yet.
    fn offline(tenant: &TenantId) -> Self {
        Self {
            tenant_id: tenant.clone(),
            status: "offline".into(),
            point: None,
            last_fix_ms: 0,
            last_accept: None,
            pending: None,
            last_seen: Instant::now(),
            moved: false,
            status_at_ms: 0,
            share: false,
        }
    }
}

struct FleetInner {
    drivers: HashMap<DriverId, DriverLive>,
    /// One spatial index per tenant: matching never crosses tenants.
    indexes: HashMap<TenantId, DriverIndex>,
    /// Drivers with a pending offer or at capacity (refreshed each tick and on offers).
    busy: HashSet<DriverId>,
    /// Where the events since the last round touched the city: what the next event-started
    /// round reads and matches.
    affected: Affected,
}

/// What a round started by events reads: per tenant, the orders the events were about and
/// the places drivers became free; or the whole tenant (or every tenant) when an event's
/// place is unknown. The backstop tick reads everything regardless.
#[derive(Debug, Default, Clone)]
pub struct Affected {
    all: bool,
    whole: HashSet<TenantId>,
    orders: HashMap<TenantId, Vec<OrderId>>,
    points: HashMap<TenantId, Vec<GeoPoint>>,
}

impl Affected {
    /// Every tenant, whole.
    pub fn everything() -> Self {
        Self { all: true, ..Self::default() }
    }

    /// An event about `order` (new, changed, back in matching).
    pub fn order(&mut self, tenant: &TenantId, order: OrderId) {
        self.orders.entry(tenant.clone()).or_default().push(order);
    }

    /// A driver free to match at `point`.
    pub fn point(&mut self, tenant: &TenantId, point: GeoPoint) {
        self.points.entry(tenant.clone()).or_default().push(point);
    }

    /// Something changed for `tenant` at a place unknown here.
    pub fn whole_tenant(&mut self, tenant: &TenantId) {
        self.whole.insert(tenant.clone());
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.whole.is_empty() && self.orders.is_empty() && self.points.is_empty()
    }
}

/// Cheap to clone. A std Mutex: every critical section is a few map operations and never
/// awaits; GPS updates and the matcher take it briefly.
#[derive(Clone)]
pub struct LiveFleet {
    inner: Arc<Mutex<FleetInner>>,
    /// Wakes the matching loop when a driver becomes available here (online with a
    /// position, or freed) or when an order event arrives; see [`run`].
    wake: Arc<Notify>,
}

impl Default for LiveFleet {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveFleet {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(FleetInner {
                drivers: HashMap::new(),
                indexes: HashMap::new(),
                busy: HashSet::new(),
                affected: Affected::default(),
            })),
            wake: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FleetInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuild from the database (drivers' last known positions and statuses).
    pub async fn load(&self, db: &Db) -> anyhow::Result<()> {
        let drivers = db.all_drivers().await?;
        let busy = db.busy_drivers().await?;
        let mut g = self.lock();
        g.busy = busy.into_iter().collect();
        for d in drivers {
            let point = d.last_lat.zip(d.last_lng).and_then(|(a, b)| GeoPoint::new(a, b).ok());
            g.drivers.insert(
                d.id.clone(),
                DriverLive {
                    status: d.status.clone(),
                    point,
                    last_fix_ms: d.last_seen_at.unwrap_or(0),
                    ..DriverLive::offline(&d.tenant_id)
                },
            );
            refresh_index(&mut g, &d.id);
        }
        Ok(())
    }

    pub fn set_status(&self, tenant: &TenantId, driver: &DriverId, status: &str) {
        let mut g = self.lock();
        let entry = g.drivers.entry(driver.clone()).or_insert_with(|| DriverLive::offline(tenant));
        entry.status = status.to_owned();
        entry.last_seen = Instant::now();
        entry.status_at_ms = entry.status_at_ms.max(lastmile_storage::now_ms());
        entry.share = true;
        let freed = refresh_index(&mut g, driver);
        drop(g);
        self.wake_if(freed);
    }

    /// Start a matching round over every tenant soon (after the gathering window). Cheap;
    /// wakes coalesce.
    pub fn wake_matcher(&self) {
        self.lock().affected.all = true;
        self.wake.notify_one();
    }

    /// Start a round soon for the part of the city around `order`'s pickup.
    pub fn wake_for_order(&self, tenant: &TenantId, order: OrderId) {
        self.lock().affected.order(tenant, order);
        self.wake.notify_one();
    }

    /// Start a round soon around `driver`'s position (the whole tenant if it is unknown).
    pub fn wake_for_driver(&self, tenant: &TenantId, driver: &DriverId) {
        let mut g = self.lock();
        match g.drivers.get(driver).and_then(|d| d.point) {
            Some(p) => g.affected.point(tenant, p),
            None => g.affected.whole_tenant(tenant),
        }
        drop(g);
        self.wake.notify_one();
    }

    /// What the events since the last call touched (see [`Affected`]).
    pub fn take_affected(&self) -> Affected {
        std::mem::take(&mut self.lock().affected)
    }

    /// `refresh_index` noted where the driver became available; start a round there.
    fn wake_if(&self, became_available: bool) {
        if became_available {
            self.wake.notify_one();
        }
    }

    /// The driver's app spoke (any message on its socket): a heartbeat for presence.
    pub fn heard_from(&self, driver: &DriverId) {
        if let Some(d) = self.lock().drivers.get_mut(driver) {
            d.last_seen = Instant::now();
            d.share = true;
        }
    }

    pub fn remove(&self, driver: &DriverId) {
        let mut g = self.lock();
        if let Some(d) = g.drivers.remove(driver) {
            if let Some(ix) = g.indexes.get_mut(&d.tenant_id) {
                ix.remove(driver);
            }
        }
    }

    pub fn set_busy(&self, driver: &DriverId, busy: bool) {
        let mut g = self.lock();
        if busy {
            g.busy.insert(driver.clone());
        } else {
            g.busy.remove(driver);
        }
        let freed = refresh_index(&mut g, driver);
        drop(g);
        self.wake_if(freed);
    }

    /// Apply the GPS outcome decided by `gps::accept` under the same lock.
    pub fn with_driver<R>(&self, tenant: &TenantId, driver: &DriverId, f: impl FnOnce(&mut DriverLive) -> R) -> R {
        let mut g = self.lock();
        let entry = g.drivers.entry(driver.clone()).or_insert_with(|| DriverLive::offline(tenant));
        let r = f(entry);
        entry.share = true;
        let freed = refresh_index(&mut g, driver);
        drop(g);
        self.wake_if(freed);
        r
    }

    pub fn driver(&self, driver: &DriverId) -> Option<DriverLive> {
        self.lock().drivers.get(driver).cloned()
    }

    /// k nearest available drivers of a tenant within `radius_m`, from memory only.
    pub fn nearest(&self, tenant: &TenantId, point: GeoPoint, k: usize, radius_m: f64) -> Vec<(DriverId, f64)> {
        self.lock().indexes.get(tenant).map(|ix| ix.nearest(point, k, radius_m)).unwrap_or_default()
    }

    /// Tenants with at least one driver free to take an offer now.
    pub fn tenants_with_available(&self) -> Vec<TenantId> {
        self.lock().indexes.iter().filter(|(_, ix)| ix.available_len() > 0).map(|(t, _)| t.clone()).collect()
    }

    /// Positions that changed since the last call (for the history flusher).
    pub fn take_moved(&self) -> Vec<(DriverId, TenantId, GeoPoint, i64)> {
        let mut g = self.lock();
        let mut out = Vec::new();
        for (id, d) in g.drivers.iter_mut() {
            if d.moved {
                d.moved = false;
                if let Some(p) = d.point {
                    out.push((id.clone(), d.tenant_id.clone(), p, d.last_fix_ms));
                }
            }
        }
        out
    }

    /// Apply coalesced fixes whose cap window has passed.
    pub fn apply_pending(&self, min_interval: Duration) -> usize {
        let mut g = self.lock();
        let mut ready = Vec::new();
        for (id, d) in g.drivers.iter_mut() {
            if let Some((p, at)) = d.pending {
                if d.last_accept.is_none_or(|t| t.elapsed() >= min_interval) {
                    d.point = Some(p);
                    d.last_fix_ms = at;
                    d.pending = None;
                    d.last_accept = Some(Instant::now());
                    d.moved = true;
                    d.share = true;
                    ready.push(id.clone());
                }
            }
        }
        let mut freed = false;
        for id in &ready {
            freed |= refresh_index(&mut g, id);
        }
        drop(g);
        self.wake_if(freed);
        ready.len()
    }

    /// Drivers silent for longer than `timeout` that still count as online.
    pub fn silent_drivers(&self, timeout: Duration) -> Vec<(TenantId, DriverId)> {
        let g = self.lock();
        g.drivers
            .iter()
            .filter(|(_, d)| d.status == "online" && d.last_seen.elapsed() > timeout)
            .map(|(id, d)| (d.tenant_id.clone(), id.clone()))
            .collect()
    }
}

/// One tenant's live index as the matcher's candidate source. The fleet lock is taken per
/// nearest-driver query (microseconds) and never across a round, so GPS fixes land between
/// queries and a round never waits for ingest or holds it up for longer than one query.
struct TenantFleet<'a> {
    fleet: &'a LiveFleet,
    tenant: &'a TenantId,
}

impl DriverSource for TenantFleet<'_> {
    fn nearest_located(
        &self,
        point: GeoPoint,
        k: usize,
        radius_m: f64,
        keep: &mut dyn FnMut(&DriverId) -> bool,
    ) -> Vec<(DriverId, GeoPoint)> {
        let g = self.fleet.lock();
        g.indexes.get(self.tenant).map(|ix| ix.nearest_located(point, k, radius_m, keep)).unwrap_or_default()
    }
}

impl TenantFleet<'_> {
    fn any_available(&self) -> bool {
        self.fleet.lock().indexes.get(self.tenant).is_some_and(|ix| ix.available_len() > 0)
    }
}

/// Bring the driver's entry in their tenant's index up to date; true when that made them
/// available to match (they were not before), which is worth a matching round around
/// them (noted in `affected`).
fn refresh_index(g: &mut FleetInner, driver: &DriverId) -> bool {
    let Some(d) = g.drivers.get(driver) else { return false };
    let available = d.status == "online" && !g.busy.contains(driver);
    let point = d.point;
    // A GPS fix is the hot path: look the tenant's index up without cloning its id.
    if !g.indexes.contains_key(&d.tenant_id) {
        g.indexes.insert(d.tenant_id.clone(), DriverIndex::default());
    }
    let ix = g.indexes.get_mut(&d.tenant_id).expect("inserted above");
    match point {
        Some(p) => {
            let was = ix.is_available(driver).unwrap_or(false);
            ix.upsert(driver, p, available);
            let freed = available && !was;
            if freed {
                let tenant = d.tenant_id.clone();
                g.affected.point(&tenant, p);
            }
            freed
        }
        None => {
            ix.remove(driver);
            false
        }
    }
}

pub fn cost_model(cfg: &Config, eta: EtaModel) -> CostModel {
    CostModel {
        eta,
        max_pickup_s: cfg.dispatch.search_radius_m * eta.detour_factor / eta.speed_mps,
        candidates_per_order: cfg.dispatch.candidates_per_order,
        ..CostModel::default()
    }
}

/// The matching loop. A round runs when something changes what can be matched — an order
/// created, updated or back in matching (declined, expired, unassigned), a driver coming
/// online or freed — after `dispatch.gather_ms` so that orders placed together compete in
/// one batch; and every `dispatch.tick_ms` as a backstop, which also expires offers, flags
/// stalled orders, marks silent drivers offline and times not-yet-ready orders.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let tick = Duration::from_millis(state.cfg.dispatch.tick_ms);
    let gather = Duration::from_millis(state.cfg.dispatch.gather_ms);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let wake = state.fleet.wake.clone();
    let listener = tokio::spawn(wake_on_events(state.clone(), shutdown.clone()));
    loop {
        let full = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => true,
            _ = wake.notified() => false,
        };
        if !full && !gather.is_zero() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(gather) => {}
            }
        }
        // Whatever woke us during the window is in this round: drop its stored wake-up.
        let _ = wake.notified().now_or_never();
        let affected = state.fleet.take_affected();
        let outcome =
            if full { tick_once(&state).await } else { match_affected(&state, affected).await.map(|r| r.offers) };
        if let Err(e) = outcome {
            tracing::warn!(error = %format!("{e:#}"), full, "dispatch round failed");
        }
    }
    listener.abort();
    tracing::debug!("dispatcher stopped");
}

/// Wake the matcher on committed events that can make a match possible. Events come from
/// the bus, so orders taken in by any node (and drivers freed on any node) count; local
/// driver changes also wake it directly through [`LiveFleet`].
async fn wake_on_events(state: AppState, shutdown: CancellationToken) {
    let mut sub = state.bus.subscribe();
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = sub.recv() => m,
        };
        match msg {
            None => break,
            Some(Received::Lagged(_)) => state.fleet.wake_matcher(),
            Some(Received::Event(e)) if wakes_matcher(&e) => match e.kind {
                EventKind::DriverStatusChanged => {
                    state.fleet.wake_for_driver(&e.tenant_id, &DriverId(e.subject_id.clone()))
                }
                _ => state.fleet.wake_for_order(&e.tenant_id, OrderId(e.subject_id.clone())),
            },
            Some(Received::Event(_)) => {}
        }
    }
}

/// Whether an event can make a new match possible: a new, changed or returned order, or a
/// driver freed (an order delivered, failed or cancelled; a status change). Our own offers
/// and assignments cannot, so they do not start another round.
fn wakes_matcher(e: &Event) -> bool {
    match e.kind {
        EventKind::OrderCreated
        | EventKind::OrderUpdated
        | EventKind::OrderCancelled
        | EventKind::OfferDeclined
        | EventKind::OfferExpired
        | EventKind::DriverStatusChanged => true,
        EventKind::OrderStatusChanged => {
            !matches!(e.data.get("to").and_then(|t| t.as_str()), Some("dispatching" | "assigned" | "picked_up"))
        }
        _ => false,
    }
}

/// The backstop round: expire offers, flag stalled orders, mark silent drivers offline,
/// resync who is busy from the database, then match.
pub async fn tick_once(state: &AppState) -> anyhow::Result<usize> {
    let cfg = &state.cfg.dispatch;
    let policy = StallPolicy { max_attempts: cfg.max_attempts };
    let now = state.clock.now_ms();
    state.db.expire_offers(now, policy).await?;
    state.db.stall_waiting_orders(now, cfg.max_wait_s as i64 * 1000).await?;
    // Presence is the cluster's view (a driver heard on any node is heard here); the node
    // matching a tenant is the one that decides its drivers' silence.
    let silent = state.fleet.silent_drivers(Duration::from_secs(state.cfg.presence_timeout_s));
    for (tenant, driver) in silent.into_iter().filter(|(t, _)| state.cluster.holds(t)) {
        tracing::info!(driver = %driver, "no word from driver: marking offline");
        state.fleet.set_status(&tenant, &driver, "offline");
        let _ = state.db.set_driver_status(&tenant, &driver, "offline").await;
    }
    resync_busy(state).await?;
    match_round(state).await
}

/// Who cannot take an offer now (a pending offer, or at capacity), from the database.
pub async fn resync_busy(state: &AppState) -> anyhow::Result<()> {
    let busy: HashSet<DriverId> = state.db.busy_drivers().await?.into_iter().collect();
    let mut g = state.fleet.lock();
    let changed: Vec<DriverId> = g.busy.symmetric_difference(&busy).cloned().collect();
    g.busy = busy;
    for id in changed {
        refresh_index(&mut g, &id);
    }
    Ok(())
}

/// One matching round over every tenant with a free driver: offer due orders to the best
/// free drivers, per tenant.
pub async fn match_round(state: &AppState) -> anyhow::Result<usize> {
    Ok(match_affected(state, Affected::everything()).await?.offers)
}

/// What one round read and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// Orders read from the database as candidates.
    pub orders_read: usize,
    pub offers: usize,
}

/// Up to this many separate areas per tenant are read one by one; more are read as the
/// one box around them all.
const MAX_AREAS: usize = 8;

/// A round over what `affected` touched: for each tenant with a free driver, the waiting
/// orders whose pickup lies within twice the search radius of an affected order's pickup
/// or of a freed driver (every order that could compete with it for a driver, or take
/// the freed one); a whole tenant when an event's place is unknown. Candidates are still
/// searched in the whole live index, so an order near the area's edge sees the drivers
/// across it; orders further out wait for their own events or the backstop tick.
pub async fn match_affected(state: &AppState, affected: Affected) -> anyhow::Result<RoundStats> {
    if !state.cluster.holds_any() || affected.is_empty() {
        // In a cluster, other nodes match every tenant for now.
        return Ok(RoundStats::default());
    }
    let cfg = &state.cfg.dispatch;
    let now = state.clock.now_ms();
    // Only tenants with a free driver are read: a backlog of orders nobody can take now
    // (no driver online) costs a round nothing.
    let mut candidates = Vec::new();
    for tenant in state.fleet.tenants_with_available() {
        // An order ready later than this cannot be due: even with no driver in reach its
        // slack is at least its time to ready minus `max_pickup_s` (at the tenant's speed).
        let model = cost_model(&state.cfg, state.etas.city_model(&tenant, now));
        let horizon_ms = ((model.max_pickup_s + cfg.lead_s.max(0.0)) * 1000.0).min(i64::MAX as f64 / 4.0) as i64;
        let ready_by = now.saturating_add(horizon_ms);
        match areas_of(state, &affected, &tenant).await? {
            None => candidates.extend(state.db.dispatch_candidates_for_tenant(&tenant, 5000, ready_by).await?),
            Some(areas) => {
                let mut seen = HashSet::new();
                for area in areas {
                    for c in state.db.dispatch_candidates_in_area(&tenant, area, 5000, ready_by).await? {
                        if seen.insert(c.order.id.clone()) {
                            candidates.push(c);
                        }
                    }
                }
            }
        }
    }
    let orders_read = candidates.len();
    let offers = match_candidates(state, candidates, now).await?;
    Ok(RoundStats { orders_read, offers })
}

/// The areas of `tenant` a round reads: `None` for the whole tenant, empty when nothing
/// touched it.
async fn areas_of(state: &AppState, affected: &Affected, tenant: &TenantId) -> anyhow::Result<Option<Vec<Area>>> {
    if affected.all || affected.whole.contains(tenant) {
        return Ok(None);
    }
    let mut points: Vec<GeoPoint> = affected.points.get(tenant).cloned().unwrap_or_default();
    if let Some(orders) = affected.orders.get(tenant) {
        let mut ids = orders.clone();
        ids.sort();
        ids.dedup();
        for (_, lat, lng) in state.db.order_pickups(tenant, &ids).await? {
            points.extend(GeoPoint::new(lat, lng).ok());
        }
    }
    let reach_m = 2.0 * state.cfg.dispatch.search_radius_m;
    let mut areas = Vec::with_capacity(points.len());
    for p in points {
        match area_around(p, reach_m) {
            Some(a) if !areas.contains(&a) => areas.push(a),
            Some(_) => {}
            None => return Ok(None),
        }
    }
    if areas.len() > MAX_AREAS {
        let hull = areas.iter().skip(1).fold(areas[0], |h, a| Area {
            lat_min: h.lat_min.min(a.lat_min),
            lat_max: h.lat_max.max(a.lat_max),
            lng_min: h.lng_min.min(a.lng_min),
            lng_max: h.lng_max.max(a.lng_max),
        });
        areas = vec![hull];
    }
    Ok(Some(areas))
}

/// The latitude/longitude box holding every point within `reach_m` metres (great-circle)
/// of `p`; `None` where such a box would wrap the antimeridian or a pole (read the whole
/// tenant there).
pub fn area_around(p: GeoPoint, reach_m: f64) -> Option<Area> {
    let deg = (reach_m / lastmile_core::geo::EARTH_RADIUS_M).to_degrees() * 1.001;
    let (lat_min, lat_max) = (p.lat - deg, p.lat + deg);
    if !deg.is_finite() || lat_min <= -89.0 || lat_max >= 89.0 {
        return None;
    }
    // At the box's most poleward latitude a degree of longitude is shortest.
    let widest = lat_min.abs().max(lat_max.abs()).to_radians().cos();
    let dlng = deg / widest;
    let (lng_min, lng_max) = (p.lng - dlng, p.lng + dlng);
    (lng_min >= -180.0 && lng_max <= 180.0).then_some(Area { lat_min, lat_max, lng_min, lng_max })
}

/// Match the candidates read for a round and send the offers; the number sent.
async fn match_candidates(state: &AppState, candidates: Vec<DispatchCandidate>, now: i64) -> anyhow::Result<usize> {
    let cfg = &state.cfg.dispatch;
    let mut by_tenant: HashMap<TenantId, Vec<OrderSlot>> = HashMap::new();
    for c in candidates {
        let Ok(pickup) = GeoPoint::new(c.pickup_lat, c.pickup_lng) else { continue };
        let ready_in_s = ((to_ms(c.order.ready_at) - now) as f64 / 1000.0).max(0.0);
        by_tenant.entry(c.order.tenant_id.clone()).or_default().push(OrderSlot {
            order_id: c.order.id.clone(),
            pickup,
            ready_in_s,
            excluded: c.excluded,
        });
    }
    let matcher = match cfg.matcher {
        MatcherKind::Optimal => Matcher::Optimal,
        MatcherKind::Greedy => Matcher::Greedy,
    };
    let mut offers = Vec::new();
    // In a cluster, each tenant is matched by the node holding its lease only.
    for (tenant, orders) in by_tenant.into_iter().filter(|(t, _)| state.cluster.holds(t)) {
        let model = cost_model(&state.cfg, state.etas.city_model(&tenant, now));
        let (fleet, lead_s) = (state.fleet.clone(), cfg.lead_s);
        // The search and solve run on a blocking thread, not on the runtime's workers that
        // serve the drivers' sockets: a large round never holds up GPS intake, and it reads
        // the live index one query (one brief lock) at a time.
        let chosen = tokio::task::spawn_blocking(move || {
            let source = TenantFleet { fleet: &fleet, tenant: &tenant };
            if !source.any_available() {
                return Vec::new();
            }
            let due: Vec<OrderSlot> = due_orders_live(&orders, &source, &model, lead_s)
                .into_iter()
                .map(|d| orders[d.order].clone())
                .collect();
            assign_live(&due, &source, &model, matcher)
                .into_iter()
                .map(|a| (tenant.clone(), a.order_id, a.driver_id))
                .collect::<Vec<_>>()
        })
        .await?;
        offers.extend(chosen);
    }
    let n = offers.len();
    // All offers of a round share one group commit.
    let results = futures::future::join_all(offers.into_iter().map(|(t, o, d)| send_offer(state, t, o, d))).await;
    let sent = results.into_iter().filter(|ok| *ok).count();
    if n > 0 {
        tracing::debug!(planned = n, sent, "dispatch round");
    }
    Ok(sent)
}

async fn send_offer(state: &AppState, tenant: TenantId, order: OrderId, driver: DriverId) -> bool {
    state.fleet.set_busy(&driver, true);
    let ttl_ms = state.cfg.dispatch.offer_ttl_s as i64 * 1000;
    match state.db.create_offer(&tenant, &order, &driver, state.clock.now_ms(), ttl_ms).await {
        Ok((_offer, seq)) => {
            metrics::counter!("lastmile_offers_sent_total").increment(1);
            state.hub.bump(&driver, seq);
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, order = %order, driver = %driver, "offer not sent");
            state.fleet.set_busy(&driver, false);
            false
        }
    }
}

/// The fleet as shared between the nodes of a cluster (see `cluster.rs`).
impl LiveFleet {
    /// What changed or was heard on this node since the last call, per driver, to tell the
    /// other nodes.
    pub fn take_shared(&self) -> Vec<(TenantId, crate::cluster::DriverNote)> {
        let mut g = self.lock();
        let mut out = Vec::new();
        for (id, d) in g.drivers.iter_mut().filter(|(_, d)| d.share) {
            d.share = false;
            out.push((
                d.tenant_id.clone(),
                crate::cluster::DriverNote {
                    id: id.0.clone(),
                    status: d.status.clone(),
                    status_at: d.status_at_ms,
                    fix: d.point.map(|p| (p.lat, p.lng, d.last_fix_ms)),
                    seen_ago_ms: d.last_seen.elapsed().as_millis() as u64,
                },
            ));
        }
        out
    }

    /// Apply what another node tells of a driver: a newer status, a newer fix, a later
    /// word from them. Not shared on (the node that heard it does that), not persisted
    /// (ditto).
    pub fn apply_shared(&self, tenant: &TenantId, note: &crate::cluster::DriverNote) {
        let driver = DriverId(note.id.clone());
        let mut g = self.lock();
        let d = g.drivers.entry(driver.clone()).or_insert_with(|| DriverLive::offline(tenant));
        if d.tenant_id != *tenant {
            return; // a driver id names one tenant's driver; never let a message move it
        }
        if note.status_at > d.status_at_ms {
            d.status.clone_from(&note.status);
            d.status_at_ms = note.status_at;
        }
        if let Some((lat, lng, at)) = note.fix {
            if at > d.last_fix_ms {
                if let Ok(p) = GeoPoint::new(lat, lng) {
                    d.point = Some(p);
                    d.last_fix_ms = at;
                    if d.pending.is_some_and(|(_, pending_at)| pending_at <= at) {
                        d.pending = None;
                    }
                }
            }
        }
        if let Some(seen) = Instant::now().checked_sub(Duration::from_millis(note.seen_ago_ms)) {
            d.last_seen = d.last_seen.max(seen);
        }
        let freed = refresh_index(&mut g, &driver);
        drop(g);
        self.wake_if(freed);
    }
}

#[cfg(test)]
mod area_tests {
    use super::*;

    fn inside(a: &Area, p: GeoPoint) -> bool {
        (a.lat_min..=a.lat_max).contains(&p.lat) && (a.lng_min..=a.lng_max).contains(&p.lng)
    }

    #[test]
    fn an_area_holds_its_reach_and_not_much_more() {
        let centre = GeoPoint::new(60.17, 24.94).unwrap();
        let a = area_around(centre, 16_000.0).unwrap();
        // Points at the reach in every direction are inside; at twice the reach, outside.
        for bearing in (0..360).step_by(15) {
            let b = (bearing as f64).to_radians();
            let at = |m: f64| {
                let d = m / lastmile_core::geo::EARTH_RADIUS_M;
                let lat = centre.lat.to_radians();
                let lat2 = (lat.sin() * d.cos() + lat.cos() * d.sin() * b.cos()).asin();
                let lng2 =
                    centre.lng.to_radians() + (b.sin() * d.sin() * lat.cos()).atan2(d.cos() - lat.sin() * lat2.sin());
                GeoPoint::new(lat2.to_degrees(), lng2.to_degrees()).unwrap()
            };
            assert!(inside(&a, at(15_999.0)), "bearing {bearing}");
            assert!(!inside(&a, at(40_000.0)), "bearing {bearing}");
        }
        // Tampere is not in Helsinki's area.
        assert!(!inside(&a, GeoPoint::new(61.4978, 23.7610).unwrap()));
        // Across the antimeridian or near a pole: no box (the whole tenant is read).
        assert!(area_around(GeoPoint::new(0.0, 179.99).unwrap(), 16_000.0).is_none());
        assert!(area_around(GeoPoint::new(88.95, 0.0).unwrap(), 16_000.0).is_none());
    }
}
