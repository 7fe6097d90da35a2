//! The realtime hub: wakes the connections of a driver when their inbox grows, and the
//! tracking streams of an order when it changes. The inbox itself is in the database
//! (ordered by a per-driver sequence number), so every transport — WebSocket, SSE,
//! long-poll — reads the same messages and a reconnecting client resumes from its last
//! seq, across restarts too. The hub holds only wake-ups.

use crate::state::AppState;
use lastmile_bus::Received;
use lastmile_core::{DriverId, EventKind, OrderId, StoreId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

#[derive(Default)]
struct HubInner {
    /// Newest inbox seq known per driver.
    drivers: HashMap<DriverId, watch::Sender<i64>>,
    /// A change counter per tracked order.
    orders: HashMap<OrderId, watch::Sender<u64>>,
    /// Per driver, a token their connections end on: cancelled when the driver is revoked
    /// (and kept cancelled, so a connection that authenticated just before ends at once).
    /// Children of `closing`, so a shutdown ends them too.
    sessions: HashMap<DriverId, CancellationToken>,
}

/// Cheap to clone. A std Mutex guards two maps; nothing awaits while holding it.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<HubInner>>,
    /// Cancelled when the server shuts down: every open connection (WebSocket, SSE,
    /// long-poll) ends, so a graceful shutdown is not held open by connected clients, who
    /// reconnect elsewhere with their last seq.
    closing: CancellationToken,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// End every connection the hub serves (see `closing`).
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Resolves when the hub closes; connections select on it.
    pub fn closed(&self) -> WaitForCancellationFutureOwned {
        self.closing.clone().cancelled_owned()
    }

    /// The token this driver's connections end on (see `sessions`).
    pub fn driver_session(&self, driver: &DriverId) -> CancellationToken {
        let mut g = self.lock();
        g.sessions.entry(driver.clone()).or_insert_with(|| self.closing.child_token()).clone()
    }

    /// The driver was revoked: end their WebSockets, event streams and long-polls now.
    pub fn disconnect_driver(&self, driver: &DriverId) {
        let token = self.lock().sessions.entry(driver.clone()).or_insert_with(|| self.closing.child_token()).clone();
        token.cancel();
    }

    /// True once the server is shutting down (rather than one driver being disconnected).
    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    pub fn subscribe_driver(&self, driver: &DriverId) -> watch::Receiver<i64> {
        self.lock().drivers.entry(driver.clone()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// A message with `seq` is committed in this driver's inbox.
    pub fn bump(&self, driver: &DriverId, seq: i64) {
        let g = self.lock();
        if let Some(tx) = g.drivers.get(driver) {
            tx.send_if_modified(|cur| {
                if seq > *cur {
                    *cur = seq;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Wake everyone (after the bus reported lost messages): they re-read the database.
    pub fn wake_all(&self) {
        let g = self.lock();
        for tx in g.drivers.values() {
            tx.send_modify(|_| {});
        }
        for tx in g.orders.values() {
            tx.send_modify(|n| *n += 1);
        }
    }

    pub fn subscribe_order(&self, order: &OrderId) -> watch::Receiver<u64> {
        self.lock().orders.entry(order.clone()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    pub fn bump_order(&self, order: &OrderId) {
        let mut g = self.lock();
        let drop_it = match g.orders.get(order) {
            Some(tx) if tx.receiver_count() == 0 => true,
            Some(tx) => {
                tx.send_modify(|n| *n += 1);
                false
            }
            None => false,
        };
        if drop_it {
            g.orders.remove(order);
        }
    }
}

/// Feed the hub from the bus: inbox appends wake drivers, order events wake trackers, menu
/// changes drop rendered menus. On
/// shutdown, close the hub so its connections end.
pub async fn run_bus_listener(state: AppState, shutdown: CancellationToken) {
    let mut sub = state.bus.subscribe();
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = sub.recv() => m,
        };
        match msg {
            None => {
                tracing::error!("event bus subscription ended: connections wake only on local offers until restart");
                shutdown.cancelled().await;
                break;
            }
            Some(Received::Lagged(n)) => {
                tracing::warn!(missed = n, "realtime hub fell behind the bus; waking every connection");
                state.hub.wake_all();
                state.catalog.forget_all_menus();
            }
            Some(Received::Event(e)) => match e.kind {
                EventKind::InboxAppended => {
                    if let Some(seq) = e.data.get("seq").and_then(|s| s.as_i64()) {
                        state.hub.bump(&DriverId(e.subject_id.clone()), seq);
                    }
                }
                EventKind::DriverStatusChanged => {
                    // A revocation on any node ends the driver's connections on this one.
                    if e.data.get("status").and_then(|s| s.as_str()) == Some("revoked") {
                        state.hub.disconnect_driver(&DriverId(e.subject_id.clone()));
                        // ... and takes them out of this node's live index.
                        state.fleet.remove(&DriverId(e.subject_id.clone()));
                    }
                }
                EventKind::MenuChanged => {
                    // Any node's menu or stock change: drop this node's older rendered copy.
                    if let Some(v) = e.data.get("version").and_then(|v| v.as_i64()) {
                        state.catalog.menu_changed(&e.tenant_id, &StoreId(e.subject_id.clone()), v);
                    }
                }
                _ => state.hub.bump_order(&OrderId(e.subject_id.clone())),
            },
        }
    }
    state.hub.close();
}
