//! `bench menu` and `bench search`: the storefront's reads over HTTP, as a storefront makes
//! them (client JWT), against restaurants with full menus. `menu`: a whole menu, then the
//! same with `If-None-Match` (304), at the peak, at half the peak and at a fixed 1,000
//! requests/s, beside a bare axum route returning the same bytes in the same run; then
//! catalog orders (dishes by id, prices and stock from the menu) at 2,000 a minute; `search`:
//! dish searches as people type them (typos included), each counted only when it finds a
//! dish. Both next to `/healthz` in the same run as the floor of what one GET costs here.

use super::load::{closed_loop, open_loop, LoadResult, Request};
use super::report::{Measurement, Report};
use super::server::{ServerProcess, ServerSpec};
use super::BenchArgs;
use crate::client::Api;
use futures::FutureExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const RESTAURANTS: usize = 24;
const DISHES_PER_CATEGORY: usize = 12;

/// (cuisine, category, dish names) of the generated restaurants.
const KITCHENS: &[(&str, &str, &[&str])] = &[
    ("turkish", "Kebabs", &["Adana Kebab", "Döner Kebab", "Iskender Kebab", "Lahmacun", "Shish Kebab", "Falafel Wrap"]),
    (
        "italian",
        "Pizza",
        &["Margherita Pizza", "Pepperoni Pizza", "Quattro Formaggi", "Calzone", "Lasagne", "Tiramisu"],
    ),
    ("japanese", "Sushi", &["Salmon Nigiri", "Tuna Maki", "California Roll", "Miso Soup", "Chicken Teriyaki", "Ramen"]),
    (
        "finnish",
        "Home cooking",
        &["Salmon Soup", "Karelian Pie", "Meatballs", "Reindeer Stew", "Rye Bread", "Blueberry Pie"],
    ),
    (
        "american",
        "Burgers",
        &["Cheeseburger", "Bacon Burger", "Veggie Burger", "Chicken Wings", "French Fries", "Milkshake"],
    ),
];

/// Searches as typed, each with a word the right dish contains.
const QUERIES: &[(&str, &str)] = &[
    ("kebab", "kebab"),
    ("kebap", "kebab"),
    ("kabob", "kebab"),
    ("pizza", "pizza"),
    ("piza", "pizza"),
    ("margarita", "margherita"),
    ("sushi", "sushi"),
    ("nigri", "nigiri"),
    ("salmon soup", "soup"),
    ("salmn", "salmon"),
    ("burger", "burger"),
    ("cheesburger", "cheeseburger"),
    ("ramen", "ramen"),
    ("lasagna", "lasagne"),
];

fn menu(r: usize) -> Value {
    let (cuisine, category, names) = KITCHENS[r % KITCHENS.len()];
    let items: Vec<Value> = (0..DISHES_PER_CATEGORY * 5)
        .map(|i| {
            let name = names[i % names.len()];
            let size = ["", " (small)", " (large)", " (family)", " (lunch)"][i / DISHES_PER_CATEGORY % 5];
            json!({
                "sku": format!("R{r}-{i}"), "name": format!("{name}{size} {}", i / names.len() + 1),
                "description": format!("House {name} made to order, {cuisine} style."),
                "price_minor": 890 + (i as i64 * 37) % 1500, "currency": "EUR", "prep_time_s": 300 + (i as i64 % 6) * 120,
                "tags": if i % 4 == 0 { json!(["vegan"]) } else { json!([]) },
                "stock": {"kind": "count", "quantity": 1000},
            })
        })
        .collect();
    let categories: Vec<Value> = items
        .chunks(DISHES_PER_CATEGORY)
        .enumerate()
        .map(|(n, chunk)| json!({"name": format!("{category} {}", n + 1), "items": chunk}))
        .collect();
    json!({"cuisine": [cuisine], "categories": categories})
}

/// Restaurants around central Helsinki, each with a 60-dish menu; returns their ids.
async fn restaurants(api: &Api, admin: &str) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for r in 0..RESTAURANTS {
        let (lat, lng) = (60.160 + (r % 6) as f64 * 0.004, 24.920 + (r / 6) as f64 * 0.008);
        let body = json!({"name": format!("Restaurant {}", r + 1), "platform": "native",
            "platform_store_id": format!("bench-restaurant-{r}-{}", uuid::Uuid::new_v4().simple()),
            "webhook_secret": "bench-secret-0123", "pickup": {"lat": lat, "lng": lng, "address": "Helsinki"}});
        let id = api.create_store(admin, &body).await?;
        let res =
            api.send(api.http.put(api.url(&format!("/v1/stores/{id}/menu"))).bearer_auth(admin).json(&menu(r))).await?;
        anyhow::ensure!(res.ok(), "putting a menu failed: {} {}", res.status, res.body);
        ids.push(id);
    }
    Ok(ids)
}

