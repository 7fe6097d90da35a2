//! Dispatch's durable half: offers, assignments (capacity enforced by the database,
//! invariant 6), driver inboxes with per-driver sequence numbers (invariant 7), and the
//! driver-side lifecycle (pickup, deliver, fail).

use crate::orders::{load_order_in, order_from_row, set_status_in, ORDER_COLS};
use crate::{from_ms, get, now_ms, outbox::insert_event, Db, Result, StorageError, WriteConn};
use lastmile_core::{DriverId, EventKind, OfferId, Order, OrderId, OrderStatus, Platform, TenantId};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InboxMessage {
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: serde_json::Value,
}

/// An order waiting for a driver, with what matching needs to price it.
#[derive(Debug, Clone)]
pub struct DispatchCandidate {
    pub order: Order,
    pub pickup_lat: f64,
    pub pickup_lng: f64,
    /// Drivers that declined or let an offer for this order expire.
    pub excluded: Vec<DriverId>,
    pub attempts: i64,
}

/// A latitude/longitude box (degrees, bounds included): the part of a city an event-started
/// matching round reads orders from. `lng_min > lng_max` is not a box across the
/// antimeridian; callers read the whole tenant there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    pub lat_min: f64,
    pub lat_max: f64,
    pub lng_min: f64,
    pub lng_max: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct OfferRecord {
    pub id: OfferId,
    pub order_id: OrderId,
    pub driver_id: DriverId,
    pub state: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct StallPolicy {
    /// Offers (declined or expired) after which the order is flagged `dispatch_stalled`.
    pub max_attempts: i64,
}

/// Append a message to a driver's inbox; returns its sequence number.
pub async fn push_inbox_in(
    c: &mut WriteConn,
    tenant: &TenantId,
    driver: &DriverId,
    kind: &str,
    data: serde_json::Value,
) -> Result<i64> {
    let row = sqlx::query(
        "UPDATE drivers SET inbox_seq = inbox_seq + 1 WHERE tenant_id = $1 AND id = $2 RETURNING inbox_seq",
    )
    .bind(tenant.as_str())
    .bind(driver.as_str())
    .fetch_optional(&mut *c)
    .await?
    .ok_or(StorageError::NotFound)?;
    let seq: i64 = get(&row, "inbox_seq")?;
    sqlx::query(
        "INSERT INTO driver_inbox (driver_id, seq, tenant_id, kind, data, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(driver.as_str())
    .bind(seq)
    .bind(tenant.as_str())
    .bind(kind)
    .bind(data.to_string())
    .bind(now_ms())
    .execute(&mut *c)
    .await?;
    insert_event(
        c,
        tenant,
        EventKind::InboxAppended,
        driver.as_str(),
        serde_json::json!({"driver_id": driver, "seq": seq}),
    )
    .await?;
    Ok(seq)
}

/// Decide a pending offer: `accepted`, `declined`, `expired` or `cancelled`. Conditional on
/// `pending`, so of two nodes deciding one offer at once exactly one wins (PostgreSQL
/// re-checks the row once the winner commits; SQLite has one writer). Returns whether this
/// call decided it; the loser must not act on the offer (invariant 6: an accept and a
/// decline or expiry racing must not both take effect).
async fn close_offer_in(c: &mut WriteConn, offer: &str, to: &str, reason: Option<&str>, now: i64) -> Result<bool> {
    let done =
        sqlx::query("UPDATE offers SET state = $1, reason = $2, decided_at = $3 WHERE id = $4 AND state = 'pending'")
            .bind(to)
            .bind(reason.map(str::to_owned))
            .bind(now)
            .bind(offer)
            .execute(&mut *c)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// The state an offer is in now (after losing a race to decide it).
async fn offer_state_in(c: &mut WriteConn, offer: &str) -> Result<String> {
    let row = sqlx::query("SELECT state FROM offers WHERE id = $1").bind(offer).fetch_one(&mut *c).await?;
    get(&row, "state")
}

/// Take an order away from whoever holds it (pending offer or assignment) and tell them.
pub(crate) async fn release_order_in(c: &mut WriteConn, order: &Order, inbox_kind: &str, reason: &str) -> Result<()> {
    let now = now_ms();
    if order.status == OrderStatus::Dispatching {
        let row = sqlx::query("SELECT id, driver_id FROM offers WHERE order_id = $1 AND state = 'pending'")
            .bind(order.id.as_str())
            .fetch_optional(&mut *c)
            .await?;
        if let Some(row) = row {
            let offer: String = get(&row, "id")?;
            let driver = DriverId(get(&row, "driver_id")?);
            // Lost to an accept meanwhile: the order's status update below then fails too.
            if close_offer_in(c, &offer, "cancelled", Some(reason), now).await? {
                let data = serde_json::json!({"order_id": order.id, "offer_id": offer, "reason": reason});
                push_inbox_in(c, &order.tenant_id, &driver, inbox_kind, data).await?;
            }
        }
    }
    if order.status.holds_driver() {
        let row = sqlx::query("SELECT driver_id FROM assignments WHERE order_id = $1 AND active = 1")
            .bind(order.id.as_str())
            .fetch_optional(&mut *c)
            .await?;
        if let Some(row) = row {
            let driver = DriverId(get(&row, "driver_id")?);
            let released =
                sqlx::query("UPDATE assignments SET active = 0, released_at = $1 WHERE order_id = $2 AND active = 1")
                    .bind(now)
                    .bind(order.id.as_str())
                    .execute(&mut *c)
                    .await?;
            // Released by a racing request meanwhile: the counter was decremented there.
            if released.rows_affected() == 0 {
                return Ok(());
            }
            sqlx::query("UPDATE drivers SET active_count = active_count - 1 WHERE id = $1")
                .bind(driver.as_str())
                .execute(&mut *c)
                .await?;
            if inbox_kind != "none" {
                let data = serde_json::json!({"order_id": order.id, "reason": reason});
                push_inbox_in(c, &order.tenant_id, &driver, inbox_kind, data).await?;
            }
        }
    }
    Ok(())
}

/// After a decline or expiry: count the attempt and flag the order if it keeps failing.
async fn back_to_matching_in(c: &mut WriteConn, order: &Order, policy: StallPolicy, why: &str) -> Result<()> {
    set_status_in(c, order, OrderStatus::Received, Some(why), None).await?;
    let row = sqlx::query(
        "UPDATE orders SET dispatch_attempts = dispatch_attempts + 1 WHERE id = $1 RETURNING dispatch_attempts",
    )
    .bind(order.id.as_str())
    .fetch_one(&mut *c)
    .await?;
    let attempts: i64 = get(&row, "dispatch_attempts")?;
    if attempts >= policy.max_attempts {
        stall_in(c, order, &format!("{attempts} offers declined or expired")).await?;
    }
    Ok(())
}

async fn stall_in(c: &mut WriteConn, order: &Order, why: &str) -> Result<()> {
    let done = sqlx::query("UPDATE orders SET dispatch_stalled = 1, status_reason = $1, updated_at = $2 WHERE id = $3 AND dispatch_stalled = 0")
        .bind(why)
        .bind(now_ms())
        .bind(order.id.as_str())
        .execute(&mut *c)
        .await?;
    if done.rows_affected() > 0 {
        insert_event(
            c,
            &order.tenant_id,
            EventKind::OrderDispatchStalled,
            order.id.as_str(),
            serde_json::json!({"order_id": order.id, "reason": why}),
        )
        .await?;
    }
    Ok(())
}

async fn load_offer_in(
    c: &mut WriteConn,
    tenant: &TenantId,
    driver: &DriverId,
    offer: &OfferId,
) -> Result<(OrderId, String, i64)> {
    let row = sqlx::query(
        "SELECT order_id, state, expires_at FROM offers WHERE tenant_id = $1 AND driver_id = $2 AND id = $3",
    )
    .bind(tenant.as_str())
    .bind(driver.as_str())
    .bind(offer.as_str())
    .fetch_optional(&mut *c)
    .await?
    .ok_or(StorageError::NotFound)?;
    Ok((OrderId(get(&row, "order_id")?), get(&row, "state")?, get(&row, "expires_at")?))
}

/// Offer `o` to `d` inside the caller's transaction (see [`Db::create_offer`]).
pub(crate) async fn create_offer_in(
    c: &mut WriteConn,
    t: &TenantId,
    o: &OrderId,
    d: &DriverId,
    now: i64,
    ttl_ms: i64,
) -> Result<(OfferId, i64)> {
    let order = load_order_in(c, t, o).await?;
    let drow = sqlx::query(
        "SELECT status, active_count, capacity FROM drivers WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(t.as_str())
    .bind(d.as_str())
    .fetch_optional(&mut *c)
    .await?
    .ok_or(StorageError::NotFound)?;
    let (status, active, cap): (String, i64, i64) =
        (get(&drow, "status")?, get(&drow, "active_count")?, get(&drow, "capacity")?);
    if status != "online" || active >= cap {
        return Err(StorageError::AtCapacity);
    }
    set_status_in(c, &order, OrderStatus::Dispatching, None, None).await?;
    let offer = OfferId::generate();
    let expires = now + ttl_ms;
    sqlx::query("INSERT INTO offers (id, tenant_id, order_id, driver_id, state, expires_at, created_at) VALUES ($1, $2, $3, $4, 'pending', $5, $6)")
            .bind(offer.as_str())
            .bind(t.as_str())
            .bind(o.as_str())
            .bind(d.as_str())
            .bind(expires)
            .bind(now)
            .execute(&mut *c)
            .await
            .map_err(StorageError::from_db)?;
    let data = serde_json::json!({
        "offer_id": offer, "order_id": o, "expires_at": from_ms(expires),
        "pickup": pickup_in(c, &order).await?, "dropoff": order.dropoff, "ready_at": order.ready_at,
    });
    let seq = push_inbox_in(c, t, d, "offer", data).await?;
    insert_event(
        c,
        t,
        EventKind::OfferSent,
        o.as_str(),
        serde_json::json!({"order_id": o, "offer_id": offer, "driver_id": d}),
    )
    .await?;
    Ok((offer, seq))
}

/// Count `o` against `d`'s capacity and record the assignment. The counter update is
/// conditional and a CHECK constraint backs it, so the database refuses a driver over
/// capacity (`AtCapacity`, invariant 6) however many nodes race.
pub(crate) async fn take_assignment_in(
    c: &mut WriteConn,
    t: &TenantId,
    o: &OrderId,
    d: &DriverId,
    now: i64,
) -> Result<()> {
    let bumped = sqlx::query(
        "UPDATE drivers SET active_count = active_count + 1 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL AND active_count < capacity",
    )
    .bind(t.as_str())
    .bind(d.as_str())
    .execute(&mut *c)
    .await
    .map_err(StorageError::from_db)?;
    if bumped.rows_affected() == 0 {
        return Err(StorageError::AtCapacity);
    }
    sqlx::query(
        "INSERT INTO assignments (order_id, tenant_id, driver_id, active, created_at) VALUES ($1, $2, $3, 1, $4)",
    )
    .bind(o.as_str())
    .bind(t.as_str())
    .bind(d.as_str())
    .bind(now)
    .execute(&mut *c)
    .await
    .map_err(StorageError::from_db)?;
    Ok(())
}

/// Where the driver collects an order: the store's pickup point, as inbox messages carry it.
pub(crate) async fn pickup_in(c: &mut WriteConn, order: &Order) -> Result<serde_json::Value> {
    let pickup = sqlx::query("SELECT pickup_lat, pickup_lng, pickup_address, name FROM stores WHERE id = $1")
        .bind(order.store_id.as_str())
        .fetch_one(&mut *c)
        .await?;
    Ok(serde_json::json!({"lat": get::<f64>(&pickup, "pickup_lat")?, "lng": get::<f64>(&pickup, "pickup_lng")?,
               "address": get::<String>(&pickup, "pickup_address")?, "store_name": get::<String>(&pickup, "name")?}))
}

impl Db {
    /// Orders in `received` (not stalled), oldest readiness first, with their pickup point.
    pub async fn dispatch_candidates(&self, limit: i64) -> Result<Vec<DispatchCandidate>> {
        self.dispatch_candidates_ready_by(limit, i64::MAX).await
    }

    /// [`Db::dispatch_candidates`] ready at or before `ready_by` (ms) only: the matcher asks
    /// for orders that could come due now, so orders scheduled far ahead cost it nothing
    /// (both queries use the `(status, ready_at)` index).
    pub async fn dispatch_candidates_ready_by(&self, limit: i64, ready_by: i64) -> Result<Vec<DispatchCandidate>> {
        self.candidates_where("", None, None, limit, ready_by).await
    }

    /// One tenant's orders waiting for a driver, ready at or before `ready_by`, oldest
    /// readiness first: what a matching round reads for a tenant with free drivers. Reads
    /// the `orders_due` index only (stalled and assigned orders are not in it), so a round's
    /// cost follows the due orders, not the tenant's whole order history.
    pub async fn dispatch_candidates_for_tenant(
        &self,
        tenant: &TenantId,
        limit: i64,
        ready_by: i64,
    ) -> Result<Vec<DispatchCandidate>> {
        self.candidates_where(" AND o.tenant_id = $3", Some(tenant), None, limit, ready_by).await
    }

    /// [`Db::dispatch_candidates_for_tenant`] whose store's pickup point lies in `area`: what
    /// a round started by an event reads, so that its cost follows the affected part of
    /// the city, not the tenant's whole backlog.
    pub async fn dispatch_candidates_in_area(
        &self,
        tenant: &TenantId,
        area: Area,
        limit: i64,
        ready_by: i64,
    ) -> Result<Vec<DispatchCandidate>> {
        let filter = " AND o.tenant_id = $3 AND s.pickup_lat BETWEEN $4 AND $5 AND s.pickup_lng BETWEEN $6 AND $7";
        self.candidates_where(filter, Some(tenant), Some(area), limit, ready_by).await
    }

    /// Pickup points `(order, lat, lng)` of a tenant's orders, by id (unknown ids are left
    /// out): where an event about an order touches the city.
    pub async fn order_pickups(&self, tenant: &TenantId, orders: &[OrderId]) -> Result<Vec<(OrderId, f64, f64)>> {
        let mut out = Vec::with_capacity(orders.len());
        for range in crate::bulk::chunks(orders.len()) {
            let sql = format!(
                "SELECT o.id, s.pickup_lat, s.pickup_lng FROM orders o JOIN stores s ON s.id = o.store_id \
                 WHERE o.tenant_id = $1 AND o.id IN ({})",
                crate::bulk::list(1, range.len())
            );
            let mut q = sqlx::query(&sql).bind(tenant.as_str());
            for id in &orders[range] {
                q = q.bind(id.as_str());
            }
            for r in &q.fetch_all(&self.pool).await? {
                out.push((OrderId(get(r, "id")?), get(r, "pickup_lat")?, get(r, "pickup_lng")?));
            }
        }
        Ok(out)
    }

    async fn candidates_where(
        &self,
        filter: &str,
        tenant: Option<&TenantId>,
        area: Option<Area>,
        limit: i64,
        ready_by: i64,
    ) -> Result<Vec<DispatchCandidate>> {
        let cols: String = ORDER_COLS.split(", ").map(|c| format!("o.{c}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {cols}, o.dispatch_attempts, s.pickup_lat, s.pickup_lng FROM orders o JOIN stores s ON s.id = o.store_id \
             WHERE o.status = 'received' AND o.dispatch_stalled = 0 AND o.ready_at <= $2{filter} ORDER BY o.ready_at LIMIT $1"
        );
        let mut q = sqlx::query(&sql).bind(limit).bind(ready_by);
        if let Some(t) = tenant {
            q = q.bind(t.as_str());
        }
        if let Some(a) = area {
            q = q.bind(a.lat_min).bind(a.lat_max).bind(a.lng_min).bind(a.lng_max);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(DispatchCandidate {
                order: order_from_row(row)?,
                pickup_lat: get(row, "pickup_lat")?,
                pickup_lng: get(row, "pickup_lng")?,
                excluded: Vec::new(),
                attempts: get(row, "dispatch_attempts")?,
            });
        }
        // The candidates' excluded drivers, looked up by order id (the `offers_order` index),
        // a chunk of orders per query.
        let mut by_order: std::collections::HashMap<String, Vec<DriverId>> = std::collections::HashMap::new();
        let ids: Vec<&str> = out.iter().map(|c| c.order.id.as_str()).collect();
        for range in crate::bulk::chunks(ids.len()) {
            let sql = format!(
                "SELECT order_id, driver_id FROM offers WHERE state IN ('declined', 'expired') AND order_id IN ({})",
                crate::bulk::list(0, range.len())
            );
            let mut q = sqlx::query(&sql);
            for id in &ids[range] {
                q = q.bind(*id);
            }
            for r in &q.fetch_all(&self.pool).await? {
                by_order.entry(get(r, "order_id")?).or_default().push(DriverId(get(r, "driver_id")?));
            }
        }
        for cand in &mut out {
            cand.excluded = by_order.remove(cand.order.id.as_str()).unwrap_or_default();
        }
        Ok(out)
    }

    /// Offer an order to a driver: the order moves to `dispatching` and the offer lands in
    /// the driver's inbox, atomically. Fails if the order moved on meanwhile. The offer
    /// expires `ttl_ms` after `now` (the caller's clock, which also runs [`Db::expire_offers`]).
    pub async fn create_offer(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        driver: &DriverId,
        now: i64,
        ttl_ms: i64,
    ) -> Result<(OfferId, i64)> {
        let (t, o, d) = (tenant.clone(), order.clone(), driver.clone());
        self.write(move |c| Box::pin(async move { create_offer_in(c, &t, &o, &d, now, ttl_ms).await })).await
    }

    /// The driver takes the offer, if it is still pending and not past its deadline at
    /// `now`. Capacity is enforced by the database: the counter update is conditional and a
    /// CHECK constraint backs it.
    pub async fn accept_offer(&self, tenant: &TenantId, driver: &DriverId, offer: &OfferId, now: i64) -> Result<Order> {
        let (t, d, f) = (tenant.clone(), driver.clone(), offer.clone());
        self.write(move |c| {
            Box::pin(async move {
                let (order_id, state, expires) = load_offer_in(c, &t, &d, &f).await?;
                if state != "pending" {
                    return Err(StorageError::OfferClosed(state));
                }
                if expires <= now {
                    return Err(StorageError::OfferClosed("expired".into()));
                }
                if !close_offer_in(c, f.as_str(), "accepted", None, now).await? {
                    return Err(StorageError::OfferClosed(offer_state_in(c, f.as_str()).await?));
                }
                take_assignment_in(c, &t, &order_id, &d, now).await?;
                let order = load_order_in(c, &t, &order_id).await?;
                set_status_in(c, &order, OrderStatus::Assigned, None, Some(&d)).await?;
                insert_event(
                    c,
                    &t,
                    EventKind::OrderAssigned,
                    order_id.as_str(),
                    serde_json::json!({"order_id": order_id, "driver_id": d}),
                )
                .await?;
                load_order_in(c, &t, &order_id).await
            })
        })
        .await
    }

    pub async fn decline_offer(
        &self,
        tenant: &TenantId,
        driver: &DriverId,
        offer: &OfferId,
        reason: &str,
        policy: StallPolicy,
    ) -> Result<()> {
        let (t, d, f, r) = (tenant.clone(), driver.clone(), offer.clone(), reason.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                let (order_id, state, _) = load_offer_in(c, &t, &d, &f).await?;
                if state != "pending" {
                    return Err(StorageError::OfferClosed(state));
                }
                if !close_offer_in(c, f.as_str(), "declined", Some(&r), now_ms()).await? {
                    return Err(StorageError::OfferClosed(offer_state_in(c, f.as_str()).await?));
                }
                insert_event(
                    c,
                    &t,
                    EventKind::OfferDeclined,
                    order_id.as_str(),
                    serde_json::json!({"order_id": order_id, "offer_id": f, "driver_id": d, "reason": r}),
                )
                .await?;
                let order = load_order_in(c, &t, &order_id).await?;
                back_to_matching_in(c, &order, policy, &format!("declined: {r}")).await
            })
        })
        .await
    }

    /// Expire every pending offer past its deadline; returns how many.
    pub async fn expire_offers(&self, now: i64, policy: StallPolicy) -> Result<usize> {
        self.write(move |c| {
            Box::pin(async move {
                let rows = sqlx::query("SELECT id, tenant_id, order_id, driver_id FROM offers WHERE state = 'pending' AND expires_at <= $1")
                    .bind(now)
                    .fetch_all(&mut *c)
                    .await?;
                let mut expired = 0;
                for row in &rows {
                    let (id, t, o, d): (String, String, String, String) =
                        (get(row, "id")?, get(row, "tenant_id")?, get(row, "order_id")?, get(row, "driver_id")?);
                    let (t, o, d) = (TenantId(t), OrderId(o), DriverId(d));
                    // Accepted or declined on another node since the SELECT: theirs stands.
                    if !close_offer_in(c, &id, "expired", None, now).await? {
                        continue;
                    }
                    expired += 1;
                    push_inbox_in(c, &t, &d, "offer_expired", serde_json::json!({"offer_id": id, "order_id": o})).await?;
                    insert_event(c, &t, EventKind::OfferExpired, o.as_str(), serde_json::json!({"order_id": o, "offer_id": id, "driver_id": d})).await?;
                    let order = load_order_in(c, &t, &o).await?;
                    back_to_matching_in(c, &order, policy, "offer expired").await?;
                }
                Ok(expired)
            })
        })
        .await
    }

    /// Flag orders that have waited for a driver longer than `max_wait_ms` since ready.
    pub async fn stall_waiting_orders(&self, now: i64, max_wait_ms: i64) -> Result<usize> {
        self.write(move |c| {
            Box::pin(async move {
                let rows = sqlx::query(&format!(
                    "SELECT {ORDER_COLS} FROM orders WHERE status IN ('received', 'dispatching') AND dispatch_stalled = 0 AND ready_at < $1"
                ))
                .bind(now - max_wait_ms)
                .fetch_all(&mut *c)
                .await?;
                for row in &rows {
                    let order = order_from_row(row)?;
                    stall_in(c, &order, "no driver accepted within the dispatch wait limit").await?;
                }
                Ok(rows.len())
            })
        })
        .await
    }

    /// Ops clears the flag after acting: the order goes back to matching with fresh attempts.
    pub async fn unstall_order(&self, tenant: &TenantId, id: &OrderId) -> Result<()> {
        let (t, i) = (tenant.clone(), id.clone());
        self.write(move |c| {
            Box::pin(async move {
                let done = sqlx::query("UPDATE orders SET dispatch_stalled = 0, dispatch_attempts = 0, updated_at = $1 WHERE tenant_id = $2 AND id = $3")
                    .bind(now_ms())
                    .bind(t.as_str())
                    .bind(i.as_str())
                    .execute(&mut *c)
                    .await?;
                crate::touched(done)?;
                sqlx::query("DELETE FROM offers WHERE order_id = $1 AND state IN ('declined', 'expired')").bind(i.as_str()).execute(&mut *c).await?;
                Ok(())
            })
        })
        .await
    }

    /// Driver lifecycle: `picked_up`, `delivered` or `failed`, only by the assigned driver.
    pub async fn driver_order_step(
        &self,
        tenant: &TenantId,
        driver: &DriverId,
        order: &OrderId,
        to: OrderStatus,
        detail: serde_json::Value,
    ) -> Result<Order> {
        let (t, d, o) = (tenant.clone(), driver.clone(), order.clone());
        self.write(move |c| {
            Box::pin(async move {
                let order = load_order_in(c, &t, &o).await?;
                if order.driver_id.as_ref() != Some(&d) {
                    return Err(StorageError::NotFound);
                }
                let reason = detail.get("reason").and_then(|r| r.as_str()).map(str::to_owned);
                if to.is_terminal() {
                    release_order_in(c, &order, "none", "finished").await?;
                }
                set_status_in(c, &order, to, reason.as_deref(), Some(&d)).await?;
                if !detail.is_null() {
                    insert_event(
                        c,
                        &t,
                        EventKind::OrderUpdated,
                        o.as_str(),
                        serde_json::json!({"order_id": o, "step": to, "detail": detail}),
                    )
                    .await?;
                }
                if order.platform != Platform::Native {
                    let action = match to {
                        OrderStatus::PickedUp => "picked_up",
                        OrderStatus::Delivered => "delivered",
                        _ => "failed",
                    };
                    crate::sync::enqueue_sync_in(c, &order, action).await?;
                }
                load_order_in(c, &t, &o).await
            })
        })
        .await
    }

    pub async fn inbox_after(
        &self,
        tenant: &TenantId,
        driver: &DriverId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<InboxMessage>> {
        let rows = sqlx::query("SELECT seq, kind, data FROM driver_inbox WHERE tenant_id = $1 AND driver_id = $2 AND seq > $3 ORDER BY seq LIMIT $4")
            .bind(tenant.as_str())
            .bind(driver.as_str())
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let data: String = get(r, "data")?;
                Ok(InboxMessage {
                    seq: get(r, "seq")?,
                    kind: get(r, "kind")?,
                    data: serde_json::from_str(&data).map_err(crate::corrupt)?,
                })
            })
            .collect()
    }

    /// Append an arbitrary message to a driver's inbox (ops notices, tests).
    pub async fn push_inbox(
        &self,
        tenant: &TenantId,
        driver: &DriverId,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<i64> {
        let (t, d, k) = (tenant.clone(), driver.clone(), kind.to_owned());
        self.write(move |c| Box::pin(async move { push_inbox_in(c, &t, &d, &k, data).await })).await
    }

    pub async fn offers_for_order(&self, tenant: &TenantId, order: &OrderId) -> Result<Vec<OfferRecord>> {
        let rows = sqlx::query("SELECT id, order_id, driver_id, state, expires_at FROM offers WHERE tenant_id = $1 AND order_id = $2 ORDER BY created_at")
            .bind(tenant.as_str())
            .bind(order.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(OfferRecord {
                    id: OfferId(get(r, "id")?),
                    order_id: OrderId(get(r, "order_id")?),
                    driver_id: DriverId(get(r, "driver_id")?),
                    state: get(r, "state")?,
                    expires_at: get(r, "expires_at")?,
                })
            })
            .collect()
    }

    /// Active assignments per driver, counted from the assignments table (for audits).
    pub async fn active_assignments(&self, driver: &DriverId) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM assignments WHERE driver_id = $1 AND active = 1")
            .bind(driver.as_str())
            .fetch_one(&self.pool)
            .await?;
        get(&row, "n")
    }
}

