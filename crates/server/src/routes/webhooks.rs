//! Order intake from store platforms: `POST /v1/webhooks/{platform}/{store_id}` and the
//! platform-detecting `POST /v1/import-orders`. The raw body is verified before anything
//! parses it; the answer is sent only after the order and its outbox event committed.

use crate::error::{ApiError, ApiResult, Path};
use crate::routes::admin::store_credentials;
use crate::spool::{Spooled, TakeIn};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use lastmile_core::{DeadLetterId, OrderId, Platform, StoreId, SyncJobId};
use lastmile_ingest::{IngestError, Parsed, VerifyKey};
use lastmile_storage::{
    IntakeOutcome, IntakeSource, RawDelivery, SpoolRefusal, SpooledDelivery, StorageError, StoreRecord,
};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/{platform}/{store_id}", post(platform_webhook))
        .route("/v1/import-orders", post(import_orders))
}

/// Headers worth keeping with an archived delivery; credentials are dropped.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers.iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned()))).collect()
}

/// The headers without credentials (`Authorization`, cookies, the store's custom auth header).
fn kept_headers(pairs: &[(String, String)], custom_header: Option<&str>) -> Vec<(String, String)> {
    let custom = custom_header.map(str::to_ascii_lowercase);
    pairs
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k != "authorization" && k != "cookie" && Some(&k) != custom.as_ref()
        })
        .cloned()
        .collect()
}

fn archived_headers(pairs: &[(String, String)], custom_header: Option<&str>) -> String {
    let kept: serde_json::Map<String, Value> =
        kept_headers(pairs, custom_header).into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    Value::Object(kept).to_string()
}

/// The answer to a delivery. Made once per delivery, so building one counts it in
/// `lastmile_orders_ingested_total{platform,result}`.
struct Answer {
    status: StatusCode,
    body: IntakeAnswer,
}

