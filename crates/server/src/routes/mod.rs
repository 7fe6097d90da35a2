//! HTTP routes, one module per feature, each exporting `router()`.

pub mod admin;
pub mod catalog;
pub mod console;
pub mod driver;
pub mod driver_app;
pub mod events;
pub mod geocode;
pub mod keys;
pub mod map;
pub mod oauth;
pub mod ops;
pub mod order_ops;
pub mod orders;
pub mod system;
pub mod track;
pub mod track_choice;
pub mod webhook_endpoints;
pub mod webhooks;
