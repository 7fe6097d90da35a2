//! The live spatial index of drivers: where each one is, whether they can take an offer, and
//! which available drivers are nearest to a point.
//!
//! Layout: a global lat/lng grid of ~[`DEFAULT_CELL_M`] cells ([`crate::grid`]); each cell
//! holds a compact bucket of `(unit vector, slot)` for its *available* drivers only, so a
//! query never skips over busy ones. `nearest` searches outward from the query point and
//! stops as soon as the k-th best is closer than the area already searched, so its cost
//! follows k and the local density rather than the radius. Measured against an H3-cell
//! bucket index with the same search (see the dispatch micro-benchmarks in
//! `docs/benchmarks.md`), this grid was faster for both updates and queries, which is why
//! it is the one kept.

use crate::grid::{chord2, chord2_of_m, metres_of_chord2, unit_vec, CellKey, Grid, UnitVec, VisitedCells};
use lastmile_core::{DriverId, GeoPoint};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Default cell edge. Smaller cells mean fewer points scanned per query in a dense fleet
/// and more (mostly empty) cells visited in a sparse one. Of 125–2,000 m, 250 m measured
/// best for 100k drivers over a city (see the benchmarks); the first search step is sized
/// from the density around the query, so sparser fleets lose little with it.
pub const DEFAULT_CELL_M: f64 = 250.0;

/// No two points on the earth are further apart (great-circle) than this.
const HALF_EARTH_M: f64 = std::f64::consts::PI * lastmile_core::geo::EARTH_RADIUS_M;

#[derive(Debug, Clone)]
pub struct DriverIndex {
    grid: Grid,
    /// The server speaks `DriverId` strings; buckets speak compact `u32` slots.
    slot_of: HashMap<DriverId, u32>,
    /// Slot → driver; `None` for a slot freed by `remove` and waiting in `free_slots`.
    drivers: Vec<Option<Tracked>>,
    free_slots: Vec<u32>,
    /// Cell → its available drivers. Empty buckets are dropped so memory follows the fleet.
    cells: HashMap<CellKey, Vec<BucketEntry>, BuildHasherDefault<CellKeyHasher>>,
    available: usize,
}

#[derive(Debug, Clone)]
struct Tracked {
    id: DriverId,
    point: GeoPoint,
    /// Where this driver sits in `cells`: (cell, position in the bucket); `None` while unavailable.
    place: Option<(CellKey, u32)>,
}

/// What a query scans: the position inline, so a bucket scan touches one contiguous array.
#[derive(Debug, Clone, Copy)]
struct BucketEntry {
    at: UnitVec,
    slot: u32,
}

impl Default for DriverIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl DriverIndex {
    pub fn new() -> Self {
        Self::with_cell_size_m(DEFAULT_CELL_M)
    }

    /// An index with cells of about `cell_m` metres on a side (clamped to [1 m, ~10,000 km]).
    pub fn with_cell_size_m(cell_m: f64) -> Self {
        let cell_m = if cell_m.is_finite() { cell_m.max(1.0) } else { DEFAULT_CELL_M };
        Self {
            grid: Grid::new(cell_m),
            slot_of: HashMap::new(),
            drivers: Vec::new(),
            free_slots: Vec::new(),
            cells: HashMap::default(),
            available: 0,
        }
    }

    /// An index of `n` available drivers in which the i-th, `id(i)` at `point(i)`, holds
    /// slot i, built in one go: positions and cells are computed on the batch's threads and
    /// every table is sized once. `None` if an id repeats.
    pub(crate) fn of_batch(
        n: usize,
        id: impl Fn(usize) -> DriverId,
        point: impl Fn(usize) -> GeoPoint + Sync,
    ) -> Option<Self> {
        let mut index = Self::new();
        let slots: Vec<usize> = (0..n).collect();
        let grid = index.grid;
        let placed = crate::zones::parallel_map(&slots, 4_096, |&i| (grid.cell_of(point(i)), unit_vec(point(i))));
        index.slot_of.reserve(n);
        index.drivers.reserve(n);
        for (slot, (cell, at)) in placed.into_iter().enumerate() {
            let id = id(slot);
            if index.slot_of.insert(id.clone(), slot as u32).is_some() {
                return None;
            }
            let bucket = index.cells.entry(cell).or_default();
            bucket.push(BucketEntry { at, slot: slot as u32 });
            let place = Some((cell, (bucket.len() - 1) as u32));
            index.drivers.push(Some(Tracked { id, point: point(slot), place }));
        }
        index.available = n;
        Some(index)
    }

    /// Drivers known to the index, available or not.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// Drivers that `nearest` can return.
    pub fn available_len(&self) -> usize {
        self.available
    }