/// What became of a delivery.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct IntakeAnswer {
    /// Null when no order was created or changed.
    pub order_id: Option<OrderId>,
    /// `created`, `updated`, `unchanged`, `cancelled`, `ignored`, `dead_lettered`, `queued`
    /// or `spooled` (kept durably on this node while the database is unreachable).
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_id: Option<DeadLetterId>,
    /// A BigCommerce order fetch queued for retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<SyncJobId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    fn new(status: StatusCode, platform: Platform, result: &str, body: IntakeAnswer) -> Self {
        let (platform, result) = (platform.as_str(), result.to_owned());
        metrics::counter!("lastmile_orders_ingested_total", "platform" => platform, "result" => result).increment(1);
        Answer { status, body }
    }

    fn result(platform: Platform, order_id: Option<&lastmile_core::OrderId>, result: &str) -> Self {
        let body = IntakeAnswer { order_id: order_id.cloned(), result: result.to_owned(), ..Default::default() };
        Self::new(StatusCode::OK, platform, result, body)
    }

    fn intake(out: IntakeOutcome, platform: Platform) -> Self {
        Self::result(platform, out.order_id.as_ref(), out.result.as_str())
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// What an authenticated delivery came to.
enum Processed {
    /// Committed, queued or deliberately ignored: the answer to send.
    Answered(Answer),
    /// Authenticated but not normalizable (now): handed back whole for the caller to keep
    /// as a dead letter, or, when replaying one, to record that it still fails.
    Unprocessable { raw: RawDelivery, error: String, context: Value },
}

fn ingest_error(e: &IngestError) -> ApiError {
    match e {
        IngestError::MissingHeader(h) => ApiError::bad_request("missing_header", format!("the {h} header is required"))
            .with_details(json!({"header": h})),
        IngestError::InvalidSignature => {
            ApiError::unauthorized("the signature does not match this store's secret").with_code("invalid_signature")
        }
        IngestError::StaleTimestamp => {
            ApiError::unauthorized("the webhook timestamp is outside the 5 minute tolerance")
                .with_code("stale_timestamp")
        }
        IngestError::Malformed(m) => ApiError::bad_request("unprocessable_payload", m.clone()),
    }
}

impl ApiError {
    fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

struct StoreKey {
    secret: String,
    custom_header: Option<(String, String)>,
}

/// This node's webhook stores with their decrypted secrets, so a delivery costs neither a
/// store read nor a decryption. An entry is used only while the storage's
/// `stores_generation` is the one it was read under: a store created, changed (a new
/// webhook secret, another shop identity) or deleted through this node invalidates every
/// entry at once; through another node, within `STORE_CHANGE_BOUND_MS` (one second).
/// Re-sealing secrets under a new at-rest key (`rotate-secret-key`) leaves the secrets
/// themselves as they were, so it needs no invalidation. Lookups that miss go through
/// the database (or, during an outage, the spool's own cache) exactly as before.
#[derive(Clone, Default)]
pub struct WebhookStores {
    by_id: Arc<Mutex<HashMap<String, CachedStore>>>,
    by_identity: Arc<Mutex<HashMap<(Platform, String), CachedIdentity>>>,
}

/// The stores under one platform identity, and the generation they were read under.
type CachedIdentity = (u64, Vec<Keyed>);

/// A store with its verification key.
type Keyed = (StoreRecord, Arc<StoreKey>);

struct CachedStore {
    generation: u64,
    store: StoreRecord,
    key: Arc<StoreKey>,
}

/// Entries kept before the cache is emptied (one per store sending webhooks to this node).
const MAX_CACHED_STORES: usize = 100_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WebhookStores {
    fn get(&self, id: &str, generation: u64) -> Option<Keyed> {
        let map = lock(&self.by_id);
        let hit = map.get(id).filter(|c| c.generation == generation)?;
        Some((hit.store.clone(), hit.key.clone()))
    }

    fn put(&self, generation: u64, store: &StoreRecord, key: &Arc<StoreKey>) {
        let mut map = lock(&self.by_id);
        if map.len() >= MAX_CACHED_STORES {
            map.retain(|_, c| c.generation == generation);
            if map.len() >= MAX_CACHED_STORES {
                map.clear();
            }
        }
        map.insert(store.id.0.clone(), CachedStore { generation, store: store.clone(), key: key.clone() });
    }

    fn get_identity(&self, key: &(Platform, String), generation: u64) -> Option<Vec<Keyed>> {
        lock(&self.by_identity).get(key).filter(|(g, _)| *g == generation).map(|(_, v)| v.clone())
    }

    fn put_identity(&self, generation: u64, key: (Platform, String), stores: Vec<Keyed>) {
        let mut map = lock(&self.by_identity);
        if map.len() >= MAX_CACHED_STORES {
            map.clear();
        }
        map.insert(key, (generation, stores));
    }
}

/// The store a webhook names, with its key: from this node's cache when it is current,
/// else read (and decrypted) and cached. `None` when there is no such live store.
async fn webhook_store(state: &AppState, id: &StoreId) -> ApiResult<Option<Keyed>> {
    // Read before the store, so a change committed meanwhile leaves this entry stale.
    let generation = state.db.stores_generation().await.ok();
    if let Some(hit) = generation.and_then(|g| state.webhook_stores.get(id.as_str(), g)) {
        return Ok(Some(hit));
    }
    let store = match state.outage.store(&state.db, id).await {
        Ok(s) => s,
        Err(StorageError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let key = Arc::new(store_key(state, &store)?);
    if let Some(g) = generation {
        state.webhook_stores.put(g, &store, &key);
    }
    Ok(Some((store, key)))
}

/// The live stores registered under a platform identity, with their keys (cached like
/// [`webhook_store`]).
async fn identity_stores(state: &AppState, platform: Platform, identity: &str) -> ApiResult<Vec<Keyed>> {
    let generation = state.db.stores_generation().await.ok();
    let key = (platform, identity.to_owned());
    if let Some(hit) = generation.and_then(|g| state.webhook_stores.get_identity(&key, g)) {
        return Ok(hit);
    }
    let stores = state.outage.stores_by_identity(&state.db, platform, identity).await?;
    let mut keyed = Vec::with_capacity(stores.len());
    for store in stores {
        let k = Arc::new(store_key(state, &store)?);
        keyed.push((store, k));
    }
    if let Some(g) = generation {
        state.webhook_stores.put_identity(g, key, keyed.clone());
    }
    Ok(keyed)
}

fn store_key(state: &AppState, store: &StoreRecord) -> ApiResult<StoreKey> {
    let secret = state.keys.decrypt_string(&store.webhook_secret_enc)?;
    let custom_header = store_credentials(state, store)?.and_then(|c| c.custom_auth_header).map(|h| (h.name, h.value));
    Ok(StoreKey { secret, custom_header })
}

fn verify_with(platform: Platform, pairs: &[(String, String)], body: &[u8], key: &StoreKey) -> Result<(), IngestError> {
    let vk = VerifyKey {
        secret: &key.secret,
        custom_header: key.custom_header.as_ref().map(|(n, v)| (n.as_str(), v.as_str())),
    };
    lastmile_ingest::verify(platform, pairs, body, &vk, chrono::Utc::now())
}

#[utoipa::path(post, path = "/v1/webhooks/{platform}/{store_id}", tag = "intake",
    params(("platform" = String, Path, description = "shopify | woocommerce | bigcommerce"), ("store_id" = String, Path)),
    request_body(content = Value, description = "The platform's signed webhook body, unchanged (its shape is the platform's)"),
    responses((status = 200, description = "Committed or ignored", body = IntakeAnswer), (status = 202, description = "dead_lettered, queued or spooled", body = IntakeAnswer),
              (status = 400, description = "Missing headers or an unreadable body"), (status = 401, description = "invalid_signature or stale_timestamp"), (status = 404, description = "Unknown store"),
              (status = 503, description = "database_unavailable (the store is not cached on this node) or spool_full; see Retry-After"),
              (status = 413, description = "The body is over the size limit"), (status = 429, description = "The store's intake is over its rate or concurrency")))]
pub async fn platform_webhook(
    State(state): State<AppState>,
    Path((platform, store_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let platform: Platform = platform.parse().map_err(|_| ApiError::not_found("platform"))?;
    let (store, key) = match webhook_store(&state, &StoreId(store_id)).await? {
        Some((s, k)) if s.platform == platform => (s, k),
        _ => return Err(ApiError::not_found("store").with_code("store_not_found")),
    };
    let pairs = header_pairs(&headers);
    if platform == Platform::Woocommerce && lastmile_ingest::is_woocommerce_ping(&pairs, &body) {
        return Ok(Answer::result(platform, None, "ignored").into_response());
    }
    verify_with(platform, &pairs, &body, &key).map_err(|e| ingest_error(&e))?;
    // Only authenticated deliveries spend the store's budget: anyone who learns a store id
    // could otherwise starve it with unsigned garbage.
    let _permit = state.limits.enter_store(store.id.as_str()).await?;
    process_verified(&state, &store, &pairs, body.to_vec(), key.custom_header.as_ref().map(|h| h.0.as_str())).await
}

#[utoipa::path(post, path = "/v1/import-orders", tag = "intake",
    request_body(content = Value, description = "Any platform's signed webhook; the platform is detected from the headers and the store from its identity"),
    responses((status = 200, description = "Committed or ignored", body = IntakeAnswer), (status = 202, description = "dead_lettered, queued or spooled", body = IntakeAnswer),
              (status = 503, description = "database_unavailable (the store is not cached on this node) or spool_full; see Retry-After"),
              (status = 400, description = "Platform not recognised, or missing headers"), (status = 401, description = "invalid_signature, stale_timestamp, or no store with this identity"),
              (status = 413, description = "The body is over the size limit"), (status = 429, description = "The store's intake is over its rate or concurrency")))]
pub async fn import_orders(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let pairs = header_pairs(&headers);
    let platform = lastmile_ingest::detect_platform(&pairs, &body)
        .ok_or_else(|| ApiError::bad_request("unknown_platform", "could not tell which platform sent this request"))?;
    if platform == Platform::Woocommerce && lastmile_ingest::is_woocommerce_ping(&pairs, &body) {
        return Ok(Answer::result(platform, None, "ignored").into_response());
    }
    let identity = lastmile_ingest::store_identity(platform, &pairs, &body)
        .ok_or_else(|| ApiError::bad_request("missing_store_identity", "the request does not name its store"))?;
    let identity = crate::routes::admin::normalize_identity(platform, &identity);
    let candidates = identity_stores(&state, platform, &identity).await?;
    // An unknown identity answers exactly like a bad signature: this endpoint must not
    // tell a stranger which shops are registered here.
    let mut last_err = IngestError::InvalidSignature;
    for (store, key) in &candidates {
        match verify_with(platform, &pairs, &body, key) {
            Ok(()) => {
                let _permit = state.limits.enter_store(store.id.as_str()).await?;
                return process_verified(
                    &state,
                    store,
                    &pairs,
                    body.to_vec(),
                    key.custom_header.as_ref().map(|h| h.0.as_str()),
                )
                .await;
            }
            Err(e) => last_err = e,
        }
    }
    Err(ingest_error(&last_err))
}

/// Parse, normalize and commit an authenticated delivery. Anything that cannot be
/// normalized is kept whole as a dead letter (invariant 4) and answered 202. While the
/// database cannot be reached, the delivery goes to this node's spool instead.
async fn process_verified(
    state: &AppState,
    store: &StoreRecord,
    pairs: &[(String, String)],
    body: Vec<u8>,
    custom_header: Option<&str>,
) -> ApiResult<Response> {
    if state.outage.database_down() {
        return spool_delivery(state, store, &kept_headers(pairs, custom_header), &body).await;
    }
    match commit_verified(state, store, pairs, body.clone(), custom_header).await {
        Err(e) if e.code == "database_unavailable" && state.outage.enabled() => {
            // Nothing acknowledged it: keep it on this node. Had it committed after all
            // (the connection broke after COMMIT), the drain finds it a duplicate.
            state.outage.note(&StorageError::Unavailable(e.message.clone()));
            spool_delivery(state, store, &kept_headers(pairs, custom_header), &body).await
        }
        other => other,
    }
}

/// Keep a verified delivery in this node's spool and acknowledge it: `202 spooled`.
async fn spool_delivery(
    state: &AppState,
    store: &StoreRecord,
    headers: &[(String, String)],
    body: &[u8],
) -> ApiResult<Response> {
    match state.outage.spool(store, headers, body).await {
        None => Err(ApiError::database_unavailable()),
        Some(Ok(Spooled::Kept(_))) => {
            let body = IntakeAnswer { result: "spooled".into(), ..Default::default() };
            Ok(Answer::new(StatusCode::ACCEPTED, store.platform, "spooled", body).into_response())
        }
        Some(Ok(Spooled::Refused(why))) => {
            let (reason, message) = match why {
                SpoolRefusal::Full => ("full", "the database is unreachable and this node's spool is full"),
                SpoolRefusal::TooOld => {
                    ("too_old", "the database has been unreachable for longer than this node holds deliveries")
                }
            };
            let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "spool_full", message)
                .with_details(json!({"reason": reason}));
            e.retry_after_s = Some(state.outage.retry_after_s());
            Err(e)
        }
        Some(Err(e)) => {
            tracing::error!(error = %e, "writing to the spool failed");
            Err(ApiError::database_unavailable())
        }
    }
}

/// Take a spooled delivery in (see `spool`): verified when it was received, so only
/// parsed, normalized and committed now, the same way as on arrival.
pub async fn take_in_spooled(state: &AppState, d: &SpooledDelivery) -> Result<(), TakeIn> {
    let unavailable =
        |e: StorageError| if e.is_unavailable() { TakeIn::Unavailable(e) } else { TakeIn::Failed(e.to_string()) };
    let store = state.db.get_store_for_webhook(&StoreId(d.store_id.clone())).await.map_err(|e| match e {
        StorageError::NotFound => TakeIn::Failed(format!("store {} no longer exists", d.store_id)),
        e => unavailable(e),
    })?;
    let pairs: Vec<(String, String)> =
        serde_json::from_str(&d.headers_json).map_err(|e| TakeIn::Failed(format!("spooled headers: {e}")))?;
    match commit_verified(state, &store, &pairs, d.body.clone(), None).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == "database_unavailable" => Err(TakeIn::Unavailable(StorageError::Unavailable(e.message))),
        Err(e) if e.status.is_client_error() => Ok(()),
        Err(e) => Err(TakeIn::Failed(format!("{}: {}", e.code, e.message))),
    }
}

