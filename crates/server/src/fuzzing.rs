//! Entry points for the fuzz targets (`fuzz/` at the repository root): the parsing the
//! HTTP and WebSocket edges do on untrusted input, without a server. Each must return
//! (an error is fine) and never panic, whatever the bytes.

use crate::routes::{catalog, console, driver, driver_app, events, geocode, ops, orders};
use lastmile_core::TenantId;

/// One text frame up a driver's socket, and the plausibility check a location gets.
pub fn driver_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(driver::DriverMessage::Location(fix)) = driver::decode_upstream(text) {
        let _ = crate::gps::plausible(&fix, lastmile_storage::now_ms());
    }
}

/// A query string, as every route's query type reads it and then checks it.
pub fn query_string(data: &[u8]) {
    if let Ok(q) = serde_urlencoded::from_bytes::<orders::ListQuery>(data) {
        let _ = q.filter();
    }
    if let Ok(q) = serde_urlencoded::from_bytes::<catalog::PlaceParams>(data) {
        let mut errors = Vec::new();
        let _ = q.place(&TenantId("ten_fuzz".into()), &mut errors);
        let _ = q.limit(&mut errors);
    }
    if let Ok(q) = serde_urlencoded::from_bytes::<ops::DeadLetterQuery>(data) {
        let _ = q.filter();
    }
    if let Ok(q) = serde_urlencoded::from_bytes::<console::WindowQuery>(data) {
        let _ = q.since();
    }
    let _ = serde_urlencoded::from_bytes::<driver::AfterQuery>(data);
    let _ = serde_urlencoded::from_bytes::<events::EventsQuery>(data);
    let _ = serde_urlencoded::from_bytes::<geocode::GeocodeQuery>(data);
    let _ = serde_urlencoded::from_bytes::<Vec<(String, String)>>(data);
    let _ = console::normalize_login_code(&String::from_utf8_lossy(data));
    let _ = serde_json::from_slice::<driver_app::LoginInput>(data);
}

/// A `POST /v1/orders` body through the native and catalog readers.
pub fn order_body(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let _ = catalog::is_catalog_order(&value);
    let _ = orders::parse_native(&value);
}
