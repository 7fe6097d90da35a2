//! `bench knn`: "k nearest available drivers within r" on 100k drivers, in
//! `lastmile_dispatch::DriverIndex` (what the server's live index uses) next to Redis
//! `GEOSEARCH … BYRADIUS r m ASC COUNT k` over the very same points, radius and k.
//! The index runs on one thread in this process; Redis gets several concurrent clients
//! (it is single-threaded; concurrency only hides round trips).

use super::report::{Measurement, Report};
use super::BenchArgs;
use crate::stats::{latency_histogram, Percentiles};
use anyhow::Context;
use lastmile_core::GeoPoint;
use lastmile_dispatch::{random_city, DriverIndex};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const KEY: &str = "lastmile:bench:knn";
const REDIS_CLIENTS: usize = 8;

struct Run {
    per_second: f64,
    latency: Percentiles,
    mean_found: f64,
}

fn index_run(index: &DriverIndex, queries: &[GeoPoint], k: usize, radius: f64, d: Duration) -> Run {
    let mut h = latency_histogram();
    let (mut n, mut found) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < d {
        for _ in 0..1024 {
            let q = queries[n as usize % queries.len()];
            let t = Instant::now();
            let r = index.nearest(q, k, radius);
            h.saturating_record((t.elapsed().as_nanos() as u64 / 1000).max(1));
            found += r.len() as u64;
            n += 1;
        }
    }
    Run {
        per_second: n as f64 / start.elapsed().as_secs_f64(),
        latency: Percentiles::of(&h),
        mean_found: found as f64 / n as f64,
    }
}

async fn redis_load(conn: &redis::aio::MultiplexedConnection, points: &[(String, GeoPoint)]) -> anyhow::Result<()> {
    let mut c = conn.clone();
    redis::cmd("DEL").arg(KEY).query_async::<()>(&mut c).await?;
    for chunk in points.chunks(5_000) {
        let mut cmd = redis::cmd("GEOADD");
        cmd.arg(KEY);
        for (id, p) in chunk {
            cmd.arg(p.lng).arg(p.lat).arg(id);
        }
        cmd.query_async::<()>(&mut c).await?;
    }
    Ok(())
}

async fn redis_run(
    conn: &redis::aio::MultiplexedConnection,
    queries: Arc<Vec<GeoPoint>>,
    k: usize,
    radius: f64,
    d: Duration,
) -> anyhow::Result<Run> {
    let hist = Arc::new(Mutex::new(latency_histogram()));
    let (n, found) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..REDIS_CLIENTS {
        let (mut c, queries, hist, n, found) = (conn.clone(), queries.clone(), hist.clone(), n.clone(), found.clone());
        tasks.spawn(async move {
            let mut i = w * 977;
            while start.elapsed() < d {
                let q = queries[i % queries.len()];
                i += 1;
                let t = Instant::now();
                let r: Vec<String> = redis::cmd("GEOSEARCH")
                    .arg(KEY)
                    .arg("FROMLONLAT")
                    .arg(q.lng)
                    .arg(q.lat)
                    .arg("BYRADIUS")
                    .arg(radius)
                    .arg("m")
                    .arg("ASC")
                    .arg("COUNT")
                    .arg(k)
                    .query_async(&mut c)
                    .await?;
                hist.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .saturating_record((t.elapsed().as_micros() as u64).max(1));
                n.fetch_add(1, Relaxed);
                found.fetch_add(r.len() as u64, Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let n = n.load(Relaxed);
    let latency = Percentiles::of(&hist.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Run {
        per_second: n as f64 / start.elapsed().as_secs_f64(),
        latency,
        mean_found: found.load(Relaxed) as f64 / n.max(1) as f64,
    })
}

pub async fn run(args: &BenchArgs, report: &mut Report, _stop: &CancellationToken) -> anyhow::Result<()> {
    let city = random_city(args.seed, 0, args.points);
    let mut index = DriverIndex::new();
    for d in &city.drivers {
        index.upsert(&d.driver_id, d.location, true);
    }
    let queries: Arc<Vec<GeoPoint>> =
        Arc::new(random_city(args.seed + 1, 0, 4_096).drivers.iter().map(|d| d.location).collect());
    let client = redis::Client::open(format!("redis://{}/", args.redis)).context("Redis address")?;
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to Redis at {}", args.redis))?;
    let points: Vec<(String, GeoPoint)> = city.drivers.iter().map(|d| (d.driver_id.0.clone(), d.location)).collect();
    println!("  loading {} points into Redis…", points.len());
    redis_load(&conn, &points).await?;
    let d = args.phase(5);
    for &radius in &args.radius_m {
        let ours = {
            let (index, queries) = (&index, queries.clone());
            tokio::task::block_in_place(|| index_run(index, &queries, args.k, radius, d))
        };
        let theirs = redis_run(&conn, queries.clone(), args.k, radius, d).await?;
        let ratio = ours.per_second / theirs.per_second.max(1e-9);
        let km = radius / 1000.0;
        report.add(
            Measurement::rate(
                format!("DriverIndex k={} r={km} km (1 thread)", args.k),
                ours.per_second,
                Some(ours.latency),
            )
            .with(json!({"mean_found": ours.mean_found})),
        );
        report.add(
            Measurement::rate(
                format!("Redis GEOSEARCH k={} r={km} km ({REDIS_CLIENTS} clients)", args.k),
                theirs.per_second,
                Some(theirs.latency),
            )
            .with(json!({"mean_found": theirs.mean_found, "ratio_index_to_redis": ratio})),
        );
        report.budget(
            format!("nearest-drivers ≥ 20 × Redis GEOSEARCH at {km} km"),
            format!("{ratio:.1}×"),
            ratio >= 20.0,
        );
    }
    let mut c = conn.clone();
    redis::cmd("DEL").arg(KEY).query_async::<()>(&mut c).await?;
    report.note(format!(
        "{} drivers uniform over an 8 km disk around Helsinki (lastmile_dispatch::random_city, seed {}), all available; same points, radius and k on both sides",
        args.points, args.seed
    ));
    Ok(())
}
