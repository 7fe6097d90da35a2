//! Stand-ins for the store platforms' HTTP APIs, for tests of the outbound connectors.
//!
//! Owns: a small axum server per platform on `127.0.0.1:0` that serves the subset of the
//! published API the connectors use (Shopify GraphQL Admin fulfilments, WooCommerce REST v3
//! orders, BigCommerce V2 orders), checks the auth headers and request bodies the way the
//! platform documents them, keeps order state so check-before-act can be tested, records
//! every request it receives, and injects faults (down, slow, hang, 5xx, 429, malformed
//! bodies) switchable at run time.
//!
//! Must not: be used outside tests, reach anything but the loopback interface, or depend on
//! the crates it helps test (the connectors depend on it, as a dev-dependency, not the other
//! way round).

// Handlers' helpers return a ready error `Response` as their `Err`; boxing it would only add
// noise to test-support code where the size does not matter.
#![allow(clippy::result_large_err)]

mod bigcommerce;
mod fault;
mod shopify;
mod woocommerce;

pub use fault::{Fault, RateLimit};

use axum::Router;
use lastmile_core::Platform;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The credentials every stand-in accepts. Fixed, so a test can also send wrong ones.
pub const ACCESS_TOKEN: &str = "shpat_standin_token";
pub const CONSUMER_KEY: &str = "ck_standin_key";
pub const CONSUMER_SECRET: &str = "cs_standin_secret";
pub const BIGCOMMERCE_STORE_HASH: &str = "standin1";

/// One request as it reached the stand-in's HTTP layer (connections refused by
/// [`Fault::Down`] never get here).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header names are lower case, as `http` stores them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The fault in force when it arrived.
    pub fault: Fault,
    /// When the stand-in had read it whole (the std clock, so a test can measure a sync's
    /// latency from its own `Instant`s, whatever tokio's clock does).
    pub received_at: std::time::Instant,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A write the stand-in accepted and applied to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedWrite {
    pub order_id: String,
    /// e.g. `fulfillmentCreate`, `fulfillmentEventCreate:DELIVERED`, `status:completed`, `status_id:10`.
    pub what: String,
}

/// Everything a stand-in remembers. One std `Mutex` because every critical section is a few
/// map operations and none is held across an `.await`.
#[derive(Default)]
pub(crate) struct State {
    pub fault: Fault,
    /// How many more times the current fault fires before reverting to `None` (None = forever).
    pub fault_remaining: Option<u32>,
    pub rate_limit: Option<fault::RateWindow>,
    pub requests: Vec<RecordedRequest>,
    pub writes: Vec<AppliedWrite>,
    pub shopify: HashMap<String, shopify::Order>,
    pub woocommerce: HashMap<String, String>,
    pub bigcommerce: HashMap<String, u32>,
    /// BigCommerce orders whose shipping address is not the fixture's: the fields to put
    /// into it (`street_1`, `city`, `zip`, `country_iso2`, names, ...).
    pub bigcommerce_shipping: HashMap<String, serde_json::Value>,
    /// Source of fresh numeric ids (fulfillment orders, fulfillments, events).
    pub next_id: u64,
}

impl State {
    pub fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        1_000_000 + self.next_id
    }

    pub fn record_write(&mut self, order_id: &str, what: impl Into<String>) {
        self.writes.push(AppliedWrite { order_id: order_id.to_owned(), what: what.into() });
    }
}

