//! `bench assignment` (the matchers against the Hungarian optimum on one batch) and
//! `bench city` (a simulated city run twice on the same seed, once per matcher, with the
//! outcomes that matter to people: how long ready orders wait for pickup, and how long
//! drivers stand idle at the store).

use super::report::{Measurement, Report};
use super::server::{ServerProcess, ServerSpec};
use super::BenchArgs;
use crate::city::{run_city, RunOptions};
use crate::scenario::CityConfig;
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const ORDERS: usize = 1_000;
const DRIVERS: usize = 5_000;
/// Up to this many order × driver pairs the dense Hungarian (the exact optimum) is run as
/// the reference; beyond it (hours at 5,000 × 25,000) the certified lower bound is.
const DENSE_PAIRS: usize = 10_000_000;

pub async fn assignment(args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let orders = args.orders.unwrap_or(ORDERS);
    let drivers = args.drivers.unwrap_or(DRIVERS);
    lastmile_dispatch::set_matching_threads(args.threads.unwrap_or(0));
    let threads = args.threads.map_or("one per core".to_string(), |t| t.to_string());
    report.note(format!("matching threads per batch: {threads}"));
    if orders.saturating_mul(drivers) > DENSE_PAIRS {
        return assignment_at_scale(args, report, orders, drivers).await;
    }
    let seeds = [args.seed, args.seed + 1, args.seed + 2];
    let mut worst_gap: f64 = 0.0;
    let mut worst_ms: f64 = 0.0;
    for (i, &seed) in seeds.iter().enumerate() {
        eprintln!(
            "    batch {}/{}: {orders} orders × {drivers} drivers, seed {seed} (the dense optimum takes a while)…",
            i + 1,
            seeds.len()
        );
        let q = tokio::task::spawn_blocking(move || lastmile_dispatch::quality_report(seed, orders, drivers)).await?;
        worst_gap = worst_gap.max(q.gap_pct);
        worst_ms = worst_ms.max(q.matched_ms);
        report.add(Measurement::value(
            format!("seed {seed}: {orders} orders × {drivers} drivers"),
            json!({
                "optimal_ms": q.matched_ms, "greedy_ms": q.greedy_ms, "hungarian_ms": q.hungarian_ms,
                "gap_pct_vs_hungarian": q.gap_pct, "greedy_gap_pct": q.greedy_gap_pct,
                "pickup_s": {"hungarian": q.optimal_pickup_s, "optimal": q.matched_pickup_s, "greedy": q.greedy_pickup_s},
                "unassigned": {"hungarian": q.optimal_unassigned, "optimal": q.matched_unassigned, "greedy": q.greedy_unassigned},
            }),
        ));
    }
    report.budget(
        format!("assignment cost within 2% of the Hungarian optimum ({orders} × {drivers})"),
        format!("worst gap {worst_gap:.3}%"),
        worst_gap <= 2.0,
    );
    report.budget(
        format!("≤ 50 ms per batch ({orders} × {drivers})"),
        format!("worst {worst_ms:.1} ms"),
        worst_ms <= 50.0,
    );
    report.note("lastmile_dispatch::quality_report: cost = pickup ETA plus waiting penalties, over a random Helsinki batch; the dense Hungarian solve is the reference, timed but not budgeted");
    Ok(())
}

/// City-scale batches: Optimal and Greedy against the lower bound Optimal certifies.
async fn assignment_at_scale(
    args: &BenchArgs,
    report: &mut Report,
    orders: usize,
    drivers: usize,
) -> anyhow::Result<()> {
    let seeds = [args.seed, args.seed + 1, args.seed + 2];
    let mut worst_gap: f64 = 0.0;
    let mut worst_ms: f64 = 0.0;
    for (i, &seed) in seeds.iter().enumerate() {
        eprintln!("    batch {}/{}: {orders} orders × {drivers} drivers, seed {seed}…", i + 1, seeds.len());
        let q = tokio::task::spawn_blocking(move || lastmile_dispatch::scale_report(seed, orders, drivers)).await?;
        worst_gap = worst_gap.max(q.gap_pct);
        worst_ms = worst_ms.max(q.matched_ms);
        report.add(Measurement::value(
            format!("seed {seed}: {orders} orders × {drivers} drivers"),
            json!({
                "optimal_ms": q.matched_ms, "greedy_ms": q.greedy_ms,
                "gap_pct_vs_bound": q.gap_pct, "greedy_gap_pct_vs_bound": q.greedy_gap_pct,
                "cost": {"lower_bound": q.lower_bound, "optimal": q.matched_cost, "greedy": q.greedy_cost},
                "pickup_s": {"optimal": q.matched_pickup_s, "greedy": q.greedy_pickup_s},
                "unassigned": {"optimal": q.matched_unassigned, "greedy": q.greedy_unassigned},
                "unsettled_orders": q.unsettled, "widenings": q.widenings,
                "zones": q.zones, "largest_zone_orders": q.largest_zone,
            }),
        ));
    }
    report.budget(
        format!("assignment cost within 0.1% of the certified lower bound ({orders} × {drivers})"),
        format!("worst gap {worst_gap:.4}%"),
        worst_gap <= 0.1,
    );
    report.budget(
        format!("≤ 100 ms per batch ({orders} × {drivers})"),
        format!("worst {worst_ms:.1} ms"),
        worst_ms <= 100.0,
    );
    report.note("lastmile_dispatch::scale_report: the bound is the assignment LP's dual objective at prices checked feasible for every order × driver pair (pairs outside the candidate lists through the distance of each list's last driver), so no assignment of the batch costs less; the dense Hungarian is not run at this size");
    Ok(())
}

