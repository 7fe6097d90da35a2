//! The catalog in this node's memory: the search snapshot (rebuilt at start from the
//! database, replaced at once when a menu changes here, and within seconds when one
//! changes on another node) and the rendered-menu cache.
//!
//! A rendered menu is served from memory without touching the database. Every menu or
//! stock change — a put, a patch, stock an order takes or gives back, on any path and on
//! any node — bumps the menu's version and writes a `menu_changed` event in the same
//! transaction; the bus brings it to every node, which drops its older copy. Changes made
//! through this node's own routes drop the copy at once. As a safety net for an event this
//! node missed (a restarting listener), a copy older than [`REVALIDATE_AFTER`] is checked
//! against the database's version (one primary-key read per menu per interval, not per
//! request). Made-to-order capacity renews hourly, so a copy also belongs to its clock hour.

use bytes::Bytes;
use lastmile_catalog::{CatalogSnapshot, CatalogStore};
use lastmile_core::{StoreId, TenantId};
use lastmile_storage::Db;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often a node checks whether another node changed a menu.
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// How long a rendered menu is served before its version is checked against the database
/// (only matters if a `menu_changed` event was missed).
pub const REVALIDATE_AFTER: Duration = Duration::from_secs(2);

fn default_revalidate_ms() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(REVALIDATE_AFTER.as_millis() as u64))
}

/// A rendered menu and what it was rendered from.
#[derive(Clone)]
pub struct CachedMenu {
    pub version: i64,
    pub hour: i64,
    pub etag: String,
    pub body: Bytes,
}

/// What this node knows of one store's menu.
#[derive(Default)]
struct MenuSlot {
    /// The rendered menu and when its version was last known to be current.
    menu: Option<(CachedMenu, Instant)>,
    /// The newest version a `menu_changed` event announced.
    announced: i64,
}

/// A cached menu, as [`Catalog::cached_menu`] finds it.
pub enum Cached {
    /// Current: serve it.
    Fresh(CachedMenu),
    /// Not checked for [`REVALIDATE_AFTER`]: serve it if the database's version matches.
    Unchecked(CachedMenu),
    /// Nothing usable: render the menu.
    Missing,
}

