//! The alternative the live index was measured against: drivers bucketed by H3 cell (h3o),
//! searched ring by ring outward with the same top-k and stopping rule as `DriverIndex`.
//! Kept with the benchmarks so the comparison can be re-run; not part of the crate.

use h3o::{CellIndex, LatLng, Resolution};
use lastmile_core::geo::EARTH_RADIUS_M;
use lastmile_core::{DriverId, GeoPoint};
use std::collections::{HashMap, HashSet};

type UnitVec = [f64; 3];

fn unit_vec(p: GeoPoint) -> UnitVec {
    let (sin_lat, cos_lat) = p.lat.to_radians().sin_cos();
    let (sin_lng, cos_lng) = p.lng.to_radians().sin_cos();
    [cos_lat * cos_lng, cos_lat * sin_lng, sin_lat]
}

fn chord2(a: &UnitVec, b: &UnitVec) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

fn metres_of_chord2(c2: f64) -> f64 {
    2.0 * EARTH_RADIUS_M * (c2.sqrt() / 2.0).min(1.0).asin()
}

pub struct H3BucketIndex {
    resolution: Resolution,
    slot_of: HashMap<DriverId, u32>,
    /// Slot → (id, bucket cell, position in the bucket).
    drivers: Vec<(DriverId, u64, u32)>,
    cells: HashMap<u64, Vec<(UnitVec, u32)>>,
}

impl H3BucketIndex {
    pub fn new(resolution: Resolution) -> Self {
        Self { resolution, slot_of: HashMap::new(), drivers: Vec::new(), cells: HashMap::new() }
    }

    fn cell_of(&self, p: GeoPoint) -> CellIndex {
        LatLng::new(p.lat, p.lng).expect("GeoPoint is valid").to_cell(self.resolution)
    }

    /// Every driver here is available; the comparison is about the spatial part.
    pub fn upsert(&mut self, id: &DriverId, p: GeoPoint) {
        let cell = u64::from(self.cell_of(p));
        let at = unit_vec(p);
        if let Some(&slot) = self.slot_of.get(id) {
            let (_, old, pos) = self.drivers[slot as usize];
            if old == cell {
                self.cells.get_mut(&cell).unwrap()[pos as usize].0 = at;
                return;
            }
            let bucket = self.cells.get_mut(&old).unwrap();
            bucket.swap_remove(pos as usize);
            if let Some(&(_, moved)) = bucket.get(pos as usize) {
                self.drivers[moved as usize].2 = pos;
            }
            let bucket = self.cells.entry(cell).or_default();
            bucket.push((at, slot));
            self.drivers[slot as usize].1 = cell;
            self.drivers[slot as usize].2 = (bucket.len() - 1) as u32;
        } else {
            let slot = self.drivers.len() as u32;
            let bucket = self.cells.entry(cell).or_default();
            bucket.push((at, slot));
            self.drivers.push((id.clone(), cell, (bucket.len() - 1) as u32));
            self.slot_of.insert(id.clone(), slot);
        }
    }

    /// How close a point in ring `ring` can be to a query inside the origin cell: that ring's
    /// centres are ≥ 1.5·ring·edge from the origin's, less one circumradius (= edge) at each
    /// end, with 20% kept for H3's distortion of cell sizes.
    fn covered_m(&self, ring: u32) -> f64 {
        ((1.5 * ring as f64 - 2.0) * 0.8 * self.resolution.edge_length_m()).max(0.0)
    }

    pub fn nearest(&self, p: GeoPoint, k: usize, radius_m: f64) -> Vec<(DriverId, f64)> {
        let q = unit_vec(p);
        let max_c2 = (2.0 * (radius_m / EARTH_RADIUS_M / 2.0).sin()).powi(2);
        let origin = self.cell_of(p);
        // Same top-k as `DriverIndex`: an unordered buffer cut back to k when it reaches 2k.
        let mut best: Vec<(f64, u32)> = Vec::with_capacity(2 * k);
        let mut kth = f64::INFINITY;
        let cut = |best: &mut Vec<(f64, u32)>, kth: &mut f64| {
            if best.len() >= k {
                best.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
                best.truncate(k);
                *kth = best.iter().map(|c| c.0).fold(f64::NEG_INFINITY, f64::max);
            }
        };
        let mut seen: HashSet<CellIndex> = HashSet::new();
        for ring in 0.. {
            let cells: Vec<CellIndex> = match origin.grid_ring_fast(ring).collect::<Option<Vec<_>>>() {
                Some(cells) => cells,
                None => origin.grid_disk_safe(ring).filter(|c| !seen.contains(c)).collect(),
            };
            for cell in cells {
                seen.insert(cell);
                for &(at, slot) in self.cells.get(&u64::from(cell)).map(Vec::as_slice).unwrap_or(&[]) {
                    let c2 = chord2(&at, &q);
                    if c2 > max_c2 || c2 >= kth {
                        continue;
                    }
                    best.push((c2, slot));
                    if best.len() >= 2 * k {
                        cut(&mut best, &mut kth);
                    }
                }
            }
            cut(&mut best, &mut kth);
            let covered = self.covered_m(ring + 1);
            if covered >= radius_m || (best.len() == k && metres_of_chord2(kth) <= covered) {
                break;
            }
        }
        // Same two-pass id read as `DriverIndex::answer`, so the cache misses overlap.
        let records: Vec<(&DriverId, f64)> =
            best.iter().map(|&(c2, slot)| (&self.drivers[slot as usize].0, c2)).collect();
        std::hint::black_box(
            records.iter().fold(0u8, |acc, (id, _)| acc ^ id.0.as_bytes().first().copied().unwrap_or(0)),
        );
        let mut found: Vec<(DriverId, f64)> =
            records.into_iter().map(|(id, c2)| (id.clone(), metres_of_chord2(c2))).collect();
        found.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        found
    }
}
