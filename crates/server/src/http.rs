//! The router and the edge middleware: request ids, tracing spans, metrics labelled by
//! route pattern, the body limit, and JSON answers for unknown routes and methods.

use crate::error::ApiError;
use crate::routes;
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
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
        .merge(routes::track::router())
        .merge(routes::ops::router())
        .merge(routes::geocode::router())
        .merge(bench_baseline_router(state.cfg.bench_baseline_routes))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
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
