//! Orders: reading them, and the status changes that are not dispatch's (locating an
//! order, readiness, cancellation). Every change writes its outbox event in the same
//! transaction.

use crate::{
    dispatch::release_order_in, from_ms, get, json_col, now_ms, outbox::insert_event, Db, Result, StorageError,
    WriteConn,
};
use futures::future::BoxFuture;
use lastmile_core::{DriverId, EventKind, Order, OrderId, OrderStatus, PayloadId, Platform, StoreId, TenantId};
use sqlx::any::AnyRow;

pub(crate) const ORDER_COLS: &str = "id, tenant_id, store_id, platform, platform_order_id, platform_order_number, \
    status, dispatch_stalled, status_reason, customer_json, dropoff_json, dropoff_lat, dropoff_lng, items_json, \
    totals_json, notes, placed_at, ready_at, created_at, updated_at, platform_updated_at, tracking_token, driver_id, \
    eta_at, raw_payload_id";

pub(crate) fn order_from_row(row: &AnyRow) -> Result<Order> {
    let platform: String = get(row, "platform")?;
    let status: String = get(row, "status")?;
    let stalled: i64 = get(row, "dispatch_stalled")?;
    let mut dropoff: lastmile_core::Dropoff = json_col(row, "dropoff_json")?;
    dropoff.lat = get(row, "dropoff_lat")?;
    dropoff.lng = get(row, "dropoff_lng")?;
    let opt_time =
        |col: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>> { Ok(get::<Option<i64>>(row, col)?.map(from_ms)) };
    Ok(Order {
        id: OrderId(get(row, "id")?),
        tenant_id: TenantId(get(row, "tenant_id")?),
        store_id: StoreId(get(row, "store_id")?),
        platform: platform.parse().map_err(crate::corrupt)?,
        platform_order_id: get(row, "platform_order_id")?,
        platform_order_number: get(row, "platform_order_number")?,
        status: status.parse().map_err(crate::corrupt)?,
        dispatch_stalled: stalled != 0,
        status_reason: get(row, "status_reason")?,
        customer: json_col(row, "customer_json")?,
        dropoff,
        items: json_col(row, "items_json")?,
        totals: json_col(row, "totals_json")?,
        notes: get(row, "notes")?,
        placed_at: opt_time("placed_at")?,
        ready_at: from_ms(get(row, "ready_at")?),
        created_at: from_ms(get(row, "created_at")?),
        updated_at: from_ms(get(row, "updated_at")?),
        platform_updated_at: opt_time("platform_updated_at")?,
        tracking_token: get(row, "tracking_token")?,
        driver_id: get::<Option<String>>(row, "driver_id")?.map(DriverId),
        eta: opt_time("eta_at")?,
        raw_payload_id: get::<Option<String>>(row, "raw_payload_id")?.map(PayloadId),
    })
}

#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub store_id: Option<StoreId>,
    pub updated_since: Option<i64>,
    /// Keyset cursor: (updated_at, id) of the last order already returned.
    pub after: Option<(i64, String)>,
    pub limit: i64,
}

