//! Order intake: exactly-once creation of platform orders (invariant 2), out-of-order
//! protection (invariant 3), the raw payload archive, dead letters (invariant 4) and
//! idempotency keys for the ordering API.

use crate::orders::{cancel_in, load_order_in, order_from_row, ORDER_COLS};
use crate::outbox::{insert_events_in, NewEvent};
use crate::{bulk, get, now_ms, outbox::insert_event, to_ms, Db, Result, StorageError, WriteConn};
use lastmile_core::{
    DeadLetterId, EventKind, NormalizedOrder, Order, OrderId, OrderStatus, PayloadId, Platform, PlatformState, StoreId,
    TenantId,
};
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntakeResult {
    Created,
    Updated,
    Duplicate,
    Stale,
    Ignored,
}

impl IntakeResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            IntakeResult::Created => "created",
            IntakeResult::Updated => "updated",
            IntakeResult::Duplicate => "duplicate",
            IntakeResult::Stale => "stale",
            IntakeResult::Ignored => "ignored",
        }
    }
}

#[derive(Debug, Clone)]
pub struct IntakeOutcome {
    pub order_id: Option<OrderId>,
    pub result: IntakeResult,
}

/// The delivery as received: kept whole (headers without secrets) in the archive.
#[derive(Debug, Clone)]
pub struct RawDelivery {
    pub headers_json: String,
    pub body: Vec<u8>,
}

/// Where the order was sent from and where its tenant is.
#[derive(Debug, Clone)]
pub struct IntakeSource {
    pub tenant_id: TenantId,
    pub store_id: StoreId,
    pub platform: Platform,
}

/// An ordering-API request's idempotency key, completed in the order's own transaction.
#[derive(Debug, Clone)]
pub struct IdempotencyRef {
    pub client_id: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyBegin {
    /// First time: the caller owns the key until it completes it.
    Fresh,
    InFlight,
    /// Same key, different request body.
    Mismatch,
    Completed {
        status: u16,
        body: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub kind: Option<String>,
    pub platform: Option<String>,
    pub store_id: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub include_replayed: bool,
    pub limit: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub id: DeadLetterId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub kind: String,
    pub platform: String,
    pub store_id: String,
    pub headers: serde_json::Value,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub error: String,
    pub context: serde_json::Value,
    pub attempts: i64,
    pub created_at: i64,
    pub replayed_at: Option<i64>,
    pub replay_outcome: Option<String>,
}

pub(crate) async fn archive_in(
    c: &mut WriteConn,
    src: &IntakeSource,
    raw: &RawDelivery,
    result: &str,
) -> Result<PayloadId> {
    let id = PayloadId::generate();
    archive_as_in(c, src, raw, result, &id).await?;
    Ok(id)
}

fn body_sha256(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(body))
}

/// [`archive_in`] under an id the caller chose (already written into the order row).
async fn archive_as_in(
    c: &mut WriteConn,
    src: &IntakeSource,
    raw: &RawDelivery,
    result: &str,
    id: &PayloadId,
) -> Result<()> {
    let now = now_ms();
    let sha = body_sha256(&raw.body);
    // The body once per tenant and content; a replay of the same bytes adds only a row.
    sqlx::query(
        "INSERT INTO raw_payload_bodies (tenant_id, sha256, body, first_seen_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, sha256) DO NOTHING",
    )
    .bind(src.tenant_id.as_str())
    .bind(&sha)
    .bind(&raw.body)
    .bind(now)
    .execute(&mut *c)
    .await?;
    sqlx::query(&format!("INSERT INTO raw_payloads ({RAW_PAYLOAD_COLS}) VALUES {}", bulk::values(1, 9)))
        .bind(id.as_str())
        .bind(src.tenant_id.as_str())
        .bind(src.store_id.as_str())
        .bind(src.platform.as_str())
        .bind(&raw.headers_json)
        .bind(Vec::<u8>::new())
        .bind(result)
        .bind(now)
        .bind(&sha)
        .execute(&mut *c)
        .await?;
    Ok(())
}

const RAW_PAYLOAD_COLS: &str =
    "id, tenant_id, store_id, platform, headers_json, body, result, received_at, body_sha256";

pub(crate) async fn find_in(c: &mut WriteConn, src: &IntakeSource, platform_order_id: &str) -> Result<Option<Order>> {
    let row = sqlx::query(&format!(
        "SELECT {ORDER_COLS} FROM orders WHERE tenant_id = $1 AND platform = $2 AND store_id = $3 AND platform_order_id = $4"
    ))
    .bind(src.tenant_id.as_str())
    .bind(src.platform.as_str())
    .bind(src.store_id.as_str())
    .bind(platform_order_id)
    .fetch_optional(&mut *c)
    .await?;
    row.as_ref().map(order_from_row).transpose()
}

fn initial_status(n: &NormalizedOrder) -> (OrderStatus, Option<String>) {
    match n.state {
        PlatformState::Cancelled => (OrderStatus::Cancelled, Some("cancelled at the platform".into())),
        PlatformState::Completed => {
            (OrderStatus::Cancelled, Some("already completed at the platform; nothing to deliver".into()))
        }
        PlatformState::Open if n.dropoff.point().is_none() => (
            OrderStatus::NeedsLocation,
            Some("the dropoff address has no coordinates; set them with PATCH /v1/orders/{id}".into()),
        ),
        PlatformState::Open => (OrderStatus::Received, None),
    }
}

/// An order row ready to insert, with the values its outbox event needs.
struct NewOrder {
    id: OrderId,
    status: OrderStatus,
    reason: Option<String>,
    customer: String,
    dropoff: String,
    items: String,
    totals: String,
    ready_at: i64,
    tracking: String,
    raw_id: Option<String>,
}

impl NewOrder {
    fn new(n: &NormalizedOrder, ready_at: i64, raw_id: Option<&PayloadId>) -> Result<Self> {
        let (status, reason) = initial_status(n);
        let mut token = [0u8; 24];
        rand_fill(&mut token);
        Ok(NewOrder {
            id: OrderId::generate(),
            status,
            reason,
            customer: serde_json::to_string(&n.customer).map_err(crate::corrupt)?,
            dropoff: serde_json::to_string(&n.dropoff).map_err(crate::corrupt)?,
            items: serde_json::to_string(&n.items).map_err(crate::corrupt)?,
            totals: serde_json::to_string(&n.totals).map_err(crate::corrupt)?,
            ready_at,
            tracking: hex_encode(&token),
            raw_id: raw_id.map(|r| r.as_str().to_owned()),
        })
    }