    pub fn location(&self, id: &DriverId) -> Option<GeoPoint> {
        self.tracked(id).map(|t| t.point)
    }

    pub fn is_available(&self, id: &DriverId) -> Option<bool> {
        self.tracked(id).map(|t| t.place.is_some())
    }

    /// Insert a driver or move a known one, and set whether they can take offers.
    pub fn upsert(&mut self, id: &DriverId, point: GeoPoint, available: bool) {
        let slot = match self.slot_of.get(id) {
            Some(&slot) => slot,
            None => {
                let tracked = Tracked { id: id.clone(), point, place: None };
                let slot = match self.free_slots.pop() {
                    Some(slot) => {
                        self.drivers[slot as usize] = Some(tracked);
                        slot
                    }
                    None => {
                        self.drivers.push(Some(tracked));
                        (self.drivers.len() - 1) as u32
                    }
                };
                self.slot_of.insert(id.clone(), slot);
                slot
            }
        };
        self.place(slot, point, available);
    }

    /// Change availability, keeping the last known location. Returns false for an unknown driver.
    pub fn set_available(&mut self, id: &DriverId, available: bool) -> bool {
        let Some(&slot) = self.slot_of.get(id) else { return false };
        let point = self.drivers[slot as usize].as_ref().expect("indexed slot is live").point;
        self.place(slot, point, available);
        true
    }

    /// Forget a driver. Returns false if they were not known.
    pub fn remove(&mut self, id: &DriverId) -> bool {
        let Some(slot) = self.slot_of.remove(id) else { return false };
        self.unplace(slot);
        self.drivers[slot as usize] = None;
        self.free_slots.push(slot);
        true
    }

    /// The `k` available drivers nearest to `point` within `radius_m` metres (great-circle),
    /// nearest first, ties broken by id.
    pub fn nearest(&self, point: GeoPoint, k: usize, radius_m: f64) -> Vec<(DriverId, f64)> {
        self.search(point, k, radius_m, |_| true)
    }

    /// Like [`nearest`](Self::nearest), counting only drivers for which `keep` is true. `keep`
    /// is asked only about drivers close enough to enter the current best k, so it may be a
    /// hash lookup without slowing the scan.
    pub fn nearest_filtered(
        &self,
        point: GeoPoint,
        k: usize,
        radius_m: f64,
        mut keep: impl FnMut(&DriverId) -> bool,
    ) -> Vec<(DriverId, f64)> {
        self.search(point, k, radius_m, |slot| keep(&self.tracked_slot(slot).id))
    }

    /// Like [`nearest_filtered`](Self::nearest_filtered), by slot: for an index filled in
    /// one go by its owner, where the i-th driver upserted holds slot i, so the caller can
    /// skip ids (hashing and a cache miss each) altogether. Nearest first, ties by slot.
    pub(crate) fn nearest_slots(
        &self,
        point: GeoPoint,
        k: usize,
        radius_m: f64,
        keep_slot: impl FnMut(u32) -> bool,
    ) -> Vec<(u32, f64)> {
        let mut best = self.best(point, k, radius_m, keep_slot);
        best.sort_unstable();
        best.into_iter().map(|c| (c.slot, metres_of_chord2(c.c2))).collect()
    }

    /// The search behind both `nearest`s. `keep_slot` works on slots so that an unfiltered
    /// search never reads driver records (a cache miss each) while it scans.
    fn search(
        &self,
        point: GeoPoint,
        k: usize,
        radius_m: f64,
        keep_slot: impl FnMut(u32) -> bool,
    ) -> Vec<(DriverId, f64)> {
        self.answer(self.best(point, k, radius_m, keep_slot))
    }

    /// The best `k` slots within `radius_m` for which `keep_slot` holds, unordered.
    fn best(&self, point: GeoPoint, k: usize, radius_m: f64, mut keep_slot: impl FnMut(u32) -> bool) -> Vec<Candidate> {
        if k == 0 || radius_m.is_nan() || radius_m < 0.0 || self.cells.is_empty() {
            return Vec::new();
        }
        let radius_m = radius_m.min(HALF_EARTH_M);
        let q = unit_vec(point);
        let mut top = TopK::new(k, chord2_of_m(radius_m));
        let mut visited = VisitedCells::default();
        let mut reach = self.first_reach_m(point, k).min(radius_m);
        loop {
            if self.grid.cells_in_disk(point, reach) > self.cells.len() as f64 {
                // A sparse fleet and a wide search: reading every bucket is cheaper than
                // visiting every (mostly empty) cell of the disk. Start over so that
                // the buckets already scanned are not counted twice.
                top = TopK::new(k, top.max_c2);
                self.cells.values().for_each(|bucket| top.scan(bucket, &q, &mut keep_slot));
                break;
            }
            visited.grow(&self.grid, point, reach, |key| {
                if let Some(bucket) = self.cells.get(&key) {
                    top.scan(bucket, &q, &mut keep_slot);
                }
            });
            if reach >= radius_m {
                break;
            }
            // Everything within `reach` has been seen. Once k are found, one more step out to
            // the k-th distance settles the answer; until then, double the search disk.
            reach = match top.kth_c2() {
                Some(kth_c2) => {
                    let kth_m = metres_of_chord2(kth_c2) * (1.0 + 1e-9) + 1e-6;
                    if kth_m <= reach {
                        break;
                    }
                    kth_m.min(radius_m)
                }
                None => (reach * 2.0).min(radius_m),
            };
        }
        top.into_best()
    }

