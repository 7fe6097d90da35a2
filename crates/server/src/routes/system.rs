//! Liveness, readiness, metrics and the OpenAPI document.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (healthz) or `ready` (readyz).
    pub status: &'static str,
    /// readyz: this node, the cluster's live members and the tenants it matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub cluster: Option<serde_json::Value>,
    /// readyz: every supervised background worker's health, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<std::collections::BTreeMap<&'static str, crate::supervisor::WorkerHealth>>,
}

#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", cluster: None, workers: None })
}

#[utoipa::path(get, path = "/readyz", tag = "system", responses((status = 200, description = "The database answers and every background worker runs", body = Health), (status = 503, description = "The database does not answer, or a worker stopped and is being restarted", body = crate::error::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.db.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::unavailable("the database is not reachable")
    })?;
    let down = state.workers.unhealthy();
    if !down.is_empty() {
        return Err(ApiError::unavailable(format!("background workers restarting: {}", down.join(", "))));
    }
    Ok(Json(Health {
        status: "ready",
        cluster: Some(state.cluster.summary()),
        workers: Some(state.workers.snapshot()),
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}
