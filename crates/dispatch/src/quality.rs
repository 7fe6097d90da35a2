//! How close the matchers come to the true optimum, on a reproducible random city, for
//! `lastmile bench assignment` and the benchmarks. The only place in this crate that reads
//! the clock (to time the solvers).

use crate::assign::{assign, assign_certified, batch_cost, Assignment, CostModel, DriverSlot, Matcher, OrderSlot};
use crate::hungarian;
use lastmile_core::geo::EARTH_RADIUS_M;
use lastmile_core::GeoPoint;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Instant;

/// One batch: orders waiting at stores and the free drivers around them.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub orders: Vec<OrderSlot>,
    pub drivers: Vec<DriverSlot>,
}

const CITY_CENTRE: (f64, f64) = (60.17, 24.94);
const CITY_RADIUS_M: f64 = 8_000.0;

/// A random batch around Helsinki (60.17, 24.94): drivers spread evenly over a disk of 8 km,
/// orders at one store per five orders (so orders compete for the same drivers), 40% of
/// them ready now and the rest ready within 15 minutes. The same seed gives the same city.
pub fn random_city(seed: u64, orders: usize, drivers: usize) -> Scenario {
    let mut rng = StdRng::seed_from_u64(seed);
    let stores: Vec<GeoPoint> = (0..orders.div_ceil(5).max(1)).map(|_| city_point(&mut rng)).collect();
    let orders = (0..orders)
        .map(|i| OrderSlot {
            order_id: format!("ord_{seed}_{i:05}").into(),
            pickup: stores[rng.gen_range(0..stores.len())],
            ready_in_s: if rng.gen_bool(0.4) { 0.0 } else { rng.gen_range(0.0..900.0) },
            excluded: Vec::new(),
        })
        .collect();
    let drivers = (0..drivers)
        .map(|i| DriverSlot { driver_id: format!("drv_{seed}_{i:05}").into(), location: city_point(&mut rng) })
        .collect();
    Scenario { orders, drivers }
}

/// A uniformly random point within `CITY_RADIUS_M` of the centre.
pub(crate) fn city_point(rng: &mut impl Rng) -> GeoPoint {
    let r = CITY_RADIUS_M * rng.gen::<f64>().sqrt();
    let bearing = rng.gen_range(0.0..std::f64::consts::TAU);
    let metres_per_deg = EARTH_RADIUS_M.to_radians();
    let lat = CITY_CENTRE.0 + r * bearing.cos() / metres_per_deg;
    let lng = CITY_CENTRE.1 + r * bearing.sin() / (metres_per_deg * CITY_CENTRE.0.to_radians().cos());
    GeoPoint::new(lat, lng).expect("a point near Helsinki is a valid coordinate")
}

/// The Optimal and Greedy matchers against the dense exact optimum on one random city.
/// Costs are [`batch_cost`]s (assignments plus the price of orders left out), in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct QualityReport {
    pub orders: usize,
    pub drivers: usize,
    /// Dense Hungarian over every (order, driver) pair: the true optimum.
    pub optimal_cost: f64,
    /// `Matcher::Optimal` (sparse, `candidates_per_order` nearest).
    pub matched_cost: f64,
    /// `Matcher::Greedy`.
    pub greedy_cost: f64,
    /// How much dearer `matched_cost` is than `optimal_cost`, in percent.
    pub gap_pct: f64,
    pub greedy_gap_pct: f64,
    /// Total pickup travel seconds of each solution (the budget's "total pickup time").
    pub optimal_pickup_s: f64,
    pub matched_pickup_s: f64,
    pub greedy_pickup_s: f64,
    pub optimal_unassigned: usize,
    pub matched_unassigned: usize,
    pub greedy_unassigned: usize,
    /// `assign` wall time, candidate search included.
    pub matched_ms: f64,
    pub greedy_ms: f64,
    /// Dense solve wall time, building the full cost matrix included.
    pub hungarian_ms: f64,
}

