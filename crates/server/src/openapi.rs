//! The OpenAPI document, generated from the handlers' annotations.

use crate::routes::*;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr};
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
        catalog::put_menu, catalog::patch_item, catalog::list_stores, catalog::get_menu, catalog::search, catalog::order_payments, catalog::learned_etas,
        geocode::geocode,
        webhook_endpoints::create, webhook_endpoints::list, webhook_endpoints::read, webhook_endpoints::update, webhook_endpoints::remove, webhook_endpoints::rotate_secret, webhook_endpoints::deliveries,
        keys::create_admin_key, keys::list_admin_keys, keys::revoke_admin_key, keys::audit_log,
    ),
    components(schemas(crate::error::ErrorBody, webhook_endpoints::EndpointInput, webhook_endpoints::EndpointPatchInput, keys::AdminKeyInput)),
    modifiers(&Security, &ErrorResponses)
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

/// Every error answer is an [`ErrorBody`]. Handlers' annotations name the statuses only
/// they produce (404, 409, 503, …) and this fills those responses with the shared schema;
/// the statuses that come from the shared extractors and edge middleware are added here,
/// from what each operation takes, so no annotation can forget them:
/// - every operation: `400` (NUL in the URL → `invalid_text`, malformed path or query);
/// - authenticated ones: `401` (missing or invalid credentials) and `429` (per-credential
///   rate limit); with `admin_key`, `403` (a console session's role or CSRF check);
/// - with a body (any non-GET): `413` (over the body limit, read before any handler);
/// - with a JSON body: `415` (not `application/json`) and `422` (JSON of the wrong shape).
struct ErrorResponses;

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))))
        .build()
}

impl Modify for ErrorResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            let ops = [
                (false, &mut item.get),
                (true, &mut item.put),
                (true, &mut item.post),
                (true, &mut item.delete),
                (true, &mut item.patch),
            ];
            for (has_body, op) in ops {
                let Some(op) = op.as_mut() else { continue };
                let security: Vec<serde_json::Value> = op
                    .security
                    .iter()
                    .flatten()
                    .map(|s| serde_json::to_value(s).unwrap_or_default())
                    .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
                    .collect();
                let json_body = op.request_body.as_ref().is_some_and(|b| b.content.contains_key("application/json"));
                let mut add = vec![(400, "Invalid request: malformed path, query or body, or NUL in text")];
                if !security.is_empty() {
                    add.push((401, "Missing or invalid credentials"));
                    add.push((429, "Rate limited; see Retry-After"));
                }
                if security.iter().any(|s| s.get("admin_key").is_some()) {
                    add.push((403, "The console session's role may not do this, or its CSRF token is missing"));
                }
                if has_body {
                    add.push((413, "The body is over the size limit"));
                }
                if json_body {
                    add.push((415, "The body is not application/json"));
                    add.push((422, "The body does not have the documented shape"));
                }
                let responses = &mut op.responses.responses;
                for (status, description) in add {
                    responses.entry(status.to_string()).or_insert_with(|| error_response(description).into());
                }
                for (status, response) in responses.iter_mut() {
                    let is_error = status.starts_with('4') || status.starts_with('5');
                    if let RefOr::T(r) = response {
                        if is_error && r.content.is_empty() {
                            *r = error_response(&r.description);
                        }
                    }
                }
            }
        }
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Statuses that carry no body by definition.
    const BODYLESS: [&str; 3] = ["101", "204", "304"];

    fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let path = r.trim_start_matches("#/").split('/').fold(doc, |at, k| &at[k]);
                resolve(doc, path)
            }
            None => v,
        }
    }

    /// A schema that says nothing beyond "some JSON object" (or nothing at all).
    fn is_bare(doc: &Value, schema: &Value) -> bool {
        let s = resolve(doc, schema);
        let Some(o) = s.as_object() else { return true };
        let structured = ["properties", "items", "oneOf", "anyOf", "allOf", "additionalProperties", "enum"];
        if structured.iter().any(|k| o.contains_key(*k)) {
            return false;
        }
        match o.get("type") {
            None => true,
            Some(Value::String(t)) => t == "object",
            Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
            Some(_) => true,
        }
    }

    #[test]
    fn every_operation_documents_typed_bodies_for_every_status() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let mut problems = Vec::new();
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                operations += 1;
                let at = format!("{} {path}", method.to_uppercase());
                let responses = op["responses"].as_object().unwrap();
                if !responses.keys().any(|s| s.starts_with('2') || s == "101") {
                    problems.push(format!("{at}: no success response"));
                }
                for (status, r) in responses {
                    let r = resolve(&doc, r);
                    if BODYLESS.contains(&status.as_str()) {
                        continue;
                    }
                    let content = r["content"].as_object().filter(|c| !c.is_empty());
                    let Some(content) = content else {
                        problems.push(format!("{at} {status}: no response schema"));
                        continue;
                    };
                    for (mime, c) in content {
                        let Some(schema) = c.get("schema") else {
                            problems.push(format!("{at} {status} {mime}: no schema"));
                            continue;
                        };
                        if mime.contains("json") && mime != "application/geo+json" && is_bare(&doc, schema) {
                            problems.push(format!("{at} {status}: bare object schema"));
                        }
                    }
                    if status.starts_with('4') || status.starts_with('5') {
                        let schema = &content.get("application/json").map(|c| &c["schema"]);
                        let names_error_body = schema.is_some_and(|s| {
                            let text = s.to_string();
                            text.contains("#/components/schemas/ErrorBody")
                                || text.contains("#/components/schemas/OAuthError")
                                || text.contains("#/components/schemas/TokenError")
                        });
                        if !names_error_body {
                            problems.push(format!("{at} {status}: error without the ErrorBody schema"));
                        }
                    }
                }
                if let Some(body) = op.get("requestBody") {
                    for (mime, c) in body["content"].as_object().unwrap() {
                        match c.get("schema") {
                            None => problems.push(format!("{at}: request {mime} has no schema")),
                            Some(s)
                                if mime == "application/json"
                                    && s.as_object().is_some_and(|o| o.get("type").is_some_and(|t| t == "object"))
                                    && is_bare(&doc, s) =>
                            {
                                problems.push(format!("{at}: request body is a bare object"))
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
        }
        assert!(operations > 50, "the document lists {operations} operations");
        assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    }

    #[test]
    fn error_body_schema_matches_what_errors_serialize() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let schema = &doc["components"]["schemas"]["ErrorDetail"];
        let required: Vec<&str> = schema["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(required, ["code", "message"]);
        let e = crate::error::ApiError::validation(vec![("name".into(), "must not be empty".into())]);
        let body = serde_json::to_value(e.body()).unwrap();
        assert_eq!(body["error"]["code"], "validation_failed");
        assert_eq!(body["error"]["details"]["fields"]["name"], "must not be empty");
        for key in body["error"].as_object().unwrap().keys() {
            assert!(schema["properties"].get(key).is_some(), "{key} is in the schema");
        }
    }
}
