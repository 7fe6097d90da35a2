//! The catalog in this node's memory: the search snapshot (rebuilt at start from the
//! database, replaced at once when a menu changes here, and within seconds when one
//! changes on another node) and the rendered-menu cache.
//!
//! A cached menu is keyed by the menu's version in the database and the clock hour
//! (made-to-order capacity renews hourly). Every menu or stock change bumps that version —
//! including cancellations on any path and on any node — so a read costs one primary-key
//! look-up and serves stale bytes never.

use bytes::Bytes;
use lastmile_catalog::{CatalogSnapshot, CatalogStore};
use lastmile_core::{StoreId, TenantId};
use lastmile_storage::Db;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a node checks whether another node changed a menu.
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// A rendered menu and what it was rendered from.
#[derive(Clone)]
pub struct CachedMenu {
    pub version: i64,
    pub hour: i64,
    pub etag: String,
    pub body: Bytes,
}

#[derive(Clone, Default)]
pub struct Catalog {
    /// Readers clone the Arc and let go at once; std RwLock because nothing awaits inside.
    snapshot: Arc<RwLock<Arc<CatalogSnapshot>>>,
    /// Serialises snapshot rebuilds so two menu changes cannot drop each other's store.
    rebuild: Arc<Mutex<()>>,
    menus: Arc<Mutex<HashMap<(TenantId, StoreId), CachedMenu>>>,
}

impl Catalog {
    /// Build the search snapshot from every menu in the database.
    pub async fn load(&self, db: &Db) -> anyhow::Result<()> {
        let stores = db.catalog_stores().await?;
        let snap = CatalogSnapshot::build(stores.into_iter().map(Arc::new));
        tracing::info!(dishes = snap.dish_count(), "catalog index built");
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snap);
        Ok(())
    }

    /// Follow menu changes made by other nodes: re-index whenever the database's menus
    /// signature moves. Changes made here are indexed at once; this catches the rest.
    pub async fn run_refresher(self, db: Db, shutdown: CancellationToken) {
        let mut seen = db.menus_signature().await.ok();
        let mut every = tokio::time::interval(REFRESH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            match db.menus_signature().await {
                Ok(now) if Some(now) != seen => match self.load(&db).await {
                    Ok(()) => seen = Some(now),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "catalog re-index failed"),
                },
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading the menus signature failed"),
            }
        }
    }

    pub fn snapshot(&self) -> Arc<CatalogSnapshot> {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A store's menu changed here: re-index it and forget its rendered menu.
    pub fn store_changed(&self, tenant: &TenantId, store: CatalogStore) {
        let _one_at_a_time = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.clone(), StoreId(store.id.clone()));
        let next = self.snapshot().with_store(&store.id.clone(), Some(store));
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.menus.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }

    pub fn cached_menu(&self, tenant: &TenantId, store: &StoreId) -> Option<CachedMenu> {
        self.menus.lock().unwrap_or_else(|p| p.into_inner()).get(&(tenant.clone(), store.clone())).cloned()
    }

    pub fn cache_menu(&self, tenant: &TenantId, store: &StoreId, menu: CachedMenu) {
        self.menus.lock().unwrap_or_else(|p| p.into_inner()).insert((tenant.clone(), store.clone()), menu);
    }
}
