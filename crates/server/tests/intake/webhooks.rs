//! Platform webhooks through `POST /v1/webhooks/{platform}/{store_id}` and
//! `POST /v1/import-orders`: every fixture, BigCommerce fetches that fail, refusals, and
//! dead letters with their replay.

use crate::helpers::{Backend, TestApp};
use crate::on_backends;
use crate::{
    b64, deliver, eventually, fixture, list_all, now_s, order, raw_payloads, store, store_with_api, webhook_path,
    Delivery, SHOPIFY_SAMPLE_ID,
};
use lastmile_core::{Platform, SyncJobId, TenantId};
use lastmile_standins::{Fault, StandIn};
use serde_json::{json, Value};
use std::time::Duration;

/// The identity in BigCommerce's published sample bodies: `producer: "stores/{store_hash}"`.
const BC_SAMPLE_HASH: &str = "{store_hash}";

/// How a test sends a delivery: to the store's own URL, or to the detecting endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    StoreUrl,
    Import,
}

fn path(route: Route, platform: &str, store_id: &str) -> String {
    match route {
        Route::StoreUrl => webhook_path(platform, store_id),
        Route::Import => "/v1/import-orders".into(),
    }
}

fn bigcommerce_api(standin: &StandIn) -> Value {
    json!({"base_url": standin.base_url(), "access_token": lastmile_standins::ACCESS_TOKEN})
}

/// A BigCommerce webhook body naming order `id` (the published sample, another id).
fn bigcommerce_body(id: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&fixture("bigcommerce/store_order_created.json")).expect("JSON");
    v["data"]["id"] = json!(id);
    serde_json::to_vec(&v).expect("JSON")
}

/// One published fixture and what it must become.
struct Case {
    platform: &'static str,
    file: &'static str,
    topic: &'static str,
    /// The platform order id it must create, or None when it must be `ignored`.
    order_id: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case { platform: "shopify", file: "orders_create", topic: "orders/create", order_id: Some(SHOPIFY_SAMPLE_ID) },
    Case { platform: "shopify", file: "orders_updated", topic: "orders/updated", order_id: Some(SHOPIFY_SAMPLE_ID) },
    Case { platform: "shopify", file: "orders_paid", topic: "orders/paid", order_id: Some(SHOPIFY_SAMPLE_ID) },
    Case {
        platform: "shopify",
        file: "orders_fulfilled",
        topic: "orders/fulfilled",
        order_id: Some(SHOPIFY_SAMPLE_ID),
    },
    Case {
        platform: "shopify",
        file: "orders_cancelled",
        topic: "orders/cancelled",
        order_id: Some(SHOPIFY_SAMPLE_ID),
    },
    Case { platform: "shopify", file: "fulfillments_create", topic: "fulfillments/create", order_id: None },
    Case { platform: "woocommerce", file: "order_retrieve_727", topic: "order.created", order_id: Some("727") },
    Case {
        platform: "woocommerce",
        file: "order_updated_727_status_completed",
        topic: "order.updated",
        order_id: Some("727"),
    },
    Case { platform: "bigcommerce", file: "store_order_created", topic: "", order_id: Some("250") },
    Case { platform: "bigcommerce", file: "store_order_updated", topic: "", order_id: Some("250") },
    Case { platform: "bigcommerce", file: "store_order_statusUpdated", topic: "", order_id: Some("250") },
    Case {
        platform: "bigcommerce",
        file: "store_order_statusUpdated_overview_example",
        topic: "",
        order_id: Some("173331"),
    },
];

/// Each fixture, signed, to a fresh tenant's store (the samples share order ids). The
/// BigCommerce samples also share one store hash, and a shop belongs to one live store,
/// so each case's store is deleted when the case is done.
async fn deliver_fixture(app: &TestApp, bc: &StandIn, case: &Case, route: Route, n: usize) {
    let (admin, store_id) = deliver_fixture_to_new_store(app, bc, case, route, n).await;
    let res = app.http.delete(app.url(&format!("/v1/stores/{store_id}"))).bearer_auth(&admin).send().await.unwrap();
    assert!(res.status().is_success(), "deleting the case's store: {}", res.status());
}