struct Fixture {
    server: ServerProcess,
    api: Api,
    jwt: Arc<String>,
    stores: Arc<Vec<String>>,
}

async fn fixture(args: &BenchArgs) -> anyhow::Result<Fixture> {
    let spec = ServerSpec { bin: args.server_bin.clone(), database_url: args.database_url.clone(), env: vec![] }
        .set("LASTMILE_DISPATCH__ENABLED", false);
    let server = ServerProcess::start(&spec).await?;
    let api = Api::new(&server.base)?;
    let stores = Arc::new(restaurants(&api, &server.admin_key).await?);
    let jwt = Arc::new(api.api_client_token(&server.admin_key, "bench-storefront").await?);
    Ok(Fixture { server, api, jwt, stores })
}

fn healthz(api: &Api) -> Request {
    let api = api.clone();
    Arc::new(move |_| {
        let api = api.clone();
        async move { matches!(api.send(api.http.get(api.url("/healthz"))).await, Ok(a) if a.ok()) }.boxed()
    })
}

fn measure(report: &mut Report, db: &str, name: &str, r: &LoadResult) {
    report.add(
        Measurement::rate(format!("{db}: {name}"), r.rate(), Some(r.latency))
            .with(json!({"ok": r.ok, "failed": r.failed})),
    );
}

