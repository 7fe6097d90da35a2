//! The OpenAPI document, generated from the handlers' annotations.

use crate::routes::*;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Lastmile", description = "Delivery backend: order intake, dispatch, driver real-time, tracking and sync-back. Errors are {\"error\": {\"code\", \"message\", \"details\"}}."),
    paths(
        system::healthz, system::readyz, system::metrics,
        oauth::token,
        admin::create_store, admin::list_stores, admin::get_store, admin::patch_store, admin::delete_store,
        admin::create_driver, admin::list_drivers, admin::revoke_driver, admin::create_api_client,
        orders::create_order, orders::get_order, orders::list_orders, orders::patch_order, orders::cancel_order, orders::unstall_order,
        webhooks::platform_webhook, webhooks::import_orders,
        driver::set_status, driver::post_location, driver::accept_offer, driver::decline_offer,
        driver::pickup, driver::deliver, driver::fail, driver::poll, driver::sse, driver::ws,
        track::track, track::track_events,
        ops::integrations, ops::list_dead_letters, ops::replay_one, ops::bulk_replay,
        console::login, console::logout, console::current_session, console::create_user_route, console::list_users, console::disable_user, console::driver_login_code, console::photo, console::order_photos, console::customer_choices, console::stats, events::events, map::config, map::roads, driver_app::login, driver_app::me, driver_app::upload_photo, track_choice::cancel, track_choice::keep_waiting,
        order_ops::assign, order_ops::unassign, order_ops::events,
        catalog::put_menu, catalog::patch_item, catalog::list_stores, catalog::get_menu, catalog::search, catalog::order_payments,
        geocode::geocode,
        webhook_endpoints::create, webhook_endpoints::list, webhook_endpoints::read, webhook_endpoints::update, webhook_endpoints::remove, webhook_endpoints::rotate_secret, webhook_endpoints::deliveries,
        keys::create_admin_key, keys::list_admin_keys, keys::revoke_admin_key, keys::audit_log,
    ),
    components(schemas(admin::StoreInput, admin::StorePatchInput, admin::PickupInput, admin::ApiInput, admin::CustomHeader, admin::DriverInput, admin::ApiClientInput, webhook_endpoints::EndpointInput, webhook_endpoints::EndpointPatchInput, keys::AdminKeyInput)),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme("admin_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        c.add_security_scheme("client_jwt", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        c.add_security_scheme("driver_token", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