/// Read an order inside a write transaction (tenant-scoped).
pub(crate) async fn load_order_in(c: &mut WriteConn, tenant: &TenantId, id: &OrderId) -> Result<Order> {
    let row = sqlx::query(&format!("SELECT {ORDER_COLS} FROM orders WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await?
        .ok_or(StorageError::NotFound)?;
    order_from_row(&row)
}

/// Move an order to `to` if the status machine allows it, with its event.
pub(crate) async fn set_status_in(
    c: &mut WriteConn,
    order: &Order,
    to: OrderStatus,
    reason: Option<&str>,
    driver: Option<&DriverId>,
) -> Result<()> {
    if !order.status.can_move_to(to) {
        return Err(StorageError::InvalidTransition { from: order.status.to_string(), to: to.to_string() });
    }
    // An ETA describes a delivery under way: it goes when no driver holds the order.
    let clear_eta = if to.holds_driver() { "" } else { ", eta_at = NULL" };
    let done = sqlx::query(&format!(
        "UPDATE orders SET status = $1, status_reason = $2, driver_id = $3, updated_at = $4{clear_eta} \
         WHERE tenant_id = $5 AND id = $6 AND status = $7"
    ))
    .bind(to.as_str())
    .bind(reason)
    .bind(driver.map(|d| d.as_str().to_owned()))
    .bind(now_ms())
    .bind(order.tenant_id.as_str())
    .bind(order.id.as_str())
    .bind(order.status.as_str())
    .execute(&mut *c)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StorageError::InvalidTransition { from: order.status.to_string(), to: to.to_string() });
    }
    if matches!(to, OrderStatus::Cancelled | OrderStatus::Failed) {
        crate::catalog::release_stock_in(c, order).await?;
    }
    let kind = if to == OrderStatus::Cancelled { EventKind::OrderCancelled } else { EventKind::OrderStatusChanged };
    insert_event(
        c,
        &order.tenant_id,
        kind,
        order.id.as_str(),
        serde_json::json!({"order_id": order.id, "from": order.status, "to": to, "reason": reason, "driver_id": driver}),
    )
    .await
}

/// Cancel an order wherever it is: releases its driver or open offer and tells them.
pub(crate) async fn cancel_in(c: &mut WriteConn, order: &Order, reason: &str) -> Result<()> {
    release_order_in(c, order, "assignment_cancelled", reason).await?;
    set_status_in(c, order, OrderStatus::Cancelled, Some(reason), None).await
}

/// The admin `PATCH /v1/orders/{id}` change (also the geocoder's): coordinates move an
/// order out of `needs_location`; both write their events in the caller's transaction.
pub(crate) async fn patch_order_in(
    c: &mut WriteConn,
    t: &TenantId,
    i: &OrderId,
    location: Option<(f64, f64)>,
    ready_at: Option<i64>,
) -> Result<Order> {
    let order = load_order_in(c, t, i).await?;
    if order.status.is_terminal() {
        return Err(StorageError::InvalidTransition { from: order.status.to_string(), to: "updated".into() });
    }
    let now = now_ms();
    if let Some((lat, lng)) = location {
        sqlx::query(
            "UPDATE orders SET dropoff_lat = $1, dropoff_lng = $2, updated_at = $3 WHERE tenant_id = $4 AND id = $5",
        )
        .bind(lat)
        .bind(lng)
        .bind(now)
        .bind(t.as_str())
        .bind(i.as_str())
        .execute(&mut *c)
        .await?;
        if order.status == OrderStatus::NeedsLocation {
            set_status_in(c, &order, OrderStatus::Received, None, None).await?;
        }
    }
    if let Some(r) = ready_at {
        sqlx::query("UPDATE orders SET ready_at = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4")
            .bind(r)
            .bind(now)
            .bind(t.as_str())
            .bind(i.as_str())
            .execute(&mut *c)
            .await?;
    }
    insert_event(c, t, EventKind::OrderUpdated, i.as_str(), serde_json::json!({"order_id": i})).await?;
    let current = load_order_in(c, t, i).await?;
    // The driver holding it hears the full current dropoff.
    crate::timeline::notify_order_updated_in(c, &current).await?;
    Ok(current)
}

