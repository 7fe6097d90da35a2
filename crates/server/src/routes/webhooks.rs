//! Order intake from store platforms: `POST /v1/webhooks/{platform}/{store_id}` and the
//! platform-detecting `POST /v1/import-orders`. The raw body is verified before anything
//! parses it; the answer is sent only after the order and its outbox event committed.

use crate::error::{ApiError, ApiResult, Path};
use crate::routes::admin::store_credentials;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use lastmile_core::{NormalizedOrder, Platform, StoreId};
use lastmile_ingest::{IngestError, Parsed, VerifyKey};
use lastmile_storage::{IntakeOutcome, IntakeSource, RawDelivery, StoreRecord};
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/{platform}/{store_id}", post(platform_webhook))
        .route("/v1/import-orders", post(import_orders))
}

/// Headers worth keeping with an archived delivery; credentials are dropped.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers.iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned()))).collect()
}

fn archived_headers(pairs: &[(String, String)], custom_header: Option<&str>) -> String {
    let kept: serde_json::Map<String, Value> = pairs
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k != "authorization"
                && k != "cookie"
                && Some(k.as_str()) != custom_header.map(|h| h.to_ascii_lowercase()).as_deref()
        })
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Value::Object(kept).to_string()
}

fn answer(status: StatusCode, order_id: Option<&lastmile_core::OrderId>, result: &str, platform: Platform) -> Response {
    metrics::counter!("lastmile_orders_ingested_total", "platform" => platform.as_str(), "result" => result.to_owned())
        .increment(1);
    (status, Json(json!({"order_id": order_id, "result": result}))).into_response()
}

fn intake_answer(out: IntakeOutcome, platform: Platform) -> Response {
    answer(StatusCode::OK, out.order_id.as_ref(), out.result.as_str(), platform)
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
    request_body(content = String, description = "The platform's signed webhook body, unchanged"),
    responses((status = 200, description = "{order_id, result}"), (status = 202, description = "dead_lettered or queued"),
              (status = 400, description = "Unsigned or missing headers"), (status = 401, description = "invalid_signature"), (status = 404, description = "Unknown store")))]
pub async fn platform_webhook(
    State(state): State<AppState>,
    Path((platform, store_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let platform: Platform = platform.parse().map_err(|_| ApiError::not_found("platform"))?;
    let store = match state.db.get_store_for_webhook(&StoreId(store_id)).await {
        Ok(s) if s.platform == platform => s,
        Ok(_) | Err(lastmile_storage::StorageError::NotFound) => {
            return Err(ApiError::not_found("store").with_code("store_not_found"))
        }
        Err(e) => return Err(e.into()),
    };
    let _permit = state.limits.enter_store(store.id.as_str())?;
    let pairs = header_pairs(&headers);
    if platform == Platform::Woocommerce && lastmile_ingest::is_woocommerce_ping(&pairs, &body) {
        return Ok(answer(StatusCode::OK, None, "ignored", platform));
    }
    let key = store_key(&state, &store)?;
    verify_with(platform, &pairs, &body, &key).map_err(|e| ingest_error(&e))?;
    process_verified(&state, &store, &pairs, body.to_vec(), key.custom_header.as_ref().map(|h| h.0.as_str())).await
}

#[utoipa::path(post, path = "/v1/import-orders", tag = "intake",
    request_body(content = String, description = "Any platform's signed webhook; the platform is detected from the headers and the store from its identity"),
    responses((status = 200, description = "{order_id, result}"), (status = 400, description = "Platform not recognised"), (status = 401, description = "invalid_signature"), (status = 404, description = "No store with this identity")))]
