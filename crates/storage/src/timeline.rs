//! What happened to an order, read back from its events (the outbox keeps every one): the
//! timeline ops see, and the proof of delivery the driver gave. Also the `order_updated`
//! message a driver gets when the order they hold changes, always with the order as it
//! stands after the change.

use crate::dispatch::push_inbox_in;
use crate::outbox::{event_from_row, EVENT_COLS};
use crate::{Db, Result, WriteConn};
use lastmile_core::{Event, Order, OrderId, TenantId};

/// Proof of delivery, as the driver recorded it when marking the order delivered.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeliveryProof {
    pub recipient_name: Option<String>,
    pub photo_url: Option<String>,
    /// Where the driver was: their fix, else their last known position.
    pub position: Option<serde_json::Value>,
    pub distance_from_dropoff_m: Option<f64>,
    /// Marked delivered farther from the dropoff than `dispatch.deliver_distance_flag_m`.
    pub far_from_dropoff: bool,
    pub delivered_at: chrono::DateTime<chrono::Utc>,
}

impl DeliveryProof {
    /// The proof inside an `order_updated` event of the delivered step, if this is one.
    fn from_event(e: &Event) -> Option<DeliveryProof> {
        if e.data.get("step").and_then(|s| s.as_str()) != Some("delivered") {
            return None;
        }
        let d = e.data.get("detail")?;
        let text = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        Some(DeliveryProof {
            recipient_name: text("recipient_name"),
            photo_url: text("photo_url"),
            position: d.get("position").filter(|p| !p.is_null()).cloned(),
            distance_from_dropoff_m: d.get("distance_from_dropoff_m").and_then(|v| v.as_f64()),
            far_from_dropoff: d.get("far_from_dropoff").and_then(|v| v.as_bool()).unwrap_or(false),
            delivered_at: e.occurred_at,
        })
    }
}

/// Tell the driver holding `order` (as it stands now) that it changed: the message carries
/// the full current dropoff, coordinates included, whatever the change touched.
pub(crate) async fn notify_order_updated_in(c: &mut WriteConn, order: &Order) -> Result<()> {
    let Some(driver) = order.driver_id.as_ref().filter(|_| order.status.holds_driver()) else { return Ok(()) };
    let data = serde_json::json!({
        "order_id": order.id, "status": order.status, "notes": order.notes,
        "dropoff": order.dropoff, "ready_at": order.ready_at,
    });
    push_inbox_in(c, &order.tenant_id, driver, "order_updated", data).await?;
    Ok(())
}

impl Db {
    /// Every event about `order`, oldest first.
    pub async fn order_events(&self, tenant: &TenantId, order: &OrderId) -> Result<Vec<Event>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLS} FROM outbox WHERE tenant_id = $1 AND subject_id = $2 ORDER BY seq"
        ))
        .bind(tenant.as_str())
        .bind(order.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The proof the driver gave when delivering `order`, if it was delivered.
    pub async fn delivery_proof(&self, tenant: &TenantId, order: &OrderId) -> Result<Option<DeliveryProof>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLS} FROM outbox WHERE tenant_id = $1 AND subject_id = $2 AND kind = 'order_updated' ORDER BY seq DESC"
        ))
        .bind(tenant.as_str())
        .bind(order.as_str())
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            if let Some(proof) = DeliveryProof::from_event(&event_from_row(row)?) {
                return Ok(Some(proof));
            }
        }
        Ok(None)
    }
}
