//! Exactly once, in order, and isolated: out-of-order and duplicate deliveries, 100
//! concurrent identical deliveries, and one store flooding beside a calm one.

use crate::helpers::{Backend, TestApp};
use crate::on_backends;
use crate::{
    deliver, deliver_raw, fixture, list_all, order, raw_payloads, shopify_order, store, webhook_path, Delivery,
};
use serde_json::Value;

async fn out_of_order_and_duplicate_deliveries(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (tenant, admin) = app.tenant("order").await;
    let shop = "ooo.myshopify.com";
    let sid = store(&app, &admin, "shopify", shop, "s").await;
    let url = webhook_path("shopify", &sid);
    let newer =
        Delivery::shopify(&shopify_order(5001, "2024-05-02T10:00:00Z", "ring twice"), "s", shop, "orders/updated");
    let older = Delivery::shopify(&shopify_order(5001, "2024-05-02T09:00:00Z", "old note"), "s", shop, "orders/create");

    let (status, first) = deliver(&app, &url, &newer).await;
    assert_eq!((status, first["result"].as_str()), (200, Some("created")), "{first}");
    let id = first["order_id"].as_str().unwrap().to_owned();
    let before = order(&app, &admin, &id).await;
    assert_eq!(before["status"], "received");
    let (status, stale) = deliver(&app, &url, &older).await;
    assert_eq!((status, stale["result"].as_str(), stale["order_id"].as_str()), (200, Some("stale"), Some(id.as_str())));
    let after = order(&app, &admin, &id).await;
    for field in ["notes", "platform_updated_at", "updated_at", "status", "items", "totals"] {
        assert_eq!(after[field], before[field], "a stale delivery changes no {field}");
    }
    assert_eq!(after["notes"], "ring twice");
    // Sequential duplicates answer with the same order id.
    for _ in 0..3 {
        let (status, dup) = deliver(&app, &url, &newer).await;
        assert_eq!(
            (status, dup["result"].as_str(), dup["order_id"].as_str()),
            (200, Some("duplicate"), Some(id.as_str()))
        );
    }
    let newest =
        Delivery::shopify(&shopify_order(5001, "2024-05-02T11:00:00Z", "leave at door"), "s", shop, "orders/updated");
    let (_, updated) = deliver(&app, "/v1/import-orders", &newest).await;
    assert_eq!((updated["result"].as_str(), updated["order_id"].as_str()), (Some("updated"), Some(id.as_str())));
    assert_eq!(order(&app, &admin, &id).await["notes"], "leave at door");

    // WooCommerce's two published versions of order 727, newest first.
    let site = "https://ooo.example";
    let wid = store(&app, &admin, "woocommerce", site, "w").await;
    let completed = fixture("woocommerce/order_updated_727_status_completed.json");
    let created = fixture("woocommerce/order_retrieve_727.json");
    let (_, first) = deliver(
        &app,
        &webhook_path("woocommerce", &wid),
        &Delivery::woocommerce(&completed, "w", site, "order.updated"),
    )
    .await;
    let woo_id = first["order_id"].as_str().unwrap().to_owned();
    let before = order(&app, &admin, &woo_id).await;
    let (_, stale) =
        deliver(&app, &webhook_path("woocommerce", &wid), &Delivery::woocommerce(&created, "w", site, "order.created"))
            .await;
    assert_eq!(
        (stale["result"].as_str(), stale["order_id"].as_str()),
        (Some("stale"), Some(woo_id.as_str())),
        "{stale}"
    );
    assert_eq!(order(&app, &admin, &woo_id).await, before, "the older version is not applied");
    assert_eq!(before["platform_updated_at"], "2017-03-22T19:30:35Z");

    assert_eq!(list_all(&app, &admin, "", 50).await.len(), 2);
    assert_eq!(raw_payloads(&app, &tenant).await, 8, "every authenticated delivery is archived");
    app.stop().await;
}