/// [`process`] and, for what cannot be normalized, its dead letter.
async fn commit_verified(
    state: &AppState,
    store: &StoreRecord,
    pairs: &[(String, String)],
    body: Vec<u8>,
    custom_header: Option<&str>,
) -> ApiResult<Response> {
    let raw = RawDelivery { headers_json: archived_headers(pairs, custom_header), body };
    match process(state, store, pairs, raw).await? {
        Processed::Answered(answer) => Ok(answer.into_response()),
        Processed::Unprocessable { raw, error, context } => {
            let missing = context.get("missing_header").and_then(|h| h.as_str()).map(str::to_owned);
            let id = state.db.dead_letter_delivery(source(store), raw, &error, context).await?;
            // Signed but without a header the platform always sends: the sender's mistake,
            // answered as such (and kept, like every authenticated body, for replay).
            if let Some(h) = missing {
                return Err(ApiError::bad_request("missing_header", format!("the {h} header is required"))
                    .with_details(json!({"header": h, "dead_letter_id": id})));
            }
            let body = IntakeAnswer {
                result: "dead_lettered".into(),
                dead_letter_id: Some(id),
                error: Some(error),
                ..Default::default()
            };
            Ok(Answer::new(StatusCode::ACCEPTED, store.platform, "dead_lettered", body).into_response())
        }
    }
}

