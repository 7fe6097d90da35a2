//! The router and the edge middleware: request ids, tracing spans, metrics labelled by
//! route pattern, the body limit, and JSON answers for unknown routes and methods.

use crate::error::ApiError;
use crate::routes;
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::time::Instant;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let limit = state.cfg.body_limit_bytes;
    Router::new()
        .merge(routes::system::router())
        .merge(routes::admin::router())
        .merge(routes::oauth::router())
        .merge(routes::orders::router())
        .merge(routes::webhooks::router())
        .merge(routes::driver::router())
        .merge(routes::track::router().layer(routes::track::cors(&state.cfg.tracking)))
        .merge(routes::ops::router())
        .merge(routes::console::router())
        .merge(routes::events::router())
        .merge(routes::map::router())
        .merge(routes::driver_app::router(&state.cfg.web))
        .merge(routes::track_choice::router())
        .merge(crate::web::router())
        .merge(routes::order_ops::router())
        .merge(routes::catalog::router())
        .merge(routes::geocode::router())
        .merge(routes::webhook_endpoints::router())
        .merge(routes::keys::router())
        .merge(bench_baseline_router(state.cfg.bench_baseline_routes))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(std::time::Duration::from_secs(
            state.cfg.edge.body_read_timeout_s,
        )))
        .layer(middleware::from_fn_with_state(limit, refuse_nul_text))
        .layer(middleware::from_fn(json_error_bodies))
        .layer(middleware::from_fn(record_metrics))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .with_state(state)
}

/// `lastmile bench ingest`'s same-run baseline, mounted only with `bench_baseline_routes`:
/// the same bodies through the same middleware, parsed into JSON, never verified or stored.
fn bench_baseline_router(enabled: bool) -> Router<AppState> {
    if !enabled {
        return Router::new();
    }
    Router::new().route("/v1/bench/baseline/{platform}/{store_id}", axum::routing::post(bench_baseline))
}

async fn bench_baseline(body: axum::body::Bytes) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let parsed: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}")))?;
    let fields = parsed.as_object().map_or(0, |o| o.len());
    Ok(axum::Json(serde_json::json!({"order_id": null, "result": "baseline", "fields": fields})))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route for {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{} is not allowed here", req.method()))
}

/// `lastmile_http_requests_total` and `lastmile_http_request_duration_seconds`, labelled
/// by the matched route pattern (never the raw URL, which would explode cardinality).
async fn record_metrics(req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("lastmile_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("lastmile_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}

/// Signed platform deliveries: never refused for their text (NUL is replaced in the
/// normalized fields and the raw body is kept as bytes), so the guard below skips them.
fn is_platform_delivery(path: &str) -> bool {
    path.starts_with("/v1/webhooks/") || path == "/v1/import-orders"
}

/// Refuse any API request whose text would carry NUL (U+0000) with `400 invalid_text`:
/// PostgreSQL cannot store it in `TEXT`, and refusing it here, before any handler or
/// query, keeps both databases behaving alike. Checks the URL (`%00`) and JSON or form
/// bodies (the `\u0000` escape, `%00`); other content types (photos) pass untouched.
async fn refuse_nul_text(
    axum::extract::State(limit): axum::extract::State<usize>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let nul = || ApiError::bad_request("invalid_text", "text must not contain the NUL character (U+0000)");
    let uri = req.uri();
    if lastmile_core::text::urlencoded_has_nul(uri.path().as_bytes())
        || uri.query().is_some_and(|q| lastmile_core::text::urlencoded_has_nul(q.as_bytes()))
    {
        return Err(nul());
    }
    if is_platform_delivery(uri.path()) || matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD) {
        return Ok(next.run(req).await);
    }
    let kind = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let form = kind.as_deref() == Some("application/x-www-form-urlencoded");
    let json = match kind.as_deref() {
        None => true,
        Some(k) => k == "application/json" || k.ends_with("+json"),
    };
    if !form && !json {
        return Ok(next.run(req).await);
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::payload_too_large())?;
    let has_nul =
        if form { lastmile_core::text::urlencoded_has_nul(&bytes) } else { lastmile_core::text::json_has_nul(&bytes) };
    if has_nul {
        return Err(nul());
    }
    Ok(next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await)
}

/// Errors produced below our handlers (a body over the limit on a raw-body route, a
/// WebSocket path without upgrade headers, a malformed header) come from axum as plain
/// text; give them our JSON error shape with a code derived from the status.
async fn json_error_bodies(req: Request, next: Next) -> Response {
    // Pages (/console/, /track/…, /driver/) answer people with their own documents.
    let api = {
        let p = req.uri().path();
        p.starts_with("/v1/") || p.starts_with("/oauth/")
    };
    let res = next.run(req).await;
    if !api {
        return res;
    }
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json {
        return res;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    let (parts, body) = res.into_parts();
    // Rejection texts are a sentence; anything longer (or a 5xx) gets a generic message.
    let text = match axum::body::to_bytes(body, 1024).await {
        Ok(b) if !status.is_server_error() && !b.is_empty() => String::from_utf8_lossy(&b).trim().to_owned(),
        _ if status.is_server_error() => "an internal error occurred; it has been logged".to_owned(),
        _ => status.canonical_reason().unwrap_or("the request could not be processed").to_owned(),
    };
    let res = Response::from_parts(parts, ());
    let mut out = ApiError::new(status, code, text).into_response();
    for name in [axum::http::header::RETRY_AFTER, axum::http::header::WWW_AUTHENTICATE, axum::http::header::ALLOW] {
        if let Some(v) = res.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}
