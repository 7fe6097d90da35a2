//! HTTP routes, one module per feature, each exporting `router()`.

pub mod admin;
pub mod driver;
pub mod geocode;
pub mod oauth;
pub mod ops;
pub mod orders;
pub mod system;
pub mod track;
pub mod webhooks;
