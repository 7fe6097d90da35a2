//! Batched assignment of 1,000 orders to 5,000 drivers: `Matcher::Optimal` against the
//! `Greedy` baseline, with the live index supplied and without (an index built per call).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lastmile_dispatch::{assign, random_city, CostModel, DriverIndex, Matcher};
use std::hint::black_box;

fn batches(c: &mut Criterion) {
    let city = random_city(1, 1_000, 5_000);
    let model = CostModel::default();
    let mut live = DriverIndex::new();
    for d in &city.drivers {
        live.upsert(&d.driver_id, d.location, true);
    }
    let mut group = c.benchmark_group("assign_1000x5000");
    group.sample_size(20);
    for (name, matcher) in [("optimal", Matcher::Optimal), ("greedy", Matcher::Greedy)] {
        group.bench_function(BenchmarkId::new(name, "own_index"), |b| {
            b.iter(|| black_box(assign(&city.orders, &city.drivers, None, &model, matcher)))
        });
        group.bench_function(BenchmarkId::new(name, "live_index"), |b| {
            b.iter(|| black_box(assign(&city.orders, &city.drivers, Some(&live), &model, matcher)))
        });
    }
    group.finish();
}

criterion_group!(benches, batches);
criterion_main!(benches);
