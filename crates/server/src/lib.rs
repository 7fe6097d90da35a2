//! The Lastmile server: the HTTP/WebSocket edge and the wiring of every part into one
//! process — routes, authentication, rate limits, metrics, OpenAPI, the outbox relay, the
//! dispatcher loop, the realtime hub, GPS intake and the sync-back worker.
//!
//! Owns: request handling, background workers and their shutdown. Must not: contain SQL
//! (storage does), platform wire formats (ingest and connectors do) or matching logic
//! (dispatch does); handlers parse, call those crates, and answer.

pub mod admin;
pub mod archive;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod dispatcher;
pub mod error;
pub mod eta;
pub mod fuzzing;
pub mod geocoder;
pub mod gps;
pub mod http;
pub mod keyring;
pub mod limits;
pub mod nominatim;
pub mod openapi;
pub mod outbound;
pub mod payments;
pub mod realtime;
pub mod recovery;
pub mod relay;
pub mod routes;
pub mod serve;
pub mod spool;
pub mod state;
pub mod supervisor;
pub mod sync_worker;
pub mod telemetry;
pub mod web;
pub mod webhooks_out;

use anyhow::Context;
use config::Config;
use lastmile_bus::{EventBus, InProcessBus};
use lastmile_storage::{Db, DbOptions};
use state::AppState;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Connect and migrate the configured database, creating a SQLite file if needed.
pub async fn open_database(cfg: &Config) -> anyhow::Result<Db> {
    if let Some(path) = config::sqlite_path(&cfg.database_url) {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let opts = DbOptions {
        pg_writers: cfg.storage.pg_writers,
        max_batch: cfg.storage.max_batch,
        acquire_timeout_ms: cfg.storage.acquire_timeout_ms,
        ..DbOptions::default()
    };
    let db = Db::connect(&cfg.database_url, opts)
        .await
        .with_context(|| format!("connecting to {}", lastmile_storage::redact_url(&cfg.database_url)))?;
    db.migrate().await.context("running migrations")?;
    Ok(db)
}

pub fn load_keys(cfg: &Config) -> anyhow::Result<crypto::Keys> {
    let master = crypto::load_or_create_key(cfg.secret_key.as_ref().map(|s| s.expose()), &cfg.key_file())?;
    let previous =
        cfg.previous_secret_key.iter().map(|k| crypto::decode_key(k.expose())).collect::<Result<Vec<_>, _>>();
    Ok(crypto::Keys::with_previous(master, previous.map_err(anyhow::Error::msg)?))
}

/// The keys with the database's API-token signing keys loaded (what `build` and the
/// `lastmile admin` rotation commands use).
pub async fn load_keys_with_signing(cfg: &Config, db: &Db) -> anyhow::Result<crypto::Keys> {
    let keys = load_keys(cfg)?;
    keys.load_signing_keys(db, cfg.token_ttl_s).await.context("loading the API-token signing keys")?;
    Ok(keys)
}

/// A bound, ready server: `addr` is known (port 0 works) before `run` is called.
pub struct App {
    pub addr: SocketAddr,
    pub state: AppState,
    listener: TcpListener,
}

pub async fn build(cfg: Config) -> anyhow::Result<App> {
    let db = open_database(&cfg).await?;
    let keys = load_keys_with_signing(&cfg, &db).await?;
    let bus: Arc<dyn EventBus> = if cfg.bus.starts_with("nats://") {
        Arc::new(lastmile_bus::nats::NatsBus::connect(&cfg.bus).await.context("connecting to NATS JetStream")?)
    } else {
        Arc::new(InProcessBus::default())
    };
    let cluster = if cfg.bus.starts_with("nats://") {
        cluster::Cluster::connect(&cfg.cluster, &cfg.bus).await.context("connecting to NATS for the cluster")?
    } else {
        cluster::Cluster::single(&cfg.cluster)
    };
    let listener = TcpListener::bind(&cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let limits = limits::Limits::new(
        cfg.rate_limit_per_second,
        cfg.rate_limit_burst,
        cfg.store_intake_per_second,
        cfg.store_intake_concurrency,
        std::time::Duration::from_millis(cfg.store_intake_queue_ms),
    );
    let connectors = sync_worker::connector_hub(&cfg);
    let hub = realtime::Hub::new();
    let fleet = dispatcher::LiveFleet::new();
    let geocoder = Arc::new(geocoder::Geocoder::from_config(&cfg.geocoding, &db).await?);
    let outage = spool::Outage::open(&cfg).await?;
    let etas = eta::Etas::from_config(&cfg).await?;
    let state = AppState {
        db,
        cfg: Arc::new(cfg),
        keys: Arc::new(keys),
        bus,
        hub,
        fleet,
        clock: clock::Clock::new(),
        limits: Arc::new(limits),
        connectors,
        metrics: telemetry::metrics_handle(),
        web: web::WebState::default(),
        catalog: catalog::Catalog::default(),
        geocoder,
        etas,
        cluster,
        workers: supervisor::Workers::default(),
        outage,
        webhook_stores: Default::default(),
    };
    Ok(App { addr, state, listener })
}

impl App {
    /// Serve until `shutdown` fires; background workers stop with it and finish in-flight work.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let App { addr, state, listener } = self;
        tracing::info!(%addr, node = state.cluster.node_id(), bus = state.bus.name(), db = if state.db.is_postgres() { "postgres" } else { "sqlite" }, "lastmile listening");
        state.fleet.load(&state.db).await.context("loading drivers into the live index")?;
        state.catalog.load(&state.db).await.context("building the catalog index")?;
        state.etas.load(&state.db).await.context("loading learned ETAs")?;
        let mut workers = tokio::task::JoinSet::new();
        let sup = state.workers.clone();
        let (db, bus, stop) = (state.db.clone(), state.bus.clone(), shutdown.clone());
        sup.supervise(&mut workers, "relay", shutdown.clone(), move || {
            relay::run(db.clone(), bus.clone(), stop.clone())
        });
        sup.supervise_with(&mut workers, "bus-listener", &state, &shutdown, realtime::run_bus_listener);
        sup.supervise_with(&mut workers, "gps-flusher", &state, &shutdown, gps::run_flusher);
        if state.cfg.dispatch.enabled {
            sup.supervise_with(&mut workers, "dispatcher", &state, &shutdown, dispatcher::run);
            sup.supervise_with(&mut workers, "recovery", &state, &shutdown, recovery::run);
        }
        if state.cfg.sync.enabled {
            sup.supervise_with(&mut workers, "sync", &state, &shutdown, sync_worker::run);
        }
        cluster::spawn_workers(&mut workers, &state, &shutdown);
        if state.cfg.webhooks.enabled {
            sup.supervise_with(&mut workers, "webhooks-out", &state, &shutdown, webhooks_out::run);
        }
        sup.supervise_with(&mut workers, "retention", &state, &shutdown, relay::run_retention);
        if state.outage.has_spool() {
            sup.supervise_with(&mut workers, "spool", &state, &shutdown, spool::run);
        }
        let (catalog, db, stop) = (state.catalog.clone(), state.db.clone(), shutdown.clone());
        sup.supervise(&mut workers, "catalog", shutdown.clone(), move || {
            catalog.clone().run_refresher(db.clone(), stop.clone())
        });
        let (etas, db, stop) = (state.etas.clone(), state.db.clone(), shutdown.clone());
        sup.supervise(&mut workers, "eta", shutdown.clone(), move || {
            etas.clone().run_refresher(db.clone(), stop.clone())
        });
        if state.cfg.geocoding.worker_enabled && state.geocoder.is_configured() {
            sup.supervise_with(&mut workers, "geocoder", &state, &shutdown, geocoder::run);
        } else if state.cfg.geocoding.worker_enabled {
            tracing::info!("no geocoding.osm_pbf or geocoding.url: orders without coordinates wait for PATCH");
        }
        let app = http::router(state.clone());
        let graceful = shutdown.clone();
        let served =
            serve::serve(listener, app, state.cfg.edge.limits(), graceful, std::time::Duration::from_secs(10)).await;
        shutdown.cancel();
        while let Some(done) = workers.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "worker ended abnormally");
            }
        }
        state.db.close().await;
        tracing::info!("lastmile stopped");
        served.context("serving HTTP")
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
