//! Properties of the public API against brute force: the index finds exactly the nearest
//! available drivers, and assignments respect drivers, exclusions and the optimum.

use lastmile_core::{DriverId, GeoPoint};
use lastmile_dispatch::{
    assign, assign_certified, assign_live, batch_cost, hungarian, CostModel, DriverIndex, DriverSlot, Matcher,
    OrderSlot,
};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

/// A point `spread_deg` around `centre`, longitudes wrapped, latitudes clamped.
fn around(centre: (f64, f64), offset: (f64, f64), spread_deg: f64) -> GeoPoint {
    let lat = (centre.0 + offset.0 * spread_deg).clamp(-90.0, 90.0);
    let lng = (centre.1 + offset.1 * spread_deg + 540.0).rem_euclid(360.0) - 180.0;
    GeoPoint::new(lat, lng).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Upsert { driver: usize, offset: (f64, f64), available: bool },
    SetAvailable { driver: usize, available: bool },
    Remove { driver: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let offset = (-1.0f64..1.0, -1.0f64..1.0);
    prop_oneof![
        6 => (0usize..60, offset, prop::bool::weighted(0.8))
            .prop_map(|(driver, offset, available)| Op::Upsert { driver, offset, available }),
        1 => (0usize..60, any::<bool>()).prop_map(|(driver, available)| Op::SetAvailable { driver, available }),
        1 => (0usize..60).prop_map(|driver| Op::Remove { driver }),
    ]
}

fn centre() -> impl Strategy<Value = (f64, f64)> {
    prop_oneof![
        3 => Just((60.17, 24.94)),
        1 => Just((89.95, 0.0)),
        1 => Just((-12.0, 179.99)),
        2 => (-90.0f64..90.0, -180.0f64..180.0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn nearest_matches_brute_force(
        centre in centre(),
        spread_deg in prop_oneof![Just(0.002), Just(0.05), Just(1.0), Just(60.0)],
        cell_m in prop_oneof![Just(40.0), Just(250.0), Just(2_000.0), Just(100_000.0)],
        ops in prop::collection::vec(op(), 1..150),
        query in (-1.0f64..1.0, -1.0f64..1.0),
        k in 0usize..12,
        radius_m in prop_oneof![Just(50.0), Just(700.0), Just(5_000.0), Just(300_000.0), Just(3e7)],
    ) {
        let mut index = DriverIndex::with_cell_size_m(cell_m);
        let mut truth: HashMap<DriverId, (GeoPoint, bool)> = HashMap::new();
        for op in ops {
            match op {
                Op::Upsert { driver, offset, available } => {
                    let (id, at) = (DriverId::from(format!("d{driver}")), around(centre, offset, spread_deg));
                    index.upsert(&id, at, available);
                    truth.insert(id, (at, available));
                }
                Op::SetAvailable { driver, available } => {
                    let id = DriverId::from(format!("d{driver}"));
                    let known = truth.get_mut(&id).map(|t| t.1 = available).is_some();
                    prop_assert_eq!(index.set_available(&id, available), known);
                }
                Op::Remove { driver } => {
                    let id = DriverId::from(format!("d{driver}"));
                    prop_assert_eq!(index.remove(&id), truth.remove(&id).is_some());
                }
            }
        }
        prop_assert_eq!(index.len(), truth.len());
        let q = around(centre, query, spread_deg);
        let mut expected: Vec<(f64, &DriverId)> =
            truth.iter().filter(|(_, t)| t.1).map(|(id, t)| (q.distance_m(&t.0), id)).collect();
        // A driver within a micrometre of the radius may fall either side of it.
        prop_assume!(expected.iter().all(|(d, _)| (d - radius_m).abs() > 1e-3));
        expected.retain(|(d, _)| *d <= radius_m);
        expected.sort_by(|a, b| a.0.total_cmp(&b.0));
        expected.truncate(k);

        let found = index.nearest(q, k, radius_m);
        prop_assert_eq!(found.len(), expected.len(), "found {:?}\nexpected {:?}", found, expected);
        for ((id, metres), (want, _)) in found.iter().zip(&expected) {
            prop_assert!((metres - want).abs() < 1e-6, "{} m vs {} m", metres, want);
            let (at, available) = truth[id];
            prop_assert!(available);
            prop_assert!((q.distance_m(&at) - metres).abs() < 1e-6);
        }
        prop_assert!(found.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}

/// A small random city: orders at a few stores, drivers around, some exclusions.
fn batch() -> impl Strategy<Value = (Vec<OrderSlot>, Vec<DriverSlot>, usize)> {
    let stores = prop::collection::vec((-1.0f64..1.0, -1.0f64..1.0), 1..5);
    let orders = prop::collection::vec(
        (0usize..5, prop_oneof![Just(0.0), 0.0f64..1200.0], prop::collection::vec(0usize..30, 0..3)),
        1..14,
    );
    let drivers = prop::collection::vec((-1.0f64..1.0, -1.0f64..1.0), 0..30);
    (stores, orders, drivers, 1usize..5).prop_map(|(stores, orders, drivers, k)| {
        let city = (60.17, 24.94);
        let orders = orders
            .into_iter()
            .enumerate()
            .map(|(i, (store, ready_in_s, excluded))| OrderSlot {
                order_id: format!("o{i}").into(),
                pickup: around(city, stores[store % stores.len()], 0.03),
                ready_in_s,
                excluded: excluded.into_iter().map(|d| format!("d{d}").into()).collect(),
            })
            .collect();
        let drivers = drivers
            .into_iter()
            .enumerate()
            .map(|(i, offset)| DriverSlot { driver_id: format!("d{i}").into(), location: around(city, offset, 0.03) })
            .collect();
        (orders, drivers, k)
    })
}

/// The exact optimum of the batch objective by the dense Hungarian method.
fn dense_optimum(orders: &[OrderSlot], drivers: &[DriverSlot], model: &CostModel) -> f64 {
    let cost: Vec<Vec<f64>> = orders
        .iter()
        .map(|o| {
            let unassigned = model.unassigned_cost(o);
            let priced = drivers.iter().map(|d| match model.price(o, &d.location) {
                Some((_, cost)) if !o.excluded.contains(&d.driver_id) => cost,
                _ => unassigned,
            });
            priced.chain(std::iter::repeat_n(unassigned, orders.len())).collect()
        })
        .collect();
    hungarian(&cost).iter().enumerate().map(|(r, c)| cost[r][c.expect("rows ≤ cols")]).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn assignments_respect_drivers_exclusions_and_the_optimum(
        (orders, drivers, k) in batch(),
        weights in (0.0f64..1.0, 0.0f64..3.0),
        max_pickup_s in prop_oneof![Just(300.0), Just(900.0)],
        through_live_index in any::<bool>(),
    ) {
        let model = CostModel {
            driver_wait_weight: weights.0,
            order_wait_weight: weights.1,
            max_pickup_s,
            candidates_per_order: k,
            ..CostModel::default()
        };
        let mut live = DriverIndex::new();
        for d in &drivers {
            live.upsert(&d.driver_id, d.location, true);
        }
        live.upsert(&"stranger".into(), orders[0].pickup, true);
        let index = through_live_index.then_some(&live);
        let mut costs = Vec::new();
        for matcher in [Matcher::Optimal, Matcher::Greedy] {
            let got = assign(&orders, &drivers, index, &model, matcher);
            let by_id: HashMap<_, _> = orders.iter().map(|o| (&o.order_id, o)).collect();
            let located: HashMap<_, _> = drivers.iter().map(|d| (&d.driver_id, d.location)).collect();
            let mut used = HashSet::new();
            for a in &got {
                prop_assert!(used.insert(&a.driver_id), "{} got two orders", a.driver_id);
                let order = by_id[&a.order_id];
                prop_assert!(!order.excluded.contains(&a.driver_id), "{} is excluded from {}", a.driver_id, a.order_id);
                let at = located.get(&a.driver_id).copied();
                prop_assert!(at.is_some(), "{} is not in the batch", a.driver_id);
                prop_assert!(a.pickup_eta_s <= max_pickup_s);
                prop_assert_eq!(model.price(order, &at.unwrap()), Some((a.pickup_eta_s, a.cost)));
            }
            let orders_seen: HashSet<_> = got.iter().map(|a| &a.order_id).collect();
            prop_assert_eq!(orders_seen.len(), got.len(), "an order assigned twice");
            costs.push(batch_cost(&orders, &got, &model));
        }
        let (optimal, greedy) = (costs[0], costs[1]);
        prop_assert!(optimal <= greedy + 1e-6 * greedy.abs().max(1.0), "optimal {} > greedy {}", optimal, greedy);
        let exact = dense_optimum(&orders, &drivers, &model);
        prop_assert!((optimal - exact).abs() <= 1e-6 * exact.abs().max(1.0), "optimal {} vs dense {}", optimal, exact);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Matching straight over a live index (no batch snapshot): the available drivers are
    /// the batch, unavailable ones are never used, Optimal still reaches the dense optimum
    /// and is never worse than Greedy, and the certified bound never exceeds the optimum.
    #[test]
    fn live_index_matching_keeps_the_properties(
        (orders, drivers, k) in batch(),
        unavailable in prop::collection::vec(any::<bool>(), 30),
        weights in (0.0f64..1.0, 0.0f64..3.0),
    ) {
        let model = CostModel { driver_wait_weight: weights.0, order_wait_weight: weights.1, candidates_per_order: k, ..CostModel::default() };
        let mut live = DriverIndex::new();
        for (i, d) in drivers.iter().enumerate() {
            live.upsert(&d.driver_id, d.location, !unavailable[i]);
        }
        let free: Vec<DriverSlot> = drivers.iter().enumerate().filter(|(i, _)| !unavailable[*i]).map(|(_, d)| d.clone()).collect();
        let exact = dense_optimum(&orders, &free, &model);
        let mut costs = Vec::new();
        for matcher in [Matcher::Optimal, Matcher::Greedy] {
            let got = assign_live(&orders, &live, &model, matcher);
            let mut used = HashSet::new();
            for a in &got {
                prop_assert!(used.insert(&a.driver_id), "{} got two orders", a.driver_id);
                prop_assert!(free.iter().any(|d| d.driver_id == a.driver_id), "{} is not available", a.driver_id);
                let order = orders.iter().find(|o| o.order_id == a.order_id).unwrap();
                prop_assert!(!order.excluded.contains(&a.driver_id));
            }
            costs.push(batch_cost(&orders, &got, &model));
        }
        let slack = 1e-6 * exact.abs().max(1.0);
        prop_assert!((costs[0] - exact).abs() <= slack, "live optimal {} vs dense {}", costs[0], exact);
        prop_assert!(costs[0] <= costs[1] + slack);
        let certified = assign_certified(&orders, &free, None, &model);
        prop_assert!(certified.lower_bound <= exact + slack, "bound {} above the optimum {}", certified.lower_bound, exact);
    }
}

#[test]
fn nearest_matches_brute_force_in_a_dense_city() {
    let city = lastmile_dispatch::random_city(9, 0, 20_000);
    let queries = lastmile_dispatch::random_city(10, 0, 40).drivers;
    for cell_m in [100.0, 250.0, 1_000.0] {
        let mut index = DriverIndex::with_cell_size_m(cell_m);
        for (i, d) in city.drivers.iter().enumerate() {
            index.upsert(&d.driver_id, d.location, i % 3 != 0);
        }
        for (q, &(k, radius_m)) in
            queries.iter().map(|q| q.location).zip([(1, 50.0), (10, 2_000.0), (40, 5_000.0)].iter().cycle())
        {
            let mut want: Vec<f64> = city
                .drivers
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 3 != 0)
                .map(|(_, d)| q.distance_m(&d.location))
                .filter(|&d| d <= radius_m)
                .collect();
            want.sort_by(f64::total_cmp);
            want.truncate(k);
            let got: Vec<f64> = index.nearest(q, k, radius_m).into_iter().map(|(_, d)| d).collect();
            assert_eq!(got.len(), want.len());
            assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?} vs {want:?}");
        }
    }
}
