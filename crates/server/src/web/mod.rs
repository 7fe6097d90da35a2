//! The web apps' edge: the pages (`/console/`, `/track/{token}`, `/driver/`) and the
//! embedded files under `/assets/`, with their content types and cache rules, plus the
//! console's session cookies. The files themselves live in `lastmile-web`; the pages speak
//! only the public API.

pub mod session;

use crate::state::AppState;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The web apps' share of the application state.
#[derive(Clone)]
pub struct WebState {
    /// Sign-in attempts per name (email, "admin key", or a driver code's source address):
    /// 10 at once, then one every 6 s, so guessing passwords or codes stays slow whatever
    /// the general rate limits allow.
    pub sign_in: std::sync::Arc<governor::DefaultKeyedRateLimiter<String>>,
}

impl Default for WebState {
    fn default() -> Self {
        let ten = std::num::NonZeroU32::new(10).expect("nonzero");
        let quota = governor::Quota::per_minute(ten).allow_burst(ten);
        Self { sign_in: std::sync::Arc::new(governor::RateLimiter::keyed(quota)) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// A slippy-map tile URL template (`https://tile.openstreetmap.org/{z}/{x}/{y}.png` or a
    /// paid provider's). Unset: maps draw the streets of `osm_pbf` and need no internet.
    pub tile_url: Option<String>,
    /// Shown in the map's corner; required by most tile providers.
    pub tile_attribution: String,
    /// The OpenStreetMap extract whose streets `GET /v1/map/roads` serves.
    pub osm_pbf: Option<PathBuf>,
    /// Where maps open before they have anything to show: `[lat, lng]`.
    pub map_center: [f64; 2],
    /// How long a console sign-in lasts.
    pub session_ttl_s: u64,
    /// Send the console's cookies with `Secure` (serve over HTTPS when set).
    pub secure_cookies: bool,
    /// How long a driver app sign-in code works.
    pub login_code_ttl_s: u64,
    /// Largest proof-of-delivery photo accepted, in bytes.
    pub photo_max_bytes: usize,
    /// The console's on-time figure counts deliveries within this long of readiness.
    pub on_time_s: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            tile_url: None,
            tile_attribution: "© OpenStreetMap contributors".into(),
            osm_pbf: None,
            map_center: [60.1699, 24.9384],
            session_ttl_s: 12 * 3600,
            secure_cookies: false,
            login_code_ttl_s: 600,
            photo_max_bytes: 2 * 1024 * 1024,
            on_time_s: 45 * 60,
        }
    }
}

impl WebConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.tile_url {
            if !(t.starts_with("https://") || t.starts_with("http://")) || !t.contains("{z}") {
                return Err("web.tile_url must be an http(s) URL template with {z}, {x} and {y}".into());
            }
        }
        if self.session_ttl_s < 60 || self.login_code_ttl_s < 30 {
            return Err("web.session_ttl_s must be at least 60 and web.login_code_ttl_s at least 30".into());
        }
        if self.photo_max_bytes < 1024 {
            return Err("web.photo_max_bytes must be at least 1024".into());
        }
        Ok(())
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|h: HeaderMap| async move { page("console/index.html", &h) }))
        .route("/track/{token}", get(|h: HeaderMap| async move { page("track/index.html", &h) }))
        .route("/driver", get(|| async { Redirect::permanent("/driver/") }))
        .route("/driver/", get(|h: HeaderMap| async move { page("driver/index.html", &h) }))
        // The service worker and manifest sit in /driver/ so the worker's scope is the app.
        .route("/driver/sw.js", get(|h: HeaderMap| async move { page("driver/sw.js", &h) }))
        .route(
            "/driver/manifest.webmanifest",
            get(|h: HeaderMap| async move { page("driver/manifest.webmanifest", &h) }),
        )
        .route("/assets/{*path}", get(asset))
}

/// Pages are revalidated on every load (`no-cache` + ETag), so a new binary shows at once.
fn page(path: &str, headers: &HeaderMap) -> Response {
    serve(path, headers, "no-cache")
}

/// Other files may be reused for an hour without asking; their ETag answers after that.
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers, "public, max-age=3600")
}

fn serve(path: &str, headers: &HeaderMap, cache: &'static str) -> Response {
    let Some(a) = lastmile_web::asset(path) else {
        return crate::error::ApiError::not_found("file").into_response();
    };
    let etag = a.etag();
    let mut res = if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        a.bytes.into_response()
    };
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::ETAG, HeaderValue::from_static(etag));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if a.content_type().starts_with("text/html") {
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        // Maps may load tiles from the configured provider, hence any https image.
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data: blob: https:; connect-src 'self'; \
                 style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
    }
    if path == "driver/sw.js" {
        h.insert("service-worker-allowed", HeaderValue::from_static("/driver/"));
    }
    res
}
