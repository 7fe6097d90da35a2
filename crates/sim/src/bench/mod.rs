//! `lastmile bench <scenario>`: repeatable load figures, each next to its budget from
//! DESIGN.md and, where one makes sense, a same-run baseline. The HTTP and WebSocket
//! scenarios start `lastmile serve` as a child process (so its memory can be read from
//! /proc) and drive it over loopback; `knn` and `assignment` time the pure dispatch crate.
//! Client and server share this machine's cores, and every report says so.

mod catalog;
mod city_sim;
mod connections;
mod geocode;
mod ingest;
mod knn;
mod load;
mod offers;
mod quality;
mod report;
mod server;
mod ws;

pub use report::{Budget, Measurement, Report};

use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Signed webhook intake vs a parse-only baseline route; p99 at half the peak rate.
    Ingest,
    /// Native `POST /v1/orders` (JWT + Idempotency-Key) vs the parse-only route.
    Orders,
    /// GPS updates over WebSocket into the live index, and time until applied.
    GpsWs,
    /// Order committed → offer on a connected driver's socket.
    OfferLatency,
    /// Idle driver WebSockets held by one server, and memory per connection.
    Connections,
    /// k-nearest queries on 100k drivers: DriverIndex vs Redis GEOSEARCH.
    Knn,
    /// Batched assignment: cost vs the Hungarian optimum, ms per batch.
    Assignment,
    /// A simulated city: order wait and driver idle wait, Optimal vs Greedy, same seed.
    City,
    /// The built-in geocoder: accuracy per writing style, lookups/s, index build time and memory.
    Geocode,
    /// Storefront menu reads (full and `If-None-Match`), at the peak and at 1,000 req/s.
    Menu,
    /// Storefront dish search with typos: rate, latency, and that each finds its dish.
    Search,
    /// The city on simulated time, in-process: order wait, driver wait and ETA error
    /// before/after learning, per strategy, mean and 95% CI over `--seeds` seeds.
    CitySim,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Seconds per measured phase (default depends on the scenario).
    #[arg(long)]
    pub duration: Option<u64>,
    /// A PostgreSQL URL: `ingest` adds a PostgreSQL pass next to SQLite; other scenarios run
    /// their server on it instead of a fresh SQLite file.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Requests in flight at once in closed-loop phases.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// `connections`: sockets to open and hold.
    #[arg(long, default_value_t = 15_000)]
    pub connections: usize,
    /// `gps-ws`: driver sockets sending fixes; `offer-latency`: connected drivers; `city`:
    /// fleet size; `assignment`: drivers per batch (default 5,000).
    #[arg(long)]
    pub drivers: Option<usize>,
    /// `offer-latency` and `city`: the dispatcher's matching tick, ms.
    #[arg(long, default_value_t = 500)]
    pub tick_ms: u64,
    /// `assignment`: orders per batch (default 1,000; above 10 M pairs the batch is judged
    /// against the certified lower bound instead of the dense optimum).
    #[arg(long)]
    pub orders: Option<usize>,
    /// `assignment`: threads one batch may use (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// `gps-ws`: also place native orders among the drivers at this rate per second, so
    /// matching runs over the live index while the fixes flow (the dispatcher is off without it).
    #[arg(long)]
    pub matching_orders_per_s: Option<f64>,
    /// `offer-latency`: the server's gathering window for event-started matching rounds, ms
    /// (default: the server's own).
    #[arg(long)]
    pub gather_ms: Option<u64>,
    /// `offer-latency`: orders per second.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// `city`: orders per minute over all stores (default 10).
    #[arg(long)]
    pub orders_per_minute: Option<f64>,
    /// `knn`: Redis address for the GEOSEARCH baseline.
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub redis: String,
    /// `knn`: drivers in the index.
    #[arg(long, default_value_t = 100_000)]
    pub points: usize,
    /// `knn`: neighbours asked for.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// `knn`: search radii in metres.
    #[arg(long, value_delimiter = ',', default_values_t = [2_000.0, 5_000.0])]
    pub radius_m: Vec<f64>,
    /// Seed for generated data and the `city` scenario (`city-sim`: the first seed).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// `city-sim`: seeds per configuration.
    #[arg(long, default_value_t = 20)]
    pub seeds: u64,
    /// `city-sim`: the dispatcher's `lead_s` (offer when the driver's travel time is at
    /// least the time to ready minus this).
    #[arg(long, default_value_t = 60.0)]
    pub lead_s: f64,
    /// The `lastmile` binary to run as the server (default: this executable).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
}

impl BenchArgs {
    pub fn phase(&self, default_s: u64) -> Duration {
        Duration::from_secs(self.duration.unwrap_or(default_s).max(1))
    }
}

pub async fn run(args: BenchArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut report = Report::new(&args);
    println!("lastmile bench {}: {}", report.scenario, report.machine.note);
    let outcome = match args.scenario {
        Scenario::Ingest => ingest::ingest(&args, &mut report, &shutdown).await,
        Scenario::Orders => ingest::orders(&args, &mut report, &shutdown).await,
        Scenario::GpsWs => ws::gps(&args, &mut report, &shutdown).await,
        Scenario::OfferLatency => offers::run(&args, &mut report, &shutdown).await,
        Scenario::Connections => connections::run(&args, &mut report, &shutdown).await,
        Scenario::Knn => knn::run(&args, &mut report, &shutdown).await,
        Scenario::Assignment => quality::assignment(&args, &mut report).await,
        Scenario::City => quality::city(&args, &mut report, &shutdown).await,
        Scenario::Geocode => geocode::run(&args, &mut report).await,
        Scenario::Menu => catalog::menu_reads(&args, &mut report, &shutdown).await,
        Scenario::Search => catalog::search(&args, &mut report, &shutdown).await,
        Scenario::CitySim => city_sim::run(&args, &mut report),
    };
    if let Err(e) = outcome {
        report.notes.push(format!("the run stopped early: {e:#}"));
        report.print();
        write_json(&args, &report)?;
        return Err(e);
    }
    report.print();
    write_json(&args, &report)
}

fn write_json(args: &BenchArgs, report: &Report) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}
