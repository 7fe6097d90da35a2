//! Places on the earth. `GeoPoint` can only hold a valid coordinate: parse, don't validate.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeoError {
    #[error("latitude must be a finite number between -90 and 90")]
    Latitude,
    #[error("longitude must be a finite number between -180 and 180")]
    Longitude,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lng: f64,
}

#[derive(Deserialize)]
struct RawPoint {
    lat: f64,
    lng: f64,
}

impl<'de> Deserialize<'de> for GeoPoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawPoint::deserialize(d)?;
        GeoPoint::new(raw.lat, raw.lng).map_err(serde::de::Error::custom)
    }
}

/// Mean earth radius in metres (IUGG).
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

impl GeoPoint {
    pub fn new(lat: f64, lng: f64) -> Result<Self, GeoError> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(GeoError::Latitude);
        }
        if !lng.is_finite() || !(-180.0..=180.0).contains(&lng) {
            return Err(GeoError::Longitude);
        }
        Ok(Self { lat, lng })
    }

    /// Great-circle distance in metres (haversine).
    pub fn distance_m(&self, other: &GeoPoint) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lng - self.lng).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_out_of_range_and_nan() {
        assert_eq!(GeoPoint::new(91.0, 0.0), Err(GeoError::Latitude));
        assert_eq!(GeoPoint::new(f64::NAN, 0.0), Err(GeoError::Latitude));
        assert_eq!(GeoPoint::new(0.0, 180.5), Err(GeoError::Longitude));
        assert!(serde_json::from_str::<GeoPoint>(r#"{"lat":100,"lng":1}"#).is_err());
    }

    #[test]
    fn helsinki_to_espoo_is_about_16_km() {
        let hki = GeoPoint::new(60.1699, 24.9384).unwrap();
        let espoo = GeoPoint::new(60.2055, 24.6559).unwrap();
        let d = hki.distance_m(&espoo);
        assert!((15_000.0..17_500.0).contains(&d), "{d}");
    }

    proptest! {
        #[test]
        fn distance_is_symmetric_and_non_negative(a in -89.0f64..89.0, b in -179.0f64..179.0, c in -89.0f64..89.0, d in -179.0f64..179.0) {
            let p = GeoPoint::new(a, b).unwrap();
            let q = GeoPoint::new(c, d).unwrap();
            let pq = p.distance_m(&q);
            prop_assert!(pq >= 0.0);
            prop_assert!((pq - q.distance_m(&p)).abs() < 1e-6);
        }
    }
}
