//! Events out: tenants' webhook endpoints and the deliveries queued for them.
//!
//! The outbox relay hands every published batch to [`Db::fan_out_and_mark_published`],
//! which queues one delivery per (endpoint, event) for each enabled endpoint subscribed to
//! the event's kind, and marks the batch published, in one commit: an event is queued for
//! its endpoints exactly once (a batch handed over twice finds its deliveries already
//! there). Deliveries are claimed with a lease like sync jobs (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), retried on the sync-back schedule, and dead-lettered (kind `webhook`) when
//! the schedule is used up; a replay queues the delivery again.

use crate::intake::{insert_dead_letter_in, RawDelivery};
use crate::{get, now_ms, Db, Dialect, Result, StorageError};
use lastmile_core::{DeadLetterId, Event, TenantId, WebhookDeliveryId, WebhookEndpointId};
use std::collections::HashMap;

/// An endpoint as stored: its secrets stay sealed (the server holds the key).
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    pub id: WebhookEndpointId,
    pub tenant_id: TenantId,
    pub url: String,
    pub description: String,
    /// Event kinds, or `["*"]` for all.
    pub events: Vec<String>,
    pub enabled: bool,
    pub secret_enc: Vec<u8>,
    pub previous_secret_enc: Option<Vec<u8>>,
    pub previous_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl WebhookEndpoint {
    /// Whether an event of `kind` goes to this endpoint.
    pub fn wants(&self, kind: &str) -> bool {
        self.enabled && self.events.iter().any(|e| e == "*" || e == kind)
    }
}

/// A new endpoint.
#[derive(Debug, Clone)]
pub struct NewWebhookEndpoint {
    pub url: String,
    pub description: String,
    pub events: Vec<String>,
    pub secret_enc: Vec<u8>,
}

/// A change to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookEndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    pub events: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// A delivery as the worker runs it: the event's payload with its endpoint's address and
/// sealed secrets.
#[derive(Debug, Clone)]
pub struct ClaimedWebhookDelivery {
    pub id: WebhookDeliveryId,
    pub tenant_id: TenantId,
    pub endpoint_id: WebhookEndpointId,
    pub event_id: String,
    pub event_kind: String,
    pub payload: String,
    pub attempts: i64,
    pub url: String,
    pub secret_enc: Vec<u8>,
    pub previous_secret_enc: Option<Vec<u8>>,
    pub previous_expires_at: Option<i64>,
}

/// A delivery's standing, for `GET /v1/webhook-endpoints/{id}/deliveries` and replay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WebhookDeliveryStatus {
    pub id: WebhookDeliveryId,
    pub endpoint_id: WebhookEndpointId,
    pub event_id: String,
    pub event_kind: String,
    pub state: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub completed_at: Option<i64>,
}

const ENDPOINT_COLS: &str = "id, tenant_id, url, description, events, enabled, secret_enc, previous_secret_enc, \
                             previous_expires_at, created_at, updated_at";

fn endpoint_from_row(r: &sqlx::any::AnyRow) -> Result<WebhookEndpoint> {
    let events: String = get(r, "events")?;
    let enabled: i64 = get(r, "enabled")?;
    Ok(WebhookEndpoint {
        id: WebhookEndpointId(get(r, "id")?),
        tenant_id: TenantId(get(r, "tenant_id")?),
        url: get(r, "url")?,
        description: get(r, "description")?,
        events: serde_json::from_str(&events).map_err(crate::corrupt)?,
        enabled: enabled != 0,
        secret_enc: get(r, "secret_enc")?,
        previous_secret_enc: get(r, "previous_secret_enc")?,
        previous_expires_at: get(r, "previous_expires_at")?,
        created_at: get(r, "created_at")?,
        updated_at: get(r, "updated_at")?,
    })
}

const DELIVERY_COLS: &str = "id, endpoint_id, event_id, event_kind, state, attempts, last_status, last_error, \
                             next_attempt_at, created_at, completed_at";

fn delivery_from_row(r: &sqlx::any::AnyRow) -> Result<WebhookDeliveryStatus> {
    Ok(WebhookDeliveryStatus {
        id: WebhookDeliveryId(get(r, "id")?),
        endpoint_id: WebhookEndpointId(get(r, "endpoint_id")?),
        event_id: get(r, "event_id")?,
        event_kind: get(r, "event_kind")?,
        state: get(r, "state")?,
        attempts: get(r, "attempts")?,
        last_status: get(r, "last_status")?,
        last_error: get(r, "last_error")?,
        next_attempt_at: get(r, "next_attempt_at")?,
        created_at: get(r, "created_at")?,
        completed_at: get(r, "completed_at")?,
    })
}

