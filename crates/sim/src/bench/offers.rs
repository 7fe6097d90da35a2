//! `bench offer-latency`: native orders at a steady rate to one store with a fleet of
//! connected drivers around it; the time from the order's commit (its `201`) to the offer
//! arriving on a driver's socket. Drivers accept, pick up and deliver at once so they
//! are free for the next order. Matching starts on the order's own event (after the
//! server's gathering window), so the budget is a fixed 150 ms whatever the backstop tick.

use super::load::{open_loop, Request};
use super::report::{Measurement, Report};
use super::server::{ServerProcess, ServerSpec};
use super::ws::{connect, create_drivers, set_online};
use super::BenchArgs;
use crate::client::Api;
use crate::stats::{latency_histogram, Percentiles};
use futures::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// When each order was sent and acknowledged, and when its first offer arrived.
#[derive(Default)]
struct Timeline {
    sent: HashMap<String, Instant>,
    acked: HashMap<String, Instant>,
    offered: HashMap<String, Instant>,
}

const STORE: (f64, f64) = (60.1699, 24.9384);

/// Commit → offer on the socket, p99 (the gathering window included).
const OFFER_BUDGET_MS: f64 = 150.0;

fn near_store(i: usize) -> (f64, f64) {
    let a = i as f64 * 2.399; // golden angle: an even spread within ~1 km
    let r = 0.008 * ((i % 50) as f64 / 50.0).sqrt();
    (STORE.0 + r * a.sin(), STORE.1 + 2.0 * r * a.cos())
}

/// A native order (ready at once) for `store_id`, delivered to `dropoff`.
pub(super) fn order_body(store_id: &str, external_id: &str, dropoff: (f64, f64)) -> Value {
    json!({"store_id": store_id, "external_id": external_id,
        "customer": {"name": "Aino Virtanen", "phone": "+358401234567", "email": "aino@example.fi"},
        "dropoff": {"address": {"line1": "Bulevardi 5", "city": "Helsinki", "postal_code": "00120", "country": "FI"}, "lat": dropoff.0, "lng": dropoff.1},
        "items": [{"sku": "FI-1", "name": "Lohikeitto", "quantity": 1, "unit_price_minor": 1450}], "currency": "EUR"})
}

async fn driver_loop(
    api: Api,
    token: String,
    ws: super::ws::DriverSocket,
    timeline: Arc<Mutex<Timeline>>,
    stop: CancellationToken,
) {
    let (mut tx, mut rx) = ws.split();
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            m = rx.next() => m,
        };
        let Some(Ok(Message::Text(text))) = msg else {
            if matches!(msg, Some(Ok(_))) {
                continue;
            }
            break;
        };
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
        if let Some(seq) = v["seq"].as_i64() {
            let _ = tx.send(Message::Text(json!({"type": "ack", "seq": seq}).to_string().into())).await;
        }
        match v["type"].as_str() {
            Some("offer") => {
                let now = Instant::now();
                if let Some(order) = v["data"]["order_id"].as_str() {
                    timeline.lock().unwrap_or_else(|e| e.into_inner()).offered.entry(order.to_owned()).or_insert(now);
                }
                let offer = v["data"]["offer_id"].as_str().unwrap_or_default();
                let _ = tx.send(Message::Text(json!({"type": "accept", "offer_id": offer}).to_string().into())).await;
            }
            Some("accepted") => {
                let order = v["data"]["order"]["id"].as_str().unwrap_or_default().to_owned();
                for step in ["pickup", "deliver"] {
                    let _ = api
                        .call(Method::POST, &format!("/v1/driver/orders/{order}/{step}"), &token, Some(&json!({})))
                        .await;
                }
            }
            _ => {}
        }
    }
}

fn percentiles(samples: impl Iterator<Item = Duration>) -> Percentiles {
    let mut h: Histogram<u64> = latency_histogram();
    for d in samples {
        h.saturating_record((d.as_micros() as u64).max(1));
    }
    Percentiles::of(&h)
}

