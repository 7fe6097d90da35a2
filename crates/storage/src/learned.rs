//! What the ETA model learned from completed deliveries (`eta_estimates`) and the moments
//! of each delivery it learns from (`delivery_legs`), on the server's clock. The averaging
//! rule is the domain's ([`lastmile_core::learned::Ewma`]); this module only keeps it.

use crate::bind::OptF64;
use crate::{get, Db, Result, StorageError, WriteConn};
use lastmile_core::learned::{Ewma, SpeedKey, ZoneCell, ALL_HOURS};
use lastmile_core::{DriverId, GeoPoint, LearnedEta, OrderId, TenantId};
use std::collections::HashMap;

/// Which estimate a row holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EstimateKey {
    Speed(SpeedKey),
    /// Observed ÷ planned prep of one store.
    Prep(String),
}

impl EstimateKey {
    fn columns(&self) -> (&'static str, String, i64) {
        match self {
            EstimateKey::Speed(k) => ("speed", k.zone.map_or_else(|| "*".to_owned(), |z| z.key()), i64::from(k.hour)),
            EstimateKey::Prep(store) => ("prep", store.clone(), i64::from(ALL_HOURS)),
        }
    }

    fn from_columns(kind: &str, key: &str, hour: i64) -> Option<EstimateKey> {
        match kind {
            "prep" => Some(EstimateKey::Prep(key.to_owned())),
            "speed" => {
                let zone = if key == "*" { None } else { Some(ZoneCell::parse(key)?) };
                let hour = u8::try_from(hour).ok().filter(|h| *h <= ALL_HOURS)?;
                Some(EstimateKey::Speed(SpeedKey { zone, hour }))
            }
            _ => None,
        }
    }
}

/// The moments of one delivery (unix ms, server clock).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveryLeg {
    pub placed_at: Option<i64>,
    pub planned_prep_s: Option<f64>,
    pub picked_up_at: Option<i64>,
    pub delivered_at: Option<i64>,
}

