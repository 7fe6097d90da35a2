//! Batched assignment: price every order against its nearest candidate drivers, then pick
//! one driver per order so that the batch as a whole is cheapest (`Matcher::Optimal`) or by
//! taking the cheapest remaining pair first (`Matcher::Greedy`, the baseline).

use crate::zones::{self, parallel_map, ZoneSolution};
use crate::DriverIndex;
use lastmile_core::{DriverId, EtaModel, GeoPoint, OrderId};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// An order waiting for a driver in this batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderSlot {
    pub order_id: OrderId,
    pub pickup: GeoPoint,
    /// Seconds until the order is ready (0 if ready).
    pub ready_in_s: f64,
    /// Drivers that must not get this order (declined/expired before).
    pub excluded: Vec<DriverId>,
}

/// A driver free to take an order in this batch, where they are now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverSlot {
    pub driver_id: DriverId,
    pub location: GeoPoint,
}

/// What an assignment costs, in seconds-equivalents. Weights are clamped to ≥ 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    pub eta: EtaModel,
    /// Penalty per second the driver would wait at the store (arrives before ready).
    pub driver_wait_weight: f64,
    /// Penalty per second the order would wait ready for the driver.
    pub order_wait_weight: f64,
    /// Max pickup travel seconds considered.
    pub max_pickup_s: f64,
    /// Nearest drivers priced per order (at least 1). More widens the optimum's choice and
    /// costs time; 10 is within 0.1% of the dense optimum on the benchmark city.
    pub candidates_per_order: usize,
}

impl Default for CostModel {
    /// Food waiting costs more than a driver waiting (it goes cold and the customer waits too).
    fn default() -> Self {
        Self {
            eta: EtaModel::default(),
            driver_wait_weight: 0.5,
            order_wait_weight: 1.0,
            max_pickup_s: 900.0,
            candidates_per_order: 10,
        }
    }
}

/// Longest pickup that `unassigned_cost` prices, so that the price stays finite.
const LONGEST_PRICED_PICKUP_S: f64 = 1e7;

impl CostModel {
    /// Pickup ETA and cost of sending a driver at `from` to `order`; `None` when out of reach.
    pub fn price(&self, order: &OrderSlot, from: &GeoPoint) -> Option<(f64, f64)> {
        let eta = self.eta.travel_s(from, &order.pickup);
        (eta <= self.max_pickup_s).then(|| (eta, self.cost_at(order, eta))).filter(|(_, cost)| cost.is_finite())
    }

    fn cost_at(&self, order: &OrderSlot, eta_s: f64) -> f64 {
        let ready = order.ready_in_s.max(0.0);
        eta_s
            + self.driver_wait_weight.max(0.0) * (ready - eta_s).max(0.0)
            + self.order_wait_weight.max(0.0) * (eta_s - ready).max(0.0)
    }

    /// The price of leaving `order` unassigned this tick: twice its dearest feasible
    /// assignment, plus one. The matcher therefore serves every order it can, and gives one up
    /// only when serving it would force reassignments that add more than that.
    pub fn unassigned_cost(&self, order: &OrderSlot) -> f64 {
        let longest = self.max_pickup_s.clamp(0.0, LONGEST_PRICED_PICKUP_S);
        let dearest = self.cost_at(order, 0.0).max(self.cost_at(order, longest));
        if dearest.is_finite() {
            2.0 * dearest + 1.0
        } else {
            f64::MAX / 4.0
        }
    }

    /// The least any driver at least `eta_s` away can cost `order` (cost falls with ETA only
    /// while the driver would arrive early and `driver_wait_weight` > 1).
    pub(crate) fn cheapest_from(&self, order: &OrderSlot, eta_s: f64) -> f64 {
        let ready = order.ready_in_s.max(0.0);
        let best_eta = if self.driver_wait_weight > 1.0 { ready.min(self.max_pickup_s).max(eta_s) } else { eta_s };
        self.cost_at(order, best_eta)
    }

