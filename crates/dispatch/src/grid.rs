//! Geometry behind [`crate::DriverIndex`]: a global latitude/longitude grid of roughly square
//! cells, points as unit vectors, and the bounding box of a great-circle disk.
//!
//! Why unit vectors: the squared chord between two unit vectors is a strictly increasing
//! function of their great-circle distance, so ranking and radius checks need three
//! multiply-adds per point instead of the four trigonometric calls of a haversine.

use lastmile_core::geo::EARTH_RADIUS_M;
use lastmile_core::GeoPoint;

/// A point on the unit sphere.
pub(crate) type UnitVec = [f64; 3];

pub(crate) fn unit_vec(p: GeoPoint) -> UnitVec {
    let (sin_lat, cos_lat) = p.lat.to_radians().sin_cos();
    let (sin_lng, cos_lng) = p.lng.to_radians().sin_cos();
    [cos_lat * cos_lng, cos_lat * sin_lng, sin_lat]
}

/// Squared chord length between two unit vectors.
#[inline]
pub(crate) fn chord2(a: &UnitVec, b: &UnitVec) -> f64 {
    let (dx, dy, dz) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
    dx * dx + dy * dy + dz * dz
}

/// Squared chord of a great-circle distance in metres (distances past half the earth saturate).
pub(crate) fn chord2_of_m(metres: f64) -> f64 {
    let half_angle = (metres / EARTH_RADIUS_M / 2.0).min(std::f64::consts::FRAC_PI_2);
    let chord = 2.0 * half_angle.sin();
    chord * chord
}

/// Great-circle metres of a squared chord; the inverse of [`chord2_of_m`].
pub(crate) fn metres_of_chord2(c2: f64) -> f64 {
    2.0 * EARTH_RADIUS_M * (c2.sqrt() / 2.0).min(1.0).asin()
}

/// Cell key: row in the high 32 bits, column in the low 32.
pub(crate) type CellKey = u64;

/// Rows of equal latitude height; each row is cut into as many equal columns as make the
/// cells roughly square at the row's middle latitude. Column counts divide 360° exactly, so
/// the antimeridian needs no special case: columns wrap modulo the row's count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grid {
    /// Height of a row in degrees of latitude.
    row_deg: f64,
    rows: i64,
}

/// Column span of one row, in unwrapped column numbers (may run below 0 or past the count).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RowSpan {
    pub lo: i64,
    pub hi: i64,
    /// The span covers the whole row (the disk wraps around it or touches a pole).
    pub full: bool,
}

impl Grid {
    pub fn new(cell_m: f64) -> Self {
        let metres_per_deg = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
        let row_deg = (cell_m / metres_per_deg).clamp(1e-5, 90.0);
        Self { row_deg, rows: (180.0 / row_deg).ceil() as i64 }
    }

    pub fn cell_m(&self) -> f64 {
        self.row_deg * EARTH_RADIUS_M * std::f64::consts::PI / 180.0
    }

    pub fn row_of(&self, lat: f64) -> i64 {
        (((lat + 90.0) / self.row_deg).floor() as i64).clamp(0, self.rows - 1)
    }

    pub fn cols_in_row(&self, row: i64) -> i64 {
        let mid_lat = -90.0 + (row as f64 + 0.5) * self.row_deg;
        let cols = (360.0 * mid_lat.to_radians().cos() / self.row_deg).floor();
        (cols as i64).clamp(1, (360.0 / self.row_deg).ceil() as i64)
    }

    /// Unwrapped column of a longitude; monotone in `lng`, so a longitude range maps to a
    /// column range. Reduce with `rem_euclid(cols)` to get the stored column.
    fn unwrapped_col(lng: f64, cols: i64) -> i64 {
        ((lng + 180.0) / (360.0 / cols as f64)).floor() as i64
    }

    pub fn key(row: i64, col: i64, cols: i64) -> CellKey {
        ((row as u64) << 32) | col.rem_euclid(cols) as u64
    }

    pub fn cell_of(&self, p: GeoPoint) -> CellKey {
        let row = self.row_of(p.lat);
        let cols = self.cols_in_row(row);
        Self::key(row, Self::unwrapped_col(p.lng, cols), cols)
    }

    /// Rows and per-row column spans of every cell that may hold a point within `radius_m`
    /// of `p`: the bounding box of the great-circle disk, slightly padded against rounding.
    pub fn disk_rows(&self, p: GeoPoint, radius_m: f64) -> (i64, i64, DiskSpan) {
        let delta = radius_m / EARTH_RADIUS_M * (1.0 + 1e-9) + 1e-12;
        let delta_deg = delta.to_degrees();
        let (lat_lo, lat_hi) = (p.lat - delta_deg, p.lat + delta_deg);
        let (row_lo, row_hi) = (self.row_of(lat_lo), self.row_of(lat_hi));
        if lat_lo <= -90.0 || lat_hi >= 90.0 {
            return (row_lo, row_hi, DiskSpan::Everywhere);
        }
        // Widest longitude reach of the disk (not at its centre latitude but where the
        // meridians are tangent to it): sin Δλ = sin δ / cos φ.
        let ratio = delta.sin() / p.lat.to_radians().cos();
        if ratio >= 1.0 {
            return (row_lo, row_hi, DiskSpan::Everywhere);
        }
        let dlng = ratio.asin().to_degrees() + 1e-9;
        if dlng >= 180.0 {
            return (row_lo, row_hi, DiskSpan::Everywhere);
        }
        (row_lo, row_hi, DiskSpan::Lng { lo: p.lng - dlng, hi: p.lng + dlng })
    }