#[derive(Clone)]
pub struct Catalog {
    /// Readers clone the Arc and let go at once; std RwLock because nothing awaits inside.
    snapshot: Arc<RwLock<Arc<CatalogSnapshot>>>,
    /// Serialises snapshot rebuilds so two menu changes cannot drop each other's store.
    rebuild: Arc<Mutex<()>>,
    menus: Arc<Mutex<HashMap<(TenantId, StoreId), MenuSlot>>>,
    /// [`REVALIDATE_AFTER`], in milliseconds (tests lengthen it to see the events alone).
    revalidate_ms: Arc<AtomicU64>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            snapshot: Default::default(),
            rebuild: Default::default(),
            menus: Default::default(),
            revalidate_ms: default_revalidate_ms(),
        }
    }
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
        if let Some(slot) = self.menus().get_mut(&key) {
            slot.menu = None;
        }
    }

    fn menus(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, StoreId), MenuSlot>> {
        self.menus.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rendered menu of `store` for clock hour `hour`, if this node has one.
    pub fn cached_menu(&self, tenant: &TenantId, store: &StoreId, hour: i64) -> Cached {
        let menus = self.menus();
        match menus.get(&(tenant.clone(), store.clone())) {
            Some(MenuSlot { menu: Some((m, checked)), announced }) if m.hour == hour && m.version >= *announced => {
                if checked.elapsed() < Duration::from_millis(self.revalidate_ms.load(Ordering::Relaxed)) {
                    Cached::Fresh(m.clone())
                } else {
                    Cached::Unchecked(m.clone())
                }
            }
            _ => Cached::Missing,
        }
    }

    /// How long a copy is served before its version is checked against the database.
    pub fn set_revalidate_after(&self, after: Duration) {
        self.revalidate_ms.store(after.as_millis().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Keep a rendered menu (unless an event already announced a newer version).
    pub fn cache_menu(&self, tenant: &TenantId, store: &StoreId, menu: CachedMenu) {
        let mut menus = self.menus();
        let slot = menus.entry((tenant.clone(), store.clone())).or_default();
        if menu.version >= slot.announced {
            slot.menu = Some((menu, Instant::now()));
        }
    }

    /// The database still holds `version` of this menu: serve the copy for another interval.
    pub fn menu_checked(&self, tenant: &TenantId, store: &StoreId, version: i64) {
        if let Some(MenuSlot { menu: Some((m, checked)), .. }) = self.menus().get_mut(&(tenant.clone(), store.clone()))
        {
            if m.version == version {
                *checked = Instant::now();
            }
        }
    }

    /// A `menu_changed` event (from any node): drop copies older than `version`.
    pub fn menu_changed(&self, tenant: &TenantId, store: &StoreId, version: i64) {
        let mut menus = self.menus();
        let slot = menus.entry((tenant.clone(), store.clone())).or_default();
        slot.announced = slot.announced.max(version);
        if slot.menu.as_ref().is_some_and(|(m, _)| m.version < version) {
            slot.menu = None;
        }
    }

    /// This node changed the store's menu or stock: drop its copy now, without waiting
    /// for the event.
    pub fn forget_menu(&self, tenant: &TenantId, store: &StoreId) {
        if let Some(slot) = self.menus().get_mut(&(tenant.clone(), store.clone())) {
            slot.menu = None;
        }
    }

    /// Events may have been missed (the bus listener fell behind): drop every copy.
    pub fn forget_all_menus(&self) {
        self.menus().values_mut().for_each(|slot| slot.menu = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn menu(version: i64, hour: i64) -> CachedMenu {
        CachedMenu { version, hour, etag: format!("\"{version}-{hour}\""), body: Bytes::from_static(b"{}") }
    }

    fn version_of(c: Cached) -> Option<(i64, bool)> {
        match c {
            Cached::Fresh(m) => Some((m.version, true)),
            Cached::Unchecked(m) => Some((m.version, false)),
            Cached::Missing => None,
        }
    }

    #[test]
    fn events_drop_older_copies_and_an_older_render_is_not_kept() {
        let c = Catalog::default();
        let (t, s) = (TenantId("ten_a".into()), StoreId("sto_a".into()));
        assert!(version_of(c.cached_menu(&t, &s, 7)).is_none());
        c.cache_menu(&t, &s, menu(3, 7));
        assert_eq!(version_of(c.cached_menu(&t, &s, 7)), Some((3, true)));
        // Another tenant, the next hour: nothing.
        assert!(version_of(c.cached_menu(&TenantId("ten_b".into()), &s, 7)).is_none());
        assert!(version_of(c.cached_menu(&t, &s, 8)).is_none());
        // An event for the version served keeps it; a newer one drops it.
        c.menu_changed(&t, &s, 3);
        assert_eq!(version_of(c.cached_menu(&t, &s, 7)), Some((3, true)));
        c.menu_changed(&t, &s, 5);
        assert!(version_of(c.cached_menu(&t, &s, 7)).is_none());
        // A render read before that event (version 4) is not kept; version 5 is.
        c.cache_menu(&t, &s, menu(4, 7));
        assert!(version_of(c.cached_menu(&t, &s, 7)).is_none());
        c.cache_menu(&t, &s, menu(5, 7));
        assert_eq!(version_of(c.cached_menu(&t, &s, 7)), Some((5, true)));
        // A late, older event changes nothing.
        c.menu_changed(&t, &s, 4);
        assert_eq!(version_of(c.cached_menu(&t, &s, 7)), Some((5, true)));
        // A copy past the revalidation interval is served only after a check.
        c.set_revalidate_after(Duration::ZERO);
        assert_eq!(version_of(c.cached_menu(&t, &s, 7)), Some((5, false)));
        c.forget_menu(&t, &s);
        assert!(version_of(c.cached_menu(&t, &s, 7)).is_none());
        c.cache_menu(&t, &s, menu(5, 7));
        c.forget_all_menus();
        assert!(version_of(c.cached_menu(&t, &s, 7)).is_none());
    }
}
