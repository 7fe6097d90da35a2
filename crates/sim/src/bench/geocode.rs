//! `bench geocode`: the built-in geocoder on the embedded Helsinki extract — index build
//! time and memory, accuracy per writing style on the shipped test set (real addresses of
//! the extract written five ways), and lookups per second on one thread, all queries and
//! the typo-only ones (the slow path: no exact street name).

use super::report::{Measurement, Report};
use super::BenchArgs;
use lastmile_geo::testset::{lookup_rate, parse_cases, score, Case, ACCURATE_WITHIN_M, HELSINKI_ADDRESSES};
use lastmile_geo::AddressIndex;
use serde_json::json;
use std::time::Instant;

/// Resident memory of this process (KiB), from /proc on Linux.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub async fn run(args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let phase = args.phase(5);
    let cases: Vec<Case> = parse_cases(HELSINKI_ADDRESSES)?;
    let out = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let rss_before = rss_kib().unwrap_or(0);
        let started = Instant::now();
        let index = AddressIndex::from_pbf_bytes(crate::graph::HELSINKI_PBF)?;
        let build_ms = started.elapsed().as_secs_f64() * 1000.0;
        let rss_after = rss_kib().unwrap_or(0);
        let scores = score(&index, &cases);
        let all: Vec<&str> = cases.iter().map(|c| c.query.as_str()).collect();
        let typos: Vec<&str> = cases.iter().filter(|c| c.style == "typo").map(|c| c.query.as_str()).collect();
        let every = lookup_rate(&index, &all, phase);
        let typo = lookup_rate(&index, &typos, phase);
        Ok((index.stats(), build_ms, rss_before, rss_after, scores, every, typo))
    })
    .await??;
    let (stats, build_ms, rss_before, rss_after, scores, every, typo) = out;
    report.add(Measurement::value(
        "index build (embedded Helsinki extract, 685 KB)",
        json!({"build_ms": (build_ms * 10.0).round() / 10.0, "rss_growth_kib": rss_after.saturating_sub(rss_before),
               "address_points": stats.address_points, "addresses": stats.addresses, "streets": stats.streets,
               "names": stats.names, "typo_keys": stats.typo_keys}),
    ));
    let mut worst = 1.0f64;
    for s in &scores {
        worst = worst.min(s.share());
        report.add(Measurement::value(
            format!("accuracy within {ACCURATE_WITHIN_M} m: {}", s.style),
            json!({"queries": s.cases, "accurate": s.accurate, "unmatched": s.unmatched,
                   "share_pct": (s.share() * 1000.0).round() / 10.0}),
        ));
    }
    report.add(Measurement::rate("lookups, every style (1 thread)", every.0, None).with(json!({"found": every.1})));
    report.add(Measurement::rate("lookups, typo style only (1 thread)", typo.0, None).with(json!({"found": typo.1})));
    report.budget(
        "≥ 95% of addresses within 50 m, in every writing style",
        format!("worst style {:.1}%", worst * 100.0),
        worst >= 0.95,
    );
    let slowest = every.0.min(typo.0);
    report.budget("geocoding lookups ≥ 5,000/s", format!("{slowest:.0}/s (slower of the two)"), slowest >= 5_000.0);
    report.note(
        "the test set's addresses come from the same extract as the index: it measures how well written \
         addresses are read and matched, not how accurate OpenStreetMap is",
    );
    report
        .note("memory is the growth of this process's resident set while the index was built (parse buffers included)");
    Ok(())
}