/// Record when a catalog order was placed and the prep planned for it, inside the
/// order's own transaction.
pub(crate) async fn record_placed_in(
    c: &mut WriteConn,
    tenant: &TenantId,
    order: &OrderId,
    placed_at: i64,
    planned_prep_s: f64,
) -> Result<()> {
    sqlx::query("INSERT INTO delivery_legs (order_id, tenant_id, placed_at, planned_prep_s) VALUES ($1, $2, $3, $4)")
        .bind(order.as_str())
        .bind(tenant.as_str())
        .bind(placed_at)
        .bind(OptF64(Some(planned_prep_s)))
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// How many attempts a lesson gets against concurrent learners on other nodes.
const LEARN_ATTEMPTS: usize = 8;
const LEARN_RACE: &str = "eta_estimates_samples";

impl Db {
    /// Every learned estimate, per tenant.
    pub async fn learned_etas(&self) -> Result<HashMap<TenantId, LearnedEta>> {
        let rows = sqlx::query("SELECT tenant_id, kind, key, hour, mean, samples FROM eta_estimates")
            .fetch_all(&self.pool)
            .await?;
        let mut out: HashMap<TenantId, LearnedEta> = HashMap::new();
        for r in &rows {
            let (kind, key): (String, String) = (get(r, "kind")?, get(r, "key")?);
            let Some(k) = EstimateKey::from_columns(&kind, &key, get(r, "hour")?) else { continue };
            let e = Ewma { mean: get(r, "mean")?, samples: get(r, "samples")? };
            let learned = out.entry(TenantId(get(r, "tenant_id")?)).or_default();
            match k {
                EstimateKey::Speed(s) => learned.speed.insert(s, e),
                EstimateKey::Prep(p) => learned.prep.insert(p, e),
            };
        }
        Ok(out)
    }

    /// The driver picked the order up at `at` (server clock).
    pub async fn record_pickup(&self, tenant: &TenantId, order: &OrderId, at: i64) -> Result<()> {
        let (t, o) = (tenant.clone(), order.clone());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO delivery_legs (order_id, tenant_id, picked_up_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (order_id) DO UPDATE SET picked_up_at = excluded.picked_up_at",
                )
                .bind(o.as_str())
                .bind(t.as_str())
                .bind(at)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn delivery_leg(&self, tenant: &TenantId, order: &OrderId) -> Result<Option<DeliveryLeg>> {
        let row = sqlx::query(
            "SELECT placed_at, planned_prep_s, picked_up_at, delivered_at FROM delivery_legs \
             WHERE tenant_id = $1 AND order_id = $2",
        )
        .bind(tenant.as_str())
        .bind(order.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(DeliveryLeg {
                placed_at: get(&r, "placed_at")?,
                planned_prep_s: get(&r, "planned_prep_s")?,
                picked_up_at: get(&r, "picked_up_at")?,
                delivered_at: get(&r, "delivered_at")?,
            })
        })
        .transpose()
    }

    /// When the driver holding `order` first reached the store: their earliest fix tagged
    /// with the order within `radius_m` of `store` inside `window` (placed ..= picked up).
    /// `None` when no such fix was kept (no GPS, or pruned history).
    pub async fn arrival_at_store(
        &self,
        tenant: &TenantId,
        driver: &DriverId,
        order: &OrderId,
        store: &GeoPoint,
        radius_m: f64,
        window: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>> {
        let (since, until) = (*window.start(), *window.end());
        let dlat = radius_m / 111_320.0;
        let dlng = dlat / store.lat.to_radians().cos().max(0.01);
        let row = sqlx::query(
            "SELECT CAST(MIN(recorded_at) AS BIGINT) AS at FROM location_history \
             WHERE driver_id = $1 AND recorded_at >= $2 AND recorded_at <= $3 AND tenant_id = $4 AND order_id = $5 \
             AND lat BETWEEN $6 AND $7 AND lng BETWEEN $8 AND $9",
        )
        .bind(driver.as_str())
        .bind(since)
        .bind(until)
        .bind(tenant.as_str())
        .bind(order.as_str())
        .bind(store.lat - dlat)
        .bind(store.lat + dlat)
        .bind(store.lng - dlng)
        .bind(store.lng + dlng)
        .fetch_one(&self.pool)
        .await?;
        get(&row, "at")
    }

    /// Mark the order delivered at `at` and fold its samples into the estimates, once:
    /// a delivery already marked teaches nothing again (`None`). Returns the estimates as
    /// they now stand. Concurrent learners on other nodes are caught by the sample count
    /// (optimistic, retried).
    pub async fn learn_delivery(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        at: i64,
        samples: Vec<(EstimateKey, f64)>,
        alpha: f64,
    ) -> Result<Option<Vec<(EstimateKey, Ewma)>>> {
        for _ in 0..LEARN_ATTEMPTS {
            let (t, o, s) = (tenant.clone(), order.clone(), samples.clone());
            let attempt = self.write(move |c| Box::pin(async move { learn_in(c, &t, &o, at, &s, alpha).await })).await;
            match attempt {
                Err(StorageError::Conflict(what)) if what == LEARN_RACE => continue,
                other => return other,
            }
        }
        Err(StorageError::Conflict(LEARN_RACE.into()))
    }
}

async fn learn_in(
    c: &mut WriteConn,
    tenant: &TenantId,
    order: &OrderId,
    at: i64,
    samples: &[(EstimateKey, f64)],
    alpha: f64,
) -> Result<Option<Vec<(EstimateKey, Ewma)>>> {
    let marked = sqlx::query(
        "UPDATE delivery_legs SET delivered_at = $1 WHERE tenant_id = $2 AND order_id = $3 AND delivered_at IS NULL",
    )
    .bind(at)
    .bind(tenant.as_str())
    .bind(order.as_str())
    .execute(&mut *c)
    .await?;
    if marked.rows_affected() == 0 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(samples.len());
    for (key, sample) in samples {
        let (kind, k, hour) = key.columns();
        let row = sqlx::query(
            "SELECT mean, samples FROM eta_estimates WHERE tenant_id = $1 AND kind = $2 AND key = $3 AND hour = $4",
        )
        .bind(tenant.as_str())
        .bind(kind)
        .bind(&k)
        .bind(hour)
        .fetch_optional(&mut *c)
        .await?;
        let before = row.map(|r| Ok::<_, StorageError>(Ewma { mean: get(&r, "mean")?, samples: get(&r, "samples")? }));
        let done = match before.transpose()? {
            None => {
                let next = Ewma::first(*sample);
                let n = sqlx::query(
                    "INSERT INTO eta_estimates (tenant_id, kind, key, hour, mean, samples, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(tenant.as_str())
                .bind(kind)
                .bind(&k)
                .bind(hour)
                .bind(next.mean)
                .bind(next.samples)
                .bind(at)
                .execute(&mut *c)
                .await?;
                (n.rows_affected() == 1).then_some(next)
            }
            Some(prev) => {
                let next = prev.update(*sample, alpha);
                let n = sqlx::query(
                    "UPDATE eta_estimates SET mean = $1, samples = $2, updated_at = $3 \
                     WHERE tenant_id = $4 AND kind = $5 AND key = $6 AND hour = $7 AND samples = $8",
                )
                .bind(next.mean)
                .bind(next.samples)
                .bind(at)
                .bind(tenant.as_str())
                .bind(kind)
                .bind(&k)
                .bind(hour)
                .bind(prev.samples)
                .execute(&mut *c)
                .await?;
                (n.rows_affected() == 1).then_some(next)
            }
        };
        match done {
            Some(next) => out.push((key.clone(), next)),
            None => return Err(StorageError::Conflict(LEARN_RACE.into())),
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use crate::testing::TestDb;
    use lastmile_core::{DriverId, GeoPoint, OrderId, TenantId};

    #[tokio::test]
    async fn arrival_is_the_first_fix_at_the_store_while_holding_the_order() {
        for t in TestDb::all().await {
            let db = &t.db;
            let store = GeoPoint::new(60.17, 24.94).unwrap();
            // (order, lat, lng, at): far away, then at the store (50 m off) for o1 from 5_000,
            // another order's fix at the store earlier, a fix there after the pickup.
            let fixes = [
                ("o1", 60.20, 24.94, 1_000),
                ("o2", 60.17, 24.94, 2_000),
                ("o1", 60.1704, 24.9403, 5_000),
                ("o1", 60.17, 24.94, 6_000),
                ("o1", 60.17, 24.94, 99_000),
            ];
            for (order, lat, lng, at) in fixes {
                sqlx::query(
                    "INSERT INTO location_history (driver_id, tenant_id, order_id, lat, lng, recorded_at) \
                     VALUES ('d1', 't1', $1, $2, $3, $4)",
                )
                .bind(order)
                .bind(lat)
                .bind(lng)
                .bind(at as i64)
                .execute(db.pool())
                .await
                .unwrap();
            }
            let (ten, drv) = (TenantId("t1".into()), DriverId("d1".into()));
            let at = |o: &str, until: i64| {
                let o = OrderId(o.into());
                let (ten, drv) = (ten.clone(), drv.clone());
                async move { db.arrival_at_store(&ten, &drv, &o, &store, 100.0, 0..=until).await.unwrap() }
            };
            assert_eq!(at("o1", 50_000).await, Some(5_000), "{}", t.backend());
            assert_eq!(at("o1", 4_000).await, None, "{}: not there before the pickup", t.backend());
            assert_eq!(at("o3", 50_000).await, None, "{}", t.backend());
            let other = GeoPoint::new(60.25, 24.94).unwrap();
            assert_eq!(
                db.arrival_at_store(&ten, &drv, &OrderId("o1".into()), &other, 100.0, 0..=50_000).await.unwrap(),
                None
            );
            t.cleanup().await;
        }
    }
}
