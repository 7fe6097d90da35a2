//! Scratch: time nearest-k in a loop for profiling (not committed).
use lastmile_dispatch::{random_city, DriverIndex};
fn main() {
    let city = random_city(1, 0, 100_000);
    let cell: f64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(250.0);
    let mut index = DriverIndex::with_cell_size_m(cell);
    for d in &city.drivers {
        index.upsert(&d.driver_id, d.location, true);
    }
    let qs: Vec<_> = random_city(2, 0, 4096).drivers.iter().map(|d| d.location).collect();
    let n = 2_000_000;
    let t = std::time::Instant::now();
    let mut total = 0.0;
    for i in 0..n {
        let r = index.nearest(qs[i % qs.len()], 10, 2000.0);
        total += r[9].1;
    }
    let el = t.elapsed().as_secs_f64();
    println!("{:.2} us/query, {:.0} q/s (avg 10th {:.1} m)", el / n as f64 * 1e6, n as f64 / el, total / n as f64);
}