async fn deliver_fixture_to_new_store(
    app: &TestApp,
    bc: &StandIn,
    case: &Case,
    route: Route,
    n: usize,
) -> (String, String) {
    let (tenant, admin) = app.tenant(&format!("fixture-{n}")).await;
    let secret = format!("secret-{n}");
    let body = fixture(&format!("{}/{}.json", case.platform, case.file));
    let (store_id, d) = match case.platform {
        "shopify" => {
            let shop = format!("shop-{n}.myshopify.com");
            (store(app, &admin, "shopify", &shop, &secret).await, Delivery::shopify(&body, &secret, &shop, case.topic))
        }
        "woocommerce" => {
            let site = format!("https://shop-{n}.example");
            let id = store(app, &admin, "woocommerce", &site, &secret).await;
            (id, Delivery::woocommerce(&body, &secret, &format!("{site}/"), case.topic))
        }
        _ => {
            let producer: Value = serde_json::from_slice(&body).expect("JSON");
            let hash = producer["producer"].as_str().expect("producer").trim_start_matches("stores/").to_owned();
            let id = store_with_api(app, &admin, "bigcommerce", &hash, &secret, Some(bigcommerce_api(bc))).await;
            (id, Delivery::bigcommerce(&body, &secret, now_s()))
        }
    };
    let (status, answer) = deliver(app, &path(route, case.platform, &store_id), &d).await;
    let what = format!("{}/{} via {route:?}", case.platform, case.file);
    assert_eq!(raw_payloads(app, &tenant).await, 1, "{what}: the delivery is archived");
    let Some(platform_order_id) = case.order_id else {
        assert_eq!((status, answer["result"].as_str()), (200, Some("ignored")), "{what}: {answer}");
        assert!(list_all(app, &admin, "", 50).await.is_empty(), "{what} creates nothing");
        return (admin, store_id);
    };
    assert_eq!((status, answer["result"].as_str()), (200, Some("created")), "{what}: {answer}");
    let got = order(app, &admin, answer["order_id"].as_str().expect("order id")).await;
    assert_eq!(got["platform"], case.platform, "{what}");
    assert_eq!(got["platform_order_id"], platform_order_id, "{what}: exact platform id");
    assert_eq!(got["store_id"], store_id.as_str(), "{what}");
    assert!(got["totals"]["total_minor"].as_i64().unwrap_or(0) > 0, "{what}: {got}");
    (admin, store_id)
}

async fn every_fixture_creates_its_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bc = StandIn::start(Platform::Bigcommerce).await;
    bc.seed_order("250", "11");
    bc.seed_order("173331", "11");
    let mut n = 0;
    for route in [Route::StoreUrl, Route::Import] {
        for case in CASES {
            n += 1;
            deliver_fixture(&app, &bc, case, route, n).await;
        }
    }
    // The Shopify sample keeps its exact 64-bit id, and its cancellation.
    let (_, admin) = app.tenant("exact").await;
    let sid = store(&app, &admin, "shopify", "exact.myshopify.com", "s").await;
    let d = Delivery::shopify(&fixture("shopify/orders_create.json"), "s", "exact.myshopify.com", "orders/create");
    let (_, answer) = deliver(&app, &webhook_path("shopify", &sid), &d).await;
    let got = order(&app, &admin, answer["order_id"].as_str().unwrap()).await;
    assert_eq!(
        (got["platform_order_id"].as_str(), got["status"].as_str()),
        (Some(SHOPIFY_SAMPLE_ID), Some("cancelled"))
    );
    assert_eq!(got["platform_order_number"], "#9999");
    // BigCommerce `archived` cancels the order it names.
    let (_, admin) = app.tenant("archive").await;
    let bid = store_with_api(&app, &admin, "bigcommerce", BC_SAMPLE_HASH, "s", Some(bigcommerce_api(&bc))).await;
    let created = Delivery::bigcommerce(&fixture("bigcommerce/store_order_created.json"), "s", now_s());
    let (_, first) = deliver(&app, &webhook_path("bigcommerce", &bid), &created).await;
    let archived = Delivery::bigcommerce(&fixture("bigcommerce/store_order_archived.json"), "s", now_s());
    let (status, answer) = deliver(&app, "/v1/import-orders", &archived).await;
    assert_eq!((status, answer["result"].as_str()), (200, Some("updated")), "{answer}");
    assert_eq!(answer["order_id"], first["order_id"]);
    assert_eq!(order(&app, &admin, first["order_id"].as_str().unwrap()).await["status"], "cancelled");

    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for (platform, result) in [("shopify", "created"), ("woocommerce", "created"), ("bigcommerce", "created")] {
        let line = metrics.lines().find(|l| {
            l.starts_with("lastmile_orders_ingested_total{")
                && l.contains(&format!("platform=\"{platform}\""))
                && l.contains(&format!("result=\"{result}\""))
        });
        let count: f64 = line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        assert!(count >= 1.0, "lastmile_orders_ingested_total{{{platform},{result}}} missing:\n{metrics}");
    }
    app.stop().await;
}