pub async fn run(args: &BenchArgs, report: &mut Report, stop: &CancellationToken) -> anyhow::Result<()> {
    let drivers = args.drivers.unwrap_or(50);
    let mut spec = ServerSpec { bin: args.server_bin.clone(), database_url: args.database_url.clone(), env: vec![] }
        .set("LASTMILE_DISPATCH__TICK_MS", args.tick_ms);
    if let Some(gather_ms) = args.gather_ms {
        spec = spec.set("LASTMILE_DISPATCH__GATHER_MS", gather_ms);
    }
    let server = ServerProcess::start(&spec).await?;
    let api = Api::new(&server.base)?;
    let store = json!({"name": "Bench Kitchen", "platform": "native", "platform_store_id": "bench-kitchen", "webhook_secret": "",
                       "pickup": {"lat": STORE.0, "lng": STORE.1, "address": "Mannerheimintie 1, Helsinki"}});
    let store_id = api.create_store(&server.admin_key, &store).await?;
    let jwt = api.api_client_token(&server.admin_key, "bench").await?;
    let tokens: Vec<String> =
        create_drivers(&api, &server.admin_key, drivers).await?.into_iter().map(|(_, t)| t).collect();
    set_online(&api, &tokens).await?;
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let driver_stop = stop.child_token();
    let mut fleet = tokio::task::JoinSet::new();
    for (i, t) in tokens.iter().enumerate() {
        let ws = connect(server.addr, t, None).await?;
        let (lat, lng) = near_store(i);
        let fix = json!({"lat": lat, "lng": lng, "accuracy_m": 5, "recorded_at": chrono::Utc::now()});
        api.must(Method::POST, "/v1/driver/location", t, &fix).await?;
        fleet.spawn(driver_loop(api.clone(), t.clone(), ws, timeline.clone(), driver_stop.clone()));
    }
    // Fixes are applied to the index at once; give the flusher a beat before orders start.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let sent_ok = Arc::new(AtomicU64::new(0));
    let request: Request = {
        let (api, jwt, store_id, timeline, sent_ok) =
            (api.clone(), Arc::new(jwt), Arc::new(store_id), timeline.clone(), sent_ok.clone());
        Arc::new(move |n| {
            let (api, jwt, store_id, timeline, sent_ok) =
                (api.clone(), jwt.clone(), store_id.clone(), timeline.clone(), sent_ok.clone());
            async move {
                let body = order_body(&store_id, &format!("offer-bench-{n}"), near_store(n as usize + 7));
                let sent = Instant::now();
                match api.create_order(&jwt, &format!("offer-bench-{n}"), &body).await {
                    Ok(a) if a.status.as_u16() == 201 => {
                        let acked = Instant::now();
                        if let Some(id) = a.str("id") {
                            let mut t = timeline.lock().unwrap_or_else(|e| e.into_inner());
                            t.sent.insert(id.to_owned(), sent);
                            t.acked.insert(id.to_owned(), acked);
                        }
                        sent_ok.fetch_add(1, Relaxed);
                        true
                    }
                    _ => false,
                }
            }
            .boxed()
        })
    };
    let d = args.phase(30);
    let load = open_loop("orders", args.rate, d, 256, request, stop).await;
    // The last orders' offers come within a tick or two.
    tokio::time::sleep(Duration::from_millis(args.tick_ms * 3 + 1000)).await;
    driver_stop.cancel();
    while fleet.join_next().await.is_some() {}
    server.stop().await;

    let t = timeline.lock().unwrap_or_else(|e| e.into_inner());
    let from_ack =
        percentiles(t.acked.iter().filter_map(|(id, at)| Some(t.offered.get(id)?.saturating_duration_since(*at))));
    let from_send =
        percentiles(t.sent.iter().filter_map(|(id, at)| Some(t.offered.get(id)?.saturating_duration_since(*at))));
    let missing = t.acked.keys().filter(|id| !t.offered.contains_key(*id)).count();
    report.add(
        Measurement::rate("orders created (open loop)", load.rate(), Some(load.latency))
            .with(json!({"ok": load.ok, "failed": load.failed})),
    );
    report.add(
        Measurement::latency("order committed (201 received) → offer on socket", from_ack)
            .with(json!({"tick_ms": args.tick_ms, "gather_ms": args.gather_ms, "orders_without_offer": missing})),
    );
    report.add(Measurement::latency("order sent → offer on socket (upper bound)", from_send));
    report.budget(
        format!("p99 commit → offer ≤ {OFFER_BUDGET_MS} ms, every order offered"),
        format!("{:.1} ms (from the 201; {:.1} ms from the send)", from_ack.p99_ms, from_send.p99_ms),
        from_ack.p99_ms <= OFFER_BUDGET_MS && missing == 0,
    );
    report.note(format!("{missing} of {} created orders got no offer", t.acked.len()));
    report.note(format!(
        "{drivers} connected drivers within ~1 km of one store; {:.1} orders/s ready at once; each offer accepted, picked up and delivered at once",
        args.rate
    ));
    Ok(())
}
