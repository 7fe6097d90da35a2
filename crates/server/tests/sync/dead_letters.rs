//! Exhausted jobs become dead letters with their context; a replay after the fault clears
//! lands once, a second changes nothing and says so; bulk replay follows the filters; and
//! every integration shows in `/metrics`.

use crate::helpers::{Backend, TestApp};
use crate::support::{delivered_writes, eventually, platform_order, standin_store, writes, Courier};
use crate::{api, metric, TIMING};
use lastmile_core::{Platform, TenantId};
use lastmile_standins::{Fault, StandIn};
use serde_json::Value;
use std::time::Duration;

pub(crate) async fn dead_letters(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    let (status, body) = app.get_json(&format!("/v1/dead-letters{query}"), admin).await;
    assert_eq!(status, 200, "{body}");
    body["dead_letters"].as_array().expect("dead_letters").clone()
}

async fn exhausted_jobs_are_dead_lettered_and_replay_once(backend: Backend) {
    let _quiet = TIMING.read().await;
    let (shop, woo, bc) = (
        StandIn::start(Platform::Shopify).await,
        StandIn::start(Platform::Woocommerce).await,
        StandIn::start(Platform::Bigcommerce).await,
    );
    let app = TestApp::spawn_with(backend, |cfg| {
        cfg.dispatch.enabled = false;
        // One retry, at once: the second failure exhausts the schedule. Each store sees at
        // most 4 failures in a row, below the breaker's 5, so nothing is merely deferred.
        cfg.sync.retry_schedule_s = vec![0];
    })
    .await;
    let (tenant, admin) = app.tenant("dead-letters").await;
    let tenant = TenantId(tenant);
    let s_shop = standin_store(&api(&app), &admin, &shop, "dl-shop", "standard").await;
    let s_woo = standin_store(&api(&app), &admin, &woo, "dl-woo", "standard").await;
    let s_bc = standin_store(&api(&app), &admin, &bc, "dl-bc", "standard").await;
    let courier = Courier::new(&app.state, &tenant).await;
    for s in [&shop, &woo, &bc] {
        s.set_fault(Fault::Status5xx(503));
    }
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    let later = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let mut orders = Vec::new();
    for (standin, store, external) in [(&shop, &s_shop, "5001"), (&woo, &s_woo, "5002"), (&bc, &s_bc, "5003")] {
        let order = platform_order(&app.state, &tenant, store, standin, external).await;
        courier.deliver_fully(&app.state, &order).await;
        orders.push(order);
    }

    // Woo: the delivered job (picked-up is no call); BigCommerce and Shopify: both jobs, the
    // delivered one running after the picked-up one died.
    let letters = eventually("five sync dead letters", Duration::from_secs(30), || async {
        let l = dead_letters(&app, &admin, "?kind=sync").await;
        (l.len() == 5).then_some(l)
    })
    .await;
    let woo_letter = letters.iter().find(|l| l["platform"] == "woocommerce").expect("the WooCommerce letter").clone();
    let ctx = &woo_letter["context"];
    assert!(woo_letter["error"].as_str().unwrap().starts_with("retries exhausted"), "{woo_letter}");
    assert_eq!(woo_letter["attempts"], 2, "{woo_letter}");
    assert_eq!(ctx["attempts"], 2);
    assert_eq!(ctx["action"], "delivered");
    assert_eq!(ctx["platform_order_id"], "5002");
    assert_eq!(ctx["order_id"], orders[1].as_str());
    assert_eq!(ctx["request"]["platform"], "woocommerce");
    assert_eq!(ctx["request"]["action"], "delivered");
    assert_eq!(ctx["request"]["base_url"], woo.base_url());
    assert_eq!(ctx["last_status"], 503);
    assert!(ctx["last_response"].as_str().unwrap().contains("internal_server_error"), "{ctx}");
    assert_eq!(woo_letter["job"]["state"], "dead");
    assert_eq!(woo_letter["store_id"], s_woo.as_str());
    assert_eq!(woo.fulfilment_count("5002"), 0);

    // Every filter narrows.
    assert_eq!(dead_letters(&app, &admin, "?platform=bigcommerce").await.len(), 2);
    assert_eq!(dead_letters(&app, &admin, &format!("?store_id={s_shop}")).await.len(), 2);
    assert_eq!(dead_letters(&app, &admin, "?kind=intake").await.len(), 0);
    let since_later = format!("?since={}", urlencode(&later));
    assert_eq!(dead_letters(&app, &admin, &since_later).await.len(), 0);
    let until_before = format!("?until={}", urlencode(&before.to_rfc3339()));
    assert_eq!(dead_letters(&app, &admin, &until_before).await.len(), 0);

    // The fault clears; one replay lands the fulfilment once.
    woo.set_fault(Fault::None);
    let id = woo_letter["id"].as_str().unwrap();
    let (status, replayed) = app.post_json(&format!("/v1/dead-letters/{id}/replay"), &admin, &Value::Null).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!((replayed["outcome"].as_str(), replayed["changed"].as_bool()), (Some("succeeded"), Some(true)));
    assert_eq!(replayed["detail"]["requeued"], true);
    eventually("the replayed WooCommerce job", Duration::from_secs(20), || async {
        let l = dead_letters(&app, &admin, "?platform=woocommerce&include_replayed=true").await;
        (l[0]["job"]["state"] == "done").then_some(())
    })
    .await;
    assert_eq!(writes(&woo, "5002"), delivered_writes(Platform::Woocommerce));
    // A second replay changes nothing, and says so.
    let requests = woo.requests().len();
    let (_, again) = app.post_json(&format!("/v1/dead-letters/{id}/replay"), &admin, &Value::Null).await;
    assert_eq!((again["outcome"].as_str(), again["changed"].as_bool()), (Some("succeeded"), Some(false)), "{again}");
    assert_eq!(again["note"], "already replayed");
    let queue = app.state.db.sync_queue(app.state.clock.now_ms()).await.unwrap();
    assert_eq!(queue.unfinished, 0, "nothing was queued again");
    assert_eq!(woo.requests().len(), requests);
    assert_eq!(woo.fulfilment_count("5002"), 1);

    // Bulk replay by platform: BigCommerce only; Shopify's letters stay as they are.
    bc.set_fault(Fault::None);
    let (status, bulk) = app.post_json("/v1/dead-letters/replay?platform=bigcommerce", &admin, &Value::Null).await;
    assert_eq!(status, 200, "{bulk}");
    assert_eq!((bulk["replayed"].as_u64(), bulk["succeeded"].as_u64()), (Some(2), Some(2)), "{bulk}");
    eventually("the BigCommerce order to sync", Duration::from_secs(20), || async {
        (bc.order_status("5003").as_deref() == Some("10") && writes(&bc, "5003").len() == 2).then_some(())
    })
    .await;
    assert_eq!(writes(&bc, "5003"), delivered_writes(Platform::Bigcommerce));
    let shop_letters = dead_letters(&app, &admin, &format!("?store_id={s_shop}")).await;
    assert!(shop_letters.iter().all(|l| l["replay_outcome"].is_null() && l["job"]["state"] == "dead"));

    // Bulk replay by store and time: a window after the letters matches none; one before
    // matches both.
    shop.set_fault(Fault::None);
    let path = format!("/v1/dead-letters/replay?store_id={s_shop}&since={}", urlencode(&later));
    let (_, none) = app.post_json(&path, &admin, &Value::Null).await;
    assert_eq!(none["replayed"], 0, "{none}");
    let path = format!("/v1/dead-letters/replay?store_id={s_shop}&since={}", urlencode(&before.to_rfc3339()));
    let (_, both) = app.post_json(&path, &admin, &Value::Null).await;
    assert_eq!((both["replayed"].as_u64(), both["succeeded"].as_u64()), (Some(2), Some(2)), "{both}");
    eventually("the Shopify order to sync", Duration::from_secs(20), || async {
        (shop.order_status("5001").as_deref() == Some("DELIVERED")).then_some(())
    })
    .await;
    assert_eq!(writes(&shop, "5001"), delivered_writes(Platform::Shopify));

    // Everything replayed: nothing left to list or replay.
    let (_, rest) = app.post_json("/v1/dead-letters/replay", &admin, &Value::Null).await;
    assert_eq!(rest["replayed"], 0, "{rest}");
    assert!(dead_letters(&app, &admin, "").await.is_empty());
    let all = dead_letters(&app, &admin, "?include_replayed=true").await;
    assert_eq!(all.len(), 5);
    for l in &all {
        assert_eq!(
            (l["replay_outcome"].as_str(), l["job"]["state"].as_str()),
            (Some("succeeded"), Some("done")),
            "{l}"
        );
    }
    for (standin, external) in [(&shop, "5001"), (&woo, "5002"), (&bc, "5003")] {
        assert_eq!(writes(standin, external), delivered_writes(standin.platform()), "{external}");
    }

    // Per-integration metrics.
    let woo_retries =
        metric(&app, "lastmile_sync_attempts_total", &[("platform", "woocommerce"), ("outcome", "retry")]).await;
    assert!(woo_retries.unwrap_or(0.0) >= 2.0, "{woo_retries:?}");
    assert!(metric(&app, "lastmile_sync_attempts_total", &[("platform", "bigcommerce"), ("outcome", "done")])
        .await
        .is_some());
    let labels = [("platform", "woocommerce"), ("store", s_woo.as_str())];
    assert_eq!(metric(&app, "lastmile_integration_breaker_state", &labels).await, Some(0.0), "closed again");
    let latency = metric(&app, "lastmile_sync_latency_seconds_count", &[("platform", "shopify")]).await;
    assert!(latency.unwrap_or(0.0) >= 1.0, "{latency:?}");
    app.stop().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

crate::on_backends! {
    exhausted_jobs_become_dead_letters_that_replay_once => exhausted_jobs_are_dead_lettered_and_replay_once,
}
