//! A hanging Shopify leaves WooCommerce and BigCommerce sync latency (p99 within 10% of
//! the no-fault run) and webhook intake alone.

use crate::helpers::{Backend, TestApp};
use crate::support::{delivered_writes, eventually, integrations, platform_order, standin_store, writes, Courier};
use crate::{api, ms, p50, p99, TIMING};
use futures::StreamExt;
use lastmile_core::{OrderId, OrderStatus, Platform, StoreId, TenantId};
use lastmile_standins::{Fault, StandIn};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Stores, couriers and orders made ready (assigned and picked up, picked-up syncs done)
/// before anything is measured.
struct HangWorld {
    app: TestApp,
    tenant: TenantId,
    admin: String,
    shop: StandIn,
    woo: StandIn,
    bc: StandIn,
    s_shop: StoreId,
    /// (store, its courier, picked-up orders by external id) for each WooCommerce and
    /// BigCommerce store; Shopify's are the last entry.
    lanes: Vec<Lane>,
    webhooks_sent: usize,
}

struct Lane {
    platform: Platform,
    courier: Courier,
    ready: Vec<(String, OrderId)>,
}

/// One phase's measurements.
struct Phase {
    sync: Vec<Duration>,
    intake: Vec<Duration>,
}

const MEASURED_STORES: usize = 8;
/// Deliveries per measured store per phase: 8 × 25 = 200 samples a phase, so the p99 is
/// the third-worst sample, not a single outlier.
const PER_STORE: usize = 25;
/// Shopify deliveries a phase: a burst at its start (as when a busy kitchen hands over a
/// rack of orders, or retries come due together), then a steady trickle.
const SHOPIFY_BURST: usize = 70;
const SHOPIFY_PER_PHASE: usize = SHOPIFY_BURST + 10;
/// Measured phases (no fault, Shopify hanging, no fault again); each lane also holds one
/// more order for the unmeasured warm-up.
const PHASES: usize = 3;
const WEBHOOKS_PER_PHASE: usize = 100;

async fn hang_world(backend: Backend) -> HangWorld {
    let (shop, woo, bc) = (
        StandIn::start(Platform::Shopify).await,
        StandIn::start(Platform::Woocommerce).await,
        StandIn::start(Platform::Bigcommerce).await,
    );
    let app = TestApp::spawn_with(backend, |cfg| {
        cfg.dispatch.enabled = false;
        // The production poll interval: what a sync's latency is made of in production.
        cfg.sync.poll_ms = 200;
        // Short tier timeouts so the hanging calls end (and the breaker opens) within the run.
        cfg.sync.timeout_standard_s = 1;
        cfg.sync.timeout_enterprise_s = 1;
    })
    .await;
    let (tenant, admin) = app.tenant("hang").await;
    let tenant = TenantId(tenant);
    // Four WooCommerce and four BigCommerce stores keep each store's rate budget well clear
    // (WooCommerce's politeness bucket is 10 requests/s; a delivery sync is 2 requests).
    let mut stores = Vec::new();
    for n in 0..MEASURED_STORES {
        let (standin, tier) = if n % 2 == 0 { (&woo, "standard") } else { (&bc, "enterprise") };
        stores.push((standin.platform(), standin_store(&api(&app), &admin, standin, &format!("hang-{n}"), tier).await));
    }
    let s_shop = standin_store(&api(&app), &admin, &shop, "hang-shop", "enterprise").await;
    stores.push((Platform::Shopify, s_shop.clone()));

    // Lanes, and chunks of each lane, are set up side by side so their commits share fsyncs.
    let mut lanes = Vec::new();
    for (lane, (platform, store)) in stores.iter().enumerate() {
        let standin = match platform {
            Platform::Shopify => &shop,
            Platform::Woocommerce => &woo,
            _ => &bc,
        };
        let count = if *platform == Platform::Shopify { SHOPIFY_PER_PHASE } else { PER_STORE } * PHASES + 1;
        lanes.push((
            *platform,
            store,
            standin,
            Courier::new(&app.state, &tenant).await,
            (0..count).map(move |n| (lane, n)),
        ));
    }
    let jobs: Vec<_> = lanes
        .iter()
        .flat_map(|(_, store, standin, courier, orders)| orders.clone().map(move |o| (*store, *standin, courier, o)))
        .collect();
    let ready: Vec<(usize, String, OrderId)> = futures::stream::iter(jobs)
        .map(|(store, standin, courier, (lane, n))| {
            let (app, tenant) = (&app, &tenant);
            async move {
                let external = (10_000 * (lane + 1) + n).to_string();
                let order = platform_order(&app.state, tenant, store, standin, &external).await;
                courier.take(&app.state, &order).await;
                courier.step(&app.state, &order, OrderStatus::PickedUp).await;
                (lane, external, order)
            }
        })
        .buffered(32)
        .collect()
        .await;
    let lanes: Vec<Lane> = lanes
        .into_iter()
        .enumerate()
        .map(|(lane, (platform, _, _, courier, _))| {
            let ready = ready.iter().filter(|(l, _, _)| *l == lane).map(|(_, e, o)| (e.clone(), o.clone())).collect();
            Lane { platform, courier, ready }
        })
        .collect();
    // The picked-up syncs (BigCommerce Shipped, Shopify fulfilments) land before measuring.
    eventually("the picked-up syncs", Duration::from_secs(60), || async {
        let q = app.state.db.sync_queue(app.state.clock.now_ms()).await.unwrap();
        (q.unfinished == 0).then_some(())
    })
    .await;
    HangWorld { app, tenant, admin, shop, woo, bc, s_shop, lanes, webhooks_sent: 0 }
}

