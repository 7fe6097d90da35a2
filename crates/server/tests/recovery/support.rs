//! A tenant with a native store, an API client and drivers online near the store.

use crate::helpers::*;
use lastmile_core::{DriverId, OrderId, TenantId};
use serde_json::{json, Value};
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(10);
/// A dropoff 1.5 km from the store of `TestApp::store`.
pub const DROPOFF: (f64, f64) = (60.1810, 24.9500);
/// Next to the store: the first choice for every offer.
pub const NEAR: (f64, f64) = (60.1705, 24.9390);
/// Farther out: gets an order only when the near driver cannot have it.
pub const FAR: (f64, f64) = (60.1800, 24.9600);

pub struct Scene {
    pub app: TestApp,
    pub tenant: TenantId,
    pub admin: String,
    pub jwt: String,
    pub store_id: String,
}

pub struct OnlineDriver {
    pub id: DriverId,
    pub token: String,
    pub ws: Ws,
}

pub async fn scene(app: TestApp) -> Scene {
    let (tenant, admin) = app.tenant("acme").await;
    let store = app.store(&admin, "native", "acme-kitchen", "unused-secret").await;
    let jwt = app.client_token(&admin).await;
    Scene { app, tenant: TenantId(tenant), admin, jwt, store_id: store["id"].as_str().unwrap().to_owned() }
}

impl Scene {
    /// A driver online at `at` with their socket open, their position taken in.
    pub async fn online_driver(&self, name: &str, at: (f64, f64)) -> OnlineDriver {
        let (id, token) = self.app.driver(&self.admin, name).await;
        self.app.driver_status(&token, "online").await;
        let mut ws = self.app.driver_ws(&token, 0).await;
        ws_send(&mut ws, json!({"type": "location", "data": fix(at.0, at.1, 0)})).await;
        // Upstream messages are handled in order: the error for this one proves the fix is in.
        ws_send(&mut ws, json!({"type": "ping-me"})).await;
        let err = ws_next(&mut ws, WAIT).await;
        assert_eq!(err["data"]["code"], "invalid_message", "{err}");
        OnlineDriver { id: DriverId(id), token, ws }
    }

    pub async fn order(&self) -> OrderId {
        let order = self.app.native_order(&self.jwt, &self.store_id, DROPOFF.0, DROPOFF.1).await;
        OrderId(order["id"].as_str().unwrap().to_owned())
    }

    pub async fn order_json(&self, id: &OrderId) -> Value {
        let (status, body) = self.app.get_json(&format!("/v1/orders/{id}"), &self.admin).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The kinds of the order's timeline, oldest first.
    pub async fn timeline(&self, id: &OrderId) -> Vec<String> {
        let (status, body) = self.app.get_json(&format!("/v1/orders/{id}/events"), &self.admin).await;
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
    }

    pub async fn inbox_kinds(&self, driver: &DriverId) -> Vec<String> {
        self.app.state.db.inbox_after(&self.tenant, driver, 0, 100).await.unwrap().into_iter().map(|m| m.kind).collect()
    }

    pub async fn active_count(&self, driver: &DriverId) -> i64 {
        let d = sqlx::query_scalar::<_, i64>("SELECT active_count FROM drivers WHERE id = $1")
            .bind(driver.as_str())
            .fetch_one(self.app.state.db.pool())
            .await
            .unwrap();
        assert_eq!(self.app.state.db.active_assignments(driver).await.unwrap(), d, "counter and assignments agree");
        d
    }
}

impl OnlineDriver {
    /// Wait for the offer of `order`, accept it, and wait for the confirmation.
    pub async fn accept(&mut self, order: &OrderId) {
        let (offer, _) = ws_until(&mut self.ws, "offer", WAIT).await;
        assert_eq!(offer["data"]["order_id"], order.as_str(), "{offer}");
        ws_send(&mut self.ws, json!({"type": "accept", "offer_id": offer["data"]["offer_id"]})).await;
        let (accepted, _) = ws_until(&mut self.ws, "accepted", WAIT).await;
        assert_eq!(accepted["data"]["order"]["status"], "assigned", "{accepted}");
    }

    /// The next offer on this driver's socket is for `order`.
    pub async fn offered(&mut self, order: &OrderId) -> Value {
        let (offer, _) = ws_until(&mut self.ws, "offer", WAIT).await;
        assert_eq!(offer["data"]["order_id"], order.as_str(), "{offer}");
        offer
    }
}