pub fn quality_report(seed: u64, orders: usize, drivers: usize) -> QualityReport {
    let city = random_city(seed, orders, drivers);
    let model = CostModel::default();
    let timed = |matcher| {
        let start = Instant::now();
        let result = assign(&city.orders, &city.drivers, None, &model, matcher);
        (result, start.elapsed().as_secs_f64() * 1e3)
    };
    let (matched, matched_ms) = timed(Matcher::Optimal);
    let (greedy, greedy_ms) = timed(Matcher::Greedy);
    let start = Instant::now();
    let dense = dense_optimum(&city, &model);
    let hungarian_ms = start.elapsed().as_secs_f64() * 1e3;

    let optimal_cost = batch_cost(&city.orders, &dense, &model);
    let matched_cost = batch_cost(&city.orders, &matched, &model);
    let greedy_cost = batch_cost(&city.orders, &greedy, &model);
    let gap = |cost: f64| if optimal_cost > 0.0 { (cost - optimal_cost) / optimal_cost * 100.0 } else { 0.0 };
    let pickup = |a: &[Assignment]| a.iter().map(|a| a.pickup_eta_s).sum();
    QualityReport {
        orders,
        drivers,
        optimal_cost,
        matched_cost,
        greedy_cost,
        gap_pct: gap(matched_cost),
        greedy_gap_pct: gap(greedy_cost),
        optimal_pickup_s: pickup(&dense),
        matched_pickup_s: pickup(&matched),
        greedy_pickup_s: pickup(&greedy),
        optimal_unassigned: orders - dense.len(),
        matched_unassigned: orders - matched.len(),
        greedy_unassigned: orders - greedy.len(),
        matched_ms,
        greedy_ms,
        hungarian_ms,
    }
}

/// The matchers on a batch too big for the dense optimum (5,000 × 25,000 would take hours):
/// `Optimal` is judged against the certified lower bound it proves, which no assignment of
/// the batch can beat (see [`crate::CertifiedAssignment`]).
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub orders: usize,
    pub drivers: usize,
    /// No assignment of this batch costs less than this.
    pub lower_bound: f64,
    pub matched_cost: f64,
    pub greedy_cost: f64,
    /// How much dearer each matcher's answer is than the bound, in percent (an upper bound
    /// on its gap to the true optimum).
    pub gap_pct: f64,
    pub greedy_gap_pct: f64,
    pub matched_pickup_s: f64,
    pub greedy_pickup_s: f64,
    pub matched_unassigned: usize,
    pub greedy_unassigned: usize,
    /// Orders `Optimal` could not prove settled (0: optimal up to rounding).
    pub unsettled: usize,
    pub widenings: usize,
    /// Zones `Optimal` solved the batch in, and the orders of the largest.
    pub zones: usize,
    pub largest_zone: usize,
    /// `assign` wall time, candidate search (and for `Optimal` the certificate) included.
    pub matched_ms: f64,
    pub greedy_ms: f64,
}

pub fn scale_report(seed: u64, orders: usize, drivers: usize) -> ScaleReport {
    let city = random_city(seed, orders, drivers);
    let model = CostModel::default();
    let start = Instant::now();
    let certified = assign_certified(&city.orders, &city.drivers, None, &model);
    let matched_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let greedy = assign(&city.orders, &city.drivers, None, &model, Matcher::Greedy);
    let greedy_ms = start.elapsed().as_secs_f64() * 1e3;
    let greedy_cost = batch_cost(&city.orders, &greedy, &model);
    let bound = certified.lower_bound;
    let gap = |cost: f64| if bound > 0.0 { (cost - bound) / bound * 100.0 } else { 0.0 };
    let pickup = |a: &[Assignment]| a.iter().map(|a| a.pickup_eta_s).sum();
    ScaleReport {
        orders,
        drivers,
        lower_bound: bound,
        matched_cost: certified.cost,
        greedy_cost,
        gap_pct: gap(certified.cost),
        greedy_gap_pct: gap(greedy_cost),
        matched_pickup_s: pickup(&certified.assignments),
        greedy_pickup_s: pickup(&greedy),
        matched_unassigned: orders - certified.assignments.len(),
        greedy_unassigned: orders - greedy.len(),
        unsettled: certified.unsettled,
        widenings: certified.widenings,
        zones: certified.zones,
        largest_zone: certified.largest_zone,
        matched_ms,
        greedy_ms,
    }
}