/// The city both matchers run: native orders with preparation times, so timing offers to
/// readiness matters.
fn city_config(args: &BenchArgs) -> anyhow::Result<CityConfig> {
    let seed = args.seed.to_string();
    let drivers = args.drivers.unwrap_or(80).to_string();
    let rate = args.orders_per_minute.unwrap_or(10.0).to_string();
    CityConfig::from_flags(&[
        "--drivers",
        &drivers,
        "--stores",
        "8",
        "--orders-per-minute",
        &rate,
        "--sources",
        "native",
        "--max-prep-s",
        "300",
        "--speed-mps",
        "14",
        "--handover-s",
        "10",
        "--dropoff-radius-m",
        "1500",
        "--accept-probability",
        "0.9",
        "--seed",
        &seed,
    ])
}

pub async fn city(args: &BenchArgs, report: &mut Report, stop: &CancellationToken) -> anyhow::Result<()> {
    let d = args.phase(240);
    let mut outcomes = Vec::new();
    for matcher in ["optimal", "greedy"] {
        println!("  city with the {matcher} matcher: orders for {} s, then up to 180 s to finish…", d.as_secs());
        let spec = ServerSpec { bin: args.server_bin.clone(), database_url: args.database_url.clone(), env: vec![] }
            .set("LASTMILE_DISPATCH__MATCHER", matcher)
            .set("LASTMILE_DISPATCH__TICK_MS", args.tick_ms);
        let server = ServerProcess::start(&spec).await?;
        let opts = RunOptions {
            duration: Some(d),
            drain: Duration::from_secs(180),
            progress_every: Some(Duration::from_secs(15)),
            max_orders: None,
            map: None,
        };
        let outcome = run_city(&server.base, &server.admin_key, city_config(args)?, opts, stop.child_token()).await;
        server.stop().await;
        let s = outcome?.snapshot;
        report.add(
            Measurement::latency(format!("{matcher}: order wait, ready → picked up"), s.order_wait)
                .with(json!({"orders_picked_up": s.picked_up, "delivered": s.delivered, "received": s.received})),
        );
        report.add(Measurement::latency(format!("{matcher}: driver idle wait at the store"), s.driver_wait));
        report.add(
            Measurement::latency(format!("{matcher}: order → first offer"), s.to_offer)
                .with(json!({"offers": s.offers, "declined": s.declined})),
        );
        outcomes.push(s);
        if stop.is_cancelled() {
            anyhow::bail!("stopped");
        }
    }
    let (o, g) = (&outcomes[0], &outcomes[1]);
    report.budget(
        "Optimal beats Greedy on order wait (p50, same seed)",
        format!("{:.1} s vs {:.1} s", o.order_wait.p50_ms / 1e3, g.order_wait.p50_ms / 1e3),
        o.order_wait.p50_ms <= g.order_wait.p50_ms,
    );
    report.budget(
        "Optimal beats Greedy on driver idle wait at the store (p50, same seed)",
        format!("{:.1} s vs {:.1} s", o.driver_wait.p50_ms / 1e3, g.driver_wait.p50_ms / 1e3),
        o.driver_wait.p50_ms <= g.driver_wait.p50_ms,
    );
    let cfg = city_config(args)?;
    report.note(format!(
        "issue 4 asks for this comparison, not a number: {} drivers, 8 native stores, {} orders/min ready 0–300 s after \
         ordering, dropoffs within 1.5 km, 14 m/s on the Helsinki roads, 10 s handovers, 90% of offers accepted, tick {} ms; \
         the same seed gives both runs the same orders and decisions, but the live system's timing still differs between runs",
        cfg.drivers, cfg.orders_per_minute, args.tick_ms
    ));
    Ok(())
}
