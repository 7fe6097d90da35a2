//! The hub's knobs, with defaults from DESIGN.md and the platforms' published limits.

use crate::breaker::BreakerConfig;
use crate::ratelimit::Bucket;
use crate::Tier;
use lastmile_core::Platform;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorConfig {
    /// Budget for one whole operation (check and act, all its HTTP calls) for a standard store.
    pub timeout_standard: Duration,
    /// The same for enterprise stores, whose APIs are allowed to be slower.
    pub timeout_enterprise: Duration,
    /// A call that succeeds but takes longer than this counts as a breaker failure.
    pub slow_call_standard: Option<Duration>,
    pub slow_call_enterprise: Option<Duration>,
    /// TCP connect timeout of the shared HTTP client.
    pub connect_timeout: Duration,
    /// Calls in flight to one store at once (the bulkhead).
    pub max_concurrency_per_store: usize,
    /// How long a call waits for a bulkhead slot before it is deferred.
    pub bulkhead_wait: Duration,
    /// Per (platform, store).
    pub breaker: BreakerConfig,
    /// Per hosted platform (Shopify, BigCommerce) across all its stores; `None` turns it off.
    /// Never applied to WooCommerce, where every store is its own self-hosted site.
    pub platform_breaker: Option<BreakerConfig>,
    pub rate: PlatformRates,
    /// Shopify `notifyCustomer` on the fulfilment (Shopify's own default is false).
    pub shopify_notify_customer: bool,
    pub user_agent: String,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        ConnectorConfig {
            timeout_standard: Duration::from_secs(15),
            timeout_enterprise: Duration::from_secs(45),
            slow_call_standard: Some(Duration::from_secs(10)),
            slow_call_enterprise: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(5),
            max_concurrency_per_store: 4,
            bulkhead_wait: Duration::from_secs(5),
            breaker: BreakerConfig::default(),
            platform_breaker: Some(BreakerConfig::platform_default()),
            rate: PlatformRates::default(),
            shopify_notify_customer: false,
            user_agent: format!("lastmile/{} (sync-back)", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl ConnectorConfig {
    pub fn timeout(&self, tier: Tier) -> Duration {
        match tier {
            Tier::Standard => self.timeout_standard,
            Tier::Enterprise => self.timeout_enterprise,
        }
    }

    pub fn slow_call(&self, tier: Tier) -> Option<Duration> {
        match tier {
            Tier::Standard => self.slow_call_standard,
            Tier::Enterprise => self.slow_call_enterprise,
        }
    }
}

/// Client-side request budgets per store, by platform and tier. Each sync charges its HTTP
/// calls up front (2 or 3), so a bucket's burst is a number of requests.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformRates {
    pub shopify_standard: Bucket,
    pub shopify_enterprise: Bucket,
    pub bigcommerce_standard: Bucket,
    pub bigcommerce_enterprise: Bucket,
    /// WooCommerce documents no limit (the host or WAF sets one); this is our politeness.
    pub woocommerce: Bucket,
    /// The longest a call waits for tokens before it is deferred instead.
    pub max_wait: Duration,
}

impl Default for PlatformRates {
    fn default() -> Self {
        PlatformRates {
            // Shopify: 2 req/s with a 40-request bucket (standard), 20 req/s and 400 on Plus.
            // GraphQL is cost-based (100 points/s standard); our operations cost well under
            // 50 points, so the REST request budget is the tighter one.
            shopify_standard: Bucket::new(2.0, 40),
            shopify_enterprise: Bucket::new(20.0, 400),
            // BigCommerce: 150 requests per 30 s (standard/plus), 450 per 30 s (pro); the quota
            // is per store and shared by every app, so take a third of the window as burst.
            bigcommerce_standard: Bucket::new(5.0, 50),
            bigcommerce_enterprise: Bucket::new(15.0, 150),
            woocommerce: Bucket::new(10.0, 10),
            max_wait: Duration::from_secs(5),
        }
    }
}

impl PlatformRates {
    pub fn bucket(&self, platform: Platform, tier: Tier) -> Bucket {
        match (platform, tier) {
            (Platform::Shopify, Tier::Standard) => self.shopify_standard,
            (Platform::Shopify, Tier::Enterprise) => self.shopify_enterprise,
            (Platform::Bigcommerce, Tier::Standard) => self.bigcommerce_standard,
            (Platform::Bigcommerce, Tier::Enterprise) => self.bigcommerce_enterprise,
            (Platform::Woocommerce | Platform::Native, _) => self.woocommerce,
        }
    }
}