impl Db {
    /// One of the tenant's orders, read inside the tenant's row-security scope.
    pub async fn get_order(&self, tenant: &TenantId, id: &OrderId) -> Result<Order> {
        let (t, id) = (tenant.clone(), id.clone());
        self.tenant_scope(Some(tenant), move |c| -> BoxFuture<'_, Result<Order>> {
            Box::pin(async move { load_order_in(c, &t, &id).await })
        })
        .await
    }

    pub async fn get_order_by_tracking_token(&self, token: &str) -> Result<Order> {
        let row = sqlx::query(&format!("SELECT {ORDER_COLS} FROM orders WHERE tracking_token = $1"))
            .bind(token)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound)?;
        order_from_row(&row)
    }

    pub async fn find_platform_order(
        &self,
        tenant: &TenantId,
        platform: Platform,
        store: &StoreId,
        platform_order_id: &str,
    ) -> Result<Order> {
        let row = sqlx::query(&format!(
            "SELECT {ORDER_COLS} FROM orders WHERE tenant_id = $1 AND platform = $2 AND store_id = $3 AND platform_order_id = $4"
        ))
        .bind(tenant.as_str())
        .bind(platform.as_str())
        .bind(store.as_str())
        .bind(platform_order_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StorageError::NotFound)?;
        order_from_row(&row)
    }

    /// The tenant's orders by filter, read inside the tenant's row-security scope.
    pub async fn list_orders(&self, tenant: &TenantId, f: &OrderFilter) -> Result<Vec<Order>> {
        let (t, f) = (tenant.clone(), f.clone());
        self.tenant_scope(Some(tenant), move |c| -> BoxFuture<'_, Result<Vec<Order>>> {
            Box::pin(async move { list_orders_in(c, &t, &f).await })
        })
        .await
    }
}

async fn list_orders_in(c: &mut WriteConn, tenant: &TenantId, f: &OrderFilter) -> Result<Vec<Order>> {
    {
        let mut sql = format!("SELECT {ORDER_COLS} FROM orders WHERE tenant_id = $1");
        let mut n = 1;
        let mut next = |sql: &mut String, clause: &str| {
            n += 1;
            sql.push_str(&clause.replace('?', &format!("${n}")));
        };
        if f.status.is_some() {
            next(&mut sql, " AND status = ?");
        }
        if f.store_id.is_some() {
            next(&mut sql, " AND store_id = ?");
        }
        if f.updated_since.is_some() {
            next(&mut sql, " AND updated_at >= ?");
        }
        if f.after.is_some() {
            next(&mut sql, " AND (updated_at > ?");
            next(&mut sql, " OR (updated_at = ?");
            next(&mut sql, " AND id > ?))");
        }
        next(&mut sql, " ORDER BY updated_at, id LIMIT ?");
        let mut q = sqlx::query(&sql).bind(tenant.as_str());
        if let Some(s) = f.status {
            q = q.bind(s.as_str());
        }
        if let Some(s) = &f.store_id {
            q = q.bind(s.as_str());
        }
        if let Some(t) = f.updated_since {
            q = q.bind(t);
        }
        if let Some((t, id)) = &f.after {
            q = q.bind(*t).bind(*t).bind(id.clone());
        }
        q = q.bind(f.limit);
        let rows = q.fetch_all(&mut *c).await?;
        rows.iter().map(order_from_row).collect()
    }
}

impl Db {
    /// Give an order its dropoff coordinates (it leaves `needs_location`) and/or readiness.
    pub async fn patch_order(
        &self,
        tenant: &TenantId,
        id: &OrderId,
        location: Option<(f64, f64)>,
        ready_at: Option<i64>,
    ) -> Result<Order> {
        let (t, i) = (tenant.clone(), id.clone());
        self.write(move |c| Box::pin(async move { patch_order_in(c, &t, &i, location, ready_at).await })).await
    }

    /// Cancellation by the store or ops.
    pub async fn cancel_order(&self, tenant: &TenantId, id: &OrderId, reason: &str) -> Result<Order> {
        let (t, i, r) = (tenant.clone(), id.clone(), reason.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                let order = load_order_in(c, &t, &i).await?;
                cancel_in(c, &order, &r).await?;
                if order.platform != Platform::Native {
                    crate::sync::enqueue_sync_in(c, &order, "cancelled").await?;
                }
                load_order_in(c, &t, &i).await
            })
        })
        .await
    }

    /// Write the ETA the dispatcher computed (not an event: it changes with every GPS fix);
    /// ignored unless a driver holds the order.
    pub async fn set_order_eta(&self, tenant: &TenantId, id: &OrderId, eta_ms: i64) -> Result<()> {
        let (t, i) = (tenant.clone(), id.clone());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE orders SET eta_at = $1 WHERE tenant_id = $2 AND id = $3 AND status IN ('assigned', 'picked_up')")
                    .bind(eta_ms)
                    .bind(t.as_str())
                    .bind(i.as_str())
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }
}
