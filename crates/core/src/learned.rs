//! ETAs that learn: what completed deliveries teach about how long kitchens take (per
//! store) and how fast drivers move (per zone and hour of day), and how the ETA model
//! reads it back, falling back to its defaults where nothing has been learned yet.
//!
//! Pure: storage persists the [`Ewma`]s, the server feeds observations and asks for
//! estimates, the simulator runs the same code on simulated time.

use crate::{EtaModel, GeoPoint};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Height of a zone cell in degrees of latitude (~1.1 km).
pub const CELL_LAT_DEG: f64 = 0.01;
/// Width of a zone cell in degrees of longitude (~1.1 km at 60° N, ~2 km at the equator).
pub const CELL_LNG_DEG: f64 = 0.02;
/// The `hour` of an estimate that covers every hour of the day.
pub const ALL_HOURS: u8 = 24;

/// An exponentially weighted moving average that starts as a plain mean: the first
/// samples weigh 1/n each until 1/n falls to `alpha`, so a handful of deliveries already
/// move the estimate and later ones keep it current.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    pub mean: f64,
    pub samples: i64,
}

impl Ewma {
    pub fn first(sample: f64) -> Ewma {
        Ewma { mean: sample, samples: 1 }
    }

    /// The average after one more sample.
    pub fn update(self, sample: f64, alpha: f64) -> Ewma {
        let n = self.samples.saturating_add(1);
        let w = (1.0 / n as f64).max(alpha.clamp(0.0, 1.0));
        Ewma { mean: self.mean + w * (sample - self.mean), samples: n }
    }
}

/// A zone: a cell of a plain latitude/longitude grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZoneCell {
    pub row: i32,
    pub col: i32,
}

impl ZoneCell {
    pub fn of(p: &GeoPoint) -> ZoneCell {
        ZoneCell { row: (p.lat / CELL_LAT_DEG).floor() as i32, col: (p.lng / CELL_LNG_DEG).floor() as i32 }
    }

    /// The zone of a trip: the cell of its midpoint.
    pub fn of_trip(from: &GeoPoint, to: &GeoPoint) -> ZoneCell {
        let mid = GeoPoint { lat: (from.lat + to.lat) / 2.0, lng: (from.lng + to.lng) / 2.0 };
        ZoneCell::of(&mid)
    }

    /// Stable text form for storage: `row:col`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.row, self.col)
    }

    pub fn parse(key: &str) -> Option<ZoneCell> {
        let (r, c) = key.split_once(':')?;
        Some(ZoneCell { row: r.parse().ok()?, col: c.parse().ok()? })
    }
}

/// Where a speed estimate applies: one zone or the whole city, one hour or all day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpeedKey {
    pub zone: Option<ZoneCell>,
    pub hour: u8,
}

/// How learning weighs and filters observations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LearningPolicy {
    /// Weight of a new sample once warmed up (EWMA alpha).
    pub alpha: f64,
    /// Samples an estimate needs before it is used instead of the next coarser one.
    pub min_samples: i64,
    /// Speeds outside this range (m/s) are GPS noise or a forgotten tap, not driving.
    pub min_speed_mps: f64,
    pub max_speed_mps: f64,
    /// Prep factors (observed ÷ planned prep) outside this range are not kitchen time.
    pub min_prep_factor: f64,
    pub max_prep_factor: f64,
}

impl Default for LearningPolicy {
    fn default() -> Self {
        Self {
            alpha: 0.2,
            min_samples: 3,
            min_speed_mps: 0.5,
            max_speed_mps: 40.0,
            min_prep_factor: 0.2,
            max_prep_factor: 6.0,
        }
    }
}

/// One completed delivery, as learning sees it. Times are unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveryObservation {
    pub pickup: GeoPoint,
    pub dropoff: GeoPoint,
    /// Model distance of the pickup → dropoff drive in metres (by road where the server
    /// has a road graph, else straight line × detour factor).
    pub drive_m: f64,
    pub picked_up_at: i64,
    pub delivered_at: i64,
    /// For orders whose readiness Lastmile planned (catalog orders): when it was placed
    /// and how many seconds of prep were planned.
    pub planned: Option<PlannedPrep>,
    /// When the driver reached the store (their first fix there while holding the order),
    /// if known: it tells a driver who waited for the food from one who came late.
    pub arrived_at: Option<i64>,
}