    fn created_event<'a>(&'a self, src: &'a IntakeSource) -> NewEvent<'a> {
        let id = &self.id;
        NewEvent {
            tenant: &src.tenant_id,
            kind: EventKind::OrderCreated,
            subject_id: id.as_str(),
            data: serde_json::json!({"order_id": id, "store_id": src.store_id, "platform": src.platform, "status": self.status}),
        }
    }
}

const ORDER_INSERT_COLS: &str = "id, tenant_id, store_id, platform, platform_order_id, platform_order_number, status, \
    status_reason, customer_json, dropoff_json, dropoff_lat, dropoff_lng, items_json, totals_json, notes, placed_at, \
    ready_at, created_at, updated_at, platform_updated_at, tracking_token, raw_payload_id";

/// Insert orders with `ON CONFLICT DO NOTHING`, one statement per chunk; returns the ids
/// of the rows actually inserted (a key another writer holds is skipped). Rows go in the
/// order given: callers with several rows sort them by key, so that two writers inserting
/// overlapping keys wait on each other in the same order and never deadlock.
async fn insert_orders_in(
    c: &mut WriteConn,
    rows: &[(&IntakeSource, &NormalizedOrder, &NewOrder)],
) -> Result<HashSet<String>> {
    let now = now_ms();
    let mut inserted = HashSet::new();
    for range in bulk::chunks(rows.len()) {
        let sql = format!(
            "INSERT INTO orders ({ORDER_INSERT_COLS}) VALUES {} \
             ON CONFLICT (tenant_id, platform, store_id, platform_order_id) DO NOTHING RETURNING id",
            bulk::values(range.len(), 22)
        );
        let mut q = sqlx::query(&sql);
        for (src, n, o) in &rows[range] {
            q = q
                .bind(o.id.as_str())
                .bind(src.tenant_id.as_str())
                .bind(src.store_id.as_str())
                .bind(src.platform.as_str())
                .bind(&n.platform_order_id)
                .bind(&n.platform_order_number)
                .bind(o.status.as_str())
                .bind(&o.reason)
                .bind(&o.customer)
                .bind(&o.dropoff)
                .bind(crate::OptF64(n.dropoff.point().map(|p| p.lat)))
                .bind(crate::OptF64(n.dropoff.point().map(|p| p.lng)))
                .bind(&o.items)
                .bind(&o.totals)
                .bind(&n.notes)
                .bind(n.placed_at.map(to_ms))
                .bind(o.ready_at)
                .bind(now)
                .bind(now)
                .bind(n.platform_updated_at.map(to_ms))
                .bind(&o.tracking)
                .bind(&o.raw_id);
        }
        for row in q.fetch_all(&mut *c).await.map_err(StorageError::from_db)? {
            inserted.insert(get::<String>(&row, "id")?);
        }
    }
    Ok(inserted)
}

pub(crate) async fn insert_order_in(
    c: &mut WriteConn,
    src: &IntakeSource,
    n: &NormalizedOrder,
    ready_at: i64,
    raw_id: Option<&PayloadId>,
) -> Result<Option<OrderId>> {
    let row = NewOrder::new(n, ready_at, raw_id)?;
    if insert_orders_in(c, &[(src, n, &row)]).await?.is_empty() {
        return Ok(None);
    }
    insert_events_in(c, &[row.created_event(src)]).await?;
    Ok(Some(row.id))
}

/// Apply a newer platform version of an existing order. The freshness rule is part of the
/// UPDATE (`platform_updated_at` no newer than the incoming version), so of two writers
/// racing with v2 and v3 the one with v2 changes nothing once v3 is in, whichever read
/// first. Returns false when a newer version was already stored.
async fn update_order_in(c: &mut WriteConn, existing: &Order, n: &NormalizedOrder, raw_id: &PayloadId) -> Result<bool> {
    let point = n.dropoff.point();
    let (lat, lng) = match point {
        Some(p) => (Some(p.lat), Some(p.lng)),
        None => (existing.dropoff.lat, existing.dropoff.lng),
    };
    let done = sqlx::query(
        "UPDATE orders SET platform_order_number = $1, customer_json = $2, dropoff_json = $3, dropoff_lat = $4, \
         dropoff_lng = $5, items_json = $6, totals_json = $7, notes = $8, platform_updated_at = $9, raw_payload_id = $10, \
         updated_at = $11 WHERE tenant_id = $12 AND id = $13 AND (platform_updated_at IS NULL OR platform_updated_at <= $9)",
    )
    .bind(&n.platform_order_number)
    .bind(serde_json::to_string(&n.customer).map_err(crate::corrupt)?)
    .bind(serde_json::to_string(&n.dropoff).map_err(crate::corrupt)?)
    .bind(crate::OptF64(lat))
    .bind(crate::OptF64(lng))
    .bind(serde_json::to_string(&n.items).map_err(crate::corrupt)?)
    .bind(serde_json::to_string(&n.totals).map_err(crate::corrupt)?)
    .bind(&n.notes)
    .bind(n.platform_updated_at.map(to_ms))
    .bind(raw_id.as_str())
    .bind(now_ms())
    .bind(existing.tenant_id.as_str())
    .bind(existing.id.as_str())
    .execute(&mut *c)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    insert_event(
        c,
        &existing.tenant_id,
        EventKind::OrderUpdated,
        existing.id.as_str(),
        serde_json::json!({"order_id": existing.id}),
    )
    .await?;
    let current = load_order_in(c, &existing.tenant_id, &existing.id).await?;
    crate::timeline::notify_order_updated_in(c, &current).await?;
    if n.state == PlatformState::Cancelled && !current.status.is_terminal() {
        cancel_in(c, &current, "cancelled at the platform").await?;
    } else if current.status == OrderStatus::NeedsLocation && point.is_some() {
        crate::orders::set_status_in(c, &current, OrderStatus::Received, None, None).await?;
    }
    Ok(true)
}

/// What a delivery of an order we already hold comes to, by the platform's version.
fn freshness(n: &NormalizedOrder, stored: &Order) -> IntakeResult {
    let incoming = n.platform_updated_at.map(to_ms);
    let current = stored.platform_updated_at.map(to_ms);
    match (incoming, current) {
        (Some(i), Some(s)) if i < s => IntakeResult::Stale,
        // Same version, but a cancellation topic: still apply it.
        (Some(i), Some(s)) if i == s && n.state == PlatformState::Cancelled && !stored.status.is_terminal() => {
            IntakeResult::Updated
        }
        (Some(i), Some(s)) if i == s => IntakeResult::Duplicate,
        (None, Some(_)) => IntakeResult::Stale,
        _ => IntakeResult::Updated,
    }
}

/// A verified platform order delivery, as the writer batches it.
#[derive(Debug, Clone)]
pub(crate) struct IntakeItem {
    pub src: IntakeSource,
    pub n: NormalizedOrder,
    pub raw: RawDelivery,
}

type OrderKey<'a> = (&'a str, &'static str, &'a str, &'a str);

fn order_key(it: &IntakeItem) -> OrderKey<'_> {
    (it.src.tenant_id.as_str(), it.src.platform.as_str(), it.src.store_id.as_str(), it.n.platform_order_id.as_str())
}