pub async fn menu_reads(args: &BenchArgs, report: &mut Report, stop: &CancellationToken) -> anyhow::Result<()> {
    let f = fixture(args).await?;
    let (d, c, db) = (args.phase(10), args.concurrency, f.server.database);
    // The ETags, read once: the conditional phase asks as a storefront with a cache does.
    let mut etags = Vec::new();
    for s in f.stores.iter() {
        let res =
            f.api.http.get(f.api.url(&format!("/v1/catalog/stores/{s}/menu"))).bearer_auth(&*f.jwt).send().await?;
        let tag = res.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let bytes = res.bytes().await?.len();
        etags.push((tag, bytes));
    }
    let menu_bytes = etags.iter().map(|(_, b)| *b).sum::<usize>() / etags.len().max(1);
    // The menus' bytes and dish ids, read once: the bare route serves the same bytes, and
    // catalog orders name the dishes by id.
    let mut bodies = Vec::new();
    let mut dishes = Vec::new();
    for s in f.stores.iter() {
        let bytes =
            f.api.http.get(f.api.url(&format!("/v1/catalog/stores/{s}/menu"))).bearer_auth(&*f.jwt).send().await?;
        let bytes = bytes.bytes().await?;
        let menu: Value = serde_json::from_slice(&bytes)?;
        let ids: Vec<String> = menu["categories"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["items"].as_array().into_iter().flatten())
            .filter_map(|i| i["id"].as_str().map(str::to_owned))
            .collect();
        anyhow::ensure!(!ids.is_empty(), "the menu of {s} lists no dish ids");
        dishes.push(ids);
        bodies.push(bytes);
    }
    let (bare_base, bare_server) = bare_route(bodies).await?;
    let etags = Arc::new(etags);
    let get = |conditional: bool| -> Request {
        let (api, jwt, stores, etags) = (f.api.clone(), f.jwt.clone(), f.stores.clone(), etags.clone());
        Arc::new(move |n| {
            let (api, jwt, stores, etags) = (api.clone(), jwt.clone(), stores.clone(), etags.clone());
            async move {
                let i = (n as usize * 7919) % stores.len();
                let mut req =
                    api.http.get(api.url(&format!("/v1/catalog/stores/{}/menu", stores[i]))).bearer_auth(&*jwt);
                if conditional {
                    req = req.header("If-None-Match", &etags[i].0);
                }
                match req.send().await {
                    Ok(r) if conditional => r.status().as_u16() == 304,
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok_and(|b| b.len() > 1000),
                    Err(_) => false,
                }
            }
            .boxed()
        })
    };
    closed_loop("warm-up", c, Duration::from_secs(2), get(false), stop).await;
    let floor = closed_loop("GET /healthz", c, d, healthz(&f.api), stop).await;
    let full = closed_loop("GET menu", c, d, get(false), stop).await;
    let cached = closed_loop("GET menu, If-None-Match", c, d, get(true), stop).await;
    let bare = closed_loop("bare route, same bytes", c, d, bare_get(&bare_base), stop).await;
    let half_rate = (full.rate() / 2.0).max(1.0);
    let half = open_loop(&format!("GET menu at {half_rate:.0}/s"), half_rate, d, 4096, get(false), stop).await;
    let fixed = open_loop("GET menu at 1000/s", 1000.0, d, 4096, get(false), stop).await;
    bare_server.abort();
    let orders = open_loop(
        "catalog orders at 2,000/min",
        ORDERS_PER_MINUTE / 60.0,
        d,
        4096,
        place_order(&f, Arc::new(dishes)),
        stop,
    )
    .await;
    let rss = f.server.rss_kib();
    f.server.stop().await;
    measure(report, db, "GET /healthz (same-run floor)", &floor);
    measure(report, db, &format!("GET /v1/catalog/stores/{{id}}/menu (peak; {menu_bytes} B, 60 dishes)"), &full);
    measure(report, db, "GET menu with If-None-Match → 304 (peak)", &cached);
    measure(report, db, &format!("GET menu at half the peak ({half_rate:.0} req/s)"), &half);
    measure(report, db, "GET menu at a fixed 1,000 req/s", &fixed);
    measure(report, db, "bare axum route, the same bytes (same-run ceiling)", &bare);
    measure(report, db, "POST /v1/orders, catalog dishes by id, at 2,000/min", &orders);
    if let Some(kib) = rss {
        report.add(Measurement::value("server RSS after the run", json!({"mib": kib as f64 / 1024.0})));
    }
    report.note(format!(
        "{RESTAURANTS} restaurants × 60 dishes; menus cycle over the restaurants; concurrency {c}; client and server share the machine"
    ));
    report.budget(
        "menu reads p99 < 200 ms at 1,000 req/s",
        format!("{:.1} ms", fixed.latency.p99_ms),
        fixed.latency.p99_ms < 200.0 && fixed.failed == 0,
    );
    report.budget(
        "menu reads ≥ 1,000 req/s (peak)",
        format!("{:.0}/s ({:.2}× the /healthz floor)", full.rate(), full.rate() / floor.rate().max(1e-9)),
        full.rate() >= 1000.0,
    );
    let ratio = full.rate() / bare.rate().max(1e-9);
    report.budget(
        "menu reads ≥ 0.5 × a bare route returning the same bytes",
        format!("{ratio:.2}× ({:.0}/s vs {:.0}/s)", full.rate(), bare.rate()),
        ratio >= 0.5,
    );
    report.budget(
        "menu reads p99 ≤ 5 ms at half the peak",
        format!("{:.1} ms at {half_rate:.0}/s", half.latency.p99_ms),
        half.latency.p99_ms <= 5.0 && half.failed == 0,
    );
    let per_minute = orders.ok as f64 / d.as_secs_f64().max(1e-9) * 60.0;
    report.budget(
        "catalog order placement ≥ 2,000/min sustained, every order placed",
        format!("{per_minute:.0}/min placed, {} failed, p99 {:.1} ms", orders.failed, orders.latency.p99_ms),
        orders.failed == 0 && per_minute >= ORDERS_PER_MINUTE * 0.98,
    );
    Ok(())
}

const ORDERS_PER_MINUTE: f64 = 2000.0;