/// Seconds a driver must spend at the store beyond the handover for the pickup to count
/// as "the driver waited for the food" (so the kitchen's time is observed exactly).
pub const WAITED_SLACK_S: f64 = 30.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannedPrep {
    pub placed_at: i64,
    pub planned_prep_s: f64,
}

/// What one delivery teaches.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Lesson {
    /// Driving speed in model metres per second, for the trip's zone.
    pub speed_mps: Option<f64>,
    /// Observed ÷ planned prep for the store.
    pub prep_factor: Option<f64>,
    /// The driver came after the food may have been ready: `prep_factor` is only an upper
    /// bound on the kitchen's pace (it teaches only when below the current estimate).
    pub prep_censored: bool,
}

/// Read a delivery. The drive is pickup → delivered minus the handover at the door. The
/// kitchen's time is placed → picked up minus the handling at the store: exact when the
/// driver waited for the food, but only an upper bound when the driver came late (the
/// food may have waited for them). With the driver's arrival known, a pickup less than
/// [`WAITED_SLACK_S`] after arrival plus handling is such a bound (`prep_censored`);
/// without it the sample is taken as exact and capped by the policy.
pub fn lesson(model: &EtaModel, policy: &LearningPolicy, obs: &DeliveryObservation) -> Lesson {
    let drive_s = (obs.delivered_at - obs.picked_up_at) as f64 / 1000.0 - model.dropoff_handling_s;
    let speed = (obs.drive_m > 0.0 && drive_s > 0.0).then(|| obs.drive_m / drive_s);
    let speed = speed.filter(|s| s.is_finite() && (policy.min_speed_mps..=policy.max_speed_mps).contains(s));
    let prep = obs.planned.and_then(|p| {
        let observed = (obs.picked_up_at - p.placed_at) as f64 / 1000.0 - model.pickup_handling_s;
        (p.planned_prep_s >= 1.0).then(|| observed.max(0.0) / p.planned_prep_s)
    });
    let prep = prep.filter(|f| f.is_finite()).map(|f| f.clamp(policy.min_prep_factor, policy.max_prep_factor));
    let waited_s = obs.arrived_at.map(|a| (obs.picked_up_at - a) as f64 / 1000.0 - model.pickup_handling_s);
    let prep_censored = prep.is_some() && waited_s.is_some_and(|w| w < WAITED_SLACK_S);
    Lesson { speed_mps: speed, prep_factor: prep, prep_censored }
}

/// Every speed estimate one trip updates: its zone at its hour and all day, the city at
/// its hour and all day.
pub fn speed_keys(zone: ZoneCell, hour: u8) -> [SpeedKey; 4] {
    [
        SpeedKey { zone: Some(zone), hour },
        SpeedKey { zone: Some(zone), hour: ALL_HOURS },
        SpeedKey { zone: None, hour },
        SpeedKey { zone: None, hour: ALL_HOURS },
    ]
}

/// The UTC hour of day of a unix-ms instant.
pub fn hour_of(ms: i64) -> u8 {
    (ms.div_euclid(3_600_000).rem_euclid(24)) as u8
}

/// One tenant's learned estimates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LearnedEta {
    pub speed: HashMap<SpeedKey, Ewma>,
    /// Observed ÷ planned prep, per store id.
    pub prep: HashMap<String, Ewma>,
}

impl LearnedEta {
    /// Fold one lesson in (what the server does after writing it, and the simulator).
    pub fn learn(&mut self, policy: &LearningPolicy, store: &str, obs: &DeliveryObservation, lesson: &Lesson) {
        if let Some(s) = lesson.speed_mps {
            let zone = ZoneCell::of_trip(&obs.pickup, &obs.dropoff);
            for k in speed_keys(zone, hour_of(obs.picked_up_at)) {
                let next = self.speed.get(&k).map_or(Ewma::first(s), |e| e.update(s, policy.alpha));
                self.speed.insert(k, next);
            }
        }
        if let Some(f) = self.prep_sample(policy, store, lesson) {
            let next = self.prep.get(store).map_or(Ewma::first(f), |e| e.update(f, policy.alpha));
            self.prep.insert(store.to_owned(), next);
        }
    }

    /// The prep factor a lesson moves the store's estimate with: an exact one always; an
    /// upper bound (the driver came late) only when it is below what the store is now
    /// believed to take — the kitchen was at least that fast — never to push it up.
    pub fn prep_sample(&self, policy: &LearningPolicy, store: &str, lesson: &Lesson) -> Option<f64> {
        let f = lesson.prep_factor?;
        (!lesson.prep_censored || f < self.prep_factor(policy, store)).then_some(f)
    }

