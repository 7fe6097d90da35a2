//! Batched assignment: price every order against its nearest candidate drivers, then pick
//! one driver per order so that the batch as a whole is cheapest (`Matcher::Optimal`) or by
//! taking the cheapest remaining pair first (`Matcher::Greedy`, the baseline).

use crate::matching::SparseProblem;
use crate::DriverIndex;
use lastmile_core::{DriverId, EtaModel, GeoPoint, OrderId};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

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
    let k = model.candidates_per_order.max(1);
    let candidates: Vec<Candidates> = orders.iter().map(|o| search.around(o, k)).collect();
    let chosen = match matcher {
        Matcher::Optimal => optimal(orders, &search, candidates, k),
        Matcher::Greedy => greedy(orders, &search, candidates, k),
    };
    chosen
        .into_iter()
        .zip(orders)
        .filter_map(|(edge, order)| {
            let edge = edge?;
            Some(Assignment {
                order_id: order.order_id.clone(),
                driver_id: drivers[edge.driver].driver_id.clone(),
                pickup_eta_s: edge.eta_s,
                cost: edge.cost,
            })
        })
        .collect()
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

/// Finds and prices candidate drivers for orders of one batch.
pub(crate) struct CandidateSearch<'a> {
    drivers: &'a [DriverSlot],
    /// Driver id → position in `drivers` (the first, if an id repeats).
    position: HashMap<&'a DriverId, usize>,
    index: Cow<'a, DriverIndex>,
    model: &'a CostModel,
    reach_m: f64,
}

impl<'a> CandidateSearch<'a> {
    pub fn new(drivers: &'a [DriverSlot], index: Option<&'a DriverIndex>, model: &'a CostModel) -> Self {
        let mut position: HashMap<&DriverId, usize> = HashMap::with_capacity(drivers.len());
        for (i, d) in drivers.iter().enumerate() {
            position.entry(&d.driver_id).or_insert(i);
        }
        let index = index.map_or_else(|| Cow::Owned(index_of(drivers)), Cow::Borrowed);
        Self { drivers, position, index, model, reach_m: model.reach_m() }
    }

    /// The `k` nearest eligible drivers of `order`, priced; infeasible pairs dropped.
    pub fn around(&self, order: &OrderSlot, k: usize) -> Candidates {
        let eligible = |id: &DriverId| self.position.contains_key(id) && !order.excluded.contains(id);
        let found = self.index.nearest_filtered(order.pickup, k, self.reach_m, eligible);
        let frontier_eta_s = found
            .last()
            .filter(|_| found.len() == k)
            .map(|(id, _)| self.model.eta.travel_s(&self.drivers[self.position[id]].location, &order.pickup));
        let edges = found
            .into_iter()
            .filter_map(|(id, _)| {
                let driver = self.position[&id];
                let (eta_s, cost) = self.model.price(order, &self.drivers[driver].location)?;
                Some(Edge { driver, eta_s, cost })
            })
            .collect();
        Candidates { edges, frontier_eta_s }
    }
}

/// A throwaway index over one batch's drivers (~1 ms for 5,000).
fn index_of(drivers: &[DriverSlot]) -> DriverIndex {
    let mut index = DriverIndex::new();
    for d in drivers {
        index.upsert(&d.driver_id, d.location, true);
    }
    index
}

fn optimal(
    orders: &[OrderSlot],
    search: &CandidateSearch,
    mut candidates: Vec<Candidates>,
    k: usize,
) -> Vec<Option<Edge>> {
    let model = search.model;
    let mut k_of = vec![k; orders.len()];
    let mut round = 0;
    loop {
        let mut problem = SparseProblem::new(search.drivers.len());
        for (order, c) in orders.iter().zip(&candidates) {
            problem.push_row(c.edges.iter().map(|e| (e.driver, e.cost)), model.unassigned_cost(order));
        }
        let solution = problem.solve();
        // An order is settled when no driver beyond its frontier could cost less than its price.
        let unsettled: Vec<usize> = (0..orders.len())
            .filter(|&i| {
                candidates[i].frontier_eta_s.is_some_and(|eta_s| {
                    let floor = model.cheapest_from(&orders[i], eta_s);
                    solution.row_potential[i] > floor + 1e-9 * floor.abs().max(1.0)
                })
            })
            .collect();
        if unsettled.is_empty() || round == MAX_WIDENINGS {
            return solution
                .col_of
                .into_iter()
                .zip(&candidates)
                .map(|(driver, c)| driver.and_then(|d| c.edges.iter().find(|e| e.driver == d).copied()))
                .collect();
        }
        round += 1;
        for i in unsettled {
            k_of[i] = k_of[i].saturating_mul(2);
            candidates[i] = search.around(&orders[i], k_of[i]);
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
    let mut taken = vec![false; search.drivers.len()];
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
        for &o in &open {
            candidates[o] = search.around(&orders[o], k);
            candidates[o].edges.retain(|e| !taken[e.driver]);
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
