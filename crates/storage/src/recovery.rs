//! Taking orders back from drivers who can no longer deliver them, and giving them out by
//! hand. A driver who signs off, is revoked or falls silent loses the orders they accepted
//! but have not picked up: each goes back to matching (assignment closed, capacity
//! released, `assignment_cancelled` in their inbox). A picked-up order stays with its
//! driver — the goods are in their hands — and is flagged for ops instead. Ops can offer an
//! order to a chosen driver, assign it outright (capacity still enforced here), or take it
//! back. Every change commits with its events and inbox messages in one transaction.

use crate::dispatch::{create_offer_in, pickup_in, push_inbox_in, release_order_in, take_assignment_in};
use crate::orders::{load_order_in, set_status_in};
use crate::{get, now_ms, outbox::insert_event, Db, Result, StorageError, WriteConn};
use lastmile_core::{DriverId, EventKind, OfferId, Order, OrderId, OrderStatus, TenantId};

/// Why a driver's orders are taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandon {
    /// The driver set themselves `offline`.
    SignedOff,
    /// An admin revoked the driver's device token.
    Revoked,
    /// No word from the driver's app for longer than the grace period.
    Silent,
}

impl Abandon {
    pub fn as_str(&self) -> &'static str {
        match self {
            Abandon::SignedOff => "driver_offline",
            Abandon::Revoked => "driver_revoked",
            Abandon::Silent => "driver_silent",
        }
    }

    /// The sentence the driver's inbox and the order's status reason carry.
    pub fn reason(&self) -> &'static str {
        match self {
            Abandon::SignedOff => "the driver went offline",
            Abandon::Revoked => "the driver was revoked",
            Abandon::Silent => "no word from the driver's app",
        }
    }

    /// A picked-up order is flagged when its driver is gone for good or unreachable; a
    /// driver who signs off mid-delivery is still carrying it and is left alone.
    fn flags_picked_up(&self) -> bool {
        !matches!(self, Abandon::SignedOff)
    }
}

/// What taking a driver's orders back did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    /// Orders back in matching.
    pub released: Vec<OrderId>,
    /// Picked-up orders flagged for ops.
    pub flagged: Vec<OrderId>,
}

impl Recovered {
    pub fn is_empty(&self) -> bool {
        self.released.is_empty() && self.flagged.is_empty()
    }
}

/// An order a driver holds, as the silence sweep sees it.
#[derive(Debug, Clone)]
pub struct HeldOrder {
    pub tenant_id: TenantId,
    pub driver_id: DriverId,
    pub order_id: OrderId,
    pub driver_revoked: bool,
}

/// A picked-up order flagged for ops.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Attention {
    pub reason: String,
    pub driver_id: Option<DriverId>,
    pub flagged_at: chrono::DateTime<chrono::Utc>,
}

/// What an ops assignment did.
#[derive(Debug, Clone)]
pub enum OpsAssignment {
    /// The driver was offered the order (they accept or decline as with any offer).
    Offered { offer_id: OfferId, order: Order },
    /// The driver holds the order now.
    Assigned(Order),
    /// The driver already held it: nothing changed.
    Unchanged(Order),
}

