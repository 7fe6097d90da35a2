//! `lastmile`: the one binary. `serve` runs the server; `migrate` prepares the database;
//! `admin` manages tenants; `demo`, `sim` and `bench` drive a server through its public API.

use anyhow::Context;
use clap::{Parser, Subcommand};
use lastmile_server::config::Config;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "lastmile", version, about = "Open-source delivery backend")]
struct Cli {
    /// TOML configuration file (optional; LASTMILE_* environment variables override it).
    #[arg(long, global = true, env = "LASTMILE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTP API, dispatcher, realtime, sync-back).
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Tenant administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print the effective configuration (secrets redacted).
    Config,
    #[command(flatten)]
    Sim(lastmile_sim::cli::SimCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a tenant and print its first admin key (shown once).
    CreateTenant { name: String },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let load = || Config::load(cli.config.as_deref()).map_err(anyhow::Error::msg);
    // Called once logging is set up (or, for `config`, on stderr).
    let warn_ignored = || {
        for var in lastmile_server::config::ignored_env_vars() {
            tracing::warn!(variable = %var, "ignoring an environment variable that names no setting");
        }
    };
    match cli.command {
        Command::Serve => {
            let cfg = load()?;
            lastmile_server::telemetry::init_tracing(cfg.log_format);
            warn_ignored();
            let app = lastmile_server::build(cfg).await?;
            let shutdown = CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                lastmile_server::shutdown_signal().await;
                trigger.cancel();
            });
            app.run(shutdown).await
        }
        Command::Migrate => {
            let cfg = load()?;
            lastmile_server::telemetry::init_tracing(cfg.log_format);
            warn_ignored();
            let db = lastmile_server::open_database(&cfg).await?;
            db.close().await;
            eprintln!("database is up to date");
            Ok(())
        }
        Command::Admin { command: AdminCommand::CreateTenant { name } } => {
            let cfg = load()?;
            lastmile_server::telemetry::init_tracing(cfg.log_format);
            warn_ignored();
            let db = lastmile_server::open_database(&cfg).await?;
            let created = lastmile_server::admin::create_tenant(&db, &name).await.context("creating the tenant")?;
            db.close().await;
            println!("{}", serde_json::to_string_pretty(&created)?);
            Ok(())
        }
        Command::Config => {
            let cfg = load()?;
            for var in lastmile_server::config::ignored_env_vars() {
                eprintln!("warning: ignoring {var}: it names no setting");
            }
            print!("{}", cfg.to_redacted_toml()?);
            Ok(())
        }
        Command::Sim(cmd) => lastmile_sim::cli::run(cmd).await,
    }
}