async fn bigcommerce_fetch_failures_are_queued_and_retried(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bc = StandIn::start(Platform::Bigcommerce).await;
    bc.seed_order("250", "11");
    bc.seed_order("173331", "11");
    let (tenant, admin) = app.tenant("bc").await;
    let sid =
        store_with_api(&app, &admin, "bigcommerce", BC_SAMPLE_HASH, "bc-secret", Some(bigcommerce_api(&bc))).await;

    // The platform's API is down: the delivery is kept as a fetch job and acknowledged.
    bc.set_fault(Fault::Down);
    let d = Delivery::bigcommerce(&fixture("bigcommerce/store_order_created.json"), "bc-secret", now_s());
    let (status, answer) = deliver(&app, &webhook_path("bigcommerce", &sid), &d).await;
    assert_eq!((status, answer["result"].as_str()), (202, Some("queued")), "{answer}");
    let job = SyncJobId(answer["job_id"].as_str().expect("job id").to_owned());
    let state = app.state.db.sync_job_state(&TenantId(tenant.clone()), &job).await.expect("the job exists");
    assert_ne!(state, "done", "no order can have been fetched while the API is down");
    assert_eq!(raw_payloads(&app, &tenant).await, 1, "the queued delivery is archived");
    // The sync worker tries again while the API is still down (the store's health shows
    // the intake fetch and at least one retry failing), and keeps the job.
    eventually("a failed retry by the sync worker", Duration::from_secs(10), || async {
        let (_, health) = app.get_json("/v1/integrations", &admin).await;
        (health["integrations"][0]["failures"].as_i64().unwrap_or(0) >= 2).then_some(())
    })
    .await;
    assert!(list_all(&app, &admin, "", 50).await.is_empty());
    assert_ne!(app.state.db.sync_job_state(&TenantId(tenant.clone()), &job).await.unwrap(), "dead");

    // It recovers: the sync worker fetches the order, which appears once.
    bc.set_fault(Fault::None);
    let created = eventually("the queued BigCommerce order", Duration::from_secs(20), || async {
        list_all(&app, &admin, "", 50).await.into_iter().next()
    })
    .await;
    assert_eq!(created["platform_order_id"], "250");
    let tenant_id = TenantId(tenant.clone());
    eventually("the fetch job recorded as done", Duration::from_secs(5), || async {
        (app.state.db.sync_job_state(&tenant_id, &job).await.unwrap() == "done").then_some(())
    })
    .await;
    // BigCommerce re-sending the same webhook finds the order, never a second one.
    let (status, again) = deliver(&app, &webhook_path("bigcommerce", &sid), &d).await;
    assert_eq!((status, again["result"].as_str()), (200, Some("duplicate")), "{again}");
    assert_eq!(again["order_id"], created["id"]);

    // Through the detecting endpoint, a transient 5xx takes the same path.
    let (_, admin2) = app.tenant("bc2").await;
    store_with_api(&app, &admin2, "bigcommerce", "abcde", "bc2-secret", Some(bigcommerce_api(&bc))).await;
    bc.set_fault_times(Fault::Status5xx(503), 1);
    let body = fixture("bigcommerce/store_order_statusUpdated_overview_example.json");
    let (status, answer) =
        deliver(&app, "/v1/import-orders", &Delivery::bigcommerce(&body, "bc2-secret", now_s())).await;
    assert_eq!((status, answer["result"].as_str()), (202, Some("queued")), "{answer}");
    let created = eventually("the second queued order", Duration::from_secs(20), || async {
        list_all(&app, &admin2, "", 50).await.into_iter().next()
    })
    .await;
    assert_eq!(created["platform_order_id"], "173331");
    assert_eq!(list_all(&app, &admin2, "", 50).await.len(), 1);
    app.stop().await;
}

