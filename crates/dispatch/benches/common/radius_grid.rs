//! The simple alternative the brief named, and what Redis GEOSEARCH does: lat/lng cells
//! about the size of the search radius, every point in the covering cells checked with an
//! equirectangular prefilter and then haversine, the k nearest picked from all hits.
//! A same-run baseline for the index benchmarks; city-local (one cos φ), not part of the crate.

use lastmile_core::geo::EARTH_RADIUS_M;
use lastmile_core::{DriverId, GeoPoint};
use std::collections::HashMap;

pub struct RadiusGrid {
    cell_lat_deg: f64,
    cell_lng_deg: f64,
    cos_lat: f64,
    cells: HashMap<(i32, i32), Vec<(GeoPoint, u32)>>,
    ids: Vec<DriverId>,
}

const M_PER_DEG: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

impl RadiusGrid {
    pub fn new(cell_m: f64, around_lat: f64, drivers: impl IntoIterator<Item = (DriverId, GeoPoint)>) -> Self {
        let cos_lat = around_lat.to_radians().cos();
        let cell_lat_deg = cell_m / M_PER_DEG;
        let mut grid = Self {
            cell_lat_deg,
            cell_lng_deg: cell_lat_deg / cos_lat,
            cos_lat,
            cells: HashMap::new(),
            ids: Vec::new(),
        };
        for (id, p) in drivers {
            let slot = grid.ids.len() as u32;
            grid.ids.push(id);
            grid.cells.entry(grid.cell(p.lat, p.lng)).or_default().push((p, slot));
        }
        grid
    }

    fn cell(&self, lat: f64, lng: f64) -> (i32, i32) {
        ((lat / self.cell_lat_deg).floor() as i32, (lng / self.cell_lng_deg).floor() as i32)
    }

    pub fn nearest(&self, q: GeoPoint, k: usize, radius_m: f64) -> Vec<(DriverId, f64)> {
        let (dlat, dlng) = (radius_m / M_PER_DEG, radius_m / M_PER_DEG / self.cos_lat);
        let (lo, hi) = (self.cell(q.lat - dlat, q.lng - dlng), self.cell(q.lat + dlat, q.lng + dlng));
        let prefilter = (radius_m * 1.01 / M_PER_DEG).powi(2);
        let mut hits: Vec<(f64, u32)> = Vec::new();
        for row in lo.0..=hi.0 {
            for col in lo.1..=hi.1 {
                for &(p, slot) in self.cells.get(&(row, col)).map(Vec::as_slice).unwrap_or(&[]) {
                    let (a, b) = (p.lat - q.lat, (p.lng - q.lng) * self.cos_lat);
                    if a * a + b * b <= prefilter {
                        let d = q.distance_m(&p);
                        if d <= radius_m {
                            hits.push((d, slot));
                        }
                    }
                }
            }
        }
        if hits.len() > k {
            hits.select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0));
            hits.truncate(k);
        }
        hits.sort_by(|a, b| a.0.total_cmp(&b.0));
        hits.into_iter().map(|(d, slot)| (self.ids[slot as usize].clone(), d)).collect()
    }
}
