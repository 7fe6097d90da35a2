//! Running a simulated city against a server: set it up through the admin API (stores
//! with their webhook secrets, drivers, an API client), release the drivers and the
//! stores, report progress, and stop on time or on request with a summary.

use crate::client::Api;
use crate::driver::{self, Fleet};
use crate::graph::RoadGraph;
use crate::scenario::{CityConfig, Scenario, Source};
use crate::stats::{SimStats, Snapshot};
use crate::store::{self, Storefront};
use anyhow::Context;
use futures::StreamExt;
use lastmile_core::Platform;
use lastmile_standins::StandIn;
use reqwest::Method;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stop sending orders after this long (None: until `shutdown`).
    pub duration: Option<Duration>,
    /// After the orders stop, let drivers finish deliveries in hand for at most this long.
    pub drain: Duration,
    /// Print a progress line this often (None: quiet).
    pub progress_every: Option<Duration>,
    /// Stop after this many orders.
    pub max_orders: Option<u64>,
    /// Another `.osm.pbf` instead of the embedded Helsinki extract.
    pub map: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            duration: None,
            drain: Duration::from_secs(0),
            progress_every: Some(Duration::from_secs(5)),
            max_orders: None,
            map: None,
        }
    }
}

/// How a run went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub snapshot: Snapshot,
    pub store_ids: Vec<String>,
    pub tracking_links: Vec<String>,
}

pub fn load_graph(map: Option<&std::path::Path>) -> anyhow::Result<RoadGraph> {
    match map {
        Some(p) => RoadGraph::from_pbf_file(p),
        None => RoadGraph::helsinki(),
    }
}

/// The map's address index: customers live at its real addresses.
pub fn load_addresses(map: Option<&std::path::Path>) -> anyhow::Result<lastmile_geo::AddressIndex> {
    match map {
        Some(p) => lastmile_geo::AddressIndex::from_pbf_file(p),
        None => lastmile_geo::AddressIndex::from_pbf_bytes(crate::graph::HELSINKI_PBF),
    }
}