async fn refusals_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (tenant, admin) = app.tenant("neg").await;
    let shop = "neg.myshopify.com";
    let sid = store(&app, &admin, "shopify", shop, "shpss_right").await;
    let wid = store(&app, &admin, "woocommerce", "https://neg.example", "wc_right").await;
    let bid = store(&app, &admin, "bigcommerce", "neghash", "bc_right").await;
    let body = fixture("shopify/orders_create.json");
    let woo = fixture("woocommerce/order_retrieve_727.json");
    let mut bc_body: Value = serde_json::from_slice(&bigcommerce_body(250)).unwrap();
    bc_body["producer"] = json!("stores/neghash");
    let bc_body = serde_json::to_vec(&bc_body).unwrap();
    let mut flipped = Delivery::shopify(&body, "shpss_right", shop, "orders/create");
    flipped.body[100] ^= 0x01;

    let cases: Vec<(&str, Delivery, String, u16, &str)> = vec![
        (
            "wrong secret",
            Delivery::shopify(&body, "shpss_wrong", shop, "orders/create"),
            webhook_path("shopify", &sid),
            401,
            "invalid_signature",
        ),
        ("one flipped body byte", flipped, webhook_path("shopify", &sid), 401, "invalid_signature"),
        (
            "no signature",
            Delivery::shopify(&body, "shpss_right", shop, "orders/create").without("X-Shopify-Hmac-Sha256"),
            webhook_path("shopify", &sid),
            400,
            "missing_header",
        ),
        (
            "woo wrong secret",
            Delivery::woocommerce(&woo, "wc_wrong", "https://neg.example", "order.created"),
            webhook_path("woocommerce", &wid),
            401,
            "invalid_signature",
        ),
        (
            "woo no signature",
            Delivery::woocommerce(&woo, "wc_right", "https://neg.example", "order.created")
                .without("X-WC-Webhook-Signature"),
            webhook_path("woocommerce", &wid),
            400,
            "missing_header",
        ),
        (
            "bc wrong secret",
            Delivery::bigcommerce(&bc_body, "bc_wrong", now_s()),
            webhook_path("bigcommerce", &bid),
            401,
            "invalid_signature",
        ),
        (
            "bc stale timestamp",
            Delivery::bigcommerce(&bc_body, "bc_right", now_s() - 301),
            webhook_path("bigcommerce", &bid),
            401,
            "stale_timestamp",
        ),
        (
            "bc future timestamp",
            Delivery::bigcommerce(&bc_body, "bc_right", now_s() + 3600),
            webhook_path("bigcommerce", &bid),
            401,
            "stale_timestamp",
        ),
        (
            "unknown store",
            Delivery::shopify(&body, "shpss_right", shop, "orders/create"),
            webhook_path("shopify", "sto_nosuchstore"),
            404,
            "store_not_found",
        ),
        (
            "another platform's store",
            Delivery::shopify(&body, "shpss_right", shop, "orders/create"),
            webhook_path("woocommerce", &sid),
            404,
            "store_not_found",
        ),
    ];
    for (what, d, url, status, code) in &cases {
        let (s, b) = deliver(&app, url, d).await;
        assert_eq!((s, b["error"]["code"].as_str()), (*status, Some(*code)), "{what}: {b}");

        // The same delivery through the detecting endpoint is refused the same way, except
        // that it names its store by identity, so "unknown store" needs an unknown shop.
        if !what.contains("store") {
            let (s, b) = deliver(&app, "/v1/import-orders", d).await;
            assert_eq!((s, b["error"]["code"].as_str()), (*status, Some(*code)), "{what} via import: {b}");
        }
    }
    let unknown_shop = Delivery::shopify(&body, "shpss_right", "nobody.myshopify.com", "orders/create");
    let (s, b) = deliver(&app, "/v1/import-orders", &unknown_shop).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("invalid_signature")),
        "an unknown shop looks like a bad signature: {b}"
    );
    let anonymous =
        Delivery { headers: vec![("Content-Type".into(), "application/json".into())], body: b"{}".to_vec() };
    let (s, b) = deliver(&app, "/v1/import-orders", &anonymous).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("unknown_platform")), "{b}");

    // WooCommerce's activation ping: unsigned form body, answered 200 and nothing else.
    let ping = Delivery {
        headers: vec![("Content-Type".into(), "application/x-www-form-urlencoded".into())],
        body: b"webhook_id=31".to_vec(),
    };
    for url in [webhook_path("woocommerce", &wid), "/v1/import-orders".into()] {
        let (s, b) = deliver(&app, &url, &ping).await;
        assert_eq!((s, b["result"].as_str(), &b["order_id"]), (200, Some("ignored"), &Value::Null), "{url}: {b}");
    }
    assert!(list_all(&app, &admin, "", 50).await.is_empty(), "no refusal created an order");
    assert_eq!(raw_payloads(&app, &tenant).await, 0, "nothing unauthenticated is archived");
    let (_, dead) = app.get_json("/v1/dead-letters", &admin).await;
    assert_eq!(dead["dead_letters"].as_array().map(Vec::len), Some(0), "{dead}");

    // Signed, but without a header the platform always sends: refused naming the header,
    // and — authenticated — kept as a dead letter for replay (invariant 4).
    let no_topic = Delivery::shopify(&body, "shpss_right", shop, "orders/create").without("X-Shopify-Topic");
    let (s, b) = deliver(&app, &webhook_path("shopify", &sid), &no_topic).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("missing_header")), "{b}");
    assert_eq!(b["error"]["details"]["header"], "X-Shopify-Topic", "names the header: {b}");
    assert!(b["error"]["details"]["dead_letter_id"].is_string(), "{b}");
    let (_, dead) = app.get_json("/v1/dead-letters", &admin).await;
    assert_eq!(dead["dead_letters"].as_array().map(Vec::len), Some(1), "{dead}");
    assert!(list_all(&app, &admin, "", 50).await.is_empty(), "no order from it");
    app.stop().await;
}