    /// Where to look first: the radius expected to hold `k` drivers at the density of the
    /// query's own cell (with a margin), or half a cell when that cell is empty.
    fn first_reach_m(&self, point: GeoPoint, k: usize) -> f64 {
        let cell_m = self.grid.cell_m();
        match self.cells.get(&self.grid.cell_of(point)).map_or(0, Vec::len) {
            0 => cell_m / 2.0,
            here => 1.25 * cell_m * (k as f64 / (std::f64::consts::PI * here as f64)).sqrt(),
        }
    }

    /// Turn the best slots into ids and metres, nearest first. Driver records and id bytes
    /// are scattered over memory: reading them in separate passes lets the CPU wait for all
    /// of one pass's cache misses at once instead of one after another (measured ~15% of a
    /// query at 100k drivers).
    fn answer(&self, best: Vec<Candidate>) -> Vec<(DriverId, f64)> {
        let tracked: Vec<(&Tracked, f64)> = best.iter().map(|c| (self.tracked_slot(c.slot), c.c2)).collect();
        std::hint::black_box(
            tracked.iter().fold(0u8, |acc, (t, _)| acc ^ t.id.0.as_bytes().first().copied().unwrap_or(0)),
        );
        let mut found: Vec<(DriverId, f64)> =
            tracked.into_iter().map(|(t, c2)| (t.id.clone(), metres_of_chord2(c2))).collect();
        found.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        found
    }

    fn tracked(&self, id: &DriverId) -> Option<&Tracked> {
        self.slot_of.get(id).map(|&slot| self.tracked_slot(slot))
    }

    fn tracked_slot(&self, slot: u32) -> &Tracked {
        self.drivers[slot as usize].as_ref().expect("indexed slot is live")
    }

    fn tracked_slot_mut(&mut self, slot: u32) -> &mut Tracked {
        self.drivers[slot as usize].as_mut().expect("indexed slot is live")
    }

    /// Record `point` for `slot` and put it in the right bucket (or none when unavailable).
    fn place(&mut self, slot: u32, point: GeoPoint, available: bool) {
        let target = available.then(|| self.grid.cell_of(point));
        let tracked = self.tracked_slot_mut(slot);
        tracked.point = point;
        let current = tracked.place;
        match (current, target) {
            (Some((cell, pos)), Some(target)) if cell == target => {
                self.cells.get_mut(&cell).expect("placed cell exists")[pos as usize].at = unit_vec(point);
            }
            (_, target) => {
                self.unplace(slot);
                if let Some(cell) = target {
                    let bucket = self.cells.entry(cell).or_default();
                    bucket.push(BucketEntry { at: unit_vec(point), slot });
                    let pos = (bucket.len() - 1) as u32;
                    self.tracked_slot_mut(slot).place = Some((cell, pos));
                    self.available += 1;
                }
            }
        }
    }

    /// Take `slot` out of its bucket, if it is in one.
    fn unplace(&mut self, slot: u32) {
        let Some((cell, pos)) = self.tracked_slot_mut(slot).place.take() else { return };
        self.available -= 1;
        let bucket = self.cells.get_mut(&cell).expect("placed cell exists");
        bucket.swap_remove(pos as usize);
        if let Some(moved) = bucket.get(pos as usize).map(|e| e.slot) {
            self.tracked_slot_mut(moved).place = Some((cell, pos));
        } else if bucket.is_empty() {
            self.cells.remove(&cell);
        }
    }
}

/// The best `k` seen so far within `max_c2`. Candidates go into an unordered buffer that is
/// cut back to the best k (a linear-time selection) whenever it reaches 2k, so keeping the
/// best costs O(1) amortised per candidate, without a heap's ordering work.
struct TopK {
    k: usize,
    max_c2: f64,
    /// Squared chord a point must beat to be worth keeping; infinite until k are known.
    kth_c2: f64,
    buffer: Vec<Candidate>,
}

