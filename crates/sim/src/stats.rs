//! What a simulation saw, as counters and latency histograms shared by every simulated
//! store and driver: the live progress line and the closing summary come from here.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A latency histogram in microseconds (1 µs .. 10 min, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds")
}

/// p50/p95/p99/max of a µs histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |v: u64| v as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Sub-millisecond figures (index queries) keep their microseconds.
        let ms = |v: f64| if v < 1.0 { format!("{v:.3}") } else { format!("{v:.1}") };
        write!(
            f,
            "p50 {} ms, p95 {} ms, p99 {} ms, max {} ms (n={})",
            ms(self.p50_ms),
            ms(self.p95_ms),
            ms(self.p99_ms),
            ms(self.max_ms),
            self.count
        )
    }
}

/// Counters of one run. Atomics for counts; std `Mutex`es around histograms and maps
/// because each critical section is a single record or lookup and never awaits.
#[derive(Default)]
pub struct SimStats {
    /// Orders the stores sent (webhooks or native creates).
    pub sent: AtomicU64,
    /// Answered `created`.
    pub received: AtomicU64,
    /// Any other answer (duplicate, dead letter, error…).
    pub rejected: AtomicU64,
    /// WooCommerce orders located by the simulated operator (they carry no coordinates).
    pub located: AtomicU64,
    pub offers: AtomicU64,
    pub accepted: AtomicU64,
    pub declined: AtomicU64,
    /// Accepts the server refused (offer expired or taken meanwhile).
    pub accept_refused: AtomicU64,
    pub picked_up: AtomicU64,
    pub delivered: AtomicU64,
    pub gps_sent: AtomicU64,
    pub errors: AtomicU64,
    pub drivers_connected: AtomicU64,
    /// Store's ack latency (signed webhook or `POST /v1/orders`).
    pub ack: Mutex<Option<Histogram<u64>>>,
    /// From the order becoming dispatchable (ack, or located) to its first offer on a socket.
    pub to_offer: Mutex<Option<Histogram<u64>>>,
    /// From dispatchable to delivered.
    pub to_delivered: Mutex<Option<Histogram<u64>>>,
    /// Order wait: ready → picked up (µs).
    pub order_wait: Mutex<Option<Histogram<u64>>>,
    /// Driver idle wait at the store: arrival → ready (µs, 0 when already ready).
    pub driver_wait: Mutex<Option<Histogram<u64>>>,
    /// When each order became dispatchable, until its first offer.
    dispatchable: Mutex<HashMap<String, Instant>>,
    /// When each order became dispatchable, until delivered.
    since: Mutex<HashMap<String, Instant>>,
    /// The first few orders' ids, for tracking links.
    pub first_orders: Mutex<Vec<String>>,
}

fn record(h: &Mutex<Option<Histogram<u64>>>, d: Duration) {
    let mut g = h.lock().unwrap_or_else(|p| p.into_inner());
    let hist = g.get_or_insert_with(latency_histogram);
    hist.saturating_record((d.as_micros() as u64).max(1));
}

fn summary(h: &Mutex<Option<Histogram<u64>>>) -> Percentiles {
    h.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(Percentiles::of).unwrap_or_default()
}

/// A snapshot for printing and JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub elapsed_s: f64,
    pub sent: u64,
    pub received: u64,
    pub rejected: u64,
    pub located: u64,
    pub offers: u64,
    pub accepted: u64,
    pub declined: u64,
    pub accept_refused: u64,
    pub picked_up: u64,
    pub delivered: u64,
    pub gps_sent: u64,
    pub errors: u64,
    pub drivers_connected: u64,
    pub ack: Percentiles,
    pub to_offer: Percentiles,
    pub to_delivered: Percentiles,
    pub order_wait: Percentiles,
    pub driver_wait: Percentiles,
}

impl SimStats {
    pub fn record_ack(&self, d: Duration) {
        record(&self.ack, d);
    }

    /// The order can be offered from now on.
    pub fn dispatchable(&self, order_id: &str) {
        let now = Instant::now();
        self.dispatchable.lock().unwrap_or_else(|p| p.into_inner()).insert(order_id.to_owned(), now);
        self.since.lock().unwrap_or_else(|p| p.into_inner()).insert(order_id.to_owned(), now);
        let mut first = self.first_orders.lock().unwrap_or_else(|p| p.into_inner());
        if first.len() < 3 {
            first.push(order_id.to_owned());
        }
    }

