//! `lastmile demo | sim | bench`: the simulator's subcommands, flattened into the
//! `lastmile` binary's command line.

use crate::bench::BenchArgs;
use crate::city::{run_city, RunOptions};
use crate::demo::DemoArgs;
use crate::scenario::CityConfig;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// Start a server on a fresh SQLite database and run a simulated city against it.
    Demo(Box<DemoArgs>),
    /// Run the simulated city against a running server, through its public API.
    Sim(Box<SimArgs>),
    /// Measure a path against its budget: ingest, orders, gps-ws, offer-latency,
    /// connections, knn, assignment, city, city-sim (simulated time, many seeds).
    Bench(Box<BenchArgs>),
}

#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub target: String,
    /// An admin key of the tenant to simulate in (`lastmile admin create-tenant`).
    #[arg(long, env = "LASTMILE_ADMIN_KEY")]
    pub admin_key: String,
    #[command(flatten)]
    pub city: CityConfig,
    /// Stop sending orders after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// After the orders stop, give drivers up to this many seconds to finish deliveries in hand.
    #[arg(long, default_value_t = 60)]
    pub drain: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    pub progress_every: u64,
    /// A different `.osm.pbf` road network (default: the embedded Helsinki extract).
    #[arg(long)]
    pub map: Option<PathBuf>,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Logs stay quiet (warnings only) unless `RUST_LOG` asks for more: the simulator's own
/// output is the progress lines. The demo's stores have no platform API to report
/// fulfilment to, so the sync-back connectors' "did not land" warnings are left out.
pub fn init_quiet_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error,lastmile_connectors=error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn ctrl_c_token() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("\nCtrl-C: stopping…");
        trigger.cancel();
    });
    shutdown
}

pub async fn run(cmd: SimCommand) -> anyhow::Result<()> {
    match cmd {
        SimCommand::Demo(args) => crate::demo::command(*args).await,
        SimCommand::Sim(args) => {
            init_quiet_tracing();
            let opts = RunOptions {
                duration: args.duration.map(Duration::from_secs),
                drain: Duration::from_secs(args.drain),
                progress_every: Some(Duration::from_secs(args.progress_every.max(1))),
                max_orders: None,
                map: args.map.clone(),
            };
            println!("simulating against {} (client of the public API only)", args.target);
            let outcome = run_city(&args.target, &args.admin_key, args.city.clone(), opts, ctrl_c_token()).await?;
            println!("{}", outcome.snapshot.summary_text());
            for l in &outcome.tracking_links {
                println!("  tracking link: {l}");
            }
            if let Some(path) = &args.json {
                std::fs::write(path, serde_json::to_vec_pretty(&outcome)?)?;
            }
            Ok(())
        }
        SimCommand::Bench(args) => {
            init_quiet_tracing();
            crate::bench::run(*args, ctrl_c_token()).await
        }
    }
}
