//! The simulated stores: order `n` leaves its store at `n / rate` into the run, as a
//! signed Shopify, WooCommerce or BigCommerce webhook or a native `POST /v1/orders`.
//! WooCommerce and BigCommerce orders carry only a street address: the server geocodes
//! them (or, with `--locate-by-hand`, a simulated operator locates them with
//! `PATCH /v1/orders/{id}`).

use crate::client::Api;
use crate::payloads;
use crate::scenario::{Scenario, Source};
use crate::stats::SimStats;
use chrono::Utc;
use reqwest::Method;
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the stores need to reach the server.
#[derive(Clone)]
pub struct Storefront {
    pub scenario: Arc<Scenario>,
    pub api: Api,
    pub stats: Arc<SimStats>,
    pub admin_key: String,
    /// Server-side store ids, by scenario store index.
    pub store_ids: Arc<Vec<String>>,
    /// For native and restaurant (catalog) orders.
    pub client_jwt: Option<String>,
    /// Makes platform order ids unique per run.
    pub run_salt: u64,
    /// The stores' platform APIs: each order is opened there before its webhook is sent.
    pub platform_apis: crate::city::PlatformApis,
    /// Per store: a restaurant's dishes, SKU → item id, which its customers order by.
    pub menus: Arc<Vec<std::collections::HashMap<String, String>>>,
}

/// Requests in flight at once: past this the sender waits (and falls behind its rate,
/// which the progress line shows) rather than piling up sockets.
const IN_FLIGHT: usize = 256;

/// Send orders at the scenario's rate until `shutdown`, or until `limit` orders were sent.
pub async fn run(front: Storefront, limit: Option<u64>, shutdown: CancellationToken) {
    let start = Instant::now();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0.. {
        if limit.is_some_and(|l| n >= l) {
            break;
        }
        let at = start + front.scenario.send_offset(n);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(at) => {}
        }
        let Ok(permit) = slots.clone().acquire_owned().await else { break };
        let f = front.clone();
        tasks.spawn(async move {
            send_one(&f, n).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    // Let requests already sent finish (each has the client's timeout).
    while tasks.join_next().await.is_some() {}
}

async fn send_one(f: &Storefront, n: u64) {
    let order = f.scenario.order(n);
    let store = &f.scenario.stores[order.store];
    let store_id = &f.store_ids[order.store];
    f.stats.sent.fetch_add(1, Relaxed);
    let now = Utc::now();
    let answer = match store.source {
        Source::Shopify | Source::Woocommerce | Source::Bigcommerce => {
            let d = match store.source {
                Source::Shopify => payloads::shopify(store, &order, f.run_salt, now),
                Source::Woocommerce => payloads::woocommerce(store, &order, f.run_salt, now),
                _ => payloads::bigcommerce(store, &order, f.run_salt, now),
            };
            f.platform_apis.seed(store.source, &d.platform_order_id, || payloads::bigcommerce_shipping_address(&order));
            f.api.webhook(store.source.platform(), store_id, &d).await
        }
        Source::Native | Source::Restaurant => {
            let body = if store.source == Source::Restaurant {
                // The menu sets prices and readiness.
                payloads::catalog(store_id, &order, &f.menus[order.store])
            } else {
                let ready =
                    (!order.prep.is_zero()).then(|| now + chrono::Duration::from_std(order.prep).unwrap_or_default());
                payloads::native(store_id, &order, ready)
            };
            let key = format!("sim-{}-{n}", f.run_salt);
            f.api.create_order(f.client_jwt.as_deref().unwrap_or_default(), &key, &body).await
        }
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(error = %e, n, "order send failed");
            f.stats.errors.fetch_add(1, Relaxed);
            return;
        }
    };
    f.stats.record_ack(answer.elapsed);
    let created = match store.source {
        Source::Native | Source::Restaurant => answer.status.as_u16() == 201,
        _ => answer.ok() && answer.str("result") == Some("created"),
    };
    let order_id = answer.str("order_id").or_else(|| answer.str("id")).map(str::to_owned);
    let Some(order_id) = order_id.filter(|_| created) else {
        tracing::debug!(status = %answer.status, body = %answer.body, n, "order not created");
        f.stats.rejected.fetch_add(1, Relaxed);
        return;
    };
    f.stats.received.fetch_add(1, Relaxed);
    if store.source.needs_geocoding() && f.scenario.cfg.locate_by_hand {
        locate(f, &order_id, order.dropoff).await;
    } else {
        f.stats.dispatchable(&order_id);
    }
}

/// The operator's step for orders that arrived without coordinates.
async fn locate(f: &Storefront, order_id: &str, at: lastmile_core::GeoPoint) {
    let body = json!({"dropoff": {"lat": at.lat, "lng": at.lng}});
    // A short human-ish delay would only slow the demo; locate at once.
    let path = format!("/v1/orders/{order_id}");
    for attempt in 0..5u64 {
        match f.api.call(Method::PATCH, &path, &f.admin_key, Some(&body)).await {
            Ok(a) if a.ok() => {
                f.stats.located.fetch_add(1, Relaxed);
                f.stats.dispatchable(order_id);
                return;
            }
            Ok(a) if a.status.as_u16() == 429 => tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await,
            Ok(a) => {
                tracing::debug!(status = %a.status, body = %a.body, "locating an order failed");
                break;
            }
            Err(e) => {
                tracing::debug!(error = %e, "locating an order failed");
                break;
            }
        }
    }
    f.stats.errors.fetch_add(1, Relaxed);
}
