//! The geocoder's figures without the server: index build time and memory, accuracy per
//! writing style on the shipped set, lookups per second on one thread.
//! `cargo run --release -p lastmile-geo --example measure [SECONDS]`
//! (`lastmile bench geocode` reports the same inside the benchmark suite).

use lastmile_geo::testset::{lookup_rate, parse_cases, score, HELSINKI_ADDRESSES};
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let bytes = std::fs::read(lastmile_geo::helsinki_pbf_path())?;
    let before = rss_kib();
    let started = Instant::now();
    let index = lastmile_geo::AddressIndex::from_pbf_bytes(&bytes)?;
    let build = started.elapsed();
    println!(
        "index build: {:.1} ms, RSS growth {} KiB, {:?}",
        build.as_secs_f64() * 1e3,
        rss_kib() - before,
        index.stats()
    );
    let cases = parse_cases(HELSINKI_ADDRESSES)?;
    for s in score(&index, &cases) {
        println!(
            "{:<26} {:>5} queries {:>6.1}% within 50 m ({} unmatched)",
            s.style,
            s.cases,
            s.share() * 100.0,
            s.unmatched
        );
    }
    let all: Vec<&str> = cases.iter().map(|c| c.query.as_str()).collect();
    let typos: Vec<&str> = cases.iter().filter(|c| c.style == "typo").map(|c| c.query.as_str()).collect();
    let d = Duration::from_secs(secs);
    let (every, _) = lookup_rate(&index, &all, d);
    let (typo, _) = lookup_rate(&index, &typos, d);
    println!("lookups/s, every style: {every:.0}; typo style only: {typo:.0} (1 thread, {secs} s each)");
    Ok(())
}