async fn concurrent_identical_deliveries_make_one_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (tenant, admin) = app.tenant("burst").await;
    let shop = "burst.myshopify.com";
    let sid = store(&app, &admin, "shopify", shop, "s").await;
    let d = Delivery::shopify(&shopify_order(7001, "2024-05-02T10:00:00Z", "burst"), "s", shop, "orders/create");
    let url = webhook_path("shopify", &sid);
    // Half to the store's URL, half to the detecting endpoint, all at once.
    let sends = (0..100).map(|i| {
        let (app, d, url) = (&app, &d, if i % 2 == 0 { url.as_str() } else { "/v1/import-orders" });
        async move { deliver(app, url, d).await }
    });
    let began = std::time::Instant::now();
    let answers = futures::future::join_all(sends).await;
    eprintln!("100 concurrent deliveries answered in {:?}", began.elapsed());
    let ids: std::collections::HashSet<&str> = answers.iter().filter_map(|(_, a)| a["order_id"].as_str()).collect();
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
    }
    assert_eq!(ids.len(), 1, "every answer names the same order: {ids:?}");
    let created = answers.iter().filter(|(_, a)| a["result"] == "created").count();
    let duplicate = answers.iter().filter(|(_, a)| a["result"] == "duplicate").count();
    assert_eq!((created, duplicate), (1, 99));
    let orders = list_all(&app, &admin, "", 50).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(Some(orders[0]["id"].as_str().unwrap()), ids.into_iter().next());
    assert_eq!(raw_payloads(&app, &tenant).await, 100);
    app.stop().await;
}

async fn one_flooding_store_leaves_the_others_alone(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.store_intake_per_second = 5;
        c.store_intake_concurrency = 1;
        c.store_intake_queue_ms = 50;
    })
    .await;
    let (_, admin) = app.tenant("flood").await;
    let a = store(&app, &admin, "shopify", "flood.myshopify.com", "a").await;
    let b = store(&app, &admin, "shopify", "calm.myshopify.com", "b").await;
    let to_a = |n: u64| {
        Delivery::shopify(&shopify_order(n, "2024-05-02T10:00:00Z", ""), "a", "flood.myshopify.com", "orders/create")
    };
    let to_b = |n: u64| {
        Delivery::shopify(&shopify_order(n, "2024-05-02T10:00:00Z", ""), "b", "calm.myshopify.com", "orders/create")
    };

    // Store A's only slot is taken: its next delivery waits briefly, then gets 429...
    let slot = app.state.limits.enter_store(&a).await.expect("a slot");
    let res = deliver_raw(&app, &webhook_path("shopify", &a), &to_a(1)).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_some());
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "store_busy");
    // ...while store B is served.
    let (status, ok) = deliver(&app, &webhook_path("shopify", &b), &to_b(101)).await;
    assert_eq!((status, ok["result"].as_str()), (200, Some("created")), "{ok}");
    drop(slot);

    // Store A floods: 30 deliveries at once, over its rate and its one slot, get 429 with
    // Retry-After, while store B's deliveries, sent meanwhile, all go through.
    let flood = futures::future::join_all((2..32).map(|n| {
        let (app, url, d) = (&app, webhook_path("shopify", &a), to_a(n));
        async move {
            let res = deliver_raw(app, &url, &d).await;
            let retry_after = res.headers().contains_key("retry-after");
            (res.status().as_u16(), retry_after, res.json::<Value>().await.unwrap())
        }
    }));
    let calm = async {
        let mut answers = Vec::new();
        for n in 102..104 {
            answers.push(deliver(&app, "/v1/import-orders", &to_b(n)).await);
        }
        answers
    };
    let (flood, calm) = tokio::join!(flood, calm);
    for (status, ok) in calm {
        assert_eq!((status, ok["result"].as_str()), (200, Some("created")), "{ok}");
    }
    let mut codes = Vec::new();
    for (status, retry_after, answer) in flood {
        match status {
            200 => assert_eq!(answer["result"], "created"),
            429 => {
                assert!(retry_after, "429 carries Retry-After: {answer}");
                codes.push(answer["error"]["code"].as_str().unwrap().to_owned());
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert!(codes.iter().any(|c| c == "rate_limited"), "30 at once exceed 5 per second: {codes:?}");
    assert!(codes.iter().all(|c| c == "rate_limited" || c == "store_busy"), "{codes:?}");
    app.stop().await;
}

on_backends!(
    out_of_order_updates_are_stale_and_duplicates_share_the_order => out_of_order_and_duplicate_deliveries,
    one_hundred_concurrent_identical_deliveries_make_one_order => concurrent_identical_deliveries_make_one_order,
    one_flooding_store_gets_429_while_others_are_served => one_flooding_store_leaves_the_others_alone,
);
