//! `lastmile`: the one binary. `serve` runs the server; `migrate` prepares the database;
//! `admin` manages tenants and console users; `archive` moves finished orders to Parquet;
//! `demo`, `sim` and `bench` drive a server through its public API.

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
    /// Move finished orders (with items, events and proof) to Parquet files and out of
    /// the live tables; `archive verify DIR` checks an archive (see docs/operations.md).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Archive {
        #[command(subcommand)]
        command: Option<ArchiveCommand>,
        /// Archive orders that finished before this day (YYYY-MM-DD, UTC; today at the latest).
        #[arg(long, required = true)]
        before: Option<String>,
        /// The archive directory (created if missing; later runs add files beside earlier ones).
        #[arg(long, required = true)]
        out: Option<PathBuf>,
    },
    /// Print the effective configuration (secrets redacted).
    Config,
    /// The built-in geocoder's address index.
    Geocode {
        #[command(subcommand)]
        command: GeocodeCommand,
    },
    #[command(flatten)]
    Sim(lastmile_sim::cli::SimCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a tenant and print its first admin key (shown once).
    CreateTenant { name: String },
    /// Create a console user (signs in at /console/ with email and password).
    CreateUser {
        /// The tenant's id (`ten_...`, as `create-tenant` printed it).
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        /// admin (everything), dispatcher (orders, drivers, dead letters) or viewer (read only).
        #[arg(long, default_value = "dispatcher")]
        role: String,
        /// The password; when unset, one is generated and printed once.
        #[arg(long, env = "LASTMILE_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Make a new API-token signing key current. Tokens signed with the previous key stay
    /// valid until they expire; running servers pick the new key up without a restart.
    RotateJwtKey,
    /// Re-seal every stored secret with the configured `secret_key`, opening those sealed
    /// with `previous_secret_key` (see docs/operations.md). Safe while servers run.
    RotateSecretKey,
}

#[derive(Subcommand)]
enum ArchiveCommand {
    /// Re-read every file of an archive and check it against the manifests; exits non-zero
    /// on any mismatch, missing or unlisted file. Needs no database.
    Verify { dir: PathBuf },
}

#[derive(Subcommand)]
enum GeocodeCommand {
    /// Build the address index from an extract (default: `geocoding.osm_pbf`), check it
    /// and print what it holds; with addresses, geocode them too.
    Import {
        /// The `.osm.pbf` extract; overrides `geocoding.osm_pbf`.
        #[arg(long)]
        osm_pbf: Option<PathBuf>,
        /// Addresses to try against the index.
        addresses: Vec<String>,
    },
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
        Command::Admin { command: AdminCommand::CreateUser { tenant, email, role, password } } => {
            let cfg = load()?;
            lastmile_server::telemetry::init_tracing(cfg.log_format);
            let db = lastmile_server::open_database(&cfg).await?;
            let tenant = lastmile_core::TenantId(tenant);
            db.get_tenant(&tenant).await.with_context(|| format!("no tenant {}", tenant.as_str()))?;
            let generated = password.is_none();
            let password = password.unwrap_or_else(|| lastmile_server::crypto::new_token("pw"));
            let user = lastmile_server::routes::console::create_user(&db, &tenant, &email, &password, &role)
                .await
                .map_err(|e| match e.details.get("fields") {
                    Some(fields) => anyhow::anyhow!("{} ({}): {fields}", e.message, e.code),
                    None => anyhow::anyhow!("{} ({})", e.message, e.code),
                })?;
            db.close().await;
            let mut out =
                serde_json::json!({"user_id": user.id, "tenant_id": tenant, "email": user.email, "role": user.role});
            if generated {
                out["password"] = serde_json::json!(password);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Command::Admin { command: AdminCommand::RotateJwtKey } => {
            let cfg = load()?;
            lastmile_server::telemetry::init_tracing(cfg.log_format);
            warn_ignored();
            let db = lastmile_server::open_database(&cfg).await?;
            let keys = lastmile_server::load_keys(&cfg)?;
            let kid = lastmile_server::keyring::rotate_jwt_key(&db, &keys, cfg.token_ttl_s)
                .await
                .context("rotating the API-token signing key")?;
            db.close().await;
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({"kid": kid}))?);
            Ok(())
        }
        Command::Admin { command: AdminCommand::RotateSecretKey } => {
            let cfg = load()?;
            lastmile_server::telemetry::init_tracing(cfg.log_format);
            warn_ignored();
            let db = lastmile_server::open_database(&cfg).await?;
            let keys = lastmile_server::load_keys(&cfg)?;
            let report = lastmile_server::keyring::rotate_secret_key(&db, &keys, cfg.token_ttl_s)
                .await
                .context("re-sealing stored secrets")?;
            db.close().await;
            println!("{}", serde_json::to_string_pretty(&report)?);
            anyhow::ensure!(
                report.failed.is_empty(),
                "{} stored secrets could not be opened with secret_key or previous_secret_key",
                report.failed.len()
            );
            Ok(())
        }
        Command::Archive { command: Some(ArchiveCommand::Verify { dir }), .. } => {
            lastmile_server::archive::verify(&dir)
        }
        Command::Archive { command: None, before, out } => {
            let cfg = load()?;
            lastmile_server::telemetry::init_tracing(cfg.log_format);
            warn_ignored();
            let (before, out) = before.zip(out).context("give --before DATE and --out DIR")?;
            lastmile_server::archive::run(&cfg, &before, &out).await
        }
        Command::Config => {
            let cfg = load()?;
            for var in lastmile_server::config::ignored_env_vars() {
                eprintln!("warning: ignoring {var}: it names no setting");
            }
            print!("{}", cfg.to_redacted_toml()?);
            Ok(())
        }
        Command::Geocode { command: GeocodeCommand::Import { osm_pbf, addresses } } => {
            let cfg = load()?;
            let path = osm_pbf.or(cfg.geocoding.osm_pbf).context("give --osm-pbf or set geocoding.osm_pbf")?;
            geocode_import(path, &addresses).await
        }
        Command::Sim(cmd) => lastmile_sim::cli::run(cmd).await,
    }
}

/// `lastmile geocode import`: build the index as the server would, and report on it.
async fn geocode_import(path: PathBuf, addresses: &[String]) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let index = lastmile_server::geocoder::load_index(path.clone()).await?;
    let s = index.stats();
    anyhow::ensure!(s.addresses > 0, "{} holds no addresses (addr:street + addr:housenumber)", path.display());
    println!("extract                {}", path.display());
    println!("address points         {}", s.address_points);
    println!("addresses              {}", s.addresses);
    println!("streets                {}", s.streets);
    println!("streets with geometry  {}", s.streets_with_geometry);
    println!("names and aliases      {}", s.names);
    println!("typo keys              {}", s.typo_keys);
    println!("built in               {} ms", started.elapsed().as_millis());
    for q in addresses {
        match index.lookup(q) {
            Some(m) => println!(
                "{q:?} -> {:.6},{:.6} confidence {:.2} ({}) {:?}",
                m.point.lat,
                m.point.lng,
                m.confidence,
                m.kind.as_str(),
                m.matched
            ),
            None => println!("{q:?} -> not found"),
        }
    }
    Ok(())
}
