//! `lastmile demo`: a real server, started in this process on an embedded SQLite database
//! in a fresh folder, with a simulated Helsinki run against it through the public API.

use crate::city::{run_city, Outcome, RunOptions};
use crate::scenario::CityConfig;
use anyhow::Context;
use lastmile_server::config::{Config, LogFormat, MatcherKind};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub city: CityConfig,
    /// Stop sending orders after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// After the orders stop, give drivers up to this many seconds to finish deliveries in hand.
    #[arg(long, default_value_t = 60)]
    pub drain: u64,
    /// Folder for the database and key (default: a new `lastmile-demo-<time>` in the temp dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the demo server listens; if this is taken, any free port is used instead.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    pub progress_every: u64,
    /// Matcher the server's dispatcher uses.
    #[arg(long, value_enum, default_value_t = Matcher::Optimal)]
    pub matcher: Matcher,
    /// A different `.osm.pbf` road network (default: the embedded Helsinki extract).
    #[arg(long)]
    pub map: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Matcher {
    Optimal,
    Greedy,
}

impl From<Matcher> for MatcherKind {
    fn from(m: Matcher) -> Self {
        match m {
            Matcher::Optimal => MatcherKind::Optimal,
            Matcher::Greedy => MatcherKind::Greedy,
        }
    }
}

/// A server running inside this process, with a tenant to use it.
pub struct DemoServer {
    pub base: String,
    pub admin_key: String,
    pub tenant_id: String,
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A server configuration on a SQLite file in `dir`.
pub fn sqlite_config(dir: &Path, listen: &str) -> Config {
    Config {
        listen: listen.to_owned(),
        database_url: format!("sqlite://{}", dir.join("lastmile.db").display()),
        secret_key_file: Some(dir.join("lastmile.key")),
        log_format: LogFormat::Pretty,
        // The demo's platform stand-ins listen on 127.0.0.1.
        allow_private_urls: true,
        ..Config::default()
    }
}

impl DemoServer {
    /// Build and start a server on `cfg`; if its port is taken, on any free port.
    pub async fn start(mut cfg: Config, data_dir: PathBuf) -> anyhow::Result<DemoServer> {
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let app = match lastmile_server::build(cfg.clone()).await {
            Ok(app) => app,
            Err(e) if !cfg.listen.ends_with(":0") => {
                eprintln!("{} is not available ({e:#}); using a free port", cfg.listen);
                let host = cfg.listen.rsplit_once(':').map(|(h, _)| h).unwrap_or("127.0.0.1");
                cfg.listen = format!("{host}:0");
                lastmile_server::build(cfg).await?
            }
            Err(e) => return Err(e),
        };
        let tenant = lastmile_server::admin::create_tenant(&app.state.db, "Lastmile demo")
            .await
            .context("creating the demo tenant")?;
        let base = format!("http://{}", app.addr);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));
        Ok(DemoServer { base, admin_key: tenant.admin_key, tenant_id: tenant.tenant_id, data_dir, shutdown, task })
    }

    /// Stop the server and wait for its workers to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("the server task panicked")?
    }
}

/// The extract the demo server geocodes with: `--map`, or the embedded Helsinki one
/// written into the data folder (the server reads `geocoding.osm_pbf` from a file).
fn demo_extract(dir: &Path, map: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(m) = map {
        return Ok(m.to_owned());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("helsinki.osm.pbf");
    std::fs::write(&path, crate::graph::HELSINKI_PBF).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn default_data_dir() -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    std::env::temp_dir().join(format!("lastmile-demo-{stamp}-{}", std::process::id()))
}

/// Start the server and run the city; the server is stopped before returning.
pub async fn run_demo(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<Outcome> {
    let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let mut cfg = sqlite_config(&dir, &args.listen);
    cfg.dispatch.matcher = args.matcher.into();
    // The web apps' maps draw the streets of the same extract, with no internet needed.
    cfg.web.osm_pbf = Some(match &args.map {
        Some(m) => m.clone(),
        None => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join("helsinki.osm.pbf");
            std::fs::write(&path, crate::graph::HELSINKI_PBF).with_context(|| format!("writing {}", path.display()))?;
            path
        }
    });
    // A demo's visitor may take a while to open the driver app link.
    cfg.web.login_code_ttl_s = 3600;
    cfg.geocoding.osm_pbf = Some(demo_extract(&dir, args.map.as_deref())?);
    let server = DemoServer::start(cfg, dir).await?;
    let quiet = args.progress_every == 0;
    if !quiet {
        let driver_link = match web_driver_link(&server).await {
            Ok(l) => l,
            Err(e) => format!("(unavailable: {e:#})"),
        };
        print_banner(&server, &driver_link);
    }
    let opts = RunOptions {
        duration: args.duration.map(Duration::from_secs),
        drain: Duration::from_secs(args.drain),
        progress_every: (!quiet).then(|| Duration::from_secs(args.progress_every)),
        max_orders: None,
        map: args.map.clone(),
    };
    let outcome = run_city(&server.base, &server.admin_key, args.city.clone(), opts, shutdown).await;
    let stopped = server.stop().await;
    let outcome = outcome?;
    stopped?;
    Ok(outcome)
}

/// A driver for a person to play, and the driver app link that signs them in.
async fn web_driver_link(s: &DemoServer) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let driver: serde_json::Value = http
        .post(format!("{}/v1/drivers", s.base))
        .bearer_auth(&s.admin_key)
        .json(&serde_json::json!({"name": "You (driver app)", "phone": "", "vehicle": "bike", "capacity": 2}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = driver["id"].as_str().context("driver id")?;
    let code: serde_json::Value = http
        .post(format!("{}/v1/drivers/{id}/login-code", s.base))
        .bearer_auth(&s.admin_key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(format!(
        "{}{}   (code {})",
        s.base,
        code["app_url"].as_str().unwrap_or("/driver/"),
        code["code"].as_str().unwrap_or("?")
    ))
}

fn print_banner(s: &DemoServer, driver_link: &str) {
    println!("Lastmile demo: a simulated Helsinki against a real server, through its public API only");
    println!("  console     {}/console/#key={}   (signed in at once)", s.base, s.admin_key);
    println!("  driver app  {driver_link}");
    println!("  API         {}   (OpenAPI: {}/openapi.json)", s.base, s.base);
    println!("  metrics     {}/metrics", s.base);
    println!("  admin key   {}   (tenant {})", s.admin_key, s.tenant_id);
    println!("  database    {}", s.data_dir.join("lastmile.db").display());
    println!(
        "  try         curl -s -H 'Authorization: Bearer {}' '{}/v1/orders?status=delivered&limit=5'",
        s.admin_key, s.base
    );
    println!("  stop        Ctrl-C (prints a summary)");
}

/// The `lastmile demo` command.
pub async fn command(args: DemoArgs) -> anyhow::Result<()> {
    crate::cli::init_quiet_tracing();
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("\nCtrl-C: stopping the simulation…");
        trigger.cancel();
    });
    let outcome = run_demo(args, shutdown).await?;
    println!("{}", outcome.snapshot.summary_text());
    for l in &outcome.tracking_links {
        println!("  tracking link: {l}");
    }
    Ok(())
}
