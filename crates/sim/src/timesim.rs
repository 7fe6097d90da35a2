//! The city on simulated time: restaurants, customers and drivers played out tick by tick
//! in-process with the server's own pure code — the dispatch crate's readiness rule and
//! matchers, the core ETA model and what it learns from each delivery once it is delivered — hours
//! of a city in milliseconds, so an
//! outcome is measured over many seeds instead of one live run. Deterministic per seed.
//!
//! The world has a truth the model does not know: each kitchen takes its own multiple of
//! the menu's prep time, each zone of the city drives at its own speed, slower in the
//! evening rush, and every trip and dish varies around those. The model starts from the
//! defaults and, with learning on, learns from each delivery exactly as the server does
//! (`lastmile_core::learned`).

use lastmile_core::learned::{
    hour_of, lesson, planned_prep_s, ready_in_s, DeliveryObservation, LearningPolicy, PlannedPrep, ZoneCell,
};
use lastmile_core::{DriverId, EtaModel, GeoPoint, LearnedEta, OrderId};
use lastmile_dispatch::{assign, due_orders, CostModel, DriverSlot, Matcher, OrderSlot};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::HashMap;

/// How orders reach drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Held until a driver is needed (readiness), then the optimal matcher — the server's default.
    Optimal,
    /// Held the same way, then the greedy nearest-first matcher.
    Greedy,
    /// Offered as soon as placed (no readiness hold), optimal matcher.
    AtOnce,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::Optimal, Strategy::Greedy, Strategy::AtOnce];

    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Optimal => "optimal",
            Strategy::Greedy => "greedy",
            Strategy::AtOnce => "at once",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SimConfig {
    pub seed: u64,
    pub strategy: Strategy,
    /// Learn prep and speeds from deliveries (else the defaults throughout).
    pub learning: bool,
    pub drivers: usize,
    pub stores: usize,
    pub orders_per_hour: f64,
    /// Simulated hours, starting at `start_hour` UTC.
    pub hours: f64,
    pub start_hour: f64,
    pub tick_s: f64,
    /// The dispatcher's `lead_s`.
    pub lead_s: f64,
    /// `eta.load_per_order_s`.
    pub load_per_order_s: f64,
}

impl SimConfig {
    pub fn new(seed: u64, strategy: Strategy, learning: bool) -> SimConfig {
        SimConfig {
            seed,
            strategy,
            learning,
            drivers: 40,
            stores: 12,
            orders_per_hour: 100.0,
            hours: 6.0,
            start_hour: 14.0,
            tick_s: 10.0,
            lead_s: 60.0,
            load_per_order_s: 60.0,
        }
    }
}

/// What one run measured. Times in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SimOutcome {
    pub orders: usize,
    pub delivered: usize,
    /// Mean time a ready order waited for its driver to arrive.
    pub order_wait_s: f64,
    /// Mean time a driver stood at the store waiting for the food.
    pub driver_wait_s: f64,
    /// Mean |predicted − actual| delivery time, predicted when the driver is assigned (what
    /// tracking shows then), over the orders of the run's second half.
    pub eta_mae_s: f64,
    /// Simulated seconds played.
    pub simulated_s: f64,
}

struct Store {
    at: GeoPoint,
    menu_prep_s: f64,
    /// Truth: the kitchen's real time ÷ the menu's.
    kitchen_factor: f64,
}

struct Order {
    id: OrderId,
    store: usize,
    door: GeoPoint,
    placed_at: f64,
    planned_prep_s: f64,
    /// When the model thinks it is ready (what `ready_at` says).
    ready_pred: f64,
    /// When it really is.
    ready_true: f64,
}

#[derive(Clone, Copy)]
struct Driver {
    at: GeoPoint,
    free_at: f64,
}

/// The world's truth about driving: a speed per zone (fixed per seed) slowed in the evening rush.
struct Roads {
    zone_factor: HashMap<ZoneCell, f64>,
    seed: u64,
}

