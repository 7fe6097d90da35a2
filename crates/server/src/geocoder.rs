//! Geocoding: the built-in address index (from `geocoding.osm_pbf`) and/or a remote
//! Nominatim-API service (`geocoding.url`), and the worker that locates orders that
//! arrived without coordinates — after their ack, never on the intake path.
//!
//! The worker wakes on `order_created` events of orders in `needs_location` and polls
//! every `geocoding.poll_ms` for due retries. A confident result sets the dropoff the way
//! `PATCH /v1/orders/{id}` does (the order becomes `received` and dispatch takes it); a
//! vague or missing one leaves the order in `needs_location` with a reason, an
//! `order_geocode_failed` event and a retry later on a schedule.

use crate::error::ApiError;
use crate::nominatim::{Nominatim, Unavailable};
use crate::state::AppState;
use anyhow::Context;
use futures::StreamExt;
use lastmile_bus::Received;
use lastmile_connectors::BreakerConfig;
use lastmile_core::{EventKind, Order, OrderStatus};
use lastmile_geo::AddressIndex;
use lastmile_storage::{now_ms, Db};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Orders geocoded per pass, and how many remote lookups run at once.
const BATCH: i64 = 64;
const CONCURRENCY: usize = 4;
/// An unreachable service is retried this soon (it is not the address's fault).
const UNAVAILABLE_RETRY_MS: i64 = 30_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GeocodingConfig {
    /// An OpenStreetMap extract (`.osm.pbf`) whose addresses are indexed at start.
    pub osm_pbf: Option<PathBuf>,
    /// A Nominatim-API search service: used alone, or when the built-in index finds
    /// nothing confident enough.
    pub url: Option<String>,
    pub timeout_ms: u64,
    /// Results under this confidence (0..=1) leave an order in `needs_location`.
    pub min_confidence: f64,
    /// Run the worker that geocodes orders in `needs_location`.
    pub worker_enabled: bool,
    pub poll_ms: u64,
    /// Waits before geocoding a failed order again, in seconds; the last one repeats.
    pub retry_schedule_s: Vec<u64>,
    /// How long a remote answer (found or not) is reused.
    pub cache_ttl_s: u64,
}

impl Default for GeocodingConfig {
    fn default() -> Self {
        Self {
            osm_pbf: None,
            url: None,
            timeout_ms: 3000,
            min_confidence: 0.5,
            worker_enabled: true,
            poll_ms: 500,
            retry_schedule_s: vec![60, 300, 1800, 3600],
            cache_ttl_s: 30 * 24 * 3600,
        }
    }
}

impl GeocodingConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err("geocoding.min_confidence must be between 0 and 1".into());
        }
        if self.timeout_ms == 0 || self.poll_ms == 0 || self.retry_schedule_s.is_empty() {
            return Err("geocoding.timeout_ms and geocoding.poll_ms must be positive and \
                        geocoding.retry_schedule_s not empty"
                .into());
        }
        if let Some(u) = &self.url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(format!("geocoding.url must be an http(s) URL, got `{u}`"));
            }
        }
        Ok(())
    }
}

/// A geocoded address, from whichever source answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Geocoded {
    pub lat: f64,
    pub lng: f64,
    pub confidence: f64,
    pub matched: String,
    /// `index` (the built-in extract) or `service` (the remote one).
    pub source: &'static str,
}

/// The configured geocoding sources. Cheap to share (`Arc`).
pub struct Geocoder {
    index: Option<Arc<AddressIndex>>,
    remote: Option<Nominatim>,
    pub min_confidence: f64,
}

impl Geocoder {
    /// Build the index (if an extract is configured) and the remote client (if a URL is).
    pub async fn from_config(cfg: &GeocodingConfig, db: &Db) -> anyhow::Result<Geocoder> {
        let index = match &cfg.osm_pbf {
            Some(path) => Some(Arc::new(load_index(path.clone()).await?)),
            None => None,
        };
        let remote = match &cfg.url {
            Some(url) => Some(Nominatim::new(
                url,
                Duration::from_millis(cfg.timeout_ms),
                BreakerConfig::default(),
                db.clone(),
                Duration::from_secs(cfg.cache_ttl_s),
            )?),
            None => None,
        };
        Ok(Geocoder { index, remote, min_confidence: cfg.min_confidence })
    }

