//! The web apps in a real browser: seeds a tenant (a console user, stores, a driver with a
//! one-time code, orders, a dead letter) on a real server on port 0, then runs
//! `web-tests/run.mjs` (Playwright driving Debian's Chromium, headless) against it.
//! Screenshots land in `target/screenshots/`.
//!
//! Without Chromium, Node or `web-tests/node_modules` the test is skipped with a loud
//! message — unless `CI=true`, where it fails.

#[path = "api/helpers.rs"]
mod helpers;

use base64::Engine;
use helpers::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// What is missing to run the browser tests here, if anything.
fn missing_tools(root: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        missing.push(format!("{chromium} (apt-get install -y chromium)"));
    }
    if std::process::Command::new("node").arg("--version").output().is_err() {
        missing.push("node".into());
    }
    if !root.join("web-tests/node_modules/playwright-core").exists() {
        missing.push("web-tests/node_modules (cd web-tests && npm ci)".into());
    }
    missing
}

fn woocommerce_delivery(body: &[u8], secret: &str, site: &str) -> Vec<(&'static str, String)> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    vec![
        ("Content-Type", "application/json".into()),
        ("User-Agent", "WooCommerce/8.9.1 Hookshot (WordPress/6.5.3)".into()),
        ("X-WC-Webhook-Source", site.into()),
        ("X-WC-Webhook-Topic", "order.created".into()),
        ("X-WC-Webhook-Resource", "order".into()),
        ("X-WC-Webhook-Event", "created".into()),
        ("X-WC-Webhook-Signature", sig),
        ("X-WC-Webhook-ID", "31".into()),
        ("X-WC-Webhook-Delivery-ID", uuid_key()),
    ]
}

async fn webhook(app: &TestApp, store_id: &str, body: &[u8], secret: &str, site: &str) -> Value {
    let mut req = app.http.post(app.url(&format!("/v1/webhooks/woocommerce/{store_id}"))).body(body.to_vec());
    for (k, v) in woocommerce_delivery(body, secret, site) {
        req = req.header(k, v);
    }
    req.send().await.expect("webhook").json().await.expect("webhook answer")
}

async fn native_store(app: &TestApp, admin: &str, name: &str, lat: f64, lng: f64) -> String {
    let (s, b) = app
        .post_json(
            "/v1/stores",
            admin,
            &json!({"name": name, "platform": "native", "platform_store_id": name.to_lowercase().replace(' ', "-"),
                    "webhook_secret": "", "pickup": {"lat": lat, "lng": lng, "address": format!("{name}, Finland")}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_apps_work_in_chromium() {
    let root = workspace_root();
    let missing = missing_tools(&root);
    if !missing.is_empty() {
        let msg = format!("browser tests need: {}", missing.join(", "));
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        // Straight to stderr: the test harness captures `eprintln!` of passing tests.
        let bar = "!".repeat(72);
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("\n{bar}\n!!! SKIPPED web_apps_work_in_chromium: {msg}\n{bar}\n").as_bytes(),
        );
        return;
    }
    let pbf = root.join("crates/sim/data/helsinki.osm.pbf");
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.web.osm_pbf = Some(pbf.clone());
        c.dispatch.slow_notice_s = 2;
        c.dispatch.offer_ttl_s = 120;
    })
    .await;
    let (tenant, admin) = app.tenant("Helsinki Eats").await;
    let (email, password) = ("dispatch@helsinki-eats.example", "correct horse battery");
    lastmile_server::routes::console::create_user(
        &app.state.db,
        &lastmile_core::TenantId(tenant.clone()),
        email,
        password,
        "admin",
    )
    .await
    .expect("console user");

    // Stores: one in central Helsinki (the driver is there), one far away (nobody will take it).
    let kallio = native_store(&app, &admin, "Kallio Kitchen", 60.1699, 24.9384).await;
    let tampere = native_store(&app, &admin, "Tampere Deli", 61.4978, 23.7610).await;
    let site = "https://shop.example";
    let woo = app.store(&admin, "woocommerce", site, "w").await["id"].as_str().unwrap().to_owned();

    let jwt = app.client_token(&admin).await;
    let live = app.native_order(&jwt, &kallio, 60.1712, 24.9441).await;
    let slow = app.native_order(&jwt, &tampere, 61.4990, 23.7700).await;
    let fixture = std::fs::read(root.join("crates/ingest/tests/fixtures/woocommerce/order_retrieve_727.json")).unwrap();
    let located = webhook(&app, &woo, &fixture, "w", site).await;
    assert_eq!(located["result"], "created", "{located}");
    let broken = webhook(&app, &woo, br#"{"id": 9, "line_items": "#, "w", site).await;
    assert_eq!(broken["result"], "dead_lettered", "{broken}");

    let (driver_id, _token) = app.driver(&admin, "Aino Virtanen").await;
    let (s, code) = app.post_json(&format!("/v1/drivers/{driver_id}/login-code"), &admin, &json!({})).await;
    assert_eq!(s, 201, "{code}");

    let shots = root.join("target/screenshots");
    let seed = json!({
        "base_url": app.base,
        "screenshots": shots,
        "user_email": email, "user_password": password,
        "driver_code": code["code"],
        "driver_position": {"latitude": 60.1701, "longitude": 24.9390, "accuracy": 8},
        "live_order": live["id"], "live_token": live["tracking_token"],
        "slow_token": slow["tracking_token"],
        "needs_location_order": located["order_id"],
        "dead_letter": broken["dead_letter_id"],
    });
    let seed_file = app.dir.path().join("seed.json");
    std::fs::write(&seed_file, seed.to_string()).unwrap();

    // `timeout` bounds a hung browser; the node script runs off the runtime's threads.
    let (dir, script) = (root.join("web-tests"), root.join("web-tests/run.mjs"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .args(["--kill-after=10", "240", "node"])
            .arg(script)
            .arg(&seed_file)
            .current_dir(dir)
            .output()
    })
    .await
    .expect("join")
    .expect("node runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "browser flows failed:\n{text}");

    // What the browser did, seen through the API.
    let (_, o) = app.get_json(&format!("/v1/orders/{}", live["id"].as_str().unwrap()), &admin).await;
    assert_eq!(o["status"], "delivered", "{o}");
    let (_, o) = app.get_json(&format!("/v1/orders/{}", slow["id"].as_str().unwrap()), &admin).await;
    assert_eq!(o["status"], "cancelled", "{o}");
    let (_, c) = app.get_json("/v1/customer-choices", &admin).await;
    assert_eq!(c["choices"][0]["choice"], "cancel", "{c}");
    app.stop().await;
}
