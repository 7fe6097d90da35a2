//! The application state: cheap handles shared by every handler and worker.

use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::Keys;
use crate::dispatcher::LiveFleet;
use crate::limits::Limits;
use crate::realtime::Hub;
use lastmile_bus::EventBus;
use lastmile_connectors::ConnectorHub;
use lastmile_storage::Db;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub cfg: Arc<Config>,
    pub keys: Arc<Keys>,
    pub bus: Arc<dyn EventBus>,
    pub hub: Hub,
    pub fleet: LiveFleet,
    /// Offer deadlines and dispatch timing follow this clock (tokio's, so tests can pause it).
    pub clock: Clock,
    pub limits: Arc<Limits>,
    pub connectors: ConnectorHub,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub web: crate::web::WebState,
    /// The menu search index and rendered-menu cache (rebuilt at start from the database).
    pub catalog: crate::catalog::Catalog,
    /// The address index and/or remote geocoding service (see `geocoder`).
    pub geocoder: Arc<crate::geocoder::Geocoder>,
    /// Learned prep and travel times and the road graph: every ETA asks it (see `eta`).
    pub etas: crate::eta::Etas,
    /// This node's place in a cluster: membership, fleet sharing, dispatch leases.
    pub cluster: crate::cluster::Cluster,
    /// The supervised background workers' health (see `supervisor`), shown by `/readyz`.
    pub workers: crate::supervisor::Workers,
    /// Whether the database is reachable, and the intake spool for when it is not.
    pub outage: crate::spool::Outage,
    /// Webhook stores with their decrypted secrets (see `routes::webhooks::WebhookStores`).
    pub webhook_stores: crate::routes::webhooks::WebhookStores,
}
