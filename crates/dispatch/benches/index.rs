//! The live driver index at 100k drivers around Helsinki: GPS updates per second and
//! nearest-10 queries at 2 km and 5 km, for the grid `DriverIndex` at several cell sizes,
//! the H3-bucket alternative, and a same-run baseline that checks every point in
//! radius-sized cells (the simple grid, and what Redis GEOSEARCH does).

#[path = "common/h3_bucket.rs"]
mod h3_bucket;
#[path = "common/radius_grid.rs"]
mod radius_grid;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use h3_bucket::H3BucketIndex;
use h3o::Resolution;
use lastmile_core::{DriverId, GeoPoint};
use lastmile_dispatch::{random_city, DriverIndex};
use radius_grid::RadiusGrid;
use std::hint::black_box;

const DRIVERS: usize = 100_000;
const K: usize = 10;

struct Fleet {
    ids: Vec<DriverId>,
    at: Vec<GeoPoint>,
    /// Where each driver is on its next GPS fix: a step of up to ~40 m.
    moved: Vec<GeoPoint>,
    queries: Vec<GeoPoint>,
}

impl Fleet {
    /// The `n`-th GPS fix of the benchmark: drivers in turn, alternately moved and back.
    fn fix(&self, n: usize) -> (usize, GeoPoint) {
        let i = n % DRIVERS;
        (i, if (n / DRIVERS).is_multiple_of(2) { self.moved[i] } else { self.at[i] })
    }
}

fn fleet() -> Fleet {
    let city = random_city(1, 0, DRIVERS);
    let ids = city.drivers.iter().map(|d| d.driver_id.clone()).collect();
    let at: Vec<GeoPoint> = city.drivers.iter().map(|d| d.location).collect();
    let moved = at
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let step = ((i * 7919 % 1000) as f64 / 1000.0 - 0.5) * 0.0007;
            GeoPoint::new(p.lat + step * 0.5, p.lng - step).unwrap()
        })
        .collect();
    let queries = random_city(2, 0, 4_096).drivers.iter().map(|d| d.location).collect();
    Fleet { ids, at, moved, queries }
}

fn grid_index(fleet: &Fleet, cell_m: f64) -> DriverIndex {
    let mut index = DriverIndex::with_cell_size_m(cell_m);
    for (id, p) in fleet.ids.iter().zip(&fleet.at) {
        index.upsert(id, *p, true);
    }
    index
}

fn h3_index(fleet: &Fleet, resolution: Resolution) -> H3BucketIndex {
    let mut index = H3BucketIndex::new(resolution);
    for (id, p) in fleet.ids.iter().zip(&fleet.at) {
        index.upsert(id, *p);
    }
    index
}

fn updates(c: &mut Criterion) {
    let fleet = fleet();
    let mut group = c.benchmark_group("index_updates_100k");
    const BATCH: usize = 1_000;
    group.throughput(Throughput::Elements(BATCH as u64));
    for cell_m in [250.0, 1_000.0] {
        let mut index = grid_index(&fleet, cell_m);
        let mut next = 0;
        group.bench_function(BenchmarkId::new("grid", cell_m), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    let (i, to) = fleet.fix(next);
                    index.upsert(&fleet.ids[i], to, true);
                    next += 1;
                }
            })
        });
    }
    for resolution in [Resolution::Eight, Resolution::Nine] {
        let mut index = h3_index(&fleet, resolution);
        let mut next = 0;
        group.bench_function(BenchmarkId::new("h3", u8::from(resolution)), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    let (i, to) = fleet.fix(next);
                    index.upsert(&fleet.ids[i], to);
                    next += 1;
                }
            })
        });
    }
    group.finish();
}

fn queries(c: &mut Criterion) {
    let fleet = fleet();
    let grids: Vec<(f64, DriverIndex)> =
        [125.0, 250.0, 500.0, 1_000.0, 2_000.0].into_iter().map(|m| (m, grid_index(&fleet, m))).collect();
    let h3s: Vec<(Resolution, H3BucketIndex)> =
        [Resolution::Eight, Resolution::Nine, Resolution::Ten].into_iter().map(|r| (r, h3_index(&fleet, r))).collect();
    // The alternatives must give the same answers as the index they are compared with.
    for q in fleet.queries.iter().take(200) {
        let want = grids[1].1.nearest(*q, K, 2_000.0);
        for (_, g) in &grids {
            assert_eq!(g.nearest(*q, K, 2_000.0), want);
        }
        for (_, h) in &h3s {
            assert_eq!(h.nearest(*q, K, 2_000.0), want);
        }
    }
    for radius_m in [2_000.0, 5_000.0] {
        let mut group = c.benchmark_group(format!("nearest_k10_r{}km_100k", radius_m / 1_000.0));
        group.throughput(Throughput::Elements(1));
        for (cell_m, index) in &grids {
            let mut next = 0;
            group.bench_function(BenchmarkId::new("grid", cell_m), |b| {
                b.iter(|| {
                    next += 1;
                    black_box(index.nearest(fleet.queries[next % fleet.queries.len()], K, radius_m))
                })
            });
        }
        for (resolution, index) in &h3s {
            let mut next = 0;
            group.bench_function(BenchmarkId::new("h3", u8::from(*resolution)), |b| {
                b.iter(|| {
                    next += 1;
                    black_box(index.nearest(fleet.queries[next % fleet.queries.len()], K, radius_m))
                })
            });
        }
        let simple = RadiusGrid::new(radius_m, 60.17, fleet.ids.iter().cloned().zip(fleet.at.iter().copied()));
        for q in fleet.queries.iter().take(50) {
            let (want, got) = (grids[1].1.nearest(*q, K, radius_m), simple.nearest(*q, K, radius_m));
            assert!(want.iter().zip(&got).all(|(a, b)| (a.1 - b.1).abs() < 1e-6), "{want:?} vs {got:?}");
        }
        let mut next = 0;
        group.bench_function("radius_cells_scan_all", |b| {
            b.iter(|| {
                next += 1;
                black_box(simple.nearest(fleet.queries[next % fleet.queries.len()], K, radius_m))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, updates, queries);
criterion_main!(benches);