    /// Driving speed for a trip between two points at an hour: the finest estimate with
    /// enough samples (zone and hour, zone, city and hour, city), else `None`.
    pub fn speed_mps(&self, policy: &LearningPolicy, from: &GeoPoint, to: &GeoPoint, hour: u8) -> Option<f64> {
        speed_keys(ZoneCell::of_trip(from, to), hour)
            .iter()
            .filter_map(|k| self.speed.get(k))
            .find(|e| e.samples >= policy.min_samples)
            .map(|e| e.mean)
    }

    /// The city-wide speed at an hour (what the dispatcher prices candidates with).
    pub fn city_speed_mps(&self, policy: &LearningPolicy, hour: u8) -> Option<f64> {
        [SpeedKey { zone: None, hour }, SpeedKey { zone: None, hour: ALL_HOURS }]
            .iter()
            .filter_map(|k| self.speed.get(k))
            .find(|e| e.samples >= policy.min_samples)
            .map(|e| e.mean)
    }

    /// How much longer (> 1) or shorter the store's kitchen takes than planned.
    pub fn prep_factor(&self, policy: &LearningPolicy, store: &str) -> f64 {
        self.prep.get(store).filter(|e| e.samples >= policy.min_samples).map_or(1.0, |e| e.mean)
    }

    /// The ETA model for a trip: the default model with the learned speed, if any.
    pub fn model_for(
        &self,
        base: &EtaModel,
        policy: &LearningPolicy,
        from: &GeoPoint,
        to: &GeoPoint,
        hour: u8,
    ) -> EtaModel {
        match self.speed_mps(policy, from, to, hour) {
            Some(s) => EtaModel { speed_mps: s, ..*base },
            None => *base,
        }
    }
}

/// Seconds until a catalog order is ready: the menu's prep time plus the kitchen's queue
/// (`load_per_order_s` for each order it is already preparing), scaled by what the store
/// has shown its kitchen really takes.
pub fn ready_in_s(menu_prep_s: f64, orders_in_prep: i64, load_per_order_s: f64, prep_factor: f64) -> f64 {
    planned_prep_s(menu_prep_s, orders_in_prep, load_per_order_s) * prep_factor.max(0.0)
}