/// One delivery, statement by statement: create, or judge against the stored version.
pub(crate) async fn intake_one_in(c: &mut WriteConn, it: &IntakeItem) -> Result<IntakeOutcome> {
    let (src, n, raw) = (&it.src, &it.n, &it.raw);
    let payload = PayloadId::generate();
    let existing = match find_in(c, src, &n.platform_order_id).await? {
        Some(o) => o,
        None => {
            let ready = n.placed_at.map(to_ms).unwrap_or_else(now_ms).max(now_ms());
            if let Some(id) = insert_order_in(c, src, n, ready, Some(&payload)).await? {
                archive_as_in(c, src, raw, IntakeResult::Created.as_str(), &payload).await?;
                return Ok(IntakeOutcome { order_id: Some(id), result: IntakeResult::Created });
            }
            // Another writer inserted it between our read and write: judge against theirs.
            find_in(c, src, &n.platform_order_id).await?.ok_or(StorageError::NotFound)?
        }
    };
    let mut result = freshness(n, &existing);
    if result == IntakeResult::Updated && !update_order_in(c, &existing, n, &payload).await? {
        // Another writer stored a newer version since our read.
        result = IntakeResult::Stale;
    }
    archive_as_in(c, src, raw, result.as_str(), &payload).await?;
    Ok(IntakeOutcome { order_id: Some(existing.id), result })
}

