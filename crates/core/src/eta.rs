//! The ETA model: straight-line distance × a detour factor ÷ a speed, plus fixed handling
//! times. Pure and cheap so the dispatcher can price thousands of candidate pairs per tick.

use crate::GeoPoint;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct EtaModel {
    /// Road distance ÷ straight-line distance; ~1.3 in a European city grid.
    pub detour_factor: f64,
    /// Average driving speed in metres per second, stops included.
    pub speed_mps: f64,
    /// Time at the store between arrival and leaving with the order.
    pub pickup_handling_s: f64,
    /// Time from parking to handing over at the door.
    pub dropoff_handling_s: f64,
}

impl Default for EtaModel {
    fn default() -> Self {
        Self { detour_factor: 1.3, speed_mps: 8.3, pickup_handling_s: 120.0, dropoff_handling_s: 90.0 }
    }
}

impl EtaModel {
    /// Driving seconds between two points.
    pub fn travel_s(&self, from: &GeoPoint, to: &GeoPoint) -> f64 {
        from.distance_m(to) * self.detour_factor / self.speed_mps.max(0.1)
    }

    /// Seconds until the order reaches the customer if the driver at `driver` goes to the
    /// store now, waits until `ready_in_s`, and drives on.
    pub fn dropoff_eta_s(&self, driver: &GeoPoint, pickup: &GeoPoint, dropoff: &GeoPoint, ready_in_s: f64) -> f64 {
        let to_store = self.travel_s(driver, pickup);
        to_store.max(ready_in_s.max(0.0))
            + self.pickup_handling_s
            + self.travel_s(pickup, dropoff)
            + self.dropoff_handling_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_readiness_when_driver_arrives_early() {
        let m = EtaModel::default();
        let a = GeoPoint::new(60.17, 24.94).unwrap();
        let early = m.dropoff_eta_s(&a, &a, &a, 600.0);
        let ready = m.dropoff_eta_s(&a, &a, &a, 0.0);
        assert!((early - ready - 600.0).abs() < 1e-9);
    }

    #[test]
    fn travel_time_scales_with_detour_and_speed() {
        let m = EtaModel { detour_factor: 2.0, speed_mps: 10.0, ..EtaModel::default() };
        let a = GeoPoint::new(60.0, 24.0).unwrap();
        let b = GeoPoint::new(60.01, 24.0).unwrap();
        let t = m.travel_s(&a, &b);
        assert!((t - a.distance_m(&b) * 0.2).abs() < 1e-9);
    }
}