    pub fn is_configured(&self) -> bool {
        self.index.is_some() || self.remote.is_some()
    }

    /// The best match for `q` from the index, then (when that is not confident enough) the
    /// service. `Ok(None)`: nobody knows the address. `Err`: the service was needed and
    /// did not answer.
    pub async fn geocode(&self, q: &str) -> Result<Option<Geocoded>, Unavailable> {
        let local = self.index.as_ref().and_then(|ix| ix.lookup(q)).map(|m| Geocoded {
            lat: m.point.lat,
            lng: m.point.lng,
            confidence: m.confidence,
            matched: m.matched,
            source: "index",
        });
        if local.as_ref().is_some_and(|m| m.confidence >= self.min_confidence) {
            return Ok(local);
        }
        let Some(remote) = &self.remote else { return Ok(local) };
        let hit = match remote.search(q).await {
            Ok(hit) => hit,
            Err(e) if local.is_none() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "geocoding service unavailable; keeping the index's match");
                None
            }
        };
        let far = hit.map(|h| Geocoded {
            lat: h.lat,
            lng: h.lng,
            confidence: h.confidence,
            matched: h.matched,
            source: "service",
        });
        Ok(match (local, far) {
            (Some(l), Some(f)) => Some(if f.confidence > l.confidence { f } else { l }),
            (l, f) => f.or(l),
        })
    }
}

/// Read an extract into the index off the async threads, logging what it holds.
pub async fn load_index(path: PathBuf) -> anyhow::Result<AddressIndex> {
    let started = Instant::now();
    let shown = path.display().to_string();
    let index = tokio::task::spawn_blocking(move || AddressIndex::from_pbf_file(&path))
        .await
        .context("the index builder panicked")?
        .with_context(|| format!("building the address index from geocoding.osm_pbf = {shown}"))?;
    let s = index.stats();
    tracing::info!(extract = %shown, addresses = s.addresses, streets = s.streets, ms = started.elapsed().as_millis() as u64, "address index built");
    Ok(index)
}

/// The address of an order as one line for the geocoder: street line, postcode and city,
/// country. `line2` (staircase, flat, door code) is left out: it locates nothing.
pub fn order_query(order: &Order) -> String {
    let a = &order.dropoff.address;
    let place =
        [a.postal_code.trim(), a.city.trim()].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    [a.line1.trim(), place.as_str(), a.country.trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Geocode one order and record the outcome.
#[tracing::instrument(skip_all, fields(order = %order.id))]
pub async fn geocode_order(state: &AppState, order: &Order) -> anyhow::Result<()> {
    let geocoder = &state.geocoder;
    let schedule: Vec<i64> = state.cfg.geocoding.retry_schedule_s.iter().map(|s| *s as i64 * 1000).collect();
    let q = order_query(order);
    let patch_hint = format!("set coordinates with PATCH /v1/orders/{}", order.id);
    let (reason, retry) = if order.dropoff.address.line1.trim().is_empty() {
        (format!("the order has no dropoff address to geocode; {patch_hint}"), schedule)
    } else {
        match geocoder.geocode(&q).await {
            Ok(Some(m)) if m.confidence >= geocoder.min_confidence => {
                let located = state.db.locate_order(&order.tenant_id, &order.id, m.lat, m.lng).await?;
                metrics::counter!("lastmile_geocode_orders_total", "result" => "located", "source" => m.source)
                    .increment(1);
                tracing::info!(located = located.is_some(), matched = %m.matched, confidence = m.confidence, "order geocoded");
                return Ok(());
            }
            Ok(Some(m)) => (
                format!(
                    "the best geocoding match for \"{q}\" is \"{}\" with confidence {:.2}, under geocoding.min_confidence {:.2}; {patch_hint}",
                    m.matched, m.confidence, geocoder.min_confidence
                ),
                schedule,
            ),
            Ok(None) => (format!("no geocoding match for \"{q}\"; {patch_hint}"), schedule),
            Err(e) => (format!("geocoding is unavailable ({e}); retrying"), vec![UNAVAILABLE_RETRY_MS]),
        }
    };
    metrics::counter!("lastmile_geocode_orders_total", "result" => "failed", "source" => "any").increment(1);
    let failure = state.db.record_geocode_failure(&order.tenant_id, &order.id, &reason, retry).await?;
    tracing::info!(attempts = failure.attempts, %reason, "order not geocoded");
    Ok(())
}

/// One pass: every order whose attempt is due. Returns how many were tried.
pub async fn geocode_due(state: &AppState) -> anyhow::Result<usize> {
    let due = state.db.orders_to_geocode(now_ms(), BATCH).await.context("reading orders to geocode")?;
    let n = due.len();
    futures::stream::iter(due)
        .for_each_concurrent(CONCURRENCY, |order| async move {
            if let Err(e) = geocode_order(state, &order).await {
                tracing::warn!(order = %order.id, error = %format!("{e:#}"), "geocoding an order failed");
            }
        })
        .await;
    Ok(n)
}

/// Is this event an order arriving without coordinates?
fn wants_geocoding(kind: EventKind, data: &serde_json::Value) -> bool {
    kind == EventKind::OrderCreated
        && data.get("status").and_then(|s| s.as_str()) == Some(OrderStatus::NeedsLocation.as_str())
}

/// The worker: geocode due orders on every poll and as soon as one arrives.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    if !state.geocoder.is_configured() {
        tracing::info!("no geocoding.osm_pbf or geocoding.url: orders without coordinates wait for PATCH");
        return;
    }
    let mut sub = state.bus.subscribe();
    let mut bus_alive = true;
    let mut poll = tokio::time::interval(Duration::from_millis(state.cfg.geocoding.poll_ms));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = poll.tick() => {}
            msg = sub.recv(), if bus_alive => match msg {
                Some(Received::Event(e)) if wants_geocoding(e.kind, &e.data) => {}
                Some(Received::Lagged(_)) => {}
                Some(Received::Event(_)) => continue,
                // The bus is gone: polling alone still finds every order.
                None => bus_alive = false,
            },
        }
        if let Err(e) = geocode_due(&state).await {
            tracing::warn!(error = %format!("{e:#}"), "geocoding pass failed");
        }
    }
    tracing::info!("geocoder stopped");
}