/// Create the scenario's stores, drivers and (for native orders) an API client.
async fn set_up(api: &Api, admin: &str, scenario: &Scenario) -> anyhow::Result<SetUp> {
    // Every store's platform API is served by the simulator on 127.0.0.1 (the server must
    // allow private URLs): BigCommerce callbacks only name an order, which the server reads
    // from it, and sync-back reports pickups and deliveries to it.
    let platform_apis = PlatformApis::start(scenario.stores.iter().map(|s| s.source)).await;
    // Each order costs its store two syncs of 2-3 API calls. Past ~15 orders a minute a
    // store outgrows a standard plan's API budget (Shopify: 2 requests/s), so stores that
    // busy are created on the enterprise tier, as such a merchant would be.
    let per_store = scenario.cfg.orders_per_minute / scenario.stores.len().max(1) as f64;
    let tier = if per_store > 15.0 { "enterprise" } else { "standard" };
    let mut store_ids = Vec::with_capacity(scenario.stores.len());
    let mut menus = Vec::with_capacity(scenario.stores.len());
    for s in &scenario.stores {
        let mut body = json!({
            "name": s.name, "platform": s.source.platform(), "platform_store_id": s.identity,
            "webhook_secret": s.secret, "tier": tier,
            "pickup": {"lat": s.point.lat, "lng": s.point.lng, "address": s.address},
        });
        let plain = body.clone();
        if let Some(credentials) = platform_apis.credentials(s.source) {
            body["api"] = credentials;
        }
        let id = match api.create_store(admin, &body).await {
            // A server that refuses private URLs still takes Shopify and WooCommerce
            // orders; only their sync-back then has nowhere to go.
            Err(e) if e.to_string().contains("allow_private_urls") && s.source != Source::Bigcommerce => {
                tracing::warn!(store = %s.name, "the server refuses private URLs: this store has no platform API");
                api.create_store(admin, &plain).await
            }
            other => other,
        };
        let id = id.with_context(|| format!("creating store {}", s.name))?;
        menus.push(match s.source {
            Source::Restaurant => publish_menu(api, admin, &id, &scenario.cfg).await?,
            _ => HashMap::new(),
        });
        store_ids.push(id);
    }
    let tokens: Vec<anyhow::Result<(usize, String)>> = futures::stream::iter(scenario.drivers.iter())
        .map(|d| async move {
            let (_, token) = api.create_driver(admin, &d.name, &d.phone, d.vehicle).await?;
            Ok((d.index, token))
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut by_index = vec![String::new(); scenario.drivers.len()];
    for t in tokens {
        let (i, token) = t.context("creating drivers")?;
        by_index[i] = token;
    }
    let jwt = if scenario.stores.iter().any(|s| matches!(s.source, Source::Native | Source::Restaurant)) {
        Some(api.api_client_token(admin, "lastmile-sim").await?)
    } else {
        None
    };
    Ok(SetUp { store_ids, tokens: by_index, jwt, platform_apis, menus })
}

/// What [`set_up`] made on the server (and the stores' platform APIs, kept running).
struct SetUp {
    store_ids: Vec<String>,
    tokens: Vec<String>,
    jwt: Option<String>,
    platform_apis: PlatformApis,
    /// Per store: a restaurant's dishes, SKU → item id (empty for other stores).
    menus: Vec<HashMap<String, String>>,
}

/// A restaurant publishes its menu; returns its dishes' ids by SKU.
async fn publish_menu(
    api: &Api,
    admin: &str,
    store_id: &str,
    cfg: &crate::scenario::CityConfig,
) -> anyhow::Result<HashMap<String, String>> {
    let menu = crate::scenario::restaurant_menu(cfg);
    let a = api.call(Method::PUT, &format!("/v1/stores/{store_id}/menu"), admin, Some(&menu)).await?;
    anyhow::ensure!(a.ok(), "publishing the menu of {store_id}: {} {}", a.status, a.body);
    let dishes =
        a.body["categories"].as_array().into_iter().flatten().flat_map(|c| c["items"].as_array().into_iter().flatten());
    Ok(dishes.filter_map(|d| Some((d["sku"].as_str()?.to_owned(), d["id"].as_str()?.to_owned()))).collect())
}

/// The platform APIs the simulated stores run, one per platform in the scenario.
#[derive(Clone, Default)]
pub struct PlatformApis {
    shopify: Option<Arc<StandIn>>,
    woocommerce: Option<Arc<StandIn>>,
    bigcommerce: Option<Arc<StandIn>>,
}

impl PlatformApis {
    async fn start(sources: impl Iterator<Item = Source>) -> Self {
        let mut apis = Self::default();
        for source in sources {
            let (slot, platform) = match source {
                Source::Shopify => (&mut apis.shopify, Platform::Shopify),
                Source::Woocommerce => (&mut apis.woocommerce, Platform::Woocommerce),
                Source::Bigcommerce => (&mut apis.bigcommerce, Platform::Bigcommerce),
                Source::Native | Source::Restaurant => continue,
            };
            if slot.is_none() {
                *slot = Some(Arc::new(StandIn::start(platform).await));
            }
        }
        apis
    }

    fn get(&self, source: Source) -> Option<&StandIn> {
        match source {
            Source::Shopify => self.shopify.as_deref(),
            Source::Woocommerce => self.woocommerce.as_deref(),
            Source::Bigcommerce => self.bigcommerce.as_deref(),
            Source::Native | Source::Restaurant => None,
        }
    }

    /// The `api` object of a store of `source` (its base URL and credentials).
    fn credentials(&self, source: Source) -> Option<serde_json::Value> {
        let api = self.get(source)?;
        Some(match source {
            Source::Woocommerce => json!({"base_url": api.base_url(), "consumer_key": lastmile_standins::CONSUMER_KEY,
                "consumer_secret": lastmile_standins::CONSUMER_SECRET}),
            _ => json!({"base_url": api.base_url(), "access_token": lastmile_standins::ACCESS_TOKEN}),
        })
    }

    /// Open the order at its platform before the store sends its webhook, as a real
    /// store's order exists before it is announced; BigCommerce orders ship to `address`.
    pub fn seed(&self, source: Source, platform_order_id: &str, address: impl FnOnce() -> serde_json::Value) {
        let Some(api) = self.get(source) else { return };
        match source {
            Source::Shopify => api.seed_order(platform_order_id, "OPEN"),
            Source::Woocommerce => api.seed_order(platform_order_id, "processing"),
            // Awaiting Fulfillment, shipping to the customer's street address.
            Source::Bigcommerce => api.seed_bigcommerce_order(platform_order_id, "11", address()),
            Source::Native | Source::Restaurant => {}
        }
    }
}

/// Tracking pages of the first orders (looked up through the admin API).
async fn tracking_links(api: &Api, admin: &str, stats: &SimStats) -> Vec<String> {
    let ids = stats.first_orders.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut links = Vec::new();
    for id in ids {
        if let Ok(a) = api.call(Method::GET, &format!("/v1/orders/{id}"), admin, None).await {
            if let Some(t) = a.str("tracking_token") {
                links.push(api.url(&format!("/track/{t}")));
            }
        }
    }
    links
}

/// Run a city against `base` (an API base URL) with a tenant's admin key.
pub async fn run_city(
    base: &str,
    admin_key: &str,
    cfg: CityConfig,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Outcome> {
    let say = |line: String| {
        if opts.progress_every.is_some() {
            println!("{line}");
        }
    };
    let graph = load_graph(opts.map.as_deref())?;
    let run_salt = chrono::Utc::now().timestamp_millis() as u64;
    let run_tag = format!("{:x}", run_salt & 0xFF_FFFF_FFFF);
    let addresses = crate::scenario::dropoff_addresses(&load_addresses(opts.map.as_deref())?);
    let scenario = Arc::new(Scenario::new(cfg, graph, &run_tag)?.with_addresses(&addresses));
    say(format!(
        "map: {} road nodes, {} directed edges (© OpenStreetMap contributors, ODbL 1.0)",
        scenario.graph.len(),
        scenario.graph.edge_count()
    ));
    let api = Api::new(base)?;
    let SetUp { store_ids, tokens, jwt, platform_apis, menus } = set_up(&api, admin_key, &scenario).await?;
    say(format!(
        "set up {} stores ({}) and {} drivers; seed {}",
        store_ids.len(),
        scenario.stores.iter().map(|s| s.source.name()).collect::<Vec<_>>().join(", "),
        tokens.len(),
        scenario.cfg.seed
    ));

    let stats = Arc::new(SimStats::default());
    let drivers_stop = CancellationToken::new();
    let orders_stop = shutdown.child_token();
    let fleet =
        Fleet { scenario: scenario.clone(), api: api.clone(), stats: stats.clone(), shutdown: drivers_stop.clone() };
    let mut drivers = tokio::task::JoinSet::new();
    for (spec, token) in scenario.drivers.iter().cloned().zip(tokens) {
        drivers.spawn(driver::drive(fleet.clone(), spec, token));
    }
    let front = Storefront {
        scenario: scenario.clone(),
        api: api.clone(),
        stats: stats.clone(),
        admin_key: admin_key.to_owned(),
        store_ids: Arc::new(store_ids.clone()),
        client_jwt: jwt,
        run_salt,
        platform_apis,
        menus: Arc::new(menus),
    };
    let sender = tokio::spawn(store::run(front, opts.max_orders, orders_stop.clone()));

    let started = Instant::now();
    let mut links: Vec<String> = Vec::new();
    let every = opts.progress_every.unwrap_or(Duration::from_secs(1));
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let until_deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = &mut until_deadline, if draining.is_none() => {
                orders_stop.cancel();
                if opts.drain.is_zero() { break; }
                say(format!("orders stopped; letting drivers finish for up to {:.0} s", opts.drain.as_secs_f64()));
                draining = Some(tokio::time::Instant::now() + opts.drain);
            }
            _ = progress.tick() => {
                let snap = stats.snapshot(started.elapsed());
                if links.is_empty() && snap.received > 0 && opts.progress_every.is_some() {
                    links = tracking_links(&api, admin_key, &stats).await;
                    for l in &links {
                        say(format!("track: {l}"));
                    }
                }
                say(snap.progress_line());
                if let Some(end) = draining {
                    let in_hand = snap.accepted.saturating_sub(snap.delivered);
                    if tokio::time::Instant::now() >= end || in_hand == 0 { break; }
                }
            }
        }
    }
    orders_stop.cancel();
    let _ = sender.await;
    drivers_stop.cancel();
    while drivers.join_next().await.is_some() {}
    if links.is_empty() {
        links = tracking_links(&api, admin_key, &stats).await;
    }
    Ok(Outcome { snapshot: stats.snapshot(started.elapsed()), store_ids, tracking_links: links })
}
