//! A short demo, in-process: a real server on SQLite, a small fast city against it (three
//! platform stores and a restaurant with a menu), and orders that flow end to end —
//! received → assigned → delivered — checked through the API afterwards, not only from the
//! simulator's own counters.

use clap::Parser;
use lastmile_sim::city::{run_city, RunOptions};
use lastmile_sim::demo::{sqlite_config, DemoServer};
use lastmile_sim::scenario::CityConfig;
use serde_json::Value;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    city: CityConfig,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_demo_delivers_orders_end_to_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = sqlite_config(dir.path(), "127.0.0.1:0");
    cfg.dispatch.tick_ms = 100;
    // As `lastmile demo` does: WooCommerce and BigCommerce orders carry only an address; the
    // server geocodes it.
    cfg.geocoding.osm_pbf = Some(lastmile_geo::helsinki_pbf_path());
    let server = DemoServer::start(cfg, dir.path().to_path_buf()).await.expect("server starts");

    // A compact, fast city: stores and drivers near the centre, customers close by.
    let city = Args::parse_from([
        "t",
        "--drivers",
        "6",
        "--stores",
        "4",
        "--orders-per-minute",
        "90",
        "--seed",
        "5",
        "--speed-mps",
        "60",
        "--fleet-radius-m",
        "300",
        "--dropoff-radius-m",
        "300",
        "--handover-s",
        "0.2",
        "--gps-interval-ms",
        "250",
        "--accept-probability",
        "0.8",
    ])
    .city;
    let opts = RunOptions {
        duration: Some(Duration::from_secs(5)),
        drain: Duration::from_secs(40),
        progress_every: None,
        max_orders: Some(12),
        map: None,
    };
    let outcome = run_city(&server.base, &server.admin_key, city, opts, CancellationToken::new())
        .await
        .expect("the simulation runs");
    let s = &outcome.snapshot;
    eprintln!("{}", s.summary_text());
    assert!(s.received >= 5, "orders received: {s:?}");
    assert_eq!(s.located, 0, "no order was located by hand: {s:?}");
    assert!(s.offers >= 1 && s.accepted >= 1, "offers reached drivers' sockets: {s:?}");
    assert!(s.delivered >= 1, "deliveries: {s:?}");

    // The server agrees: delivered orders, each with the driver that carried it.
    let http = reqwest::Client::new();
    let list: Value = http
        .get(format!("{}/v1/orders?status=delivered&limit=50", server.base))
        .bearer_auth(&server.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delivered = list["orders"].as_array().cloned().unwrap_or_default();
    assert_eq!(delivered.len() as u64, s.delivered, "server's delivered orders: {list}");
    for o in &delivered {
        assert_eq!(o["status"], "delivered");
        assert!(o["driver_id"].is_string(), "a delivered order names its driver: {o}");
    }
    // WooCommerce orders (no coordinates) were geocoded by the server and delivered too.
    let woo = delivered.iter().filter(|o| o["platform"] == "woocommerce").count();
    assert!(woo >= 1, "a WooCommerce order was geocoded and delivered: {list}");
    // BigCommerce orders were fetched from the store's API (by id), geocoded and delivered.
    let bc = delivered.iter().filter(|o| o["platform"] == "bigcommerce").count();
    assert!(bc >= 1, "a BigCommerce order was fetched, geocoded and delivered: {list}");
    // The restaurant's customers ordered from its menu (by item id) through the catalog;
    // those orders were dispatched and delivered too, priced by the menu.
    let restaurant = &outcome.store_ids[3];
    let catalog: Vec<&Value> = delivered.iter().filter(|o| o["store_id"] == restaurant.as_str()).collect();
    assert!(!catalog.is_empty(), "a catalog order was delivered: {list}");
    for o in catalog {
        assert_eq!(o["platform"], "native");
        assert!(o["totals"]["total_minor"].as_i64().unwrap() > 0, "priced by the menu: {o}");
        assert!(o["items"][0]["sku"].as_str().unwrap().starts_with("FI-"), "{o}");
    }
    let metrics = http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    let offers = lastmile_sim::client::counter_sum(&metrics, "lastmile_offers_sent_total", &[]);
    assert!(offers >= s.accepted as f64, "offers sent {offers}");
    server.stop().await.expect("server stops cleanly");
}
