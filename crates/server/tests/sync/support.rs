//! Sync-back test support, shared by `crates/server/tests/sync.rs` and the root package's
//! `tests/sync_kill.rs`: stores wired to platform stand-ins, platform orders, and a courier
//! that walks orders through the real storage transitions — the same calls the driver API
//! makes, so each status change enqueues its sync job in the same commit.

use lastmile_core::{DriverId, NormalizedOrder, OrderId, OrderStatus, Platform, StoreId, TenantId};
use lastmile_server::state::AppState;
use lastmile_standins::{StandIn, ACCESS_TOKEN, CONSUMER_KEY, CONSUMER_SECRET};
use lastmile_storage::{IntakeSource, RawDelivery};
use serde_json::{json, Value};
use std::future::Future;
use std::time::Duration;

/// A running app as these tests reach it: over HTTP at `base`, and through its state.
pub struct Api<'a> {
    pub http: &'a reqwest::Client,
    pub base: &'a str,
}

impl Api<'_> {
    pub async fn post(&self, path: &str, admin: &str, body: &Value) -> (u16, Value) {
        let res = self.http.post(format!("{}{path}", self.base)).bearer_auth(admin).json(body).send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, admin: &str) -> (u16, Value) {
        let res = self.http.get(format!("{}{path}", self.base)).bearer_auth(admin).send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
    }
}

/// A store of the stand-in's platform, created through the admin API, whose API
/// credentials and base URL point at the stand-in. `name` makes its identity unique.
pub async fn standin_store(api: &Api<'_>, admin: &str, standin: &StandIn, name: &str, tier: &str) -> StoreId {
    let platform = standin.platform();
    let (identity, credentials) = match platform {
        Platform::Shopify => {
            (format!("{name}.myshopify.com"), json!({"base_url": standin.base_url(), "access_token": ACCESS_TOKEN}))
        }
        Platform::Woocommerce => (
            format!("https://{name}.example"),
            json!({"base_url": standin.base_url(), "consumer_key": CONSUMER_KEY, "consumer_secret": CONSUMER_SECRET}),
        ),
        Platform::Bigcommerce => {
            (name.to_owned(), json!({"base_url": standin.base_url(), "access_token": ACCESS_TOKEN}))
        }
        Platform::Native => panic!("native stores have no platform API"),
    };
    let body = json!({
        "name": name, "platform": platform.as_str(), "platform_store_id": identity,
        "webhook_secret": format!("whsec_{name}"), "tier": tier, "api": credentials,
        "pickup": {"lat": 60.1699, "lng": 24.9384, "address": "Aleksanterinkatu 1, Helsinki"},
    });
    let (status, store) = api.post("/v1/stores", admin, &body).await;
    assert_eq!(status, 201, "{store}");
    StoreId(store["id"].as_str().expect("store id").to_owned())
}

/// The status an order starts with at the stand-in: open, to be fulfilled.
pub fn seed_status(platform: Platform) -> &'static str {
    match platform {
        Platform::Shopify => "OPEN",
        Platform::Woocommerce => "processing",
        _ => "11",
    }
}

/// The writes a picked-up-then-delivered order makes at its platform, each exactly once
/// (docs/status-mapping.md: WooCommerce has no picked-up status).
pub fn delivered_writes(platform: Platform) -> Vec<String> {
    let writes: &[&str] = match platform {
        Platform::Shopify => &["fulfillmentCreate", "fulfillmentEventCreate:DELIVERED"],
        Platform::Woocommerce => &["status:completed"],
        _ => &["status_id:2", "status_id:10"],
    };
    writes.iter().map(|w| (*w).to_owned()).collect()
}

/// What the stand-in shows once a delivered order has synced.
pub fn delivered_status(platform: Platform) -> &'static str {
    match platform {
        Platform::Shopify => "DELIVERED",
        Platform::Woocommerce => "completed",
        _ => "10",
    }
}