/// The prep time planned before learning: menu prep plus the kitchen's queue.
pub fn planned_prep_s(menu_prep_s: f64, orders_in_prep: i64, load_per_order_s: f64) -> f64 {
    menu_prep_s.max(0.0) + orders_in_prep.max(0) as f64 * load_per_order_s.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lng: f64) -> GeoPoint {
        GeoPoint::new(lat, lng).unwrap()
    }

    #[test]
    fn ewma_starts_as_a_mean_then_weighs_alpha() {
        let e = Ewma::first(10.0).update(20.0, 0.2);
        assert_eq!(e, Ewma { mean: 15.0, samples: 2 });
        let mut e = Ewma::first(0.0);
        for _ in 0..100 {
            e = e.update(10.0, 0.2);
        }
        assert!((e.mean - 10.0).abs() < 1e-6);
        // Warmed up: one sample moves it by alpha of the gap.
        let next = e.update(0.0, 0.2);
        assert!((next.mean - e.mean * 0.8).abs() < 1e-9);
    }

    #[test]
    fn a_slow_trip_teaches_a_slow_speed() {
        let m = EtaModel::default();
        let obs = DeliveryObservation {
            pickup: p(60.17, 24.94),
            dropoff: p(60.18, 24.94),
            drive_m: 1000.0,
            picked_up_at: 0,
            delivered_at: ((500.0 + m.dropoff_handling_s) * 1000.0) as i64,
            planned: Some(PlannedPrep {
                placed_at: -((600.0 + m.pickup_handling_s) * 1000.0) as i64,
                planned_prep_s: 300.0,
            }),
            arrived_at: None,
        };
        let l = lesson(&m, &LearningPolicy::default(), &obs);
        assert!((l.speed_mps.unwrap() - 2.0).abs() < 1e-9);
        assert!((l.prep_factor.unwrap() - 2.0).abs() < 1e-9);
        // A tap at the door right after pickup is not a 100 m/s drive.
        let tap = DeliveryObservation { delivered_at: 91_000, ..obs };
        assert_eq!(lesson(&m, &LearningPolicy::default(), &tap).speed_mps, None);
    }

    #[test]
    fn estimates_fall_back_from_zone_and_hour_to_the_city_then_none() {
        let policy = LearningPolicy::default();
        let mut l = LearnedEta::default();
        let (a, b) = (p(60.17, 24.94), p(60.175, 24.945));
        assert_eq!(l.speed_mps(&policy, &a, &b, 12), None);
        let obs = DeliveryObservation {
            pickup: a,
            dropoff: b,
            drive_m: 1.0,
            picked_up_at: 12 * 3_600_000,
            delivered_at: 0,
            planned: None,
            arrived_at: None,
        };
        for _ in 0..3 {
            l.learn(&policy, "s", &obs, &Lesson { speed_mps: Some(4.0), prep_factor: Some(1.5), prep_censored: false });
        }
        assert_eq!(l.speed_mps(&policy, &a, &b, 12), Some(4.0));
        // Another hour in the same zone: the zone's all-day figure.
        assert_eq!(l.speed_mps(&policy, &a, &b, 3), Some(4.0));
        // Another zone: the city's.
        assert_eq!(l.speed_mps(&policy, &p(61.0, 25.0), &p(61.0, 25.0), 12), Some(4.0));
        assert_eq!(l.city_speed_mps(&policy, 12), Some(4.0));
        assert_eq!(l.prep_factor(&policy, "s"), 1.5);
        assert_eq!(l.prep_factor(&policy, "other"), 1.0);
    }

    #[test]
    fn a_late_driver_only_bounds_the_kitchen_from_above() {
        let (model, policy) = (EtaModel::default(), LearningPolicy::default());
        let planned = Some(PlannedPrep { placed_at: 0, planned_prep_s: 600.0 });
        let handling_ms = (model.pickup_handling_s * 1000.0) as i64;
        // Picked up 20 min after the order: the kitchen took at most 20 min − handling.
        let at = 1_200_000 + handling_ms;
        let obs = DeliveryObservation {
            pickup: p(60.17, 24.94),
            dropoff: p(60.18, 24.95),
            drive_m: 1500.0,
            picked_up_at: at,
            delivered_at: at + 400_000,
            planned,
            arrived_at: Some(at - handling_ms - 5_000),
        };
        let late = lesson(&model, &policy, &obs);
        assert!(late.prep_censored);
        assert!((late.prep_factor.unwrap() - 2.0).abs() < 1e-9);
        // The driver arrived 10 minutes before the pickup: they waited, the sample is exact.
        let waited = lesson(&model, &policy, &DeliveryObservation { arrived_at: Some(at - 600_000), ..obs });
        assert!(!waited.prep_censored);
        // Arrival unknown: taken as exact (the policy caps it).
        assert!(!lesson(&model, &policy, &DeliveryObservation { arrived_at: None, ..obs }).prep_censored);

        // A late driver's bound above the estimate teaches nothing; one below it does.
        let mut l = LearnedEta::default();
        for _ in 0..policy.min_samples {
            l.learn(&policy, "s", &obs, &waited);
        }
        let before = l.prep_factor(&policy, "s");
        assert!((before - 2.0).abs() < 1e-9);
        let slow_bound = Lesson { prep_factor: Some(3.0), ..late };
        assert_eq!(l.prep_sample(&policy, "s", &slow_bound), None);
        l.learn(&policy, "s", &obs, &slow_bound);
        assert_eq!(l.prep_factor(&policy, "s"), before);
        let fast_bound = Lesson { prep_factor: Some(1.2), ..late };
        l.learn(&policy, "s", &obs, &fast_bound);
        assert!(l.prep_factor(&policy, "s") < before);
    }

    #[test]
    fn zone_keys_round_trip() {
        let z = ZoneCell::of(&p(-33.9, 151.2));
        assert_eq!(ZoneCell::parse(&z.key()), Some(z));
        assert_eq!(hour_of(-1), 23);
    }

    #[test]
    fn readiness_adds_the_queue_and_scales_by_the_store() {
        assert_eq!(ready_in_s(600.0, 0, 60.0, 1.0), 600.0);
        assert_eq!(ready_in_s(600.0, 3, 60.0, 1.0), 780.0);
        assert_eq!(ready_in_s(600.0, 3, 60.0, 1.5), 1170.0);
    }
}