/// A signed Shopify `orders/create` webhook for the Shopify store: intake never calls the
/// platform, so a hanging Shopify API must not slow it.
fn shopify_webhook(n: usize) -> (Vec<u8>, Vec<(&'static str, String)>) {
    use base64::Engine;
    use hmac::Mac;
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../ingest/tests/fixtures/shopify/orders_create.json");
    let mut order: Value = serde_json::from_slice(&std::fs::read(fixture).expect("Shopify fixture")).unwrap();
    let id = 600_000_000 + n as u64;
    order["id"] = id.into();
    order["admin_graphql_api_id"] = format!("gid://shopify/Order/{id}").into();
    let body = serde_json::to_vec(&order).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"whsec_hang-shop").unwrap();
    mac.update(&body);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let headers = vec![
        ("X-Shopify-Topic", "orders/create".to_owned()),
        ("X-Shopify-Shop-Domain", "hang-shop.myshopify.com".to_owned()),
        ("X-Shopify-API-Version", "2025-01".to_owned()),
        ("X-Shopify-Webhook-Id", format!("hang-webhook-{n}")),
        ("X-Shopify-Hmac-Sha256", signature),
    ];
    (body, headers)
}

/// Delivers the phase's orders at a steady pace, posting webhooks beside them, and measures
/// for each WooCommerce and BigCommerce delivery the time from its commit (which creates
/// the job) to the stand-in receiving the write that carries the job's idempotency key.
async fn run_phase(w: &mut HangWorld, phase: usize) -> Phase {
    let app = &w.app;
    // Intake beside the syncs: webhooks at about 25 a second.
    let first = w.webhooks_sent;
    w.webhooks_sent += WEBHOOKS_PER_PHASE;
    let intake = {
        let (http, url) = (app.http.clone(), app.url(&format!("/v1/webhooks/shopify/{}", w.s_shop)));
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut pace = tokio::time::interval(Duration::from_millis(40));
            for n in first..first + WEBHOOKS_PER_PHASE {
                pace.tick().await;
                let (body, headers) = shopify_webhook(n);
                let mut req = http.post(&url).body(body);
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                let started = Instant::now();
                let res = req.send().await.expect("webhook");
                let status = res.status().as_u16();
                let answer: Value = res.json().await.unwrap_or(Value::Null);
                latencies.push(started.elapsed());
                assert_eq!((status, answer["result"].as_str()), (200, Some("created")), "{answer}");
            }
            latencies
        })
    };

    // The Shopify burst: more jobs than the worker has slots (64). With Shopify hanging,
    // a worker that claimed them all, or let them queue inside the hub, would have no slot
    // left for the other platforms for seconds (a p99 of 3-5 s when tried).
    let shopify = w.lanes.last().expect("the Shopify lane");
    let burst = &shopify.ready[phase * SHOPIFY_PER_PHASE..phase * SHOPIFY_PER_PHASE + SHOPIFY_BURST];
    futures::future::join_all(burst.iter().map(|(_, o)| shopify.courier.step(&app.state, o, OrderStatus::Delivered)))
        .await;

    // Round-robin over the stores, one delivery every 30 ms (about 33 a second, so each
    // measured store syncs under 4 orders a second, inside its rate budget).
    let mut created: Vec<(Platform, String, String, Instant)> = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(30));
    for round in 0..PER_STORE {
        for lane in &w.lanes {
            let (external, order) = if lane.platform == Platform::Shopify {
                if round >= SHOPIFY_PER_PHASE - SHOPIFY_BURST {
                    continue;
                }
                &lane.ready[phase * SHOPIFY_PER_PHASE + SHOPIFY_BURST + round]
            } else {
                &lane.ready[phase * PER_STORE + round]
            };
            pace.tick().await;
            lane.courier.step(&app.state, order, OrderStatus::Delivered).await;
            if lane.platform != Platform::Shopify {
                created.push((lane.platform, external.clone(), format!("{order}:delivered"), Instant::now()));
            }
        }
    }

    let received = |platform: Platform, key: &str| -> Option<Instant> {
        let standin = if platform == Platform::Woocommerce { &w.woo } else { &w.bc };
        standin
            .requests()
            .into_iter()
            .find(|r| r.method == "PUT" && r.header("idempotency-key") == Some(key))
            .map(|r| r.received_at)
    };
    let sync = eventually("every measured delivery to reach its platform", Duration::from_secs(30), || async {
        created
            .iter()
            .map(|(platform, _, key, at)| received(*platform, key).map(|got| got.saturating_duration_since(*at)))
            .collect::<Option<Vec<Duration>>>()
    })
    .await;
    Phase { sync, intake: intake.await.expect("webhook task") }
}