/// A driver's active order, for ETA refreshes.
#[derive(Debug, Clone)]
pub struct ActiveDelivery {
    pub tenant_id: TenantId,
    pub driver_id: DriverId,
    pub order_id: OrderId,
    pub status: OrderStatus,
    pub pickup_lat: f64,
    pub pickup_lng: f64,
    pub dropoff_lat: Option<f64>,
    pub dropoff_lng: Option<f64>,
    pub ready_at: i64,
}

impl Db {
    /// Drivers that cannot take a new offer now: a pending offer, or at capacity.
    pub async fn busy_drivers(&self) -> Result<Vec<DriverId>> {
        let rows = sqlx::query(
            "SELECT driver_id AS id FROM offers WHERE state = 'pending' \
             UNION SELECT id FROM drivers WHERE active_count >= capacity",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| get(r, "id").map(DriverId)).collect()
    }

    pub async fn active_deliveries(&self) -> Result<Vec<ActiveDelivery>> {
        let rows = sqlx::query(
            "SELECT o.tenant_id, a.driver_id, o.id, o.status, s.pickup_lat, s.pickup_lng, o.dropoff_lat, o.dropoff_lng, o.ready_at \
             FROM assignments a JOIN orders o ON o.id = a.order_id JOIN stores s ON s.id = o.store_id WHERE a.active = 1",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let status: String = get(r, "status")?;
                Ok(ActiveDelivery {
                    tenant_id: TenantId(get(r, "tenant_id")?),
                    driver_id: DriverId(get(r, "driver_id")?),
                    order_id: OrderId(get(r, "id")?),
                    status: status.parse().map_err(crate::corrupt)?,
                    pickup_lat: get(r, "pickup_lat")?,
                    pickup_lng: get(r, "pickup_lng")?,
                    dropoff_lat: get(r, "dropoff_lat")?,
                    dropoff_lng: get(r, "dropoff_lng")?,
                    ready_at: get(r, "ready_at")?,
                })
            })
            .collect()
    }

    /// Several ETAs in one group commit.
    pub async fn set_order_etas(&self, etas: Vec<(TenantId, OrderId, i64)>) -> Result<()> {
        if etas.is_empty() {
            return Ok(());
        }
        self.write(move |c| {
            Box::pin(async move {
                for (t, o, eta) in &etas {
                    // Only while a driver holds it: a fix computed before the delivery must
                    // not give a finished order an ETA again.
                    sqlx::query("UPDATE orders SET eta_at = $1 WHERE tenant_id = $2 AND id = $3 AND status IN ('assigned', 'picked_up')")
                        .bind(*eta)
                        .bind(t.as_str())
                        .bind(o.as_str())
                        .execute(&mut *c)
                        .await?;
                }
                Ok(())
            })
        })
        .await
    }
}