async fn replay(app: &TestApp, admin: &str, id: &str) -> Value {
    let (status, body) = app.post_json(&format!("/v1/dead-letters/{id}/replay"), admin, &json!({})).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn dead_letters(app: &TestApp, admin: &str) -> Vec<Value> {
    let (status, body) = app.get_json("/v1/dead-letters?include_replayed=true", admin).await;
    assert_eq!(status, 200, "{body}");
    body["dead_letters"].as_array().expect("list").clone()
}

async fn unnormalizable_deliveries_are_kept_and_replayable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bc = StandIn::start(Platform::Bigcommerce).await;
    let (tenant, admin) = app.tenant("dlq").await;
    let sid = store(&app, &admin, "shopify", "dlq.myshopify.com", "s").await;
    let bid = store_with_api(&app, &admin, "bigcommerce", BC_SAMPLE_HASH, "b", Some(bigcommerce_api(&bc))).await;

    // Signed, but no order can be read from it: kept whole, answered 202.
    let garbage = br#"{"id": 1, "line_items": "#;
    let d = Delivery::shopify(garbage, "s", "dlq.myshopify.com", "orders/create");
    let (status, answer) = deliver(&app, &webhook_path("shopify", &sid), &d).await;
    assert_eq!((status, answer["result"].as_str()), (202, Some("dead_lettered")), "{answer}");
    let broken = answer["dead_letter_id"].as_str().expect("dead letter id").to_owned();
    let kept = dead_letters(&app, &admin).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0]["id"].as_str(), kept[0]["body"].as_str()),
        (Some(broken.as_str()), Some(r#"{"id": 1, "line_items": "#))
    );
    assert_eq!(kept[0]["headers"]["x-shopify-topic"], "orders/create", "{}", kept[0]);
    assert!(kept[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
    // Replaying it while it still fails records the outcome and keeps no second copy.
    for attempt in 1..=2 {
        let r = replay(&app, &admin, &broken).await;
        assert_eq!(r["outcome"], "failed", "{r}");
        let kept = dead_letters(&app, &admin).await;
        assert_eq!(kept.len(), 1, "a failing replay is not dead-lettered again");
        assert_eq!((kept[0]["replay_outcome"].as_str(), kept[0]["attempts"].as_i64()), (Some("failed"), Some(attempt)));
    }

    // BigCommerce names an order its API does not have (yet): un-normalizable now...
    let d = Delivery::bigcommerce(&bigcommerce_body(4242), "b", now_s());
    let (status, answer) = deliver(&app, &webhook_path("bigcommerce", &bid), &d).await;
    assert_eq!((status, answer["result"].as_str()), (202, Some("dead_lettered")), "{answer}");
    let missing = answer["dead_letter_id"].as_str().unwrap().to_owned();
    assert_eq!(replay(&app, &admin, &missing).await["outcome"], "failed");
    // ...and normalizable once the platform has it: the replay creates the order, once.
    bc.seed_order("4242", "11");
    let r = replay(&app, &admin, &missing).await;
    assert_eq!((r["outcome"].as_str(), r["detail"]["result"].as_str()), (Some("succeeded"), Some("created")), "{r}");
    let orders = list_all(&app, &admin, "", 50).await;
    assert_eq!(orders.len(), 1);
    assert_eq!((orders[0]["platform_order_id"].as_str(), &orders[0]["id"]), (Some("4242"), &r["detail"]["order_id"]));
    let again = replay(&app, &admin, &missing).await;
    assert_eq!(again["outcome"], "succeeded", "{again}");
    assert_eq!(list_all(&app, &admin, "", 50).await.len(), 1, "replaying twice creates nothing twice");
    let (_, open) = app.get_json("/v1/dead-letters", &admin).await;
    let open: Vec<&str> = open["dead_letters"].as_array().unwrap().iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(open, vec![broken.as_str()], "only the still-broken delivery is outstanding");
    // Archive: both deliveries, plus the replay that went through.
    assert_eq!(raw_payloads(&app, &tenant).await, 3);
    app.stop().await;
}

/// A check that the signing helpers match the platforms' published examples, so a
/// failure above cannot be a bug in the test's own signing.
#[test]
fn signing_helpers_match_known_answers() {
    // printf '{"id":1}' | openssl dgst -sha256 -hmac 'hush' -binary | base64
    let d = Delivery::shopify(br#"{"id":1}"#, "hush", "x", "orders/create");
    let sig = d.headers.iter().find(|(k, _)| k == "X-Shopify-Hmac-Sha256").unwrap();
    assert_eq!(sig.1, "VnKUjZsLuN5iZWjn5EntcBVCF9kMN43LglzCE1/GSeY=");
    assert_eq!(b64(b"hi"), "aGk=");
}

on_backends!(
    every_fixture_creates_its_order_on_both_endpoints => every_fixture_creates_its_order,
    bigcommerce_fetch_failures_are_queued_and_retried_never_lost => bigcommerce_fetch_failures_are_queued_and_retried,
    refusals_answer_with_stable_codes_and_change_nothing => refusals_change_nothing,
    unnormalizable_deliveries_are_dead_lettered_and_replayable => unnormalizable_deliveries_are_kept_and_replayable,
);