/// Run a dead-lettered delivery through intake again, after a fix. `Ok(answer)` when it
/// goes through now; `Err(why)` when it still cannot be normalized, for the caller to
/// record on the existing dead letter (a failed replay never keeps a second copy).
pub async fn replay_delivery(
    state: &AppState,
    store: &StoreRecord,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> ApiResult<Result<Value, String>> {
    let raw = RawDelivery { headers_json: archived_headers(headers, None), body };
    Ok(match process(state, store, headers, raw).await? {
        Processed::Answered(answer) => Ok(serde_json::to_value(answer.body).map_err(ApiError::internal)?),
        Processed::Unprocessable { error, .. } => Err(error),
    })
}

fn source(store: &StoreRecord) -> IntakeSource {
    IntakeSource { tenant_id: store.tenant_id.clone(), store_id: store.id.clone(), platform: store.platform }
}

async fn process(
    state: &AppState,
    store: &StoreRecord,
    pairs: &[(String, String)],
    raw: RawDelivery,
) -> ApiResult<Processed> {
    let platform = store.platform;
    let src = source(store);
    let parsed = match lastmile_ingest::parse(platform, pairs, &raw.body) {
        Ok(p) => p,
        Err(e) => {
            let mut context = json!({"stage": "parse"});
            if let IngestError::MissingHeader(h) = &e {
                context["missing_header"] = json!(h);
            }
            return Ok(Processed::Unprocessable { raw, error: e.to_string(), context });
        }
    };
    let answer = match parsed {
        Parsed::Order { order, .. } => Answer::intake(state.db.intake_platform_order(src, order, raw).await?, platform),
        Parsed::Deleted { platform_order_id, .. } => {
            Answer::intake(state.db.intake_platform_delete(src, platform_order_id, raw).await?, platform)
        }
        Parsed::Ping => Answer::result(platform, None, "ignored"),
        Parsed::Ignored { topic, reason } => {
            tracing::info!(%topic, %reason, "delivery ignored");
            state.db.archive_delivery(src, raw, "ignored").await?;
            Answer::result(platform, None, "ignored")
        }
        Parsed::NeedsFetch { platform_order_id, delivery_id, .. } => {
            return fetch_and_commit(state, store, src, platform_order_id, delivery_id, raw).await
        }
    };
    Ok(Processed::Answered(answer))
}

/// How long a BigCommerce delivery waits for its order fetch before it is queued.
const INLINE_FETCH_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

/// BigCommerce bodies carry only ids: fetch the order now; if the store cannot be reached,
/// keep the delivery as a fetch job that the sync worker retries (never lost) and answer
/// 202 `queued` — a result beyond the contract's list, documented in docs/api.md.
async fn fetch_and_commit(
    state: &AppState,
    store: &StoreRecord,
    src: IntakeSource,
    platform_order_id: String,
    delivery_id: Option<String>,
    raw: RawDelivery,
) -> ApiResult<Processed> {
    let target = crate::sync_worker::store_target(state, store)?;
    let unprocessable = |raw, error: String, stage: &str| {
        let context = json!({"stage": stage, "platform_order_id": platform_order_id});
        Ok(Processed::Unprocessable { raw, error, context })
    };
    // The platform is waiting for our answer: give the inline fetch a short budget and
    // fall back to the retried fetch job rather than hold the delivery for a tier timeout.
    let fetched = tokio::time::timeout(
        INLINE_FETCH_BUDGET,
        state.connectors.fetch_bigcommerce_order(&target, &platform_order_id),
    )
    .await
    .unwrap_or_else(|_| {
        Err(lastmile_connectors::FetchError::Retry {
            error: format!("no answer within {} s", INLINE_FETCH_BUDGET.as_secs()),
            retry_after: None,
            last_status: None,
        })
    });
    match fetched {
        Ok(bodies) => {
            match lastmile_ingest::normalize_bigcommerce(&bodies.order, &bodies.products, &bodies.shipping_addresses) {
                Ok(order) => {
                    let out = state.db.intake_platform_order(src, order, raw).await?;
                    Ok(Processed::Answered(Answer::intake(out, store.platform)))
                }
                Err(e) => unprocessable(raw, e.to_string(), "normalize_fetched_order"),
            }
        }
        Err(lastmile_connectors::FetchError::NotFound) => {
            unprocessable(raw, "the platform has no such order".into(), "fetch")
        }
        Err(e) => {
            tracing::warn!(error = %e, store = %store.id, "BigCommerce order fetch failed; queued for retry");
            let key = delivery_id.unwrap_or_else(|| lastmile_storage::now_ms().to_string());
            let job = state.db.queue_fetch(src, &platform_order_id, &key, raw).await?;
            let body = IntakeAnswer {
                result: "queued".into(),
                job_id: Some(job),
                error: Some(e.to_string()),
                ..Default::default()
            };
            Ok(Processed::Answered(Answer::new(StatusCode::ACCEPTED, store.platform, "queued", body)))
        }
    }
}