/// An axum route on this process that returns the menus' bytes and nothing else: no auth,
/// no look-up, no ETag. Returns its base URL and the task serving it.
async fn bare_route(bodies: Vec<axum::body::Bytes>) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let bodies = Arc::new(bodies);
    let app = axum::Router::new().route(
        "/menu/{i}",
        axum::routing::get(move |axum::extract::Path(i): axum::extract::Path<usize>| {
            let bodies = bodies.clone();
            async move {
                let body = bodies[i % bodies.len()].clone();
                ([(axum::http::header::CONTENT_TYPE, "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((base, task))
}

fn bare_get(base: &str) -> Request {
    let (http, base) = (reqwest::Client::new(), base.to_owned());
    Arc::new(move |n| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let i = (n as usize * 7919) % RESTAURANTS;
            match http.get(format!("{base}/menu/{i}")).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok_and(|b| b.len() > 1000),
                Err(_) => false,
            }
        }
        .boxed()
    })
}

/// One catalog order per call: one or two dishes of a restaurant by id, a Helsinki door,
/// a fresh idempotency key; ok when the order is created (`201`).
fn place_order(f: &Fixture, dishes: Arc<Vec<Vec<String>>>) -> Request {
    let (api, jwt, stores) = (f.api.clone(), f.jwt.clone(), f.stores.clone());
    let run = uuid::Uuid::new_v4().simple().to_string();
    Arc::new(move |n| {
        let (api, jwt, stores, dishes, run) = (api.clone(), jwt.clone(), stores.clone(), dishes.clone(), run.clone());
        async move {
            let r = (n as usize * 31) % stores.len();
            let menu = &dishes[r];
            let mut items = vec![json!({"item_id": menu[(n as usize * 7) % menu.len()], "quantity": 1})];
            if n % 2 == 0 {
                items.push(json!({"item_id": menu[(n as usize * 13 + 1) % menu.len()], "quantity": 2}));
            }
            let body = json!({
                "store_id": stores[r],
                "customer": {"name": "Bench Customer", "phone": "+358401234567"},
                "dropoff": {"address": {"line1": "Mannerheimintie 10", "city": "Helsinki", "postal_code": "00100", "country": "FI"},
                            "lat": 60.17 + (n % 50) as f64 * 0.0005, "lng": 24.94},
                "items": items,
            });
            match api.create_order(&jwt, &format!("bench-{run}-{n}"), &body).await {
                Ok(a) if a.status.as_u16() == 201 => true,
                Ok(a) => {
                    tracing::warn!(status = %a.status, body = %a.body, "a catalog order was not created");
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a catalog order was not sent");
                    false
                }
            }
        }
        .boxed()
    })
}

pub async fn search(args: &BenchArgs, report: &mut Report, stop: &CancellationToken) -> anyhow::Result<()> {
    let f = fixture(args).await?;
    let (d, c, db) = (args.phase(10), args.concurrency, f.server.database);
    let ask = {
        let (api, jwt) = (f.api.clone(), f.jwt.clone());
        Arc::new(move |n: u64| {
            let (api, jwt) = (api.clone(), jwt.clone());
            async move {
                let (q, want) = QUERIES[n as usize % QUERIES.len()];
                let req = api
                    .http
                    .get(api.url("/v1/catalog/search"))
                    .query(&[("q", q), ("lat", "60.17"), ("lng", "24.94"), ("radius_m", "5000")])
                    .bearer_auth(&*jwt);
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        // Found: the answer names a dish with the intended word.
                        r.text().await.is_ok_and(|t| t.to_lowercase().contains(want))
                    }
                    _ => false,
                }
            }
            .boxed()
        }) as Request
    };
    closed_loop("warm-up", c, Duration::from_secs(2), ask.clone(), stop).await;
    let floor = closed_loop("GET /healthz", c, d, healthz(&f.api), stop).await;
    let peak = closed_loop("GET /v1/catalog/search", c, d, ask.clone(), stop).await;
    let half_rate = (peak.rate() / 2.0).max(1.0);
    let half = open_loop(&format!("search at {half_rate:.0}/s"), half_rate, d, 4096, ask, stop).await;
    f.server.stop().await;
    measure(report, db, "GET /healthz (same-run floor)", &floor);
    measure(report, db, "GET /v1/catalog/search (peak; typos included)", &peak);
    measure(report, db, "GET /v1/catalog/search at half the peak rate", &half);
    let found = peak.ok as f64 / (peak.ok + peak.failed).max(1) as f64;
    report.note(format!(
        "{RESTAURANTS} restaurants × 60 dishes; {} queries in turn (e.g. kebap, kabob, piza, cheesburger); a request counts as ok only when the answer names the intended dish",
        QUERIES.len()
    ));
    report.budget("every typo'd search finds its dish", format!("{:.1}% found", found * 100.0), peak.failed == 0);
    report.budget(
        "search p99 < 200 ms at half the peak rate",
        format!("{:.1} ms", half.latency.p99_ms),
        half.latency.p99_ms < 200.0,
    );
    Ok(())
}
