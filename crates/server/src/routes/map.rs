//! Map data for the web apps: `GET /v1/map/config` (tile URL or none, attribution, where to
//! open) and `GET /v1/map/roads`, the configured OpenStreetMap extract's streets as GeoJSON,
//! so maps work with no tile server and no internet. Both are public: they describe the
//! city, not a tenant, and the customer's tracking page has no credentials.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/map/config", get(config)).route("/v1/map/roads", get(roads))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MapConfig {
    /// A tile URL template; null draws streets from `/v1/map/roads` only.
    pub tile_url: Option<String>,
    pub attribution: String,
    /// `[lat, lng]`.
    pub center: [f64; 2],
    /// Whether `/v1/map/roads` has a street map to serve.
    pub roads: bool,
}

#[utoipa::path(get, path = "/v1/map/config", tag = "map", responses((status = 200, description = "How the console draws its map", body = MapConfig)))]
pub async fn config(State(state): State<AppState>) -> Json<MapConfig> {
    let w = &state.cfg.web;
    Json(MapConfig {
        tile_url: w.tile_url.clone(),
        attribution: w.tile_attribution.clone(),
        center: w.map_center,
        roads: w.osm_pbf.is_some(),
    })
}

/// Built streets by extract path, with their ETag. A std Mutex: held only to look up or
/// insert, never across the (blocking, off-runtime) build.
type RoadsCache = Mutex<HashMap<PathBuf, (Bytes, String)>>;

fn cache() -> &'static RoadsCache {
    static C: OnceLock<RoadsCache> = OnceLock::new();
    C.get_or_init(Default::default)
}

async fn roads_for(path: PathBuf) -> ApiResult<(Bytes, String)> {
    if let Some(hit) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&path) {
        return Ok(hit.clone());
    }
    let p = path.clone();
    let built = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
        let pbf = std::fs::read(&p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
        lastmile_web::roads::roads_geojson(&pbf)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    use sha2::Digest;
    let etag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(&built)[..8]));
    let entry = (Bytes::from(built), etag);
    cache().lock().unwrap_or_else(|p| p.into_inner()).insert(path, entry.clone());
    Ok(entry)
}

#[utoipa::path(get, path = "/v1/map/roads", tag = "map",
    responses((status = 200, description = "GeoJSON FeatureCollection: MultiLineString features `major` and `minor`, with `bbox`", content_type = "application/geo+json", body = Object),
              (status = 304, description = "Unchanged since If-None-Match"), (status = 404, description = "map_unavailable: no web.osm_pbf configured")))]
pub async fn roads(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let Some(path) = state.cfg.web.osm_pbf.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "map_unavailable",
            "no street map is configured (web.osm_pbf)",
        ));
    };
    let (body, etag) = roads_for(path).await?;
    let mut res = if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/geo+json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    h.insert(header::ETAG, HeaderValue::from_str(&etag).map_err(ApiError::internal)?);
    Ok(res)
}