    /// An offer for the order reached a driver's socket (only the first one counts).
    pub fn offered(&self, order_id: &str) {
        self.offers.fetch_add(1, Relaxed);
        let t = self.dispatchable.lock().unwrap_or_else(|p| p.into_inner()).remove(order_id);
        if let Some(t) = t {
            record(&self.to_offer, t.elapsed());
        }
    }

    pub fn delivered(&self, order_id: &str) {
        self.delivered.fetch_add(1, Relaxed);
        let t = self.since.lock().unwrap_or_else(|p| p.into_inner()).remove(order_id);
        if let Some(t) = t {
            record(&self.to_delivered, t.elapsed());
        }
    }

    /// The order was picked up `late` after it was ready.
    pub fn record_order_wait(&self, late: Duration) {
        record(&self.order_wait, late);
    }

    /// The driver reached the store `early` before the order was ready.
    pub fn record_driver_wait(&self, early: Duration) {
        record(&self.driver_wait, early);
    }

    pub fn snapshot(&self, elapsed: Duration) -> Snapshot {
        let g = |a: &AtomicU64| a.load(Relaxed);
        Snapshot {
            elapsed_s: elapsed.as_secs_f64(),
            sent: g(&self.sent),
            received: g(&self.received),
            rejected: g(&self.rejected),
            located: g(&self.located),
            offers: g(&self.offers),
            accepted: g(&self.accepted),
            declined: g(&self.declined),
            accept_refused: g(&self.accept_refused),
            picked_up: g(&self.picked_up),
            delivered: g(&self.delivered),
            gps_sent: g(&self.gps_sent),
            errors: g(&self.errors),
            drivers_connected: g(&self.drivers_connected),
            ack: summary(&self.ack),
            to_offer: summary(&self.to_offer),
            to_delivered: summary(&self.to_delivered),
            order_wait: summary(&self.order_wait),
            driver_wait: summary(&self.driver_wait),
        }
    }
}

impl Snapshot {
    /// The one-line progress report.
    pub fn progress_line(&self) -> String {
        format!(
            "[{:>5.0}s] orders in {} (rejected {}) | offers {} accepted {} declined {} | picked up {} delivered {} | \
             drivers online {} | p99 ack {:.1} ms, order→offer {:.0} ms, order→delivered {:.0} s | errors {}",
            self.elapsed_s,
            self.received,
            self.rejected,
            self.offers,
            self.accepted,
            self.declined,
            self.picked_up,
            self.delivered,
            self.drivers_connected,
            self.ack.p99_ms,
            self.to_offer.p99_ms,
            self.to_delivered.p99_ms / 1000.0,
            self.errors
        )
    }

    pub fn summary_text(&self) -> String {
        format!(
            "summary after {:.0} s:\n  orders sent {}, received {}, rejected {}, located by ops {}\n  \
             offers {}, accepted {}, declined {}, accepts refused {}\n  picked up {}, delivered {}\n  \
             GPS fixes sent {}, client errors {}\n  store ack:           {}\n  order → offer:       {}\n  \
             order → delivered:   {}\n  order wait (ready → pickup):     {}\n  driver wait at the store:        {}",
            self.elapsed_s,
            self.sent,
            self.received,
            self.rejected,
            self.located,
            self.offers,
            self.accepted,
            self.declined,
            self.accept_refused,
            self.picked_up,
            self.delivered,
            self.gps_sent,
            self.errors,
            self.ack,
            self.to_offer,
            self.to_delivered,
            self.order_wait,
            self.driver_wait
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_and_deliveries_are_timed_from_dispatchable_once() {
        let s = SimStats::default();
        s.dispatchable("ord_1");
        s.offered("ord_1");
        s.offered("ord_1"); // a re-offer after a decline counts as an offer, not a latency
        s.delivered("ord_1");
        let snap = s.snapshot(Duration::from_secs(1));
        assert_eq!((snap.offers, snap.to_offer.count, snap.delivered, snap.to_delivered.count), (2, 1, 1, 1));
        assert_eq!(*s.first_orders.lock().unwrap(), ["ord_1"]);
    }
}
