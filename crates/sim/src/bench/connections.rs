//! `bench connections`: idle driver WebSockets held by one server process, and what each
//! costs in resident memory (`VmRSS` of the server's /proc status, before and after).
//! Sockets come from 127.0.0.2, .3, … (1,000 per source address); the count stays under
//! this machine's 20,000 open-file limit on both ends.

use super::report::{Measurement, Report};
use super::server::{ServerProcess, ServerSpec};
use super::ws::{connect, create_drivers, set_online};
use super::BenchArgs;
use crate::client::{counter_sum, Api};
use crate::stats::{latency_histogram, Percentiles};
use futures::StreamExt;
use serde_json::json;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One process may hold at most 20,000 open files here; leave room for everything else.
const FILE_LIMIT_MARGIN: usize = 19_000;
const PER_SOURCE: usize = 1_000;

async fn sockets_gauge(api: &Api) -> f64 {
    api.metrics_text().await.map(|m| counter_sum(&m, "lastmile_driver_sockets", &[])).unwrap_or(-1.0)
}

pub async fn run(args: &BenchArgs, report: &mut Report, stop: &CancellationToken) -> anyhow::Result<()> {
    let n = args.connections.min(FILE_LIMIT_MARGIN);
    if n < args.connections {
        report.note(format!("asked for {} sockets; capped at {n} by the 20,000 open-file limit", args.connections));
    }
    let spec = ServerSpec { bin: args.server_bin.clone(), database_url: args.database_url.clone(), env: vec![] }
        .set("LASTMILE_DISPATCH__ENABLED", false)
        .set("LASTMILE_PRESENCE_TIMEOUT_S", 3600);
    let server = ServerProcess::start(&spec).await?;
    let api = Api::new(&server.base)?;
    println!("  creating {n} drivers…");
    let t = Instant::now();
    let made = create_drivers(&api, &server.admin_key, n).await?;
    let tokens: Arc<Vec<String>> = Arc::new(made.into_iter().map(|(_, t)| t).collect());
    println!("    {:.0} drivers/s created", n as f64 / t.elapsed().as_secs_f64());
    // Status is irrelevant to an idle socket, but a real fleet's drivers are online.
    set_online(&api, &tokens[..n.min(1000)]).await?;
    // Warm the server's paths (auth, inbox read, socket task) before the baseline reading.
    let warm = connect(server.addr, &tokens[0], None).await?;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss_kib().unwrap_or(0);
    let fds_before = server.open_files().unwrap_or(0);

    let hold = stop.child_token();
    let connected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(latency_histogram()));
    let start = Instant::now();
    let mut holders = tokio::task::JoinSet::new();
    let results: Vec<()> = futures::stream::iter(0..n)
        .map(|i| {
            let (tokens, hold, connected, failed, hist) =
                (tokens.clone(), hold.clone(), connected.clone(), failed.clone(), hist.clone());
            let addr = server.addr;
            async move {
                let source =
                    Ipv4Addr::new(127, 0, (2 + i / PER_SOURCE / 250) as u8, (2 + (i / PER_SOURCE) % 250) as u8);
                let t = Instant::now();
                match connect(addr, &tokens[i], Some(source)).await {
                    Ok(ws) => {
                        hist.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .saturating_record((t.elapsed().as_micros() as u64).max(1));
                        let c = connected.fetch_add(1, Relaxed) + 1;
                        if c % 2_500 == 0 {
                            eprintln!("    {c} sockets open");
                        }
                        Some((ws, hold))
                    }
                    Err(e) => {
                        if failed.fetch_add(1, Relaxed) < 3 {
                            eprintln!("    connect failed: {e:#}");
                        }
                        None
                    }
                }
            }
        })
        .buffer_unordered(128)
        .filter_map(|x| async move { x })
        .map(|(ws, hold)| {
            // Each socket is read (so the server's pings get their pongs) until the hold ends.
            holders.spawn(async move {
                let (_tx, mut rx) = ws.split();
                loop {
                    tokio::select! {
                        _ = hold.cancelled() => break,
                        m = rx.next() => if !matches!(m, Some(Ok(_))) { break },
                    }
                }
            });
        })
        .collect()
        .await;
    let _ = results;
    let connect_s = start.elapsed().as_secs_f64();
    let open = connected.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server.rss_kib().unwrap_or(0);
    let fds_after = server.open_files().unwrap_or(0);
    let gauge_start = sockets_gauge(&api).await;
    let hold_for = args.phase(20);
    println!("  holding {open} sockets for {:.0} s…", hold_for.as_secs_f64());
    tokio::select! { _ = tokio::time::sleep(hold_for) => {}, _ = stop.cancelled() => {} }
    let gauge_end = sockets_gauge(&api).await;
    let still = holders.len();
    hold.cancel();
    while holders.join_next().await.is_some() {}
    server.stop().await;

    let per_conn_kib = (rss_after.saturating_sub(rss_before)) as f64 / open.max(1) as f64;
    let latency = Percentiles::of(&hist.lock().unwrap_or_else(|e| e.into_inner()));
    report.add(
        Measurement::rate("driver WebSockets opened", open as f64 / connect_s, Some(latency))
            .with(json!({"opened": open, "failed": failed.load(Relaxed), "seconds": connect_s})),
    );
    report.add(Measurement::value(
        "sockets held by the server",
        json!({"at_start": gauge_start, "after_hold": gauge_end, "hold_s": hold_for.as_secs(), "client_tasks_alive": still,
               "server_open_files": {"before": fds_before, "after": fds_after}}),
    ));
    report.add(Measurement::value(
        "server memory per idle socket (KiB)",
        json!({"per_socket_kib": (per_conn_kib * 10.0).round() / 10.0, "rss_before_kib": rss_before, "rss_after_kib": rss_after}),
    ));
    report.budget(
        "15,000 driver WebSockets held by one node",
        format!("{gauge_end:.0} held after {} s", hold_for.as_secs()),
        gauge_end >= 15_000.0,
    );
    report.budget("≤ 20 KiB server memory per connection", format!("{per_conn_kib:.1} KiB"), per_conn_kib <= 20.0);
    report.note("memory per socket = (server VmRSS with all sockets open − VmRSS before) / sockets; RSS also counts allocator slack");
    Ok(())
}