/// A whole batch of deliveries in a few multi-row statements: one look-up of the keys that
/// exist, then for the orders that are new one INSERT per table (bodies, orders, archive
/// rows, outbox events). Deliveries of an order that exists — stored before, created
/// earlier in this batch, or inserted by another writer meanwhile — then go through
/// [`intake_one_in`] in their original order, so duplicates inside the batch resolve
/// exactly as they would one by one. Outcomes come back in the items' order.
pub(crate) async fn intake_batch_in(c: &mut WriteConn, items: &[&IntakeItem]) -> Result<Vec<IntakeOutcome>> {
    let existing = existing_keys_in(c, items).await?;
    let mut seen: HashSet<OrderKey<'_>> = HashSet::new();
    let fresh: Vec<usize> = (0..items.len())
        .filter(|&i| !existing.contains(&order_key(items[i])) && seen.insert(order_key(items[i])))
        .collect();
    let mut out: Vec<Option<IntakeOutcome>> = vec![None; items.len()];
    if !fresh.is_empty() {
        for (i, id) in create_orders_in(c, items, &fresh).await? {
            out[i] = Some(IntakeOutcome { order_id: Some(id), result: IntakeResult::Created });
        }
    }
    // The rest one by one in key order (a stable sort: deliveries of one order keep their
    // order of arrival), so concurrent batches lock the orders they update in one order.
    let mut rest: Vec<usize> = (0..items.len()).filter(|&i| out[i].is_none()).collect();
    rest.sort_by_key(|&i| order_key(items[i]));
    for i in rest {
        out[i] = Some(intake_one_in(c, items[i]).await?);
    }
    out.into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| StorageError::Corrupt("a delivery without an outcome".into()))
}

/// The keys among `items` that already have an order (one query per store and chunk).
async fn existing_keys_in<'a>(c: &mut WriteConn, items: &[&'a IntakeItem]) -> Result<HashSet<OrderKey<'a>>> {
    let mut by_store: BTreeMap<(&str, &'static str, &str), Vec<&str>> = BTreeMap::new();
    for it in items {
        let (t, p, s, id) = order_key(it);
        by_store.entry((t, p, s)).or_default().push(id);
    }
    let mut found = HashSet::new();
    for ((t, p, s), mut ids) in by_store {
        ids.sort_unstable();
        ids.dedup();
        for range in bulk::chunks(ids.len()) {
            let sql = format!(
                "SELECT platform_order_id FROM orders WHERE tenant_id = $1 AND platform = $2 AND store_id = $3 \
                 AND platform_order_id IN ({})",
                bulk::list(3, range.len())
            );
            let mut q = sqlx::query(&sql).bind(t).bind(p).bind(s);
            for id in &ids[range] {
                q = q.bind(*id);
            }
            let present: HashSet<String> =
                q.fetch_all(&mut *c).await?.iter().map(|r| get(r, "platform_order_id")).collect::<Result<_>>()?;
            found.extend(ids.iter().filter(|id| present.contains(**id)).map(|id| (t, p, s, *id)));
        }
    }
    Ok(found)
}