impl TopK {
    fn new(k: usize, max_c2: f64) -> Self {
        Self { k, max_c2, kth_c2: f64::INFINITY, buffer: Vec::with_capacity(k.saturating_mul(2).min(512)) }
    }

    #[inline]
    fn scan(&mut self, bucket: &[BucketEntry], q: &UnitVec, keep: &mut impl FnMut(u32) -> bool) {
        for entry in bucket {
            let c2 = chord2(&entry.at, q);
            if c2 > self.max_c2 || c2 >= self.kth_c2 || !keep(entry.slot) {
                continue;
            }
            self.buffer.push(Candidate { c2, slot: entry.slot });
            if self.buffer.len() >= self.k.saturating_mul(2) {
                self.cut();
            }
        }
    }

    /// Keep only the best k, and remember the k-th.
    fn cut(&mut self) {
        if self.buffer.len() >= self.k {
            self.buffer.select_nth_unstable(self.k - 1);
            self.buffer.truncate(self.k);
            self.kth_c2 = self.buffer.iter().map(|c| c.c2).fold(f64::NEG_INFINITY, f64::max);
        }
    }

    /// The k-th best squared chord, once k candidates are known.
    fn kth_c2(&mut self) -> Option<f64> {
        self.cut();
        (self.buffer.len() == self.k).then_some(self.kth_c2)
    }

    fn into_best(mut self) -> Vec<Candidate> {
        self.cut();
        self.buffer
    }
}

/// A driver found by a search, ordered by squared chord then slot.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    c2: f64,
    slot: u32,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.c2.total_cmp(&other.c2).then(self.slot.cmp(&other.slot))
    }
}

/// Cell keys are already well spread integers; one multiply-xorshift round (from SplitMix64)
/// mixes them for the table at a fraction of SipHash's cost on the query path.
#[derive(Debug, Default, Clone, Copy)]
struct CellKeyHasher(u64);

impl Hasher for CellKeyHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(lat: f64, lng: f64) -> GeoPoint {
        GeoPoint::new(lat, lng).unwrap()
    }

    fn id(s: &str) -> DriverId {
        DriverId::from(s)
    }

    #[test]
    fn finds_nearest_available_only() {
        let mut index = DriverIndex::new();
        index.upsert(&id("a"), pt(60.170, 24.940), true);
        index.upsert(&id("b"), pt(60.171, 24.940), true);
        index.upsert(&id("c"), pt(60.1701, 24.940), false);
        let found = index.nearest(pt(60.170, 24.940), 5, 2_000.0);
        assert_eq!(found.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(found[0].1 < 1e-6 && (found[1].1 - 111.2).abs() < 1.0, "{found:?}");
        assert!(index.set_available(&id("c"), true));
        assert_eq!(index.nearest(pt(60.170, 24.940), 2, 2_000.0)[1].0, id("c"));
        assert_eq!(index.available_len(), 3);
    }

    #[test]
    fn moves_removals_and_slot_reuse_keep_buckets_consistent() {
        let mut index = DriverIndex::with_cell_size_m(100.0);
        for i in 0..50 {
            index.upsert(&id(&format!("d{i}")), pt(60.17 + i as f64 * 1e-4, 24.94), true);
        }
        for i in (0..50).step_by(2) {
            assert!(index.remove(&id(&format!("d{i}"))));
        }
        assert!(!index.remove(&id("d0")));
        index.upsert(&id("new"), pt(60.17, 24.94), true);
        index.upsert(&id("d1"), pt(61.0, 25.0), true);
        assert_eq!(index.len(), 26);
        assert_eq!(index.location(&id("d1")), Some(pt(61.0, 25.0)));
        let near = index.nearest(pt(60.17, 24.94), 100, 10_000.0);
        assert_eq!(near.len(), 25);
        assert_eq!(near[0].0, id("new"));
        assert!(near.iter().all(|(d, _)| d != &id("d1")));
    }

    #[test]
    fn radius_and_k_edge_cases() {
        let mut index = DriverIndex::new();
        assert!(index.nearest(pt(0.0, 0.0), 3, 1e7).is_empty());
        index.upsert(&id("pole"), pt(90.0, 0.0), true);
        index.upsert(&id("date"), pt(0.0, 179.9999), true);
        assert_eq!(index.nearest(pt(89.9, 120.0), 1, 20_000.0)[0].0, id("pole"));
        assert_eq!(index.nearest(pt(0.0, -179.9999), 1, 100.0)[0].0, id("date"));
        assert!(index.nearest(pt(0.0, -179.9999), 0, 100.0).is_empty());
        assert!(index.nearest(pt(0.0, -179.9999), 1, f64::NAN).is_empty());
        assert_eq!(index.nearest(pt(-45.0, 0.0), 5, f64::INFINITY).len(), 2);
    }
}