impl Roads {
    fn speed_mps(&mut self, from: &GeoPoint, to: &GeoPoint, at_s: f64) -> f64 {
        let zone = ZoneCell::of_trip(from, to);
        let seed = self.seed;
        let f = *self.zone_factor.entry(zone).or_insert_with(|| {
            let mix = seed ^ ((zone.row as u64) << 32) ^ (zone.col as u32 as u64);
            StdRng::seed_from_u64(mix).gen_range(0.45..0.9)
        });
        let hour = (at_s / 3600.0).rem_euclid(24.0);
        let rush = if (16.0..18.5).contains(&hour) { 0.7 } else { 1.0 };
        8.3 * f * rush
    }
}

const CENTRE: (f64, f64) = (60.1699, 24.9384);

fn around(rng: &mut StdRng, c: &GeoPoint, radius_m: f64) -> GeoPoint {
    let r = radius_m * rng.gen::<f64>().sqrt();
    let a = rng.gen::<f64>() * std::f64::consts::TAU;
    let lat = c.lat + r * a.sin() / 111_320.0;
    let lng = c.lng + r * a.cos() / (111_320.0 * c.lat.to_radians().cos());
    GeoPoint::new(lat, lng).unwrap_or(*c)
}

/// Around 1 with a spread of `sigma` (a log-normal-ish factor, never below 0.3).
fn noise(rng: &mut StdRng, sigma: f64) -> f64 {
    let z: f64 = (0..6).map(|_| rng.gen::<f64>()).sum::<f64>() - 3.0;
    (1.0 + sigma * z * std::f64::consts::SQRT_2).max(0.3)
}

