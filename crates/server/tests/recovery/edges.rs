//! Sync-back tells the platform our tracking link (`public_url`) and the reason the driver
//! gave for a failed delivery; the tracking API answers browsers on store pages (CORS).

use super::support::*;
use crate::helpers::*;
use crate::sync_support::{eventually, platform_order, standin_store, Api, Courier};
use lastmile_core::{OrderStatus, Platform};
use lastmile_standins::StandIn;
use serde_json::{json, Value};

const PUBLIC_URL: &str = "https://deliver.example.com";

/// The GraphQL variables of every call the Shopify stand-in received.
fn shopify_variables(standin: &StandIn) -> Vec<Value> {
    standin.requests().iter().filter_map(|r| r.json()).map(|j| j["variables"].clone()).collect()
}

async fn sync_back_sends_tracking_link_and_reason(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.public_url = Some(format!("{PUBLIC_URL}/"));
        c.dispatch.enabled = false;
    })
    .await;
    let (tenant, admin) = app.tenant("acme").await;
    let tenant = lastmile_core::TenantId(tenant);
    let shopify = StandIn::start(Platform::Shopify).await;
    let api = Api { http: &app.http, base: &app.base };
    let store = standin_store(&api, &admin, &shopify, "edge-shop", "standard").await;
    let order = platform_order(&app.state, &tenant, &store, &shopify, "820982911946154508").await;
    let token = app.state.db.get_order(&tenant, &order).await.unwrap().tracking_token;

    let courier = Courier::new(&app.state, &tenant).await;
    courier.take(&app.state, &order).await;
    courier.step(&app.state, &order, OrderStatus::PickedUp).await;
    let reason = "customer not at home, building locked";
    app.state
        .db
        .driver_order_step(&tenant, &courier.driver, &order, OrderStatus::Failed, json!({"reason": reason}))
        .await
        .unwrap();

    let (fulfil, event) = eventually("both calls at the stand-in", WAIT, || {
        let vars = shopify_variables(&shopify);
        let find = |k: &str| vars.iter().find(|v| v.get(k).is_some()).cloned();
        let found = find("fulfillment").zip(find("fulfillmentEvent"));
        async move { found }
    })
    .await;
    assert_eq!(fulfil["fulfillment"]["trackingInfo"]["url"], format!("{PUBLIC_URL}/track/{token}"), "{fulfil}");
    assert_eq!(event["fulfillmentEvent"]["status"], "FAILURE", "{event}");
    assert_eq!(event["fulfillmentEvent"]["message"], reason, "the driver's own words: {event}");
    app.stop().await;
}

async fn tracking_answers_browsers(backend: Backend) {
    let s = scene(TestApp::spawn(backend).await).await;
    let order = s.app.native_order(&s.jwt, &s.store_id, DROPOFF.0, DROPOFF.1).await;
    let url = s.app.url(&format!("/v1/track/{}", order["tracking_token"].as_str().unwrap()));
    let res = s.app.http.get(&url).header("origin", "https://shop.example.com").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()), Some("*"));
    let pre = s
        .app
        .http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "preflight: {}", pre.status());
    let methods = pre.headers().get("access-control-allow-methods").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(methods.contains("GET"), "{methods}");
    // Other APIs are not opened to browsers.
    let res =
        s.app.http.get(s.app.url("/v1/orders")).header("origin", "https://shop.example.com").send().await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    s.app.stop().await;

    // A configured list lets only those origins read.
    let app = TestApp::spawn_with(backend, |c| c.tracking.cors_origins = vec!["https://shop.example.com".into()]).await;
    let s = scene(app).await;
    let order = s.app.native_order(&s.jwt, &s.store_id, DROPOFF.0, DROPOFF.1).await;
    let url = s.app.url(&format!("/v1/track/{}", order["tracking_token"].as_str().unwrap()));
    for (origin, allowed) in [("https://shop.example.com", true), ("https://evil.example.net", false)] {
        let res = s.app.http.get(&url).header("origin", origin).send().await.unwrap();
        let acao = res.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(acao.as_deref() == Some(origin), allowed, "{origin}: {acao:?}");
    }
    s.app.stop().await;
}

crate::on_backends!(
    sync_back_sends_tracking_link_and_the_drivers_failure_reason => sync_back_sends_tracking_link_and_reason,
    tracking_api_answers_browsers_with_cors => tracking_answers_browsers,
);

/// A store API URL on a loopback, link-local or private address is refused (the server
/// would otherwise call into its own network on a tenant's say-so), unless
/// `allow_private_urls` is on.
async fn private_store_urls_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.allow_private_urls = false).await;
    let (_, admin) = app.tenant("acme").await;
    let store = |n: usize, base_url: &str| {
        json!({"name": "shop", "platform": "shopify", "platform_store_id": format!("s{n}.myshopify.com"), "webhook_secret": "shpss_x",
               "pickup": {"lat": 60.1699, "lng": 24.9384, "address": "Aleksanterinkatu 1"},
               "api": {"base_url": base_url, "access_token": "shpat_x"}})
    };
    for (n, url) in ["http://127.0.0.1:9000", "http://169.254.169.254", "http://10.0.0.7", "http://localhost:8080"]
        .into_iter()
        .enumerate()
    {
        let (st, body) = app.post_json("/v1/stores", &admin, &store(n, url)).await;
        assert_eq!((st, body["error"]["code"].as_str()), (422, Some("validation_failed")), "{url}: {body}");
        assert!(body.to_string().contains("api.base_url"), "{body}");
    }
    let (st, body) = app.post_json("/v1/stores", &admin, &store(9, "https://93.184.215.14")).await;
    assert_eq!(st, 201, "a public address is fine: {body}");
    let id = body["id"].as_str().unwrap();
    let res = app
        .http
        .patch(app.url(&format!("/v1/stores/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"api": {"base_url": "http://192.168.0.10", "access_token": "shpat_x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422, "a patch is checked too");
    app.stop().await;
}

crate::on_backends!(store_api_urls_on_private_addresses_are_refused => private_store_urls_are_refused);