    /// About how many cells [`VisitedCells::grow`] visits for this disk.
    pub fn cells_in_disk(&self, p: GeoPoint, radius_m: f64) -> f64 {
        let (row_lo, row_hi, disk) = self.disk_rows(p, radius_m);
        let row = self.row_of(p.lat);
        let span = self.span(row, disk);
        let cols = if span.full { self.cols_in_row(row) } else { span.hi - span.lo + 1 };
        (row_hi - row_lo + 1) as f64 * cols as f64
    }

    pub fn span(&self, row: i64, disk: DiskSpan) -> RowSpan {
        let cols = self.cols_in_row(row);
        match disk {
            DiskSpan::Everywhere => RowSpan { lo: 0, hi: cols - 1, full: true },
            DiskSpan::Lng { lo, hi } => {
                let (lo, hi) = (Self::unwrapped_col(lo, cols), Self::unwrapped_col(hi, cols));
                RowSpan { lo, hi, full: hi - lo + 1 >= cols }
            }
        }
    }
}

/// Longitudes a disk reaches, shared by all its rows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DiskSpan {
    Everywhere,
    Lng { lo: f64, hi: f64 },
}

/// Remembers which cells an expanding search has visited, so that growing the search disk
/// visits only the cells that are new. Rows form one contiguous range; each row's visited
/// columns form one contiguous (unwrapped) span.
#[derive(Debug, Default)]
pub(crate) struct VisitedCells {
    first_row: i64,
    spans: Vec<RowSpan>,
    scratch: Vec<RowSpan>,
}

impl VisitedCells {
    /// Grow to the disk of `radius_m` around `p` and call `visit` for each cell not seen before.
    pub fn grow(&mut self, grid: &Grid, p: GeoPoint, radius_m: f64, mut visit: impl FnMut(CellKey)) {
        let (row_lo, row_hi, disk) = grid.disk_rows(p, radius_m);
        self.scratch.clear();
        for row in row_lo..=row_hi {
            let cols = grid.cols_in_row(row);
            let mut new = grid.span(row, disk);
            let old = row.checked_sub(self.first_row).and_then(|i| self.spans.get(i as usize)).copied();
            match old {
                None if new.full => (0..cols).for_each(|c| visit(Grid::key(row, c, cols))),
                None => (new.lo..=new.hi).for_each(|c| visit(Grid::key(row, c, cols))),
                Some(old) if old.full => new = old,
                // The unvisited part of the row is everything outside the old span.
                Some(old) if new.full => (old.hi + 1..old.lo + cols).for_each(|c| visit(Grid::key(row, c, cols))),
                Some(old) => {
                    (new.lo, new.hi) = (new.lo.min(old.lo), new.hi.max(old.hi));
                    (new.lo..old.lo).chain(old.hi + 1..=new.hi).for_each(|c| visit(Grid::key(row, c, cols)));
                }
            }
            self.scratch.push(new);
        }
        self.first_row = row_lo;
        std::mem::swap(&mut self.spans, &mut self.scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(lat: f64, lng: f64) -> GeoPoint {
        GeoPoint::new(lat, lng).unwrap()
    }

    #[test]
    fn chord_round_trips_and_matches_haversine() {
        let (a, b) = (pt(60.17, 24.94), pt(60.2055, 24.6559));
        let c2 = chord2(&unit_vec(a), &unit_vec(b));
        assert!((metres_of_chord2(c2) - a.distance_m(&b)).abs() < 1e-6);
        assert!((metres_of_chord2(chord2_of_m(1234.5)) - 1234.5).abs() < 1e-6);
    }

    #[test]
    fn antimeridian_columns_wrap() {
        let grid = Grid::new(500.0);
        assert_eq!(grid.cell_of(pt(10.0, 180.0)), grid.cell_of(pt(10.0, -180.0)));
    }

    #[test]
    fn growing_visits_each_cell_once() {
        let grid = Grid::new(300.0);
        let p = pt(89.99, 179.999);
        let mut seen = std::collections::HashSet::new();
        let mut visited = VisitedCells::default();
        for r in [100.0, 400.0, 1_000.0, 3_000.0, 3_000.0, 9_000.0] {
            visited.grow(&grid, p, r, |key| assert!(seen.insert(key), "cell {key:x} visited twice at r={r}"));
        }
        assert!(!seen.is_empty());
    }
}