pub async fn import_orders(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let pairs = header_pairs(&headers);
    let platform = lastmile_ingest::detect_platform(&pairs, &body)
        .ok_or_else(|| ApiError::bad_request("unknown_platform", "could not tell which platform sent this request"))?;
    if platform == Platform::Woocommerce && lastmile_ingest::is_woocommerce_ping(&pairs, &body) {
        return Ok(answer(StatusCode::OK, None, "ignored", platform));
    }
    let identity = lastmile_ingest::store_identity(platform, &pairs, &body)
        .ok_or_else(|| ApiError::bad_request("missing_store_identity", "the request does not name its store"))?;
    let identity = crate::routes::admin::normalize_identity(platform, &identity);
    let candidates = state.db.find_stores_by_identity(platform, &identity).await?;
    if candidates.is_empty() {
        return Err(ApiError::not_found("store").with_code("store_not_found"));
    }
    let mut last_err = IngestError::InvalidSignature;
    for store in &candidates {
        let key = store_key(&state, store)?;
        match verify_with(platform, &pairs, &body, &key) {
            Ok(()) => {
                let _permit = state.limits.enter_store(store.id.as_str())?;
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
/// normalized is kept whole as a dead letter (invariant 4).
pub async fn process_verified(
    state: &AppState,
    store: &StoreRecord,
    pairs: &[(String, String)],
    body: Vec<u8>,
    custom_header: Option<&str>,
) -> ApiResult<Response> {
    let platform = store.platform;
    let src = IntakeSource { tenant_id: store.tenant_id.clone(), store_id: store.id.clone(), platform };
    let raw = RawDelivery { headers_json: archived_headers(pairs, custom_header), body };
    let parsed = match lastmile_ingest::parse(platform, pairs, &raw.body) {
        Ok(p) => p,
        Err(e) => return dead_letter(state, store, raw, &e.to_string(), json!({"stage": "parse"})).await,
    };
    match parsed {
        Parsed::Order { order, .. } => commit_order(state, src, order, raw).await,
        Parsed::Deleted { platform_order_id, .. } => {
            Ok(intake_answer(state.db.intake_platform_delete(src, platform_order_id, raw).await?, platform))
        }
        Parsed::Ping => Ok(answer(StatusCode::OK, None, "ignored", platform)),
        Parsed::Ignored { topic, reason } => {
            tracing::info!(%topic, %reason, "delivery ignored");
            state.db.archive_delivery(src, raw, "ignored").await?;
            Ok(answer(StatusCode::OK, None, "ignored", platform))
        }
        Parsed::NeedsFetch { platform_order_id, delivery_id, .. } => {
            fetch_and_commit(state, store, src, platform_order_id, delivery_id, raw).await
        }
    }
}

async fn commit_order(
    state: &AppState,
    src: IntakeSource,
    order: NormalizedOrder,
    raw: RawDelivery,
) -> ApiResult<Response> {
    let platform = src.platform;
    let out = state.db.intake_platform_order(src, order, raw).await?;
    Ok(intake_answer(out, platform))
}

async fn dead_letter(
    state: &AppState,
    store: &StoreRecord,
    raw: RawDelivery,
    error: &str,
    ctx: Value,
) -> ApiResult<Response> {
    let id = state.db.dead_letter(&store.tenant_id, "intake", store.platform, &store.id, raw, error, ctx).await?;
    metrics::counter!("lastmile_orders_ingested_total", "platform" => store.platform.as_str(), "result" => "dead_lettered").increment(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"order_id": null, "result": "dead_lettered", "dead_letter_id": id, "error": error})),
    )
        .into_response())
}

/// BigCommerce bodies carry only ids: fetch the order now; if the store cannot be reached,
/// keep the delivery as a fetch job that the sync worker retries (never lost).
async fn fetch_and_commit(
    state: &AppState,
    store: &StoreRecord,
    src: IntakeSource,
    platform_order_id: String,
    delivery_id: Option<String>,
    raw: RawDelivery,
) -> ApiResult<Response> {
    let target = crate::sync_worker::store_target(state, store)?;
    match state.connectors.fetch_bigcommerce_order(&target, &platform_order_id).await {
        Ok(bodies) => {
            match lastmile_ingest::normalize_bigcommerce(&bodies.order, &bodies.products, &bodies.shipping_addresses) {
                Ok(order) => commit_order(state, src, order, raw).await,
                Err(e) => {
                    dead_letter(
                        state,
                        store,
                        raw,
                        &e.to_string(),
                        json!({"stage": "normalize_fetched_order", "platform_order_id": platform_order_id}),
                    )
                    .await
                }
            }
        }
        Err(lastmile_connectors::FetchError::NotFound) => {
            dead_letter(
                state,
                store,
                raw,
                "the platform has no such order",
                json!({"stage": "fetch", "platform_order_id": platform_order_id}),
            )
            .await
        }
        Err(e) => {
            tracing::warn!(error = %e, store = %store.id, "BigCommerce order fetch failed; queued for retry");
            let key = delivery_id.unwrap_or_else(|| lastmile_storage::now_ms().to_string());
            let job = state
                .db
                .enqueue_fetch_job(&store.tenant_id, &store.id, store.platform, &platform_order_id, &key)
                .await?;
            state.db.archive_delivery(src, raw, "queued").await?;
            metrics::counter!("lastmile_orders_ingested_total", "platform" => "bigcommerce", "result" => "queued")
                .increment(1);
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({"order_id": null, "result": "queued", "job_id": job, "error": e.to_string()})),
            )
                .into_response())
        }
    }
}
