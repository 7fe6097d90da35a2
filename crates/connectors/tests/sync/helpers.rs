use lastmile_connectors::{
    ConnectorConfig, ConnectorHub, Credentials, IntegrationHealth, StoreTarget, SyncAction, SyncRequest, Tier,
};
use lastmile_core::Platform;
use lastmile_standins::{StandIn, ACCESS_TOKEN, CONSUMER_KEY, CONSUMER_SECRET};
use std::time::Duration;

/// Defaults, with timeouts short enough that a failing test fails fast.
pub fn config() -> ConnectorConfig {
    ConnectorConfig {
        timeout_standard: Duration::from_secs(5),
        timeout_enterprise: Duration::from_secs(10),
        ..ConnectorConfig::default()
    }
}

pub fn hub() -> ConnectorHub {
    ConnectorHub::new(config())
}

/// A target whose credentials the stand-in accepts.
pub fn target(standin: &StandIn, store_key: &str) -> StoreTarget {
    let credentials = match standin.platform() {
        Platform::Woocommerce => {
            Credentials::ConsumerKey { key: CONSUMER_KEY.to_owned(), secret: CONSUMER_SECRET.to_owned() }
        }
        _ => Credentials::AccessToken(ACCESS_TOKEN.to_owned()),
    };
    StoreTarget {
        platform: standin.platform(),
        store_key: store_key.to_owned(),
        base_url: standin.base_url(),
        credentials,
        tier: Tier::Standard,
    }
}

pub fn request(standin: &StandIn, store_key: &str, order_id: &str, action: SyncAction) -> SyncRequest {
    SyncRequest {
        target: target(standin, store_key),
        platform_order_id: order_id.to_owned(),
        idempotency_key: format!("sync:{order_id}:{:?}", action.kind()),
        action,
        tracking_url: Some(format!("https://lastmile.example/t/{order_id}")),
        tracking_number: Some(format!("LM-{order_id}")),
    }
}

pub fn health(hub: &ConnectorHub, platform: Platform, store_key: &str) -> IntegrationHealth {
    hub.snapshot()
        .into_iter()
        .find(|h| h.platform == platform && h.store_key == store_key)
        .unwrap_or_else(|| panic!("no health entry for {platform}/{store_key}"))
}
