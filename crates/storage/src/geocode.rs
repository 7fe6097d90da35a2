//! Geocoding's durable facts: the cache of a remote geocoding service's answers, and the
//! orders the geocoder could not locate (their reason and when to try again). Locating an
//! order goes through the same change as the admin `PATCH /v1/orders/{id}`.

use crate::orders::{load_order_in, order_from_row, patch_order_in, ORDER_COLS};
use crate::outbox::insert_event;
use crate::{get, now_ms, Db, Result};
use lastmile_core::{EventKind, Order, OrderId, OrderStatus, TenantId};

/// A remote geocoding answer as cached: `None` position when the service found nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedGeocode {
    pub found: Option<GeocodeHit>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GeocodeHit {
    pub lat: f64,
    pub lng: f64,
    pub confidence: f64,
    pub matched: String,
}

/// What became of a failed attempt to locate an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeocodeFailure {
    /// Attempts so far, this one included.
    pub attempts: i64,
    /// When the geocoder may try again (unix ms).
    pub next_attempt_at: i64,
    /// An `order_geocode_failed` event was written (the first failure, or a new reason).
    pub announced: bool,
}

impl Db {
    pub async fn geocode_cache_get(&self, key: &str) -> Result<Option<CachedGeocode>> {
        let row = sqlx::query(
            "SELECT found, lat, lng, confidence, matched, created_at FROM geocode_cache WHERE query_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let found: i64 = get(&row, "found")?;
        let hit = match (found != 0, get::<Option<f64>>(&row, "lat")?, get::<Option<f64>>(&row, "lng")?) {
            (true, Some(lat), Some(lng)) => Some(GeocodeHit {
                lat,
                lng,
                confidence: get::<Option<f64>>(&row, "confidence")?.unwrap_or(0.0),
                matched: get::<Option<String>>(&row, "matched")?.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(Some(CachedGeocode { found: hit, created_at: get(&row, "created_at")? }))
    }

    pub async fn geocode_cache_put(&self, key: &str, hit: Option<GeocodeHit>) -> Result<()> {
        let key = key.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO geocode_cache (query_key, found, lat, lng, confidence, matched, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (query_key) DO UPDATE SET found = excluded.found, \
                     lat = excluded.lat, lng = excluded.lng, confidence = excluded.confidence, \
                     matched = excluded.matched, created_at = excluded.created_at",
                )
                .bind(&key)
                .bind(i64::from(hit.is_some()))
                .bind(crate::OptF64(hit.as_ref().map(|h| h.lat)))
                .bind(crate::OptF64(hit.as_ref().map(|h| h.lng)))
                .bind(crate::OptF64(hit.as_ref().map(|h| h.confidence)))
                .bind(hit.as_ref().map(|h| h.matched.clone()))
                .bind(now_ms())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Orders (of every tenant) waiting in `needs_location` whose next attempt is due —
    /// or that changed since it failed (a platform update may bring a better address) —
    /// oldest first. Reads the `needs_location` rows through the status index only.
    pub async fn orders_to_geocode(&self, now: i64, limit: i64) -> Result<Vec<Order>> {
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLS} FROM orders WHERE status = $1 AND dropoff_lat IS NULL AND NOT EXISTS \
             (SELECT 1 FROM geocode_attempts g WHERE g.order_id = orders.id AND g.next_attempt_at > $2 \
             AND g.updated_at >= orders.updated_at) ORDER BY created_at, id LIMIT $3"
        ))
        .bind(OrderStatus::NeedsLocation.as_str())
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(order_from_row).collect()
    }

    /// Set a geocoded dropoff, as `PATCH /v1/orders/{id}` does, if the order still waits
    /// for one: `None` when it no longer does (ops located or cancelled it meanwhile).
    pub async fn locate_order(&self, tenant: &TenantId, id: &OrderId, lat: f64, lng: f64) -> Result<Option<Order>> {
        let (t, i) = (tenant.clone(), id.clone());
        self.write(move |c| {
            Box::pin(async move {
                let order = load_order_in(c, &t, &i).await?;
                if order.status != OrderStatus::NeedsLocation || order.dropoff.lat.is_some() {
                    return Ok(None);
                }
                patch_order_in(c, &t, &i, Some((lat, lng)), None).await.map(Some)
            })
        })
        .await
    }

    /// Record that an order could not be located: its `status_reason` says why, the next
    /// attempt waits `retry_schedule_ms[attempts - 1]` (the last entry repeats), and the
    /// first failure — or one with a new reason — writes an `order_geocode_failed` event.
    pub async fn record_geocode_failure(
        &self,
        tenant: &TenantId,
        id: &OrderId,
        reason: &str,
        retry_schedule_ms: Vec<i64>,
    ) -> Result<GeocodeFailure> {
        let (t, i, reason) = (tenant.clone(), id.clone(), reason.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                let prev = sqlx::query("SELECT attempts, reason FROM geocode_attempts WHERE order_id = $1")
                    .bind(i.as_str())
                    .fetch_optional(&mut *c)
                    .await?;
                let (attempts, same_reason) = match &prev {
                    Some(row) => (get::<i64>(row, "attempts")? + 1, get::<String>(row, "reason")? == reason),
                    None => (1, false),
                };
                let now = now_ms();
                let delay = retry_schedule_ms
                    .get((attempts - 1) as usize)
                    .or(retry_schedule_ms.last())
                    .copied()
                    .unwrap_or(60_000);
                let next = now + delay;
                sqlx::query(
                    "INSERT INTO geocode_attempts (order_id, tenant_id, attempts, next_attempt_at, reason, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (order_id) DO UPDATE SET attempts = excluded.attempts, \
                     next_attempt_at = excluded.next_attempt_at, reason = excluded.reason, updated_at = excluded.updated_at",
                )
                .bind(i.as_str())
                .bind(t.as_str())
                .bind(attempts)
                .bind(next)
                .bind(&reason)
                .bind(now)
                .execute(&mut *c)
                .await?;
                let announced = !same_reason;
                if announced {
                    sqlx::query(
                        "UPDATE orders SET status_reason = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4 AND status = $5",
                    )
                    .bind(&reason)
                    .bind(now)
                    .bind(t.as_str())
                    .bind(i.as_str())
                    .bind(OrderStatus::NeedsLocation.as_str())
                    .execute(&mut *c)
                    .await?;
                    insert_event(
                        c,
                        &t,
                        EventKind::OrderGeocodeFailed,
                        i.as_str(),
                        serde_json::json!({"order_id": i, "reason": reason, "attempts": attempts}),
                    )
                    .await?;
                }
                Ok(GeocodeFailure { attempts, next_attempt_at: next, announced })
            })
        })
        .await
    }
}