    /// Radius in metres beyond which no driver is within `max_pickup_s`.
    pub(crate) fn reach_m(&self) -> f64 {
        let reach = self.max_pickup_s * self.eta.speed_mps.max(0.1) / self.eta.detour_factor;
        if reach.is_nan() || self.eta.detour_factor <= 0.0 {
            f64::INFINITY
        } else {
            reach * (1.0 + 1e-9)
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matcher {
    /// Minimum total cost over each order's candidates.
    #[default]
    Optimal,
    /// Nearest-first baseline: the globally cheapest remaining pair, repeatedly.
    Greedy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub order_id: OrderId,
    pub driver_id: DriverId,
    pub pickup_eta_s: f64,
    pub cost: f64,
}

/// A priced (order, driver) pair; `driver` is a position in the batch's `drivers`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edge {
    pub driver: usize,
    pub eta_s: f64,
    pub cost: f64,
}

/// How many times `Matcher::Optimal` may widen the candidate lists of orders whose optimality
/// it cannot prove (doubling each time), before settling for the best found.
const MAX_WIDENINGS: usize = 6;

/// Assign orders to drivers, at most one order per driver and one driver per order.
///
/// `drivers` are the drivers free in this batch, and their locations are the ones priced.
/// Each order's candidates are its `candidates_per_order` nearest drivers among them, found
/// through `index` when given (drivers it holds that are not in `drivers` are skipped, and
/// drivers it does not hold as available are never found) or through an index built for
/// the call. `Optimal` then widens the lists of the orders whose
/// dual price shows a farther driver might still help, until the solution is provably
/// optimal over all pairs (or after [`MAX_WIDENINGS`] rounds). Orders without a feasible
/// driver, or that lose theirs to other orders, are left out of the result, which follows
/// the order of `orders`.
pub fn assign(
    orders: &[OrderSlot],
    drivers: &[DriverSlot],
    index: Option<&DriverIndex>,
    model: &CostModel,
    matcher: Matcher,
) -> Vec<Assignment> {
    let search = CandidateSearch::new(drivers, index, model);
    run(orders, &search, model, matcher)
}

/// [`assign`] over every available driver of a live index (`source`), read query by query:
/// no snapshot of the fleet and no index built for the call, so a round costs what its
/// orders' neighbourhoods hold, not the size of the fleet. Drivers are priced where the
/// source has them when their order's candidates are searched.
pub fn assign_live(
    orders: &[OrderSlot],
    source: &dyn DriverSource,
    model: &CostModel,
    matcher: Matcher,
) -> Vec<Assignment> {
    let search = CandidateSearch::live(source, model);
    run(orders, &search, model, matcher)
}

/// Search each order's k nearest, then match.
fn run(orders: &[OrderSlot], search: &CandidateSearch, model: &CostModel, matcher: Matcher) -> Vec<Assignment> {
    let k = model.candidates_per_order.max(1);
    let candidates = search.around_all(orders, k);
    let chosen = match matcher {
        Matcher::Optimal => optimal(orders, search, candidates, k).0,
        Matcher::Greedy => greedy(orders, search, candidates, k),
    };
    search.assignments(orders, chosen)
}

/// Where candidate drivers come from: the nearest available drivers to a point, with
/// where each one is. [`DriverIndex`] is one; a server's live fleet (an index behind a
/// lock, taken per query) is another.
pub trait DriverSource: Sync {
    /// Up to `k` available drivers nearest to `point` within `radius_m` (nearest first,
    /// ties by id) for which `keep` is true, each with its position.
    fn nearest_located(
        &self,
        point: GeoPoint,
        k: usize,
        radius_m: f64,
        keep: &mut dyn FnMut(&DriverId) -> bool,
    ) -> Vec<(DriverId, GeoPoint)>;
}

impl DriverSource for DriverIndex {
    fn nearest_located(
        &self,
        point: GeoPoint,
        k: usize,
        radius_m: f64,
        keep: &mut dyn FnMut(&DriverId) -> bool,
    ) -> Vec<(DriverId, GeoPoint)> {
        self.nearest_filtered(point, k, radius_m, keep)
            .into_iter()
            .filter_map(|(id, _)| {
                let at = self.location(&id)?;
                Some((id, at))
            })
            .collect()
    }
}

/// `Matcher::Optimal`'s answer together with a lower bound on the optimum over *all*
/// (order, driver) pairs, which proves how far from optimal the answer can be.
#[derive(Debug, Clone)]
pub struct CertifiedAssignment {
    pub assignments: Vec<Assignment>,
    /// [`batch_cost`] of `assignments`.
    pub cost: f64,
    /// No assignment of these orders to these drivers (one order per driver, every pair
    /// within `max_pickup_s` and not excluded allowed, an order left out at
    /// [`CostModel::unassigned_cost`]) costs less than this: the dual objective of the
    /// assignment LP at dual prices checked feasible for every pair, including the pairs
    /// the sparse solve never priced. `cost − lower_bound` bounds
    /// the gap to the true optimum.
    pub lower_bound: f64,
    /// Orders whose candidate list could not be proved wide enough (their price was capped
    /// for the bound); 0 means the answer is optimal up to float rounding.
    pub unsettled: usize,
    /// How many times candidate lists were widened.
    pub widenings: usize,
    /// Zones the batch was solved in (see `docs/architecture.md`, Dispatch), and the
    /// orders of the largest.
    pub zones: usize,
    pub largest_zone: usize,
}

impl CertifiedAssignment {
    /// `(cost − lower_bound) / lower_bound`, in percent.
    pub fn gap_pct(&self) -> f64 {
        if self.lower_bound > 0.0 {
            (self.cost - self.lower_bound).max(0.0) / self.lower_bound * 100.0
        } else {
            0.0
        }
    }
}

/// Run `Matcher::Optimal` and certify it; see [`CertifiedAssignment`].
pub fn assign_certified(
    orders: &[OrderSlot],
    drivers: &[DriverSlot],
    index: Option<&DriverIndex>,
    model: &CostModel,
) -> CertifiedAssignment {
    let search = CandidateSearch::new(drivers, index, model);
    let k = model.candidates_per_order.max(1);
    let candidates = search.around_all(orders, k);
    let (chosen, certificate) = optimal(orders, &search, candidates, k);
    let assignments = search.assignments(orders, chosen);
    let cost = batch_cost(orders, &assignments, model);
    CertifiedAssignment {
        assignments,
        cost,
        lower_bound: certificate.lower_bound,
        unsettled: certificate.unsettled,
        widenings: certificate.widenings,
        zones: certificate.zones,
        largest_zone: certificate.largest_zone,
    }
}

/// What a batch's outcome costs: its assignments plus [`CostModel::unassigned_cost`] for
/// each order left out. The objective both matchers are judged by.
pub fn batch_cost(orders: &[OrderSlot], assignments: &[Assignment], model: &CostModel) -> f64 {
    let served: HashSet<&OrderId> = assignments.iter().map(|a| &a.order_id).collect();
    let left_out: f64 = orders.iter().filter(|o| !served.contains(&o.order_id)).map(|o| model.unassigned_cost(o)).sum();
    assignments.iter().map(|a| a.cost).sum::<f64>() + left_out
}

/// One order's priced candidates, nearest first.
#[derive(Debug, Clone)]
pub(crate) struct Candidates {
    pub edges: Vec<Edge>,
    /// Pickup ETA from the farthest driver found, when the search stopped at k and farther
    /// eligible drivers may exist; `None` when every eligible driver in reach is included.
    pub frontier_eta_s: Option<f64>,
}

/// Finds and prices candidate drivers for orders of one batch. The drivers it finds are
/// the columns of the assignment problem, numbered as they are first found.
pub(crate) struct CandidateSearch<'a> {
    source: Source<'a>,
    model: &'a CostModel,
    reach_m: f64,
}

enum Source<'a> {
    /// The batch's own drivers; a driver's column is its position in `drivers`.
    Batch {
        drivers: &'a [DriverSlot],
        /// Driver id → position in `drivers` (the first, if an id repeats).
        position: HashMap<&'a DriverId, usize>,
        index: Cow<'a, DriverIndex>,
    },
    /// The batch's own drivers through an index built for the call from `drivers` in order,
    /// with distinct ids: index slot = position = column, so no id is hashed or compared.
    Own { drivers: &'a [DriverSlot], index: DriverIndex },
    /// Every available driver of a live source; columns are handed out as drivers are found.
    Live { source: &'a dyn DriverSource, columns: Mutex<LiveColumns> },
}

#[derive(Default)]
struct LiveColumns {
    drivers: Vec<DriverSlot>,
    column_of: HashMap<DriverId, usize>,
}

impl<'a> CandidateSearch<'a> {
    pub fn new(drivers: &'a [DriverSlot], index: Option<&'a DriverIndex>, model: &'a CostModel) -> Self {
        let reach_m = model.reach_m();
        let index = match index {
            Some(index) => Cow::Borrowed(index),
            None => {
                let own =
                    DriverIndex::of_batch(drivers.len(), |i| drivers[i].driver_id.clone(), |i| drivers[i].location);
                match own {
                    Some(index) => return Self { source: Source::Own { drivers, index }, model, reach_m },
                    None => Cow::Owned(index_of(drivers)),
                }
            }
        };
        let mut position: HashMap<&DriverId, usize> = HashMap::with_capacity(drivers.len());
        for (i, d) in drivers.iter().enumerate() {
            position.entry(&d.driver_id).or_insert(i);
        }
        Self { source: Source::Batch { drivers, position, index }, model, reach_m }
    }

    pub fn live(source: &'a dyn DriverSource, model: &'a CostModel) -> Self {
        Self { source: Source::Live { source, columns: Mutex::default() }, model, reach_m: model.reach_m() }
    }

    /// How many columns (drivers) the problem has so far.
    pub fn columns(&self) -> usize {
        match &self.source {
            Source::Batch { drivers, .. } | Source::Own { drivers, .. } => drivers.len(),
            Source::Live { columns, .. } => live_columns(columns).drivers.len(),
        }
    }

    /// The k nearest eligible drivers of `order`, each with its column and position.
    fn found(&self, order: &OrderSlot, k: usize) -> Vec<(usize, GeoPoint)> {
        match &self.source {
            Source::Batch { drivers, position, index } => {
                let eligible = |id: &DriverId| position.contains_key(id) && !order.excluded.contains(id);
                let found = index.nearest_filtered(order.pickup, k, self.reach_m, eligible);
                found.into_iter().map(|(id, _)| (position[&id], drivers[position[&id]].location)).collect()
            }
            Source::Own { drivers, index } => {
                let found = if order.excluded.is_empty() {
                    index.nearest_slots(order.pickup, k, self.reach_m, |_| true)
                } else {
                    index.nearest_slots(order.pickup, k, self.reach_m, |slot| {
                        !order.excluded.contains(&drivers[slot as usize].driver_id)
                    })
                };
                found.into_iter().map(|(slot, _)| (slot as usize, drivers[slot as usize].location)).collect()
            }
            Source::Live { source, columns } => {
                let found =
                    source.nearest_located(order.pickup, k, self.reach_m, &mut |id| !order.excluded.contains(id));
                let mut columns = live_columns(columns);
                let columns = &mut *columns;
                found
                    .into_iter()
                    .map(|(id, at)| {
                        let column = *columns.column_of.entry(id.clone()).or_insert_with(|| {
                            columns.drivers.push(DriverSlot { driver_id: id, location: at });
                            columns.drivers.len() - 1
                        });
                        (column, at)
                    })
                    .collect()
            }
        }
    }

    /// The `k` nearest eligible drivers of `order`, priced; infeasible pairs dropped.
    pub fn around(&self, order: &OrderSlot, k: usize) -> Candidates {
        self.priced(order, k, &self.found(order, k))
    }

    /// Price what a search `k` deep found for `order`.
    fn priced(&self, order: &OrderSlot, k: usize, found: &[(usize, GeoPoint)]) -> Candidates {
        let frontier_eta_s =
            found.last().filter(|_| found.len() == k).map(|(_, at)| self.model.eta.travel_s(at, &order.pickup));
        let edges = found
            .iter()
            .filter_map(|&(driver, at)| {
                let (eta_s, cost) = self.model.price(order, &at)?;
                Some(Edge { driver, eta_s, cost })
            })
            .collect();
        Candidates { edges, frontier_eta_s }
    }

    fn driver_id(&self, column: usize) -> DriverId {
        match &self.source {
            Source::Batch { drivers, .. } | Source::Own { drivers, .. } => drivers[column].driver_id.clone(),
            Source::Live { columns, .. } => live_columns(columns).drivers[column].driver_id.clone(),
        }
    }

    /// The candidates of every order, `k` deep.
    fn around_all(&self, orders: &[OrderSlot], k: usize) -> Vec<Candidates> {
        let all: Vec<usize> = (0..orders.len()).collect();
        self.around_each(orders, &all, |_| k)
    }

    /// The candidates of the orders at positions `which`, order `i` searched `k_of(i)` deep.
    /// Orders at the same pickup point that exclude no one (a restaurant's several orders)
    /// share one search, priced for each. Over the batch's own drivers the searches share
    /// the threads; a live source is searched on the calling thread, so that a round holds
    /// its lock one query at a time and its drivers are numbered as they are found, the
    /// same way every time.
    fn around_each(
        &self,
        orders: &[OrderSlot],
        which: &[usize],
        k_of: impl Fn(usize) -> usize + Sync,
    ) -> Vec<Candidates> {
        let mut query_of_key: HashMap<(u64, u64, usize), usize> = HashMap::new();
        let mut queries: Vec<usize> = Vec::new();
        let query_of: Vec<usize> = which
            .iter()
            .map(|&i| {
                let o = &orders[i];
                let mut new_query = || {
                    queries.push(i);
                    queries.len() - 1
                };
                if o.excluded.is_empty() {
                    let key = (o.pickup.lat.to_bits(), o.pickup.lng.to_bits(), k_of(i));
                    *query_of_key.entry(key).or_insert_with(new_query)
                } else {
                    new_query()
                }
            })
            .collect();
        let search = |&i: &usize| self.found(&orders[i], k_of(i));
        let found: Vec<Vec<(usize, GeoPoint)>> = match self.source {
            Source::Live { .. } => queries.iter().map(search).collect(),
            Source::Batch { .. } | Source::Own { .. } => parallel_map(&queries, SEARCHES_PER_THREAD, search),
        };
        let jobs: Vec<(usize, usize)> = which.iter().copied().zip(query_of).collect();
        parallel_map(&jobs, PRICINGS_PER_THREAD, |&(i, q)| self.priced(&orders[i], k_of(i), &found[q]))
    }

    /// The chosen edge of each order as assignments, in the order of `orders`.
    fn assignments(&self, orders: &[OrderSlot], chosen: Vec<Option<Edge>>) -> Vec<Assignment> {
        chosen
            .into_iter()
            .zip(orders)
            .filter_map(|(edge, order)| {
                let edge = edge?;
                Some(Assignment {
                    order_id: order.order_id.clone(),
                    driver_id: self.driver_id(edge.driver),
                    pickup_eta_s: edge.eta_s,
                    cost: edge.cost,
                })
            })
            .collect()
    }
}

/// Fewer searches than this are not worth a thread of their own.
const SEARCHES_PER_THREAD: usize = 64;
/// Pricing an order's candidates is cheaper than finding them.
const PRICINGS_PER_THREAD: usize = 1_024;

fn live_columns(columns: &Mutex<LiveColumns>) -> std::sync::MutexGuard<'_, LiveColumns> {
    columns.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A throwaway index over one batch's drivers where an id repeats (the first place wins).
fn index_of(drivers: &[DriverSlot]) -> DriverIndex {
    let mut index = DriverIndex::new();
    for d in drivers {
        index.upsert(&d.driver_id, d.location, true);
    }
    index
}

/// How `optimal` proved its answer.
struct Certificate {
    lower_bound: f64,
    unsettled: usize,
    widenings: usize,
    zones: usize,
    largest_zone: usize,
}

/// The least any driver beyond order `i`'s candidate list can cost it, when the list was
/// cut at k (infinite when it holds every eligible driver in reach). The list holds the k
/// nearest eligible drivers by great-circle distance and cost can only fall with distance
/// as [`CostModel::cheapest_from`] allows, so no left-out driver costs less. The factor
/// covers float rounding between the index's chord distances and the ETA's.
fn left_out_floor(model: &CostModel, order: &OrderSlot, c: &Candidates) -> f64 {
    c.frontier_eta_s.map_or(f64::INFINITY, |eta_s| {
        let floor = model.cheapest_from(order, eta_s);
        floor - 1e-9 * floor.abs().max(1.0)
    })
}

/// Minimum total cost, zone by zone (see [`crate::zones`]): solve every zone, widen the
/// lists of orders not yet proved settled, and solve again only the zones those orders are
/// in now; the others keep their answers.
fn optimal(
    orders: &[OrderSlot],
    search: &CandidateSearch,
    mut candidates: Vec<Candidates>,
    k: usize,
) -> (Vec<Option<Edge>>, Certificate) {
    let model = search.model;
    let n = orders.len();
    let mut k_of = vec![k; n];
    let mut floors: Vec<f64> = orders.iter().zip(&candidates).map(|(o, c)| left_out_floor(model, o, c)).collect();
    // Orders whose candidates changed since their zone was last solved.
    let mut changed = vec![true; n];
    let mut solved: Vec<ZoneSolution> = Vec::new();
    let mut round = 0;
    loop {
        let zones = zones::split(&candidates, search.columns());
        let mut zone_of_order = vec![usize::MAX; n];
        for (z, s) in solved.iter().enumerate() {
            for &i in &s.rows {
                zone_of_order[i] = z;
            }
        }
        // A zone of unchanged orders as large as the solved zone its first order was in is
        // that zone: its orders' lists are the same, so they reach no one new.
        let mut kept: Vec<Option<ZoneSolution>> = solved.into_iter().map(Some).collect();
        let mut next: Vec<Option<ZoneSolution>> = vec![None; zones.rows.len()];
        let mut to_solve = Vec::new();
        for (z, rows) in zones.rows.iter().enumerate() {
            let before = zone_of_order[rows[0]];
            let same = before != usize::MAX
                && rows.iter().all(|&i| !changed[i])
                && kept[before].as_ref().is_some_and(|s| s.rows.len() == rows.len());
            if same {
                next[z] = kept[before].take();
            } else {
                to_solve.push(z);
            }
        }
        let batch = zones::Batch { orders, candidates: &candidates, model, floors: &floors };
        for (z, s) in to_solve.iter().zip(zones::solve(&batch, &zones, &to_solve)) {
            next[*z] = Some(s);
        }
        solved = next.into_iter().map(|s| s.expect("every zone kept or solved")).collect();
        changed.fill(false);
        // An order is settled when no driver beyond its frontier could cost less than its price.
        let unsettled: Vec<usize> = solved
            .iter()
            .flat_map(|s| s.rows.iter().zip(&s.price))
            .filter(|&(&i, &price)| price > floors[i] + 2e-9 * floors[i].abs().max(1.0))
            .map(|(&i, _)| i)
            .collect();
        if unsettled.is_empty() || round == MAX_WIDENINGS {
            let certificate = Certificate {
                lower_bound: solved.iter().map(|s| s.bound).sum(),
                unsettled: unsettled.len(),
                widenings: round,
                zones: solved.len(),
                largest_zone: solved.iter().map(|s| s.rows.len()).max().unwrap_or(0),
            };
            let mut chosen = vec![None; n];
            for s in &solved {
                for (&i, driver) in s.rows.iter().zip(&s.col_of) {
                    chosen[i] = driver.and_then(|d| candidates[i].edges.iter().find(|e| e.driver == d).copied());
                }
            }
            return (chosen, certificate);
        }
        round += 1;
        let mut unsettled = unsettled;
        unsettled.sort_unstable();
        for &i in &unsettled {
            k_of[i] = k_of[i].saturating_mul(2);
            changed[i] = true;
        }
        let widened = search.around_each(orders, &unsettled, |i| k_of[i]);
        for (i, c) in unsettled.into_iter().zip(widened) {
            floors[i] = left_out_floor(model, &orders[i], &c);
            candidates[i] = c;
        }
    }
}

/// Cheapest remaining pair first. Orders that lose all their candidates look farther (the
/// list doubled, as `Optimal` does) among the drivers still free, so the baseline is not
/// handicapped by short lists.
fn greedy(
    orders: &[OrderSlot],
    search: &CandidateSearch,
    mut candidates: Vec<Candidates>,
    k: usize,
) -> Vec<Option<Edge>> {
    let mut chosen = vec![None; orders.len()];
    let mut taken = vec![false; search.columns()];
    let mut open: Vec<usize> = (0..orders.len()).collect();
    let mut k = k;
    for round in 0..=MAX_WIDENINGS {
        let mut pairs: Vec<(usize, Edge)> =
            open.iter().flat_map(|&o| candidates[o].edges.iter().map(move |&e| (o, e))).collect();
        pairs.sort_by(|a, b| a.1.cost.total_cmp(&b.1.cost).then(a.0.cmp(&b.0)).then(a.1.driver.cmp(&b.1.driver)));
        for (order, edge) in pairs {
            if chosen[order].is_none() && !taken[edge.driver] {
                chosen[order] = Some(edge);
                taken[edge.driver] = true;
            }
        }
        open.retain(|&o| chosen[o].is_none() && candidates[o].frontier_eta_s.is_some());
        if open.is_empty() || round == MAX_WIDENINGS {
            break;
        }
        k = k.saturating_mul(2);
        let widened = search.around_each(orders, &open, |_| k);
        taken.resize(search.columns(), false);
        for (&o, mut c) in open.iter().zip(widened) {
            c.edges.retain(|e| !taken[e.driver]);
            candidates[o] = c;
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(lat: f64, lng: f64) -> GeoPoint {
        GeoPoint::new(lat, lng).unwrap()
    }

    fn order(id: &str, at: GeoPoint, ready_in_s: f64) -> OrderSlot {
        OrderSlot { order_id: id.into(), pickup: at, ready_in_s, excluded: vec![] }
    }

    fn driver(id: &str, at: GeoPoint) -> DriverSlot {
        DriverSlot { driver_id: id.into(), location: at }
    }

    #[test]
    fn optimal_beats_greedy_on_the_classic_trap() {
        // Greedy gives the middle driver to order A (cheapest pair), leaving B a far driver.
        let (a, b) = (pt(60.170, 24.940), pt(60.170, 24.950));
        let orders = [order("a", a, 0.0), order("b", b, 0.0)];
        let drivers = [driver("mid", pt(60.170, 24.9449)), driver("west", pt(60.170, 24.932))];
        let model = CostModel::default();
        let opt = assign(&orders, &drivers, None, &model, Matcher::Optimal);
        let greedy = assign(&orders, &drivers, None, &model, Matcher::Greedy);
        assert_eq!(greedy[0].driver_id.as_str(), "mid");
        assert_eq!(opt[0].driver_id.as_str(), "west");
        assert!(batch_cost(&orders, &opt, &model) < batch_cost(&orders, &greedy, &model));
    }

    #[test]
    fn costs_price_both_kinds_of_waiting() {
        let model = CostModel { driver_wait_weight: 0.5, order_wait_weight: 2.0, ..CostModel::default() };
        let o = order("o", pt(60.17, 24.94), 600.0);
        assert_eq!(model.cost_at(&o, 200.0), 200.0 + 0.5 * 400.0);
        assert_eq!(model.cost_at(&o, 700.0), 700.0 + 2.0 * 100.0);
        assert!(model.price(&o, &pt(61.0, 24.94)).is_none(), "90 km is beyond max_pickup_s");
        assert!(model.unassigned_cost(&o) > model.cost_at(&o, model.max_pickup_s));
    }

    #[test]
    fn excluded_and_unknown_drivers_are_never_assigned() {
        let at = pt(60.17, 24.94);
        let mut o = order("o", at, 0.0);
        o.excluded.push("near".into());
        let drivers = [driver("near", at), driver("far", pt(60.18, 24.94))];
        let mut index = DriverIndex::new();
        index.upsert(&"stranger".into(), at, true);
        index.upsert(&"far".into(), pt(60.18, 24.94), true);
        let got = assign(std::slice::from_ref(&o), &drivers, Some(&index), &CostModel::default(), Matcher::Optimal);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].driver_id.as_str(), "far");
    }
}
