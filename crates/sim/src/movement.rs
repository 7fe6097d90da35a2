//! Driving along a route: a polyline with cumulative distances, a position that advances
//! at a speed, and the GPS fixes a phone would report on the way.

use chrono::{DateTime, Utc};
use lastmile_core::GeoPoint;
use serde::Serialize;

/// A route as a polyline, with the distance from its start to each vertex.
#[derive(Debug, Clone)]
pub struct Route {
    points: Vec<GeoPoint>,
    cumulative_m: Vec<f64>,
}

impl Route {
    /// A route through `points` (at least one). Repeated points are harmless.
    pub fn new(points: Vec<GeoPoint>) -> Route {
        assert!(!points.is_empty(), "a route has at least one point");
        let mut cumulative_m = Vec::with_capacity(points.len());
        let mut total = 0.0;
        for (i, p) in points.iter().enumerate() {
            if i > 0 {
                total += points[i - 1].distance_m(p);
            }
            cumulative_m.push(total);
        }
        Route { points, cumulative_m }
    }

    /// Standing still at one point.
    pub fn stay(at: GeoPoint) -> Route {
        Route::new(vec![at])
    }

    pub fn length_m(&self) -> f64 {
        *self.cumulative_m.last().expect("non-empty")
    }

    pub fn start(&self) -> GeoPoint {
        self.points[0]
    }

    pub fn end(&self) -> GeoPoint {
        *self.points.last().expect("non-empty")
    }

    /// Where you are after `along_m` metres (clamped to the route), and the heading in
    /// degrees clockwise from north of the segment you are on.
    pub fn position_at(&self, along_m: f64) -> (GeoPoint, f64) {
        if self.points.len() == 1 {
            return (self.points[0], 0.0);
        }
        let d = along_m.clamp(0.0, self.length_m());
        // The segment [i, i+1] that holds `d`.
        let i = match self.cumulative_m.binary_search_by(|c| c.total_cmp(&d)) {
            Ok(i) => i.min(self.points.len() - 2),
            Err(i) => i.saturating_sub(1).min(self.points.len() - 2),
        };
        let (a, b) = (self.points[i], self.points[i + 1]);
        let seg = self.cumulative_m[i + 1] - self.cumulative_m[i];
        let t = if seg > 0.0 { ((d - self.cumulative_m[i]) / seg).clamp(0.0, 1.0) } else { 0.0 };
        let p = GeoPoint { lat: a.lat + (b.lat - a.lat) * t, lng: a.lng + (b.lng - a.lng) * t };
        (p, heading_deg(&a, &b))
    }
}

/// Initial bearing from `a` to `b`, degrees in [0, 360).
pub fn heading_deg(a: &GeoPoint, b: &GeoPoint) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlng = (b.lng - a.lng).to_radians();
    let y = dlng.sin() * lat2.cos();
    let x = lat1.cos() * lat2.sin() - lat1.sin() * lat2.cos() * dlng.cos();
    (y.atan2(x).to_degrees() + 360.0) % 360.0
}

/// One GPS fix in the shape of `POST /v1/driver/location` and the WebSocket `location` message.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Fix {
    pub lat: f64,
    pub lng: f64,
    pub accuracy_m: f64,
    pub heading: f64,
    pub speed_mps: f64,
    pub recorded_at: DateTime<Utc>,
}

/// A vehicle following a route at a constant speed.
#[derive(Debug, Clone)]
pub struct Mover {
    route: Route,
    travelled_m: f64,
    pub speed_mps: f64,
}

impl Mover {
    pub fn new(route: Route, speed_mps: f64) -> Mover {
        Mover { route, travelled_m: 0.0, speed_mps }
    }

    /// Start a new route (from wherever it starts; callers route from `position()`).
    pub fn follow(&mut self, route: Route) {
        self.route = route;
        self.travelled_m = 0.0;
    }

    /// Move on by `dt_s` seconds of driving.
    pub fn advance(&mut self, dt_s: f64) {
        self.travelled_m = (self.travelled_m + self.speed_mps * dt_s.max(0.0)).min(self.route.length_m());
    }

    pub fn arrived(&self) -> bool {
        self.travelled_m >= self.route.length_m()
    }

    pub fn remaining_m(&self) -> f64 {
        self.route.length_m() - self.travelled_m
    }

    pub fn position(&self) -> GeoPoint {
        self.route.position_at(self.travelled_m).0
    }

    /// The fix a phone would report now.
    pub fn fix(&self, at: DateTime<Utc>) -> Fix {
        let (p, heading) = self.route.position_at(self.travelled_m);
        let speed = if self.arrived() { 0.0 } else { self.speed_mps };
        Fix { lat: p.lat, lng: p.lng, accuracy_m: 5.0, heading: heading.round(), speed_mps: speed, recorded_at: at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lng: f64) -> GeoPoint {
        GeoPoint::new(lat, lng).unwrap()
    }

    #[test]
    fn positions_interpolate_along_segments_and_clamp_at_the_ends() {
        let r = Route::new(vec![p(60.0, 25.0), p(60.001, 25.0), p(60.001, 25.002)]);
        let first = p(60.0, 25.0).distance_m(&p(60.001, 25.0));
        assert!((r.length_m() - first - p(60.001, 25.0).distance_m(&p(60.001, 25.002))).abs() < 1e-9);
        let (mid, heading) = r.position_at(first / 2.0);
        assert!((mid.lat - 60.0005).abs() < 1e-9 && (mid.lng - 25.0).abs() < 1e-9);
        assert!(heading.abs() < 1e-6, "due north: {heading}");
        let (_, east) = r.position_at(first + 1.0);
        assert!((east - 90.0).abs() < 0.1, "due east: {east}");
        assert_eq!(r.position_at(-5.0).0, r.start());
        assert_eq!(r.position_at(1e9).0, r.end());
    }

    #[test]
    fn a_mover_covers_speed_times_time_and_then_stops() {
        let r = Route::new(vec![p(60.0, 25.0), p(60.01, 25.0)]); // ≈ 1.1 km
        let len = r.length_m();
        let mut m = Mover::new(r, 10.0);
        let start = p(60.0, 25.0);
        for _ in 0..10 {
            m.advance(1.0);
        }
        assert!((m.position().distance_m(&start) - 100.0).abs() < 0.5);
        assert!(!m.arrived());
        m.advance(len); // far more than enough
        assert!(m.arrived() && m.remaining_m() == 0.0);
        let fix = m.fix(Utc::now());
        assert_eq!(fix.speed_mps, 0.0);
        assert!((fix.lat - 60.01).abs() < 1e-9);
    }

    #[test]
    fn a_single_point_route_stays_put() {
        let mut m = Mover::new(Route::stay(p(60.2, 24.9)), 12.0);
        m.advance(5.0);
        assert!(m.arrived());
        assert_eq!(m.position(), p(60.2, 24.9));
    }
}