/// The exact optimum of the same objective over all pairs: one column per driver, then one
/// "unassigned" column per order (all orders price those alike, so any will do).
pub(crate) fn dense_optimum(city: &Scenario, model: &CostModel) -> Vec<Assignment> {
    let drivers = city.drivers.len();
    let cost: Vec<Vec<f64>> = city
        .orders
        .iter()
        .map(|order| {
            let unassigned = model.unassigned_cost(order);
            let priced = city.drivers.iter().map(|d| {
                let excluded = order.excluded.contains(&d.driver_id);
                model.price(order, &d.location).filter(|_| !excluded).map_or(unassigned, |(_, cost)| cost)
            });
            priced.chain(std::iter::repeat_n(unassigned, city.orders.len())).collect()
        })
        .collect();
    hungarian(&cost)
        .into_iter()
        .zip(&city.orders)
        .filter_map(|(col, order)| {
            let driver = &city.drivers[col.filter(|&c| c < drivers)?];
            let excluded = order.excluded.contains(&driver.driver_id);
            let (pickup_eta_s, cost) = model.price(order, &driver.location).filter(|_| !excluded)?;
            Some(Assignment {
                order_id: order.order_id.clone(),
                driver_id: driver.driver_id.clone(),
                pickup_eta_s,
                cost,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cities_are_reproducible_and_inside_the_disk() {
        let (a, b) = (random_city(7, 20, 50), random_city(7, 20, 50));
        assert_eq!(a.orders, b.orders);
        assert_eq!(a.drivers, b.drivers);
        let centre = GeoPoint::new(CITY_CENTRE.0, CITY_CENTRE.1).unwrap();
        assert!(a.drivers.iter().all(|d| d.location.distance_m(&centre) <= CITY_RADIUS_M * 1.01));
    }

    /// The bound is a true lower bound (never above the dense optimum) and, once every
    /// order is settled, meets it: on plentiful and on scarce drivers, and with candidate
    /// lists too short to settle anything (the capped bound must still hold).
    #[test]
    fn the_certified_bound_never_exceeds_the_dense_optimum() {
        for (seed, orders, drivers, k) in [(3, 150, 700, 10), (4, 150, 200, 10), (5, 120, 400, 1)] {
            let city = random_city(seed, orders, drivers);
            let model = CostModel { candidates_per_order: k, ..CostModel::default() };
            let optimum = batch_cost(&city.orders, &dense_optimum(&city, &model), &model);
            let certified = assign_certified(&city.orders, &city.drivers, None, &model);
            let slack = 1e-9 * optimum;
            assert!(
                certified.lower_bound <= optimum + slack,
                "seed {seed}: bound {} > optimum {optimum}",
                certified.lower_bound
            );
            assert!(optimum <= certified.cost + slack, "seed {seed}");
            if certified.unsettled == 0 {
                assert!(certified.gap_pct() < 1e-6, "seed {seed}: {certified:?}");
            }
        }
    }

    /// A batch big enough to be split into many zones, searched and solved on two threads:
    /// the same answer as on one, proved optimal by its own bound (which the test above
    /// shows is a true lower bound), and every driver used once.
    #[test]
    fn zones_solved_in_parallel_give_the_certified_optimum() {
        let city = random_city(11, 1_500, 6_000);
        let model = CostModel::default();
        let solve = |threads| {
            crate::set_matching_threads(threads);
            let certified = assign_certified(&city.orders, &city.drivers, None, &model);
            crate::set_matching_threads(0);
            certified
        };
        let (one, two) = (solve(1), solve(2));
        assert_eq!(one.assignments, two.assignments);
        assert_eq!(two.unsettled, 0, "{} orders unsettled", two.unsettled);
        assert!(two.gap_pct() < 1e-6, "gap {}%", two.gap_pct());
        let mut drivers: Vec<_> = two.assignments.iter().map(|a| &a.driver_id).collect();
        drivers.sort();
        drivers.dedup();
        assert_eq!(drivers.len(), two.assignments.len());
        let greedy = assign(&city.orders, &city.drivers, None, &model, Matcher::Greedy);
        assert!(two.cost <= batch_cost(&city.orders, &greedy, &model) + 1e-6);
    }

    #[test]
    fn optimal_is_within_two_percent_of_the_dense_optimum_at_200_by_1000() {
        let report = quality_report(42, 200, 1_000);
        assert!(report.optimal_cost <= report.matched_cost + 1e-6, "{report:?}");
        assert!(report.gap_pct <= 2.0, "{report:?}");
        assert!(report.matched_cost <= report.greedy_cost + 1e-6, "{report:?}");
        assert_eq!(report.matched_unassigned, 0, "{report:?}");
    }
}