/// Play one run.
pub fn run(cfg: &SimConfig) -> SimOutcome {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let centre = GeoPoint::new(CENTRE.0, CENTRE.1).expect("valid centre");
    let base = EtaModel::default();
    let policy = LearningPolicy::default();
    let mut roads = Roads { zone_factor: HashMap::new(), seed: cfg.seed };
    let stores: Vec<Store> = (0..cfg.stores)
        .map(|_| Store {
            at: around(&mut rng, &centre, 2_500.0),
            menu_prep_s: rng.gen_range(300.0..900.0),
            kitchen_factor: rng.gen_range(0.8..2.0),
        })
        .collect();
    let mut drivers: Vec<Driver> =
        (0..cfg.drivers).map(|_| Driver { at: around(&mut rng, &centre, 3_000.0), free_at: 0.0 }).collect();
    let mut learned = LearnedEta::default();
    let start = cfg.start_hour * 3600.0;
    let end = start + cfg.hours * 3600.0;
    let half = start + cfg.hours * 1800.0;
    let mut next_order = start + exp_gap(&mut rng, cfg.orders_per_hour);
    let mut waiting: Vec<Order> = Vec::new();
    // Orders placed and not yet picked up, per store: the kitchen's queue.
    let mut in_prep: Vec<Vec<f64>> = vec![Vec::new(); stores.len()];
    let (mut orders, mut delivered) = (0usize, 0usize);
    let (mut order_wait, mut driver_wait, mut eta_err, mut eta_n) = (0.0, 0.0, 0.0, 0usize);
    // Deliveries under way, learned from once they are delivered.
    let mut lessons: Vec<(f64, usize, DeliveryObservation)> = Vec::new();
    let mut now = start;
    while now < end || !waiting.is_empty() {
        if now > end + 4.0 * 3600.0 {
            break;
        }
        lessons.retain(|(at, store, obs)| {
            if *at > now {
                return true;
            }
            learned.learn(&policy, &store.to_string(), obs, &lesson(&base, &policy, obs));
            false
        });
        // Customers order.
        while next_order <= now && now < end {
            let s = rng.gen_range(0..stores.len());
            let store = &stores[s];
            in_prep[s].retain(|ready| *ready > next_order);
            let queue = in_prep[s].len() as i64;
            let factor = if cfg.learning { learned.prep_factor(&policy, &s.to_string()) } else { 1.0 };
            let planned = planned_prep_s(store.menu_prep_s, queue, cfg.load_per_order_s);
            let ready_pred = next_order + ready_in_s(store.menu_prep_s, queue, cfg.load_per_order_s, factor);
            let ready_true = next_order + planned * store.kitchen_factor * noise(&mut rng, 0.1);
            in_prep[s].push(ready_true);
            waiting.push(Order {
                id: OrderId(format!("o{orders}")),
                store: s,
                door: around(&mut rng, &store.at, 2_000.0),
                placed_at: next_order,
                planned_prep_s: planned,
                ready_pred,
                ready_true,
            });
            orders += 1;
            next_order += exp_gap(&mut rng, cfg.orders_per_hour);
        }
        // The dispatcher's round, with the model as it stands.
        let hour = hour_of((now * 1000.0) as i64);
        let speed = if cfg.learning { learned.city_speed_mps(&policy, hour) } else { None };
        let model = CostModel {
            eta: EtaModel { speed_mps: speed.unwrap_or(base.speed_mps), ..base },
            max_pickup_s: 5_000.0 * base.detour_factor / base.speed_mps,
            ..CostModel::default()
        };
        let free: Vec<usize> = (0..drivers.len()).filter(|&d| drivers[d].free_at <= now).collect();
        if !free.is_empty() && !waiting.is_empty() {
            let slots: Vec<OrderSlot> = waiting
                .iter()
                .map(|o| OrderSlot {
                    order_id: o.id.clone(),
                    pickup: stores[o.store].at,
                    ready_in_s: (o.ready_pred - now).max(0.0),
                    excluded: vec![],
                })
                .collect();
            let drivers_free: Vec<DriverSlot> = free
                .iter()
                .map(|&d| DriverSlot { driver_id: DriverId(d.to_string()), location: drivers[d].at })
                .collect();
            let due: Vec<OrderSlot> = match cfg.strategy {
                Strategy::AtOnce => slots.clone(),
                _ => due_orders(&slots, &drivers_free, None, &model, cfg.lead_s)
                    .into_iter()
                    .map(|d| slots[d.order].clone())
                    .collect(),
            };
            let matcher = if cfg.strategy == Strategy::Greedy { Matcher::Greedy } else { Matcher::Optimal };
            let mut taken = Vec::new();
            for a in assign(&due, &drivers_free, None, &model, matcher) {
                let d: usize = a.driver_id.0.parse().expect("driver ids are indices");
                let Some(i) = waiting.iter().position(|o| o.id == a.order_id) else { continue };
                taken.push(i);
                let o = &waiting[i];
                let store = &stores[o.store];
                let driver = drivers[d];
                // What tracking would say now, by the model as it stands.
                let predicted =
                    now + predicted_dropoff_s(&learned, cfg.learning, &base, &policy, &driver.at, o, store, now);
                // What happens.
                let to_store = drive_s(&mut roads, &mut rng, &base, &driver.at, &store.at, now);
                let arrive = now + to_store;
                order_wait += (arrive - o.ready_true).max(0.0);
                driver_wait += (o.ready_true - arrive).max(0.0);
                let picked_up = arrive.max(o.ready_true) + base.pickup_handling_s;
                let delivered_at = picked_up
                    + drive_s(&mut roads, &mut rng, &base, &store.at, &o.door, picked_up)
                    + base.dropoff_handling_s;
                if o.placed_at >= half {
                    eta_err += (predicted - delivered_at).abs();
                    eta_n += 1;
                }
                if cfg.learning {
                    let obs = DeliveryObservation {
                        pickup: store.at,
                        dropoff: o.door,
                        drive_m: store.at.distance_m(&o.door) * base.detour_factor,
                        picked_up_at: (picked_up * 1000.0) as i64,
                        delivered_at: (delivered_at * 1000.0) as i64,
                        planned: Some(PlannedPrep {
                            placed_at: (o.placed_at * 1000.0) as i64,
                            planned_prep_s: o.planned_prep_s,
                        }),
                        arrived_at: Some((arrive * 1000.0) as i64),
                    };
                    lessons.push((delivered_at, o.store, obs));
                }
                drivers[d] = Driver { at: o.door, free_at: delivered_at };
                delivered += 1;
            }
            taken.sort_unstable();
            for i in taken.into_iter().rev() {
                waiting.swap_remove(i);
            }
        }
        now += cfg.tick_s;
    }
    let n = delivered.max(1) as f64;
    SimOutcome {
        orders,
        delivered,
        order_wait_s: order_wait / n,
        driver_wait_s: driver_wait / n,
        eta_mae_s: eta_err / eta_n.max(1) as f64,
        simulated_s: now - start,
    }
}