pub(crate) struct Shared {
    pub platform: Platform,
    state: Mutex<State>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take every later assertion down with it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running stand-in. Dropping it stops accepting connections.
pub struct StandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl StandIn {
    /// Binds `127.0.0.1:0` and starts serving before returning, so a test can call it at once.
    ///
    /// # Panics
    /// For [`Platform::Native`], which has no external API, and if the loopback bind fails.
    pub async fn start(platform: Platform) -> StandIn {
        let shared = Arc::new(Shared { platform, state: Mutex::new(State::default()) });
        let routes: Router<Arc<Shared>> = match platform {
            Platform::Shopify => shopify::router(),
            Platform::Woocommerce => woocommerce::router(),
            Platform::Bigcommerce => bigcommerce::router(),
            Platform::Native => panic!("native orders have no platform API to stand in for"),
        };
        let app =
            routes.layer(axum::middleware::from_fn_with_state(shared.clone(), fault::apply)).with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port for the stand-in");
        let addr = listener.local_addr().expect("stand-in listener address");
        let listener = fault::FaultyListener::new(listener, shared.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "stand-in server stopped");
            }
        });
        StandIn { shared, addr, server }
    }

    pub fn platform(&self) -> Platform {
        self.shared.platform
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What a connector's `base_url` should be: the shop root for Shopify, the site root for
    /// WooCommerce, and `.../stores/{hash}` for BigCommerce.
    pub fn base_url(&self) -> String {
        match self.shared.platform {
            Platform::Bigcommerce => format!("http://{}/stores/{}", self.addr, BIGCOMMERCE_STORE_HASH),
            _ => format!("http://{}", self.addr),
        }
    }

    /// Set a fault until it is changed again.
    pub fn set_fault(&self, fault: Fault) {
        let mut state = self.shared.lock();
        state.fault = fault;
        state.fault_remaining = None;
    }

    /// Set a fault for the next `times` requests (connections, for `Down`; writes, for
    /// `ApplyThen5xx` and `ApplyThenHang`), after which the stand-in answers normally again.
    pub fn set_fault_times(&self, fault: Fault, times: u32) {
        let mut state = self.shared.lock();
        state.fault = fault;
        state.fault_remaining = Some(times);
    }

    pub fn fault(&self) -> Fault {
        self.shared.lock().fault.clone()
    }

    /// Enforce a fixed-window request limit, answering 429 the platform's way beyond it.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.shared.lock().rate_limit = limit.map(fault::RateWindow::new);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Every write applied to `order_id`, in order.
    pub fn writes(&self, order_id: &str) -> Vec<AppliedWrite> {
        self.shared.lock().writes.iter().filter(|w| w.order_id == order_id).cloned().collect()
    }

    /// How many writes reached and changed `order_id`: fulfillments and fulfillment events
    /// created (Shopify), status updates applied (WooCommerce, BigCommerce).
    pub fn fulfilment_count(&self, order_id: &str) -> usize {
        self.shared.lock().writes.iter().filter(|w| w.order_id == order_id).count()
    }

    /// Create or reset an order in the platform's own vocabulary:
    /// - Shopify: `OPEN`, `IN_PROGRESS`, `ON_HOLD`, `CANCELLED` (one fulfillment order in that
    ///   status), `FULFILLED` (fulfilled once), `DELIVERED` (fulfilled, with a DELIVERED event);
    /// - WooCommerce: a status slug such as `processing` or `completed`;
    /// - BigCommerce: a `status_id`, e.g. `11` (Awaiting Fulfillment).
    ///
    /// # Panics
    /// On a status the platform does not have.
    pub fn seed_order(&self, order_id: &str, status: &str) {
        let mut state = self.shared.lock();
        match self.shared.platform {
            Platform::Shopify => shopify::seed(&mut state, order_id, status),
            Platform::Woocommerce => {
                assert!(woocommerce::STATUSES.contains(&status), "unknown WooCommerce status {status}");
                state.woocommerce.insert(order_id.to_owned(), status.to_owned());
            }
            Platform::Bigcommerce => {
                let id: u32 = status
                    .parse()
                    .ok()
                    .filter(|id| bigcommerce::status_name(*id).is_some())
                    .unwrap_or_else(|| panic!("BigCommerce status must be a status_id 0..=14, got {status}"));
                state.bigcommerce.insert(order_id.to_owned(), id);
            }
            Platform::Native => unreachable!("no stand-in starts for native"),
        }
    }

    /// A BigCommerce order (`status_id` as in [`StandIn::seed_order`]) shipping to
    /// `address`: its fields replace the published example's in
    /// `GET .../shipping_addresses`, which then lists this one address.
    ///
    /// # Panics
    /// On another platform, or a status BigCommerce does not have.
    pub fn seed_bigcommerce_order(&self, order_id: &str, status: &str, address: serde_json::Value) {
        assert_eq!(self.shared.platform, Platform::Bigcommerce, "only BigCommerce orders have shipping addresses here");
        self.seed_order(order_id, status);
        self.shared.lock().bigcommerce_shipping.insert(order_id.to_owned(), address);
    }

    /// The order's status in the same vocabulary as [`StandIn::seed_order`].
    pub fn order_status(&self, order_id: &str) -> Option<String> {
        let state = self.shared.lock();
        match self.shared.platform {
            Platform::Shopify => state.shopify.get(order_id).map(shopify::Order::summary_status),
            Platform::Woocommerce => state.woocommerce.get(order_id).cloned(),
            Platform::Bigcommerce => state.bigcommerce.get(order_id).map(u32::to_string),
            Platform::Native => None,
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}