/// Unmeasured: each lane's last order, and a few webhooks, so every connection is open and
/// every cache warm before the first measured phase.
async fn warm_up(w: &mut HangWorld) {
    for lane in &w.lanes {
        let (_, order) = lane.ready.last().expect("a warm-up order");
        lane.courier.step(&w.app.state, order, OrderStatus::Delivered).await;
    }
    for n in 0..3 {
        let (body, headers) = shopify_webhook(1_000_000 + n);
        let mut req = w.app.http.post(w.app.url(&format!("/v1/webhooks/shopify/{}", w.s_shop))).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        assert_eq!(req.send().await.expect("webhook").status(), 200);
    }
    eventually("the warm-up syncs", Duration::from_secs(30), || async {
        let q = w.app.state.db.sync_queue(w.app.state.clock.now_ms()).await.unwrap();
        (q.unfinished == 0).then_some(())
    })
    .await;
}

/// One A-B-A measurement on a fresh app: the latency comparison's verdict, and the
/// deterministic checks asserted on the spot.
async fn measure_hang(backend: Backend, attempt: usize) -> Result<(), String> {
    let t = Instant::now();
    let mut w = hang_world(backend).await;
    warm_up(&mut w).await;
    eprintln!("hang test on {backend:?}, attempt {attempt}: set up in {:.1} s", t.elapsed().as_secs_f64());
    let baseline = run_phase(&mut w, 0).await;
    w.shop.set_fault(Fault::Hang);
    let hanging = run_phase(&mut w, 1).await;
    // The hang was real: Shopify calls went out, hung, and opened the store's breaker.
    let hung = w.shop.requests().iter().filter(|r| r.fault == Fault::Hang).count();
    let shop_view = integrations(&api(&w.app), &w.admin).await[w.s_shop.as_str()].clone();
    w.shop.set_fault(Fault::None);
    let after = run_phase(&mut w, 2).await;

    let (b1, h, b2) = (p99(&baseline.sync), p99(&hanging.sync), p99(&after.sync));
    let (i1, ih, i2) = (p99(&baseline.intake), p99(&hanging.intake), p99(&after.intake));
    eprintln!(
        "hang test on {backend:?}: sync p99 baseline {:.1} ms, Shopify hanging {:.1} ms, baseline again {:.1} ms \
         (p50 {:.1} / {:.1} / {:.1} ms; {} samples each); webhook ack p99 {:.1} / {:.1} / {:.1} ms \
         (p50 {:.1} / {:.1} / {:.1} ms); {hung} Shopify calls hung",
        ms(b1),
        ms(h),
        ms(b2),
        ms(p50(&baseline.sync)),
        ms(p50(&hanging.sync)),
        ms(p50(&after.sync)),
        hanging.sync.len(),
        ms(i1),
        ms(ih),
        ms(i2),
        ms(p50(&baseline.intake)),
        ms(p50(&hanging.intake)),
        ms(p50(&after.intake)),
    );
    assert!(hung > 0, "Shopify calls reached the hanging stand-in");
    assert_ne!(shop_view["breaker"], "closed", "the hanging store's breaker opened: {shop_view}");
    assert!(shop_view["degraded"].as_str().is_some_and(|n| n.starts_with("Shopify sync delayed since")), "{shop_view}");
    // Each measured fulfilment arrived exactly once; nothing was dead-lettered.
    for lane in w.lanes.iter().filter(|l| l.platform != Platform::Shopify) {
        let standin = if lane.platform == Platform::Woocommerce { &w.woo } else { &w.bc };
        for (external, _) in &lane.ready {
            assert_eq!(writes(standin, external), delivered_writes(lane.platform), "order {external}");
        }
    }
    let filter = lastmile_storage::DeadLetterFilter { limit: 10, ..Default::default() };
    assert!(w.app.state.db.list_dead_letters(&w.tenant, &filter).await.unwrap().is_empty());
    w.app.stop().await;

    // The comparison. A shared 2-core machine drifts (other builds and tests come and go),
    // so the no-fault run is measured twice, before and after the hang, in the same process
    // on the same stores, and the hang is compared with the worse of the two: a drift that
    // slows everything shows in a baseline as well. The worker runs at the production poll
    // interval (200 ms), which is what a sync's latency consists of in production; 10% of it
    // is 20 ms — a worker slot held by a hanging call, a store starved by another's backlog,
    // or a stall of the database writer would all cost more than that, while scheduling
    // noise of a few milliseconds does not flip the verdict. 200 samples a phase put the
    // p99 at the third-worst sample rather than a single outlier.
    let reference = b1.max(b2);
    if h > reference.mul_f64(1.10) {
        return Err(format!(
            "sync p99 with Shopify hanging {:.1} ms is more than 10% above the no-fault p99 {:.1} ms",
            ms(h),
            ms(reference)
        ));
    }
    // Intake acknowledges in a few milliseconds (a group commit), where 10% is far below the
    // machine's jitter (tens of milliseconds at the p99 when other builds share the 2
    // cores). What would matter is intake waiting on the platform or on resources the sync
    // calls hold: that costs the tier timeout (1 s here) or the hub's waits (250 ms). The
    // limit, 10% plus 50 ms over the worse baseline, is well below both.
    let intake_ref = i1.max(i2);
    if ih > intake_ref.mul_f64(1.10) + Duration::from_millis(50) {
        return Err(format!("webhook p99 {:.1} ms with Shopify hanging vs {:.1} ms", ms(ih), ms(intake_ref)));
    }
    Ok(())
}

async fn a_hanging_shopify_leaves_the_others_alone(backend: Backend) {
    let _alone = TIMING.write().await;
    // A burst of load from outside (another build linking) can land on the hang phase
    // alone; such a measurement is taken once more, on a fresh app. A real loss of
    // isolation fails both (when tried, the unbounded worker's p99 was 3-5 s, not 10% off).
    let first = measure_hang(backend, 1).await;
    if let Err(why) = first {
        eprintln!("hang test on {backend:?}: measuring again after: {why}");
        if let Err(again) = measure_hang(backend, 2).await {
            panic!("{why}; measured again: {again}");
        }
    }
}

crate::on_backends! {
    a_hanging_shopify_does_not_slow_other_platforms_or_intake => a_hanging_shopify_leaves_the_others_alone,
}