/// The body an endpoint receives for `event` (the Standard Webhooks payload shape).
pub fn webhook_payload(event: &Event) -> serde_json::Value {
    serde_json::json!({
        "type": event.kind.as_str(),
        "timestamp": event.occurred_at,
        "data": {
            "event_id": event.id,
            "seq": event.seq,
            "subject_id": event.subject_id,
            "event": event.data,
        },
    })
}

impl Db {
    pub async fn create_webhook_endpoint(&self, tenant: &TenantId, new: NewWebhookEndpoint) -> Result<WebhookEndpoint> {
        let t = tenant.clone();
        let id = WebhookEndpointId::generate();
        let events = serde_json::to_string(&new.events).map_err(crate::corrupt)?;
        let (i, t2) = (id.clone(), t.clone());
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                sqlx::query(
                    "INSERT INTO webhook_endpoints (id, tenant_id, url, description, events, enabled, secret_enc, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $7)",
                )
                .bind(i.as_str())
                .bind(t2.as_str())
                .bind(&new.url)
                .bind(&new.description)
                .bind(&events)
                .bind(&new.secret_enc)
                .bind(now)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await?;
        self.get_webhook_endpoint(&t, &id).await
    }

    pub async fn get_webhook_endpoint(&self, tenant: &TenantId, id: &WebhookEndpointId) -> Result<WebhookEndpoint> {
        let row =
            sqlx::query(&format!("SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"))
                .bind(tenant.as_str())
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StorageError::NotFound)?;
        endpoint_from_row(&row)
    }

    pub async fn list_webhook_endpoints(&self, tenant: &TenantId) -> Result<Vec<WebhookEndpoint>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    /// Change an endpoint; `NotFound` when the tenant has no such endpoint.
    pub async fn update_webhook_endpoint(
        &self,
        tenant: &TenantId,
        id: &WebhookEndpointId,
        patch: WebhookEndpointPatch,
    ) -> Result<WebhookEndpoint> {
        let current = self.get_webhook_endpoint(tenant, id).await?;
        let url = patch.url.unwrap_or(current.url);
        let description = patch.description.unwrap_or(current.description);
        let events = serde_json::to_string(&patch.events.unwrap_or(current.events)).map_err(crate::corrupt)?;
        let enabled = i64::from(patch.enabled.unwrap_or(current.enabled));
        let (t, i) = (tenant.clone(), id.clone());
        let changed = self
            .write(move |c| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE webhook_endpoints SET url = $1, description = $2, events = $3, enabled = $4, \
                         updated_at = $5 WHERE tenant_id = $6 AND id = $7",
                    )
                    .bind(&url)
                    .bind(&description)
                    .bind(&events)
                    .bind(enabled)
                    .bind(now_ms())
                    .bind(t.as_str())
                    .bind(i.as_str())
                    .execute(&mut *c)
                    .await?;
                    Ok(done.rows_affected())
                })
            })
            .await?;
        if changed == 0 {
            return Err(StorageError::NotFound);
        }
        self.get_webhook_endpoint(tenant, id).await
    }

    /// Make `secret_enc` the signing secret; the current one keeps signing beside it until
    /// `previous_expires_at`.
    pub async fn rotate_webhook_secret(
        &self,
        tenant: &TenantId,
        id: &WebhookEndpointId,
        secret_enc: Vec<u8>,
        previous_expires_at: i64,
    ) -> Result<()> {
        let (t, i) = (tenant.clone(), id.clone());
        let changed = self
            .write(move |c| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE webhook_endpoints SET previous_secret_enc = secret_enc, previous_expires_at = $1, \
                         secret_enc = $2, updated_at = $3 WHERE tenant_id = $4 AND id = $5",
                    )
                    .bind(previous_expires_at)
                    .bind(&secret_enc)
                    .bind(now_ms())
                    .bind(t.as_str())
                    .bind(i.as_str())
                    .execute(&mut *c)
                    .await?;
                    Ok(done.rows_affected())
                })
            })
            .await?;
        if changed == 0 {
            return Err(StorageError::NotFound);
        }
        Ok(())
    }

    /// Remove an endpoint; its unfinished deliveries are cancelled (they stay readable).
    pub async fn delete_webhook_endpoint(&self, tenant: &TenantId, id: &WebhookEndpointId) -> Result<()> {
        let (t, i) = (tenant.clone(), id.clone());
        let changed = self
            .write(move |c| {
                Box::pin(async move {
                    let now = now_ms();
                    let done = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
                        .bind(t.as_str())
                        .bind(i.as_str())
                        .execute(&mut *c)
                        .await?;
                    sqlx::query(
                        "UPDATE webhook_deliveries SET state = 'cancelled', locked_until = NULL, updated_at = $1, \
                         completed_at = $1 WHERE tenant_id = $2 AND endpoint_id = $3 AND state IN ('pending', 'running')",
                    )
                    .bind(now)
                    .bind(t.as_str())
                    .bind(i.as_str())
                    .execute(&mut *c)
                    .await?;
                    Ok(done.rows_affected())
                })
            })
            .await?;
        if changed == 0 {
            return Err(StorageError::NotFound);
        }
        Ok(())
    }

    /// Queue `events` for every enabled endpoint subscribed to them, and mark exactly these
    /// events published, in one commit (see the module notes).
    pub async fn fan_out_and_mark_published(&self, events: Vec<Event>) -> Result<usize> {
        // New delivery rows and published marks, in event order: no row an intake batch
        // locks, so this runs beside intake batches (see `writer::BatchLock`).
        self.write_shared(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let rows = sqlx::query(&format!("SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE enabled = 1"))
                    .fetch_all(&mut *c)
                    .await?;
                let mut by_tenant: HashMap<String, Vec<WebhookEndpoint>> = HashMap::new();
                for r in &rows {
                    let e = endpoint_from_row(r)?;
                    by_tenant.entry(e.tenant_id.0.clone()).or_default().push(e);
                }
                let mut queued = 0;
                for event in events.iter().filter(|e| e.kind.subscribable()) {
                    let Some(endpoints) = by_tenant.get(event.tenant_id.as_str()) else { continue };
                    let payload = webhook_payload(event).to_string();
                    for ep in endpoints.iter().filter(|ep| ep.wants(event.kind.as_str())) {
                        let done = sqlx::query(
                            "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_seq, event_kind, \
                             payload, state, attempts, next_attempt_at, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8, $8) \
                             ON CONFLICT (endpoint_id, event_id) DO NOTHING",
                        )
                        .bind(WebhookDeliveryId::generate().as_str())
                        .bind(event.tenant_id.as_str())
                        .bind(ep.id.as_str())
                        .bind(event.id.as_str())
                        .bind(event.seq)
                        .bind(event.kind.as_str())
                        .bind(&payload)
                        .bind(now)
                        .execute(&mut *c)
                        .await?;
                        queued += done.rows_affected() as usize;
                    }
                }
                let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
                crate::outbox::mark_published_in(c, &seqs).await?;
                Ok(queued)
            })
        })
        .await
    }

    /// Lease up to `limit` due deliveries of enabled endpoints for `lease_ms`, oldest due
    /// first, at most `per_endpoint` of one endpoint and none of `skip_endpoints` (the worker
    /// already runs as many of theirs as it lets one endpoint have).
    pub async fn claim_webhook_deliveries(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
        per_endpoint: i64,
        skip_endpoints: Vec<String>,
    ) -> Result<Vec<ClaimedWebhookDelivery>> {
        let dialect = self.dialect;
        let ids: Vec<String> = self
            .write(move |c| {
                Box::pin(async move {
                    let lock = if dialect == Dialect::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
                    let skip: String =
                        (0..skip_endpoints.len()).map(|i| format!(" AND d.endpoint_id <> ${}", i + 5)).collect();
                    let due = "d.state IN ('pending', 'running') AND d.next_attempt_at <= $2 \
                               AND (d.locked_until IS NULL OR d.locked_until < $2)";
                    let sql = format!(
                        "UPDATE webhook_deliveries SET state = 'running', locked_until = $1, updated_at = $2 WHERE id IN (\
                         SELECT d.id FROM webhook_deliveries d WHERE d.id IN (\
                           SELECT id FROM (SELECT d.id, d.next_attempt_at, \
                             ROW_NUMBER() OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.id) AS ep_rank \
                             FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
                             WHERE e.enabled = 1 AND {due}{skip}) ranked \
                           WHERE ep_rank <= $4 ORDER BY next_attempt_at, id LIMIT $3) \
                         AND {due}{lock}) RETURNING id"
                    );
                    let mut q = sqlx::query(&sql).bind(now + lease_ms).bind(now).bind(limit).bind(per_endpoint);
                    for e in &skip_endpoints {
                        q = q.bind(e.clone());
                    }
                    let rows = q.fetch_all(&mut *c).await?;
                    rows.iter().map(|r| get::<String>(r, "id")).collect()
                })
            })
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 1)).collect();
        let sql = format!(
            "SELECT d.id, d.tenant_id, d.endpoint_id, d.event_id, d.event_kind, d.payload, d.attempts, e.url, \
             e.secret_enc, e.previous_secret_enc, e.previous_expires_at \
             FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.id IN ({}) ORDER BY d.next_attempt_at, d.id",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in &ids {
            q = q.bind(id.clone());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(ClaimedWebhookDelivery {
                    id: WebhookDeliveryId(get(r, "id")?),
                    tenant_id: TenantId(get(r, "tenant_id")?),
                    endpoint_id: WebhookEndpointId(get(r, "endpoint_id")?),
                    event_id: get(r, "event_id")?,
                    event_kind: get(r, "event_kind")?,
                    payload: get(r, "payload")?,
                    attempts: get(r, "attempts")?,
                    url: get(r, "url")?,
                    secret_enc: get(r, "secret_enc")?,
                    previous_secret_enc: get(r, "previous_secret_enc")?,
                    previous_expires_at: get(r, "previous_expires_at")?,
                })
            })
            .collect()
    }

    /// The endpoint answered 2xx.
    pub async fn complete_webhook_delivery(&self, id: &WebhookDeliveryId, status: u16) -> Result<()> {
        let i = id.clone();
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                sqlx::query(
                    "UPDATE webhook_deliveries SET state = 'done', attempts = attempts + 1, last_status = $1, \
                     last_error = NULL, completed_at = $2, updated_at = $2, locked_until = NULL \
                     WHERE id = $3 AND state = 'running'",
                )
                .bind(i64::from(status))
                .bind(now)
                .bind(i.as_str())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Try again at `next_at`; `count_attempt` is false when the endpoint's breaker deferred
    /// the delivery without calling it.
    pub async fn retry_webhook_delivery(
        &self,
        id: &WebhookDeliveryId,
        next_at: i64,
        count_attempt: bool,
        error: &str,
        status: Option<u16>,
    ) -> Result<()> {
        let (i, e) = (id.clone(), error.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE webhook_deliveries SET state = 'pending', attempts = attempts + $1, next_attempt_at = $2, \
                     last_error = $3, last_status = COALESCE($4, last_status), locked_until = NULL, updated_at = $5 \
                     WHERE id = $6 AND state = 'running'",
                )
                .bind(i64::from(count_attempt))
                .bind(next_at)
                .bind(&e)
                .bind(status.map(i64::from))
                .bind(now_ms())
                .bind(i.as_str())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// The schedule is used up: the delivery is dead and kept whole as a dead letter (kind
    /// `webhook`, its endpoint as the store) in one commit.
    pub async fn dead_letter_webhook_delivery(
        &self,
        d: &ClaimedWebhookDelivery,
        error: &str,
        status: Option<u16>,
    ) -> Result<DeadLetterId> {
        let d = d.clone();
        let error = error.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                sqlx::query(
                    "UPDATE webhook_deliveries SET state = 'dead', attempts = attempts + 1, last_error = $1, \
                     last_status = COALESCE($2, last_status), locked_until = NULL, updated_at = $3 WHERE id = $4",
                )
                .bind(&error)
                .bind(status.map(i64::from))
                .bind(now)
                .bind(d.id.as_str())
                .execute(&mut *c)
                .await?;
                let id = DeadLetterId::generate();
                let context = serde_json::json!({
                    "delivery_id": d.id, "endpoint_id": d.endpoint_id, "event_id": d.event_id,
                    "event_kind": d.event_kind, "url": d.url, "attempts": d.attempts + 1, "last_status": status,
                });
                let raw = RawDelivery { headers_json: "{}".into(), body: d.payload.clone().into_bytes() };
                insert_dead_letter_in(
                    c,
                    &id,
                    &d.tenant_id,
                    "webhook",
                    "webhook",
                    d.endpoint_id.as_str(),
                    &raw,
                    &error,
                    &context,
                    d.attempts + 1,
                )
                .await?;
                Ok(id)
            })
        })
        .await
    }

    /// Queue a dead delivery again (a dead letter's replay); false when it is not dead.
    pub async fn requeue_webhook_delivery(&self, tenant: &TenantId, id: &WebhookDeliveryId) -> Result<bool> {
        self.requeue_dead("webhook_deliveries", tenant, id.as_str()).await
    }

    /// An endpoint's deliveries, newest first.
    pub async fn list_webhook_deliveries(
        &self,
        tenant: &TenantId,
        endpoint: &WebhookEndpointId,
        limit: i64,
    ) -> Result<Vec<WebhookDeliveryStatus>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2 \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(tenant.as_str())
        .bind(endpoint.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// One delivery of a tenant.
    pub async fn get_webhook_delivery(
        &self,
        tenant: &TenantId,
        id: &WebhookDeliveryId,
    ) -> Result<WebhookDeliveryStatus> {
        let row =
            sqlx::query(&format!("SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE tenant_id = $1 AND id = $2"))
                .bind(tenant.as_str())
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StorageError::NotFound)?;
        delivery_from_row(&row)
    }

    /// Unfinished deliveries over all tenants (the backlog gauge).
    pub async fn webhook_backlog(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE state IN ('pending', 'running')")
            .fetch_one(&self.pool)
            .await?;
        get(&row, "n")
    }
}
