//! A client of a remote geocoding service speaking the Nominatim search API
//! (`GET {url}/search?q=…&format=jsonv2&limit=1`, also offered by Photon-compatible and
//! commercial providers), behind a timeout, a circuit breaker and a cache in the database.

use lastmile_connectors::{Admission, BreakerConfig, CallResult, CircuitBreaker};
use lastmile_storage::{now_ms, Db, GeocodeHit};
use serde::Deserialize;
use std::sync::Mutex;
use std::time::Duration;

/// Why the service gave no answer (not "found nothing": that is an answer).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Confidence given to a house-level result (Nominatim `place_rank` 30, or a building).
const CONF_HOUSE: f64 = 0.9;
/// A street-level result: as vague as the built-in index's street fallback.
const CONF_STREET: f64 = 0.4;
/// Anything coarser (a district, a city).
const CONF_AREA: f64 = 0.2;

pub struct Nominatim {
    base: String,
    http: reqwest::Client,
    /// A std mutex: held only for the breaker's arithmetic, never across an await.
    breaker: Mutex<CircuitBreaker>,
    db: Db,
    cache_ttl_ms: i64,
}

/// One result of `format=jsonv2` (Nominatim sends coordinates as strings; some
/// compatible services send numbers).
#[derive(Debug, Deserialize)]
struct Place {
    lat: serde_json::Value,
    lon: serde_json::Value,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    place_rank: Option<i64>,
    #[serde(default)]
    addresstype: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    category: Option<String>,
}

fn coordinate(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::String(s) => s.trim().parse().ok(),
        other => other.as_f64(),
    }
}

impl Place {
    /// How precise the result is, from its rank (30 = a house) or, failing that, its type.
    fn confidence(&self) -> f64 {
        let kind = [&self.addresstype, &self.kind, &self.category].into_iter().flatten().map(String::as_str);
        let kinds: Vec<&str> = kind.collect();
        match self.place_rank {
            Some(r) if r >= 28 => CONF_HOUSE,
            Some(r) if r >= 26 => CONF_STREET,
            Some(_) => CONF_AREA,
            None if kinds.iter().any(|k| matches!(*k, "house" | "building" | "place" | "address")) => CONF_HOUSE,
            None if kinds.iter().any(|k| matches!(*k, "road" | "street" | "highway")) => CONF_STREET,
            None => CONF_AREA,
        }
    }

    fn hit(&self) -> Option<GeocodeHit> {
        let (lat, lng) = (coordinate(&self.lat)?, coordinate(&self.lon)?);
        lastmile_core::GeoPoint::new(lat, lng).ok()?;
        Some(GeocodeHit {
            lat,
            lng,
            confidence: self.confidence(),
            matched: self.display_name.clone().unwrap_or_default(),
        })
    }
}

/// The cache key: the service and the query folded (case, spacing).
fn cache_key(base: &str, q: &str) -> String {
    let folded: Vec<String> = q.split_whitespace().map(str::to_lowercase).collect();
    format!("{base}|{}", folded.join(" "))
}

impl Nominatim {
    pub fn new(
        url: &str,
        timeout: Duration,
        breaker: BreakerConfig,
        db: Db,
        cache_ttl: Duration,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("lastmile/", env!("CARGO_PKG_VERSION"), " (delivery dispatch geocoding)"))
            .build()?;
        Ok(Nominatim {
            base: url.trim_end_matches('/').to_owned(),
            http,
            breaker: Mutex::new(CircuitBreaker::new(breaker)),
            db,
            cache_ttl_ms: i64::try_from(cache_ttl.as_millis()).unwrap_or(i64::MAX),
        })
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The service's best result for `q` (cached), `None` when it found nothing.
    #[tracing::instrument(skip_all, fields(service = %self.base))]
    pub async fn search(&self, q: &str) -> Result<Option<GeocodeHit>, Unavailable> {
        let key = cache_key(&self.base, q);
        match self.db.geocode_cache_get(&key).await {
            Ok(Some(c)) if now_ms() - c.created_at < self.cache_ttl_ms => {
                metrics::counter!("lastmile_geocode_remote_total", "outcome" => "cached").increment(1);
                return Ok(c.found);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "geocode cache unreadable; asking the service"),
        }
        if let Admission::Rejected { retry_in } = self.breaker().admit(tokio::time::Instant::now()) {
            metrics::counter!("lastmile_geocode_remote_total", "outcome" => "breaker_open").increment(1);
            return Err(Unavailable(format!(
                "the geocoding service's breaker is open; next try in {}s",
                retry_in.as_secs()
            )));
        }
        let answer = self.call(q).await;
        let result = match &answer {
            Ok(_) => CallResult::Success,
            Err((_, neutral)) if *neutral => CallResult::Neutral,
            Err(_) => CallResult::Failure,
        };
        if let Some(state) = self.breaker().record(tokio::time::Instant::now(), result) {
            tracing::warn!(state = state.as_str(), "geocoding service breaker changed state");
        }
        let hit = answer.map_err(|(e, _)| {
            metrics::counter!("lastmile_geocode_remote_total", "outcome" => "failed").increment(1);
            Unavailable(e)
        })?;
        metrics::counter!("lastmile_geocode_remote_total", "outcome" => if hit.is_some() { "found" } else { "not_found" })
            .increment(1);
        if let Err(e) = self.db.geocode_cache_put(&key, hit.clone()).await {
            tracing::warn!(error = %e, "geocode answer not cached");
        }
        Ok(hit)
    }

    /// One request. The error says whether it tells anything about the service's health
    /// (a 429 does not: the service is up and asks us to slow down).
    async fn call(&self, q: &str) -> Result<Option<GeocodeHit>, (String, bool)> {
        let res = self
            .http
            .get(format!("{}/search", self.base))
            .query(&[("q", q), ("format", "jsonv2"), ("limit", "1")])
            .send()
            .await
            .map_err(|e| (format!("geocoding service unreachable: {e}"), false))?;
        let status = res.status();
        if status.as_u16() == 429 {
            return Err(("the geocoding service is rate limiting us (429)".into(), true));
        }
        if !status.is_success() {
            return Err((format!("the geocoding service answered {status}"), false));
        }
        let places: Vec<Place> = res
            .json()
            .await
            .map_err(|e| (format!("the geocoding service's answer is not a result list: {e}"), false))?;
        Ok(places.first().and_then(Place::hit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(v: serde_json::Value) -> Place {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ranks_and_types_become_confidence() {
        let house = place(serde_json::json!({"lat": "60.1", "lon": "24.9", "place_rank": 30, "display_name": "x"}));
        assert_eq!(house.hit().map(|h| (h.lat, h.confidence)), Some((60.1, CONF_HOUSE)));
        let street = place(serde_json::json!({"lat": 60.1, "lon": 24.9, "place_rank": 26}));
        assert_eq!(street.confidence(), CONF_STREET);
        let typed = place(serde_json::json!({"lat": 60.1, "lon": 24.9, "type": "house"}));
        assert_eq!(typed.confidence(), CONF_HOUSE);
        assert_eq!(place(serde_json::json!({"lat": "x", "lon": 1})).hit(), None);
        assert_eq!(place(serde_json::json!({"lat": 95, "lon": 1})).hit(), None);
    }

    #[test]
    fn cache_keys_fold_case_and_spacing() {
        assert_eq!(cache_key("http://g", "Annankatu  31 "), cache_key("http://g", "annankatu 31"));
        assert_ne!(cache_key("http://g", "Annankatu 31"), cache_key("http://h", "Annankatu 31"));
    }
}