/// Every write the stand-in applied to `order`, in order.
pub fn writes(standin: &StandIn, order: &str) -> Vec<String> {
    standin.writes(order).into_iter().map(|w| w.what).collect()
}

/// A platform order as a verified webhook creates it, seeded at the stand-in too.
pub async fn platform_order(
    app: &AppState,
    tenant: &TenantId,
    store: &StoreId,
    standin: &StandIn,
    external_id: &str,
) -> OrderId {
    let platform = standin.platform();
    standin.seed_order(external_id, seed_status(platform));
    let order: NormalizedOrder = serde_json::from_value(json!({
        "platform": platform.as_str(), "platform_order_id": external_id, "platform_order_number": format!("#{external_id}"),
        "state": "open",
        "customer": {"name": "Aino Virtanen", "email": "aino@example.com", "phone": "+358401111111"},
        "dropoff": {"address": {"line1": "Mannerheimintie 10", "city": "Helsinki", "postal_code": "00100", "country": "FI"},
                    "lat": 60.1719, "lng": 24.9414},
        "items": [{"sku": "SOUP-1", "name": "Salmon soup", "quantity": 1, "unit_price_minor": 1450}],
        "totals": {"subtotal_minor": 1450, "shipping_minor": 0, "tax_minor": 0, "total_minor": 1450, "currency": "EUR"},
        "notes": null, "placed_at": null, "platform_updated_at": null,
    }))
    .expect("a normalized order");
    let src = IntakeSource { tenant_id: tenant.clone(), store_id: store.clone(), platform };
    let raw = RawDelivery { headers_json: "{}".into(), body: Vec::new() };
    let out = app.db.intake_platform_order(src, order, raw).await.expect("intake");
    out.order_id.expect("an order id")
}

/// An online driver with room for many orders, walking them through offer, accept,
/// pickup and delivery by the storage calls the driver API makes.
pub struct Courier {
    pub tenant: TenantId,
    pub driver: DriverId,
}

impl Courier {
    pub async fn new(app: &AppState, tenant: &TenantId) -> Courier {
        let hash = format!("courier-{}", lastmile_core::OrderId::generate());
        // More than the API's 50: one courier carries a whole test lane.
        let d = app.db.create_driver(tenant, "Courier", "+358401234567", "van", 500, &hash).await.expect("driver");
        app.db.set_driver_status(tenant, &d.id, "online").await.expect("online");
        Courier { tenant: tenant.clone(), driver: d.id }
    }

    /// Offered and accepted: the order is `assigned` to this courier.
    pub async fn take(&self, app: &AppState, order: &OrderId) {
        let db = &app.db;
        let now = app.clock.now_ms();
        let (offer, _) = db.create_offer(&self.tenant, order, &self.driver, now, 600_000).await.expect("offer");
        db.accept_offer(&self.tenant, &self.driver, &offer, now).await.expect("accept");
    }

    /// `picked_up`, `delivered` or `failed`: commits the status and its sync job together.
    pub async fn step(&self, app: &AppState, order: &OrderId, to: OrderStatus) {
        app.db.driver_order_step(&self.tenant, &self.driver, order, to, Value::Null).await.expect("step");
    }

    pub async fn deliver_fully(&self, app: &AppState, order: &OrderId) {
        self.take(app, order).await;
        self.step(app, order, OrderStatus::PickedUp).await;
        self.step(app, order, OrderStatus::Delivered).await;
    }
}

/// Polls `check` every 10 ms until it yields a value, failing after `limit` (bounded:
/// never a blind sleep).
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET /v1/integrations`, keyed by store id.
pub async fn integrations(api: &Api<'_>, admin: &str) -> std::collections::HashMap<String, Value> {
    let (status, body) = api.get("/v1/integrations", admin).await;
    assert_eq!(status, 200, "{body}");
    body["integrations"]
        .as_array()
        .expect("integrations")
        .iter()
        .map(|i| (i["store_id"].as_str().unwrap_or_default().to_owned(), i.clone()))
        .collect()
}