/// Create the orders of `fresh` (indexes into `items`, keys new and distinct): bodies,
/// orders, archive rows and `order_created` events, one multi-row INSERT per table. Returns
/// the items created; a key another writer took first is left out for the caller.
async fn create_orders_in(c: &mut WriteConn, items: &[&IntakeItem], fresh: &[usize]) -> Result<Vec<(usize, OrderId)>> {
    let now = now_ms();
    let mut rows = Vec::with_capacity(fresh.len());
    for &i in fresh {
        let n = &items[i].n;
        let payload = PayloadId::generate();
        let ready = n.placed_at.map(to_ms).unwrap_or(now).max(now);
        rows.push((i, payload.clone(), body_sha256(&items[i].raw.body), NewOrder::new(n, ready, Some(&payload))?));
    }
    // Bodies once per tenant and content, in key order (see `insert_orders_in`).
    let mut bodies: BTreeMap<(&str, &str), &[u8]> = BTreeMap::new();
    for (i, _, sha, _) in &rows {
        bodies.entry((items[*i].src.tenant_id.as_str(), sha.as_str())).or_insert(&items[*i].raw.body);
    }
    let bodies: Vec<_> = bodies.into_iter().collect();
    for range in bulk::chunks(bodies.len()) {
        let sql = format!(
            "INSERT INTO raw_payload_bodies (tenant_id, sha256, body, first_seen_at) VALUES {} \
             ON CONFLICT (tenant_id, sha256) DO NOTHING",
            bulk::values(range.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for ((t, sha), body) in &bodies[range] {
            q = q.bind(*t).bind(*sha).bind(body.to_vec()).bind(now);
        }
        q.execute(&mut *c).await?;
    }
    let mut sorted: Vec<&(usize, PayloadId, String, NewOrder)> = rows.iter().collect();
    sorted.sort_by_key(|r| order_key(items[r.0]));
    let insert: Vec<_> = sorted.iter().map(|(i, _, _, o)| (&items[*i].src, &items[*i].n, o)).collect();
    let inserted = insert_orders_in(c, &insert).await?;
    let created: Vec<&(usize, PayloadId, String, NewOrder)> =
        rows.iter().filter(|r| inserted.contains(r.3.id.as_str())).collect();
    for range in bulk::chunks(created.len()) {
        let sql = format!("INSERT INTO raw_payloads ({RAW_PAYLOAD_COLS}) VALUES {}", bulk::values(range.len(), 9));
        let mut q = sqlx::query(&sql);
        for (i, payload, sha, _) in &created[range] {
            let it = items[*i];
            q = q
                .bind(payload.as_str())
                .bind(it.src.tenant_id.as_str())
                .bind(it.src.store_id.as_str())
                .bind(it.src.platform.as_str())
                .bind(&it.raw.headers_json)
                .bind(Vec::<u8>::new())
                .bind(IntakeResult::Created.as_str())
                .bind(now)
                .bind(sha);
        }
        q.execute(&mut *c).await?;
    }
    let events: Vec<NewEvent<'_>> = created.iter().map(|(i, _, _, o)| o.created_event(&items[*i].src)).collect();
    insert_events_in(c, &events).await?;
    Ok(created.into_iter().map(|(i, _, _, o)| (*i, o.id.clone())).collect())
}

fn rand_fill(buf: &mut [u8]) {
    // UUIDv4 uses the OS CSPRNG; two of them give 32 unguessable bytes.
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    let src: Vec<u8> = a.as_bytes().iter().chain(b.as_bytes().iter()).copied().collect();
    for (d, s) in buf.iter_mut().zip(src) {
        *d = s;
    }
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Db {
    /// Create or update a platform order from a verified delivery, exactly once.
    #[tracing::instrument(skip_all, fields(store = %src.store_id, platform_order_id = %n.platform_order_id))]
    pub async fn intake_platform_order(
        &self,
        src: IntakeSource,
        n: NormalizedOrder,
        raw: RawDelivery,
    ) -> Result<IntakeOutcome> {
        self.writer.submit_intake(IntakeItem { src, n, raw }).await
    }

    /// The platform deleted or archived the order: cancel it if it is still open.
    pub async fn intake_platform_delete(
        &self,
        src: IntakeSource,
        platform_order_id: String,
        raw: RawDelivery,
    ) -> Result<IntakeOutcome> {
        self.write(move |c| {
            Box::pin(async move {
                let existing = find_in(c, &src, &platform_order_id).await?;
                let Some(o) = existing else {
                    archive_in(c, &src, &raw, "ignored").await?;
                    return Ok(IntakeOutcome { order_id: None, result: IntakeResult::Ignored });
                };
                if o.status.is_terminal() {
                    archive_in(c, &src, &raw, "duplicate").await?;
                    return Ok(IntakeOutcome { order_id: Some(o.id), result: IntakeResult::Duplicate });
                }
                archive_in(c, &src, &raw, "updated").await?;
                cancel_in(c, &o, "deleted at the platform").await?;
                Ok(IntakeOutcome { order_id: Some(o.id), result: IntakeResult::Updated })
            })
        })
        .await
    }

    /// Archive an authenticated delivery that changes nothing (ignored topics).
    pub async fn archive_delivery(
        &self,
        src: IntakeSource,
        raw: RawDelivery,
        result: &'static str,
    ) -> Result<PayloadId> {
        self.write(move |c| Box::pin(async move { archive_in(c, &src, &raw, result).await })).await
    }

    /// A native order from the ordering API; the idempotency key completes in the same commit.
    pub async fn create_native_order(
        &self,
        src: IntakeSource,
        n: NormalizedOrder,
        ready_at: i64,
        idem: Option<IdempotencyRef>,
    ) -> Result<(Order, IntakeResult)> {
        self.write(move |c| {
            Box::pin(async move {
                let (id, result) = match insert_order_in(c, &src, &n, ready_at, None).await? {
                    Some(id) => (id, IntakeResult::Created),
                    None => (
                        find_in(c, &src, &n.platform_order_id).await?.ok_or(StorageError::NotFound)?.id,
                        IntakeResult::Duplicate,
                    ),
                };
                let order = load_order_in(c, &src.tenant_id, &id).await?;
                if let Some(k) = idem {
                    let status = if result == IntakeResult::Created { 201 } else { 200 };
                    complete_idempotency_in(
                        c,
                        &src.tenant_id,
                        &k,
                        status,
                        &serde_json::to_string(&order).map_err(crate::corrupt)?,
                    )
                    .await?;
                }
                Ok((order, result))
            })
        })
        .await
    }

    /// Claim an idempotency key, or learn what became of it.
    pub async fn begin_idempotency(
        &self,
        tenant: &TenantId,
        key: &IdempotencyRef,
        request_hash: &str,
        ttl_ms: i64,
    ) -> Result<IdempotencyBegin> {
        let (t, k, h) = (tenant.clone(), key.clone(), request_hash.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let row = sqlx::query(
                    "SELECT request_hash, state, response_status, response_body, created_at, expires_at FROM idempotency_keys \
                     WHERE tenant_id = $1 AND client_id = $2 AND idem_key = $3",
                )
                .bind(t.as_str())
                .bind(&k.client_id)
                .bind(&k.key)
                .fetch_optional(&mut *c)
                .await?;
                if let Some(row) = row {
                    let expires: i64 = get(&row, "expires_at")?;
                    let state: String = get(&row, "state")?;
                    let created: i64 = get(&row, "created_at")?;
                    // An in-flight claim older than a minute belonged to a process that died.
                    let abandoned = state == "in_flight" && now - created > 60_000;
                    if expires > now && !abandoned {
                        let stored_hash: String = get(&row, "request_hash")?;
                        if stored_hash != h {
                            return Ok(IdempotencyBegin::Mismatch);
                        }
                        if state == "in_flight" {
                            return Ok(IdempotencyBegin::InFlight);
                        }
                        let status: Option<i64> = get(&row, "response_status")?;
                        let body: Option<String> = get(&row, "response_body")?;
                        return Ok(IdempotencyBegin::Completed {
                            status: status.unwrap_or(200) as u16,
                            body: body.unwrap_or_default(),
                        });
                    }
                    sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND client_id = $2 AND idem_key = $3")
                        .bind(t.as_str())
                        .bind(&k.client_id)
                        .bind(&k.key)
                        .execute(&mut *c)
                        .await?;
                }
                // Another node may have claimed the key since our read: then it is theirs.
                let claimed = sqlx::query(
                    "INSERT INTO idempotency_keys (tenant_id, client_id, idem_key, request_hash, state, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, 'in_flight', $5, $6) ON CONFLICT (tenant_id, client_id, idem_key) DO NOTHING",
                )
                .bind(t.as_str())
                .bind(&k.client_id)
                .bind(&k.key)
                .bind(&h)
                .bind(now)
                .bind(now + ttl_ms)
                .execute(&mut *c)
                .await?;
                Ok(if claimed.rows_affected() == 1 { IdempotencyBegin::Fresh } else { IdempotencyBegin::InFlight })
            })
        })
        .await
    }

    /// Record the final answer for a key (client errors are replayed too).
    pub async fn complete_idempotency(
        &self,
        tenant: &TenantId,
        key: &IdempotencyRef,
        status: u16,
        body: &str,
    ) -> Result<()> {
        let (t, k, b) = (tenant.clone(), key.clone(), body.to_owned());
        self.write(move |c| Box::pin(async move { complete_idempotency_in(c, &t, &k, status, &b).await })).await
    }

    /// Forget a claim whose request failed on our side, so the client may retry.
    pub async fn release_idempotency(&self, tenant: &TenantId, key: &IdempotencyRef) -> Result<()> {
        let (t, k) = (tenant.clone(), key.clone());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND client_id = $2 AND idem_key = $3 AND state = 'in_flight'")
                    .bind(t.as_str())
                    .bind(&k.client_id)
                    .bind(&k.key)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    /// An authenticated delivery that could not be normalized: archived like every
    /// delivery and kept whole as a dead letter for replay, in one commit (invariant 4).
    pub async fn dead_letter_delivery(
        &self,
        src: IntakeSource,
        raw: RawDelivery,
        error: &str,
        context: serde_json::Value,
    ) -> Result<DeadLetterId> {
        let id = DeadLetterId::generate();
        let (i, e) = (id.clone(), error.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                archive_in(c, &src, &raw, "dead_lettered").await?;
                let (platform, store) = (src.platform.as_str(), src.store_id.as_str());
                insert_dead_letter_in(c, &i, &src.tenant_id, "intake", platform, store, &raw, &e, &context, 0).await
            })
        })
        .await?;
        Ok(id)
    }

    /// Keep a delivery we could not process, whole, for replay after a fix.
    #[allow(clippy::too_many_arguments)]
    pub async fn dead_letter(
        &self,
        tenant: &TenantId,
        kind: &str,
        platform: Platform,
        store: &StoreId,
        raw: RawDelivery,
        error: &str,
        context: serde_json::Value,
    ) -> Result<DeadLetterId> {
        let id = DeadLetterId::generate();
        let (i, t, k, s, e) = (id.clone(), tenant.clone(), kind.to_owned(), store.clone(), error.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                insert_dead_letter_in(c, &i, &t, &k, platform.as_str(), s.as_str(), &raw, &e, &context, 0).await
            })
        })
        .await?;
        Ok(id)
    }

    pub async fn list_dead_letters(&self, tenant: &TenantId, f: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let mut sql = String::from(
            "SELECT id, tenant_id, kind, platform, store_id, headers_json, body, error, context_json, attempts, created_at, \
             replayed_at, replay_outcome FROM dead_letters WHERE tenant_id = $1",
        );
        let mut binds: Vec<String> = Vec::new();
        let mut ints: Vec<(usize, i64)> = Vec::new();
        for (col, v) in [("kind", &f.kind), ("platform", &f.platform), ("store_id", &f.store_id)] {
            if let Some(v) = v {
                binds.push(v.clone());
                sql.push_str(&format!(" AND {col} = ${}", binds.len() + 1));
            }
        }
        let mut n = binds.len() + 1;
        if let Some(s) = f.since {
            n += 1;
            sql.push_str(&format!(" AND created_at >= ${n}"));
            ints.push((n, s));
        }
        if let Some(u) = f.until {
            n += 1;
            sql.push_str(&format!(" AND created_at < ${n}"));
            ints.push((n, u));
        }
        if !f.include_replayed {
            sql.push_str(" AND (replay_outcome IS NULL OR replay_outcome <> 'succeeded')");
        }
        sql.push_str(&format!(" ORDER BY created_at, id LIMIT ${}", n + 1));
        let mut q = sqlx::query(&sql).bind(tenant.as_str());
        for b in &binds {
            q = q.bind(b.clone());
        }
        for (_, v) in &ints {
            q = q.bind(*v);
        }
        q = q.bind(f.limit);
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let headers: String = get(r, "headers_json")?;
                let ctx: String = get(r, "context_json")?;
                Ok(DeadLetter {
                    id: DeadLetterId(get(r, "id")?),
                    tenant_id: TenantId(get(r, "tenant_id")?),
                    kind: get(r, "kind")?,
                    platform: get(r, "platform")?,
                    store_id: get(r, "store_id")?,
                    headers: serde_json::from_str(&headers).unwrap_or(serde_json::Value::Null),
                    body: get(r, "body")?,
                    error: get(r, "error")?,
                    context: serde_json::from_str(&ctx).unwrap_or(serde_json::Value::Null),
                    attempts: get(r, "attempts")?,
                    created_at: get(r, "created_at")?,
                    replayed_at: get(r, "replayed_at")?,
                    replay_outcome: get(r, "replay_outcome")?,
                })
            })
            .collect()
    }

    pub async fn get_dead_letter(&self, tenant: &TenantId, id: &DeadLetterId) -> Result<DeadLetter> {
        let all = self
            .list_dead_letters(
                tenant,
                &DeadLetterFilter { include_replayed: true, limit: i64::MAX, ..Default::default() },
            )
            .await?;
        all.into_iter().find(|d| &d.id == id).ok_or(StorageError::NotFound)
    }

    pub async fn record_replay(&self, tenant: &TenantId, id: &DeadLetterId, outcome: &str) -> Result<()> {
        let (t, i, o) = (tenant.clone(), id.clone(), outcome.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE dead_letters SET replayed_at = $1, replay_outcome = $2, attempts = attempts + 1 WHERE tenant_id = $3 AND id = $4")
                    .bind(now_ms())
                    .bind(&o)
                    .bind(t.as_str())
                    .bind(i.as_str())
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    /// Drop archived raw payloads older than `before_ms`; returns how many went.
    pub async fn purge_raw_payloads(&self, before_ms: i64) -> Result<u64> {
        self.write(move |c| {
            Box::pin(async move {
                let done = sqlx::query("DELETE FROM raw_payloads WHERE received_at < $1")
                    .bind(before_ms)
                    .execute(&mut *c)
                    .await?;
                // Bodies no archived delivery points at any more.
                sqlx::query(
                    "DELETE FROM raw_payload_bodies WHERE first_seen_at < $1 AND NOT EXISTS \
                     (SELECT 1 FROM raw_payloads p WHERE p.tenant_id = raw_payload_bodies.tenant_id \
                      AND p.body_sha256 = raw_payload_bodies.sha256)",
                )
                .bind(before_ms)
                .execute(&mut *c)
                .await?;
                Ok(done.rows_affected())
            })
        })
        .await
    }

    /// The archived body of one delivery (kept once per distinct content).
    pub async fn raw_payload_body(&self, tenant: &TenantId, id: &PayloadId) -> Result<Vec<u8>> {
        let row = sqlx::query(
            "SELECT COALESCE(b.body, p.body) AS body FROM raw_payloads p LEFT JOIN raw_payload_bodies b \
             ON b.tenant_id = p.tenant_id AND b.sha256 = p.body_sha256 WHERE p.tenant_id = $1 AND p.id = $2",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StorageError::NotFound)?;
        get(&row, "body")
    }

    /// How many distinct bodies the tenant's archive holds.
    pub async fn count_raw_payload_bodies(&self, tenant: &TenantId) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM raw_payload_bodies WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(&self.pool)
            .await?;
        get(&row, "n")
    }

    pub async fn count_raw_payloads(&self, tenant: &TenantId) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM raw_payloads WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(&self.pool)
            .await?;
        get(&row, "n")
    }
}

pub(crate) async fn complete_idempotency_in(
    c: &mut WriteConn,
    t: &TenantId,
    k: &IdempotencyRef,
    status: u16,
    body: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', response_status = $1, response_body = $2 \
         WHERE tenant_id = $3 AND client_id = $4 AND idem_key = $5",
    )
    .bind(status as i64)
    .bind(body)
    .bind(t.as_str())
    .bind(&k.client_id)
    .bind(&k.key)
    .execute(&mut *c)
    .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_dead_letter_in(
    c: &mut WriteConn,
    id: &DeadLetterId,
    tenant: &TenantId,
    kind: &str,
    platform: &str,
    store: &str,
    raw: &RawDelivery,
    error: &str,
    context: &serde_json::Value,
    attempts: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO dead_letters (id, tenant_id, kind, platform, store_id, headers_json, body, error, context_json, attempts, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id.as_str())
    .bind(tenant.as_str())
    .bind(kind)
    .bind(platform)
    .bind(store)
    .bind(&raw.headers_json)
    .bind(&raw.body)
    .bind(error)
    .bind(context.to_string())
    .bind(attempts)
    .bind(now_ms())
    .execute(&mut *c)
    .await?;
    Ok(())
}
