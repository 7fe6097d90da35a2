//! `GET /v1/geocode?q=` (admin key): what the configured geocoder makes of an address,
//! so ops can check one before locating an order by hand.

use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult, Json, Query};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longer queries are not addresses.
pub const MAX_QUERY_CHARS: usize = 300;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/geocode", get(geocode))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GeocodeResult {
    pub lat: f64,
    pub lng: f64,
    /// 0 to 1.
    pub confidence: f64,
    /// The address as the map knows it.
    pub matched: String,
    /// `index` (the built-in extract) or `service` (the remote one).
    pub source: &'static str,
    /// Whether the confidence reaches `geocoding.min_confidence`.
    pub usable: bool,
}

#[derive(Debug, Deserialize)]
pub struct GeocodeQuery {
    q: Option<String>,
}

#[utoipa::path(get, path = "/v1/geocode", tag = "admin", params(("q" = String, Query, description = "An address as people write it")),
    responses((status = 200, description = "The best match", body = GeocodeResult), (status = 400, description = "Empty or oversized q"),
              (status = 404, description = "address_not_found"), (status = 503, description = "No geocoder configured, or the service is down")),
    security(("admin_key" = [])))]
pub async fn geocode(
    State(state): State<AppState>,
    _auth: AdminAuth,
    Query(p): Query<GeocodeQuery>,
) -> ApiResult<Json<GeocodeResult>> {
    let q = p.q.as_deref().map(str::trim).unwrap_or_default();
    if q.is_empty() {
        return Err(ApiError::bad_request("invalid_query", "q must be a non-empty address"));
    }
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request("invalid_query", format!("q must be at most {MAX_QUERY_CHARS} characters")));
    }
    if !state.geocoder.is_configured() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "geocoding_not_configured",
            "set geocoding.osm_pbf or geocoding.url to geocode addresses",
        ));
    }
    let found =
        state.geocoder.geocode(q).await.map_err(|e| ApiError::unavailable(format!("geocoding is unavailable: {e}")))?;
    let m = found
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "address_not_found", "no place matches this address"))?;
    let usable = m.confidence >= state.geocoder.min_confidence;
    Ok(Json(GeocodeResult {
        lat: m.lat,
        lng: m.lng,
        confidence: m.confidence,
        matched: m.matched,
        source: m.source,
        usable,
    }))
}