fn exp_gap(rng: &mut StdRng, per_hour: f64) -> f64 {
    -(1.0 - rng.gen::<f64>()).ln() * 3600.0 / per_hour.max(1e-9)
}

/// Seconds a trip really takes: the model's metres at the zone's true speed, ±15%.
fn drive_s(roads: &mut Roads, rng: &mut StdRng, base: &EtaModel, from: &GeoPoint, to: &GeoPoint, at: f64) -> f64 {
    from.distance_m(to) * base.detour_factor / roads.speed_mps(from, to, at) * noise(rng, 0.15)
}

/// The tracking ETA at assignment (seconds from now), as the server computes it.
#[allow(clippy::too_many_arguments)]
fn predicted_dropoff_s(
    learned: &LearnedEta,
    learning: bool,
    base: &EtaModel,
    policy: &LearningPolicy,
    driver: &GeoPoint,
    o: &Order,
    store: &Store,
    now: f64,
) -> f64 {
    let hour = hour_of((now * 1000.0) as i64);
    let model = |a: &GeoPoint, b: &GeoPoint| if learning { learned.model_for(base, policy, a, b, hour) } else { *base };
    model(driver, &store.at).travel_s(driver, &store.at).max(o.ready_pred - now)
        + base.pickup_handling_s
        + model(&store.at, &o.door).travel_s(&store.at, &o.door)
        + base.dropoff_handling_s
}

/// Mean and the half-width of its 95% confidence interval (Student's t).
pub fn mean_ci95(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, f64::INFINITY);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, t975(n - 1) * (var / n as f64).sqrt())
}

/// Student's t, two-sided 95%, for `df` degrees of freedom.
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => T[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64, strategy: Strategy, learning: bool) -> SimConfig {
        SimConfig { hours: 2.0, ..SimConfig::new(seed, strategy, learning) }
    }

    #[test]
    fn a_seed_plays_the_same_every_time() {
        let a = run(&small(3, Strategy::Optimal, true));
        let b = run(&small(3, Strategy::Optimal, true));
        assert_eq!(a, b);
        assert!(a.orders > 100 && a.delivered == a.orders, "{a:?}");
        assert_ne!(a, run(&small(4, Strategy::Optimal, true)));
    }

    #[test]
    fn learning_brings_the_eta_closer_to_what_happens() {
        // Kitchens slower than their menus and streets slower than the default speed: the
        // defaults underestimate; what is learned should not.
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for seed in 0..5 {
            before.push(run(&small(seed, Strategy::Optimal, false)).eta_mae_s);
            after.push(run(&small(seed, Strategy::Optimal, true)).eta_mae_s);
        }
        let (b, a) = (mean_ci95(&before).0, mean_ci95(&after).0);
        assert!(a < b * 0.8, "ETA MAE {b:.0} s without learning, {a:.0} s with");
    }

    #[test]
    fn holding_orders_until_needed_spares_drivers_the_wait() {
        let (mut held, mut at_once) = (Vec::new(), Vec::new());
        for seed in 0..5 {
            held.push(run(&small(seed, Strategy::Optimal, true)).driver_wait_s);
            at_once.push(run(&small(seed, Strategy::AtOnce, true)).driver_wait_s);
        }
        assert!(mean_ci95(&held).0 < mean_ci95(&at_once).0, "{held:?} vs {at_once:?}");
    }

    #[test]
    fn confidence_intervals_follow_student() {
        let (m, h) = mean_ci95(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((h - 4.303 / 3f64.sqrt()).abs() < 1e-9);
    }
}