/// A store's pickup point: the coordinates given, or the address geocoded now (store
/// set-up is an admin action, not an intake path). Both or neither coordinate.
pub async fn pickup_point(
    state: &AppState,
    lat: Option<f64>,
    lng: Option<f64>,
    address: &str,
) -> Result<(f64, f64), ApiError> {
    let field = |m: String| ApiError::validation(vec![("pickup".into(), m)]);
    match (lat, lng) {
        (Some(lat), Some(lng)) => Ok((lat, lng)),
        (Some(_), None) | (None, Some(_)) => {
            Err(field("give both lat and lng, or neither and an address to geocode".into()))
        }
        (None, None) => {
            if !state.geocoder.is_configured() {
                return Err(field("lat and lng are required: no geocoder is configured to locate the address".into()));
            }
            match state.geocoder.geocode(address).await {
                Ok(Some(m)) if m.confidence >= state.geocoder.min_confidence => Ok((m.lat, m.lng)),
                Ok(Some(m)) => Err(ApiError::validation(vec![(
                    "pickup.address".into(),
                    format!(
                        "the best match \"{}\" has confidence {:.2}, too low; give lat and lng",
                        m.matched, m.confidence
                    ),
                )])),
                Ok(None) => Err(ApiError::validation(vec![(
                    "pickup.address".into(),
                    "could not be located; give lat and lng".into(),
                )])),
                Err(e) => Err(ApiError::unavailable(format!("geocoding is unavailable: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        assert_eq!(GeocodingConfig::default().validate(), Ok(()));
        let bad = |f: fn(&mut GeocodingConfig)| {
            let mut c = GeocodingConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(|c| c.min_confidence = 1.5).contains("min_confidence"));
        assert!(bad(|c| c.url = Some("nominatim.local".into())).contains("geocoding.url"));
        assert!(bad(|c| c.retry_schedule_s.clear()).contains("retry_schedule_s"));
    }

    #[test]
    fn new_order_events_without_coordinates_wake_the_worker() {
        let data = serde_json::json!({"status": "needs_location"});
        assert!(wants_geocoding(EventKind::OrderCreated, &data));
        assert!(!wants_geocoding(EventKind::OrderCreated, &serde_json::json!({"status": "received"})));
        assert!(!wants_geocoding(EventKind::OrderUpdated, &data));
    }
}