/// Take back every order `driver` holds or is being offered, for `cause`.
pub(crate) async fn abandon_in(
    c: &mut WriteConn,
    tenant: &TenantId,
    driver: &DriverId,
    cause: Abandon,
) -> Result<Recovered> {
    let mut out = Recovered::default();
    let offered =
        sqlx::query("SELECT order_id FROM offers WHERE tenant_id = $1 AND driver_id = $2 AND state = 'pending'")
            .bind(tenant.as_str())
            .bind(driver.as_str())
            .fetch_all(&mut *c)
            .await?;
    for row in &offered {
        let order = load_order_in(c, tenant, &OrderId(get(row, "order_id")?)).await?;
        if order.status == OrderStatus::Dispatching {
            take_back_in(c, &order, driver, cause.as_str(), cause.reason()).await?;
            out.released.push(order.id);
        }
    }
    let held = sqlx::query("SELECT order_id FROM assignments WHERE tenant_id = $1 AND driver_id = $2 AND active = 1")
        .bind(tenant.as_str())
        .bind(driver.as_str())
        .fetch_all(&mut *c)
        .await?;
    for row in &held {
        let order = load_order_in(c, tenant, &OrderId(get(row, "order_id")?)).await?;
        match order.status {
            OrderStatus::Assigned => {
                take_back_in(c, &order, driver, cause.as_str(), cause.reason()).await?;
                out.released.push(order.id);
            }
            OrderStatus::PickedUp if cause.flags_picked_up() => {
                let reason = format!("picked up, but {}", cause.reason());
                if flag_in(c, &order, driver, &reason).await? {
                    out.flagged.push(order.id);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Close the driver's offer or assignment of `order`, tell them (`assignment_cancelled`),
/// and put the order back in matching, with an `order_unassigned` event.
async fn take_back_in(c: &mut WriteConn, order: &Order, driver: &DriverId, cause: &str, reason: &str) -> Result<()> {
    release_order_in(c, order, "assignment_cancelled", reason).await?;
    set_status_in(c, order, OrderStatus::Received, Some(reason), None).await?;
    insert_event(
        c,
        &order.tenant_id,
        EventKind::OrderUnassigned,
        order.id.as_str(),
        serde_json::json!({"order_id": order.id, "driver_id": driver, "cause": cause, "reason": reason}),
    )
    .await
}

/// Flag an order for ops, once; returns whether this call flagged it.
async fn flag_in(c: &mut WriteConn, order: &Order, driver: &DriverId, reason: &str) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO order_attention (order_id, tenant_id, driver_id, reason, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order.id.as_str())
    .bind(order.tenant_id.as_str())
    .bind(driver.as_str())
    .bind(reason)
    .bind(now_ms())
    .execute(&mut *c)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    insert_event(
        c,
        &order.tenant_id,
        EventKind::OrderNeedsAttention,
        order.id.as_str(),
        serde_json::json!({"order_id": order.id, "driver_id": driver, "reason": reason}),
    )
    .await?;
    Ok(true)
}

impl Db {
    /// The driver set themselves offline: the status change and the release of their
    /// not-yet-picked-up orders commit together.
    pub async fn sign_off_driver(&self, tenant: &TenantId, driver: &DriverId) -> Result<Recovered> {
        let (t, d) = (tenant.clone(), driver.clone());
        self.write(move |c| {
            Box::pin(async move {
                crate::drivers::set_driver_status_in(c, &t, &d, "offline").await?;
                abandon_in(c, &t, &d, Abandon::SignedOff).await
            })
        })
        .await
    }

    /// Take back a driver's orders for `cause` (the silence sweep, or a revocation's backstop).
    pub async fn abandon_driver_orders(
        &self,
        tenant: &TenantId,
        driver: &DriverId,
        cause: Abandon,
    ) -> Result<Recovered> {
        let (t, d) = (tenant.clone(), driver.clone());
        self.write(move |c| Box::pin(async move { abandon_in(c, &t, &d, cause).await })).await
    }

    /// Every active assignment not yet flagged for ops, with whether its driver is revoked:
    /// what the recovery sweep checks each round.
    pub async fn held_orders(&self) -> Result<Vec<HeldOrder>> {
        let rows = sqlx::query(
            "SELECT a.tenant_id, a.driver_id, a.order_id, d.revoked_at FROM assignments a JOIN drivers d ON d.id = a.driver_id \
             WHERE a.active = 1 AND NOT EXISTS (SELECT 1 FROM order_attention t WHERE t.order_id = a.order_id)",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HeldOrder {
                    tenant_id: TenantId(get(r, "tenant_id")?),
                    driver_id: DriverId(get(r, "driver_id")?),
                    order_id: OrderId(get(r, "order_id")?),
                    driver_revoked: get::<Option<i64>>(r, "revoked_at")?.is_some(),
                })
            })
            .collect()
    }

    /// The ops flag on an order, if any.
    pub async fn order_attention(&self, tenant: &TenantId, order: &OrderId) -> Result<Option<Attention>> {
        let row = sqlx::query(
            "SELECT reason, driver_id, created_at FROM order_attention WHERE tenant_id = $1 AND order_id = $2",
        )
        .bind(tenant.as_str())
        .bind(order.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Attention {
                reason: get(&r, "reason")?,
                driver_id: get::<Option<String>>(&r, "driver_id")?.map(DriverId),
                flagged_at: crate::from_ms(get(&r, "created_at")?),
            })
        })
        .transpose()
    }

    /// Ops give `order` to `driver`: an offer, or with `force` the assignment itself (the
    /// driver's capacity still holds: `AtCapacity`). Whoever held or was being offered the
    /// order loses it first and is told. A stalled order's flag and attempts are cleared.
    pub async fn ops_assign(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        driver: &DriverId,
        force: bool,
        now: i64,
        ttl_ms: i64,
    ) -> Result<OpsAssignment> {
        let (t, o, d) = (tenant.clone(), order.clone(), driver.clone());
        self.write(move |c| {
            Box::pin(async move {
                let mut order = load_order_in(c, &t, &o).await?;
                let wanted = if force { OrderStatus::Assigned } else { OrderStatus::Dispatching };
                if order.driver_id.as_ref() == Some(&d) && order.status.holds_driver() {
                    return Ok(OpsAssignment::Unchanged(order));
                }
                match order.status {
                    OrderStatus::Received => {}
                    OrderStatus::Dispatching | OrderStatus::Assigned => {
                        let holder = current_holder_in(c, &order).await?;
                        take_back_in(c, &order, &holder, "ops", "reassigned by ops").await?;
                        order = load_order_in(c, &t, &o).await?;
                    }
                    _ => {
                        return Err(StorageError::InvalidTransition {
                            from: order.status.to_string(),
                            to: wanted.to_string(),
                        })
                    }
                }
                sqlx::query("UPDATE orders SET dispatch_stalled = 0, dispatch_attempts = 0 WHERE id = $1")
                    .bind(o.as_str())
                    .execute(&mut *c)
                    .await?;
                if !force {
                    let (offer_id, _) = create_offer_in(c, &t, &o, &d, now, ttl_ms).await?;
                    return Ok(OpsAssignment::Offered { offer_id, order: load_order_in(c, &t, &o).await? });
                }
                take_assignment_in(c, &t, &o, &d, now).await?;
                set_status_in(c, &order, OrderStatus::Assigned, Some("assigned by ops"), Some(&d)).await?;
                insert_event(
                    c,
                    &t,
                    EventKind::OrderAssigned,
                    o.as_str(),
                    serde_json::json!({"order_id": o, "driver_id": d, "by": "ops"}),
                )
                .await?;
                let data = serde_json::json!({
                    "order_id": o, "by": "ops", "pickup": pickup_in(c, &order).await?,
                    "dropoff": order.dropoff, "ready_at": order.ready_at,
                });
                push_inbox_in(c, &t, &d, "assigned", data).await?;
                Ok(OpsAssignment::Assigned(load_order_in(c, &t, &o).await?))
            })
        })
        .await
    }

    /// Ops take `order` back from its driver (or the driver it is being offered to): it goes
    /// back to matching and the driver gets `assignment_cancelled`. A picked-up order cannot
    /// be taken back (`InvalidTransition`); one nobody holds answers `InvalidTransition` too.
    pub async fn ops_unassign(&self, tenant: &TenantId, order: &OrderId) -> Result<Order> {
        let (t, o) = (tenant.clone(), order.clone());
        self.write(move |c| {
            Box::pin(async move {
                let order = load_order_in(c, &t, &o).await?;
                if !matches!(order.status, OrderStatus::Dispatching | OrderStatus::Assigned) {
                    return Err(StorageError::InvalidTransition {
                        from: order.status.to_string(),
                        to: "unassigned".into(),
                    });
                }
                let holder = current_holder_in(c, &order).await?;
                take_back_in(c, &order, &holder, "ops", "unassigned by ops").await?;
                load_order_in(c, &t, &o).await
            })
        })
        .await
    }
}

/// The driver an order is with: its assignment's, or its pending offer's.
async fn current_holder_in(c: &mut WriteConn, order: &Order) -> Result<DriverId> {
    if let Some(d) = &order.driver_id {
        return Ok(d.clone());
    }
    let row = sqlx::query("SELECT driver_id FROM offers WHERE order_id = $1 AND state = 'pending'")
        .bind(order.id.as_str())
        .fetch_optional(&mut *c)
        .await?
        .ok_or_else(|| StorageError::Corrupt(format!("order {} is {} without a driver", order.id, order.status)))?;
    Ok(DriverId(get(&row, "driver_id")?))
}
