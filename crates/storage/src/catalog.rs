//! The restaurant catalog's storage: a store's menu, its dishes with live stock, and the
//! stock each order holds. Reservations are optimistic: a dish's row is read with its
//! version, and the UPDATE that takes stock checks that version in its WHERE clause; a
//! lost race rolls the attempt back and retries, with no table lock. Stock goes back when
//! the order is cancelled or fails (`release_stock_in`, called by the status change).
//! Every writer here locks a store's `store_menus` row (bumping the menu's version) before
//! any of its dishes, so two nodes never deadlock on them.

use crate::intake::{complete_idempotency_in, find_in, insert_order_in, IdempotencyRef, IntakeResult, IntakeSource};
use crate::orders::load_order_in;
use crate::{get, json_col, now_ms, Db, Result, StorageError, WriteConn};
use lastmile_catalog::{price_order, CatalogDish, CatalogStore, ItemPatch, Menu, MenuItem, PricedDish, Stock};
use lastmile_core::learned::{planned_prep_s, ready_in_s};
use lastmile_core::{EventKind, GeoPoint, NormalizedOrder, Order, StoreId, TenantId};
use sqlx::any::AnyRow;
use std::collections::HashMap;

/// The code a lost optimistic race carries inside [`StorageError::Conflict`].
const STOCK_RACE: &str = "menu_items_version";
/// Attempts at a catalog order before a persistent race is reported.
const RESERVE_ATTEMPTS: usize = 16;
const HOUR_MS: i64 = 3_600_000;

const ITEM_COLS: &str = "id, sku, category, position, name, description, aliases_json, tags_json, price_minor, \
    currency, prep_time_s, photo_url, available, stock_kind, quantity, per_hour, version";

/// One dish as stored, with its live stock.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    pub id: String,
    pub category: String,
    /// `stock` holds the live count (or the hourly capacity for made-to-order dishes).
    pub item: MenuItem,
    pub version: i64,
    /// Made-to-order dishes: how many the current clock hour's orders hold.
    pub reserved_this_hour: i64,
}

impl StoredItem {
    /// How many more can be ordered right now.
    pub fn orderable(&self) -> i64 {
        if !self.item.available {
            return 0;
        }
        match self.item.stock {
            Stock::Count { quantity } => quantity,
            Stock::MadeToOrder { per_hour } => (per_hour - self.reserved_this_hour).max(0),
        }
    }
}

/// A store's menu as shoppers see it, dishes in menu order.
#[derive(Debug, Clone)]
pub struct MenuView {
    /// The store as the search index holds it (its dishes mirror `items`).
    pub store: CatalogStore,
    pub version: i64,
    pub items: Vec<StoredItem>,
}

fn dish_of(s: &StoredItem) -> CatalogDish {
    CatalogDish {
        id: s.id.clone(),
        category: s.category.clone(),
        name: s.item.name.clone(),
        description: s.item.description.clone(),
        aliases: s.item.aliases.clone(),
        tags: s.item.tags.clone(),
        price_minor: s.item.price_minor,
        currency: s.item.currency.clone(),
        prep_time_s: s.item.prep_time_s,
        available: s.item.available,
    }
}

/// A dish an order could not have, and how many it could.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub item_id: String,
    pub requested: i64,
    pub available: i64,
}

#[derive(Debug, Clone)]
pub enum CatalogOrderOutcome {
    Placed(Box<Order>, IntakeResult),
    OutOfStock(Vec<Shortage>),
    /// Indexes of order lines naming no dish on this store's menu.
    UnknownItems(Vec<usize>),
}

fn item_from_row(row: &AnyRow, reserved_this_hour: i64) -> Result<StoredItem> {
    let kind: String = get(row, "stock_kind")?;
    let stock = match kind.as_str() {
        "count" => Stock::Count { quantity: get::<Option<i64>>(row, "quantity")?.unwrap_or(0) },
        "made_to_order" => Stock::MadeToOrder { per_hour: get::<Option<i64>>(row, "per_hour")?.unwrap_or(0) },
        other => return Err(StorageError::Corrupt(format!("stock_kind {other}"))),
    };
    Ok(StoredItem {
        id: get(row, "id")?,
        category: get(row, "category")?,
        item: MenuItem {
            sku: get(row, "sku")?,
            name: get(row, "name")?,
            description: get(row, "description")?,
            aliases: json_col(row, "aliases_json")?,
            tags: json_col(row, "tags_json")?,
            price_minor: get(row, "price_minor")?,
            currency: get(row, "currency")?,
            prep_time_s: get(row, "prep_time_s")?,
            photo_url: get(row, "photo_url")?,
            stock,
            available: get::<i64>(row, "available")? != 0,
        },
        version: get(row, "version")?,
        reserved_this_hour,
    })
}

fn stock_cols(stock: &Stock) -> (&'static str, Option<i64>, Option<i64>) {
    match *stock {
        Stock::Count { quantity } => ("count", Some(quantity), None),
        Stock::MadeToOrder { per_hour } => ("made_to_order", None, Some(per_hour)),
    }
}

fn hour_start(now: i64) -> i64 {
    now - now.rem_euclid(HOUR_MS)
}

/// Units of each dish that orders placed in the clock hour starting at `hour` still hold.
async fn reserved_in_hour<'e, E>(exec: E, item_ids: &[String], hour: i64) -> Result<HashMap<String, i64>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    if item_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let list = (0..item_ids.len()).map(|i| format!("${}", i + 2)).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT item_id, CAST(SUM(quantity) AS BIGINT) AS held FROM stock_reservations \
         WHERE hour_start = $1 AND released_at IS NULL AND item_id IN ({list}) GROUP BY item_id"
    );
    let mut q = sqlx::query(&sql).bind(hour);
    for id in item_ids {
        q = q.bind(id.as_str());
    }
    let rows = q.fetch_all(exec).await?;
    rows.iter().map(|r| Ok((get::<String>(r, "item_id")?, get::<i64>(r, "held")?))).collect()
}

/// Move a store's menu to its next version and say so on the outbox (`menu_changed`, in
/// this transaction): every node serves menus from memory and drops its copy on the event.
async fn bump_menu_version_in(c: &mut WriteConn, store: &str) -> Result<()> {
    let row = sqlx::query(
        "UPDATE store_menus SET version = version + 1, updated_at = $1 WHERE store_id = $2 RETURNING tenant_id, version",
    )
    .bind(now_ms())
    .bind(store)
    .fetch_optional(&mut *c)
    .await?;
    if let Some(r) = row {
        menu_changed_in(c, &TenantId(get(&r, "tenant_id")?), store, get(&r, "version")?).await?;
    }
    Ok(())
}

/// The `menu_changed` event of a store's menu at `version`.
async fn menu_changed_in(c: &mut WriteConn, tenant: &TenantId, store: &str, version: i64) -> Result<()> {
    let data = serde_json::json!({"store_id": store, "version": version});
    crate::outbox::insert_event(c, tenant, EventKind::MenuChanged, store, data).await
}

/// Give back the stock an order holds (once: a second call finds nothing held).
pub(crate) async fn release_stock_in(c: &mut WriteConn, order: &Order) -> Result<()> {
    let rows =
        sqlx::query("SELECT item_id, quantity FROM stock_reservations WHERE order_id = $1 AND released_at IS NULL")
            .bind(order.id.as_str())
            .fetch_all(&mut *c)
            .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    bump_menu_version_in(c, order.store_id.as_str()).await?;
    for r in &rows {
        sqlx::query(
            "UPDATE menu_items SET quantity = quantity + $1, version = version + 1, updated_at = $2 \
             WHERE id = $3 AND stock_kind = 'count'",
        )
        .bind(get::<i64>(r, "quantity")?)
        .bind(now)
        .bind(get::<String>(r, "item_id")?)
        .execute(&mut *c)
        .await?;
    }
    sqlx::query("UPDATE stock_reservations SET released_at = $1 WHERE order_id = $2 AND released_at IS NULL")
        .bind(now)
        .bind(order.id.as_str())
        .execute(&mut *c)
        .await?;
    Ok(())
}

impl Db {
    /// Replace a store's whole menu. Dishes keep their id by sku; dishes no longer listed
    /// are marked removed. NotFound when the store is not the tenant's.
    #[tracing::instrument(skip_all, fields(tenant = %tenant, store = %store))]
    pub async fn put_menu(&self, tenant: &TenantId, store: &StoreId, menu: Menu) -> Result<MenuView> {
        let (t, s) = (tenant.clone(), store.clone());
        self.write(move |c| {
            Box::pin(async move {
                let exists = sqlx::query("SELECT id FROM stores WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL")
                    .bind(t.as_str())
                    .bind(s.as_str())
                    .fetch_optional(&mut *c)
                    .await?;
                if exists.is_none() {
                    return Err(StorageError::NotFound);
                }
                let now = now_ms();
                let cuisine = serde_json::to_string(&menu.cuisine).map_err(crate::corrupt)?;
                let hours = serde_json::to_string(&menu.hours).map_err(crate::corrupt)?;
                let version = sqlx::query(
                    "INSERT INTO store_menus (store_id, tenant_id, cuisine_json, hours_json, delivery_radius_m, version, updated_at, menu_changed_at) \
                     VALUES ($1, $2, $3, $4, $5, 1, $6, $6) ON CONFLICT (store_id) DO UPDATE SET cuisine_json = $3, hours_json = $4, \
                     delivery_radius_m = $5, version = store_menus.version + 1, updated_at = $6, menu_changed_at = $6 \
                     RETURNING version",
                )
                .bind(s.as_str())
                .bind(t.as_str())
                .bind(&cuisine)
                .bind(&hours)
                .bind(crate::OptF64(menu.delivery_radius_m))
                .bind(now)
                .fetch_one(&mut *c)
                .await?;
                menu_changed_in(c, &t, s.as_str(), get(&version, "version")?).await?;
                let existing: HashMap<String, String> =
                    sqlx::query("SELECT sku, id FROM menu_items WHERE store_id = $1")
                        .bind(s.as_str())
                        .fetch_all(&mut *c)
                        .await?
                        .iter()
                        .map(|r| Ok((get(r, "sku")?, get(r, "id")?)))
                        .collect::<Result<_>>()?;
                let mut listed = std::collections::HashSet::new();
                let mut position = 0i64;
                for cat in &menu.categories {
                    for item in &cat.items {
                        position += 1;
                        listed.insert(item.sku.clone());
                        upsert_item_in(c, &t, &s, existing.get(&item.sku), &cat.name, position, item, now).await?;
                    }
                }
                for (sku, id) in &existing {
                    if !listed.contains(sku) {
                        sqlx::query("UPDATE menu_items SET removed_at = $1, updated_at = $1, version = version + 1 WHERE id = $2 AND removed_at IS NULL")
                            .bind(now)
                            .bind(id.as_str())
                            .execute(&mut *c)
                            .await?;
                    }
                }
                menu_view_in(&mut *c, &t, &s).await
            })
        })
        .await
    }

    /// Change one dish's price, availability or stock.
    #[tracing::instrument(skip_all, fields(tenant = %tenant, store = %store))]
    pub async fn patch_menu_item(
        &self,
        tenant: &TenantId,
        store: &StoreId,
        item_id: &str,
        patch: ItemPatch,
    ) -> Result<MenuView> {
        let (t, s, i) = (tenant.clone(), store.clone(), item_id.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                // Lock order everywhere: the store's menu row before its dishes (no deadlocks).
                bump_menu_version_in(c, s.as_str()).await?;
                let (kind, quantity, per_hour) = match &patch.stock {
                    Some(st) => {
                        let (k, q, p) = stock_cols(st);
                        (Some(k), q, p)
                    }
                    None => (None, None, None),
                };
                let done = sqlx::query(
                    "UPDATE menu_items SET price_minor = COALESCE($1, price_minor), available = COALESCE($2, available), \
                     stock_kind = COALESCE($3, stock_kind), \
                     quantity = CASE WHEN $3 IS NULL THEN quantity ELSE $4 END, \
                     per_hour = CASE WHEN $3 IS NULL THEN per_hour ELSE $5 END, \
                     version = version + 1, updated_at = $6 \
                     WHERE tenant_id = $7 AND store_id = $8 AND id = $9 AND removed_at IS NULL",
                )
                .bind(patch.price_minor)
                .bind(patch.available.map(i64::from))
                .bind(kind)
                .bind(quantity)
                .bind(per_hour)
                .bind(now)
                .bind(t.as_str())
                .bind(s.as_str())
                .bind(i.as_str())
                .execute(&mut *c)
                .await?;
                crate::touched(done)?;
                sqlx::query("UPDATE store_menus SET menu_changed_at = $1 WHERE store_id = $2")
                    .bind(now)
                    .bind(s.as_str())
                    .execute(&mut *c)
                    .await?;
                menu_view_in(&mut *c, &t, &s).await
            })
        })
        .await
    }

    /// A store's menu with live stock. NotFound when the store has none (or is not the tenant's).
    pub async fn menu_view(&self, tenant: &TenantId, store: &StoreId) -> Result<MenuView> {
        let mut conn = self.pool.acquire().await?;
        menu_view_in(&mut conn, tenant, store).await
    }

    /// The menu's version (the ETag's source): one primary-key read.
    pub async fn menu_version(&self, tenant: &TenantId, store: &StoreId) -> Result<i64> {
        let row = sqlx::query("SELECT version FROM store_menus WHERE tenant_id = $1 AND store_id = $2")
            .bind(tenant.as_str())
            .bind(store.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound)?;
        get(&row, "version")
    }

    /// Changes when any menu is put or patched (not on stock changes): how many menus
    /// there are and the latest change. A node re-indexes when it moves.
    pub async fn menus_signature(&self) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(MAX(menu_changed_at), 0) AS BIGINT) AS latest FROM store_menus",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((get(&row, "n")?, get(&row, "latest")?))
    }

    /// Every store with a menu, every tenant: what the search index is rebuilt from.
    pub async fn catalog_stores(&self) -> Result<Vec<CatalogStore>> {
        let rows = sqlx::query("SELECT m.store_id, m.tenant_id FROM store_menus m JOIN stores s ON s.id = m.store_id WHERE s.deleted_at IS NULL")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut conn = self.pool.acquire().await?;
        for r in &rows {
            let (s, t) = (StoreId(get(r, "store_id")?), TenantId(get(r, "tenant_id")?));
            out.push(menu_view_in(&mut conn, &t, &s).await?.store);
        }
        Ok(out)
    }

    /// Place a catalog order: dishes priced from the menu, stock reserved in the same
    /// transaction as the order (optimistic, retried on a lost race). `lines` pairs dish
    /// ids with quantities; `plan` says how readiness is set.
    #[tracing::instrument(skip_all, fields(tenant = %src.tenant_id, store = %src.store_id))]
    pub async fn create_catalog_order(
        &self,
        src: IntakeSource,
        order: NormalizedOrder,
        lines: Vec<(String, i64)>,
        plan: ReadyPlan,
        idem: Option<IdempotencyRef>,
    ) -> Result<CatalogOrderOutcome> {
        for _ in 0..RESERVE_ATTEMPTS {
            let (src, order, lines, idem) = (src.clone(), order.clone(), lines.clone(), idem.clone());
            let attempt = self
                .write(move |c| Box::pin(async move { place_in(c, &src, order, &lines, plan, idem.as_ref()).await }))
                .await;
            match attempt {
                Err(StorageError::Conflict(what)) if what == STOCK_RACE => continue,
                other => return other,
            }
        }
        Err(StorageError::Conflict(STOCK_RACE.into()))
    }
}

/// How a catalog order's `ready_at` is set: `placed_at` (the server's clock) plus the
/// dishes' prep time and the kitchen's queue, scaled by the store's learned prep factor
/// (see [`lastmile_core::learned::ready_in_s`]), and never before the client's
/// `not_before`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadyPlan {
    pub not_before: i64,
    pub placed_at: i64,
    pub prep_factor: f64,
    pub load_per_order_s: f64,
}

impl ReadyPlan {
    /// Plain menu prep from now: no queue, nothing learned.
    pub fn menu_prep(not_before: i64) -> ReadyPlan {
        ReadyPlan { not_before, placed_at: now_ms(), prep_factor: 1.0, load_per_order_s: 0.0 }
    }
}

/// Orders the store's kitchen is still preparing: placed, not picked up, not ready yet.
async fn orders_in_prep_in(c: &mut WriteConn, src: &IntakeSource, now: i64) -> Result<i64> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM orders WHERE tenant_id = $1 AND store_id = $2 \
         AND status IN ('received', 'dispatching', 'assigned') AND ready_at > $3",
    )
    .bind(src.tenant_id.as_str())
    .bind(src.store_id.as_str())
    .bind(now)
    .fetch_one(&mut *c)
    .await?;
    get(&row, "n")
}

/// What a catalog order would cost now, from the menu's prices: what a payment is
/// authorized for before the order is placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogQuote {
    Priced {
        total_minor: i64,
        currency: String,
    },
    /// Indexes of order lines naming no dish on this store's menu.
    UnknownItems(Vec<usize>),
}

impl Db {
    /// The total of `lines` at the menu's current prices (read only; nothing is reserved).
    pub async fn quote_catalog_order(
        &self,
        tenant: &TenantId,
        store: &StoreId,
        lines: &[(String, i64)],
    ) -> Result<CatalogQuote> {
        let mut priced = Vec::with_capacity(lines.len());
        let mut unknown = Vec::new();
        for (i, (id, qty)) in lines.iter().enumerate() {
            let row = sqlx::query(&format!(
                "SELECT {ITEM_COLS} FROM menu_items WHERE tenant_id = $1 AND store_id = $2 AND id = $3 AND removed_at IS NULL"
            ))
            .bind(tenant.as_str())
            .bind(store.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
            match row {
                Some(r) => {
                    let d = item_from_row(&r, 0)?.item;
                    let dish = PricedDish {
                        sku: d.sku.clone(),
                        name: d.name.clone(),
                        price_minor: d.price_minor,
                        currency: d.currency.clone(),
                        prep_time_s: d.prep_time_s,
                    };
                    priced.push((dish, *qty));
                }
                None => unknown.push(i),
            }
        }
        if !unknown.is_empty() {
            return Ok(CatalogQuote::UnknownItems(unknown));
        }
        let (_, totals, _) = price_order(&priced);
        Ok(CatalogQuote::Priced { total_minor: totals.total_minor, currency: totals.currency })
    }
}

#[allow(clippy::too_many_arguments)]
async fn upsert_item_in(
    c: &mut WriteConn,
    t: &TenantId,
    s: &StoreId,
    id: Option<&String>,
    category: &str,
    position: i64,
    item: &MenuItem,
    now: i64,
) -> Result<()> {
    let (kind, quantity, per_hour) = stock_cols(&item.stock);
    let aliases = serde_json::to_string(&item.aliases).map_err(crate::corrupt)?;
    let tags = serde_json::to_string(&item.tags).map_err(crate::corrupt)?;
    let sql = if id.is_some() {
        "UPDATE menu_items SET category = $3, position = $4, name = $5, description = $6, aliases_json = $7, \
         tags_json = $8, price_minor = $9, currency = $10, prep_time_s = $11, photo_url = $12, available = $13, \
         stock_kind = $14, quantity = $15, per_hour = $16, removed_at = NULL, version = version + 1, updated_at = $17 \
         WHERE id = $1 AND tenant_id = $2"
    } else {
        "INSERT INTO menu_items (id, tenant_id, category, position, name, description, aliases_json, tags_json, \
         price_minor, currency, prep_time_s, photo_url, available, stock_kind, quantity, per_hour, updated_at, store_id, sku) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
    };
    let new_id = id.cloned().unwrap_or_else(|| format!("itm_{}", uuid::Uuid::now_v7().simple()));
    let mut q = sqlx::query(sql)
        .bind(new_id)
        .bind(t.as_str())
        .bind(category)
        .bind(position)
        .bind(&item.name)
        .bind(&item.description)
        .bind(aliases)
        .bind(tags)
        .bind(item.price_minor)
        .bind(&item.currency)
        .bind(item.prep_time_s)
        .bind(&item.photo_url)
        .bind(i64::from(item.available))
        .bind(kind)
        .bind(quantity)
        .bind(per_hour)
        .bind(now);
    if id.is_none() {
        q = q.bind(s.as_str()).bind(&item.sku);
    }
    q.execute(&mut *c).await.map_err(StorageError::from_db)?;
    Ok(())
}

async fn menu_view_in(c: &mut sqlx::AnyConnection, t: &TenantId, s: &StoreId) -> Result<MenuView> {
    let head = sqlx::query(
        "SELECT m.cuisine_json, m.hours_json, m.delivery_radius_m, m.version, st.name, st.pickup_lat, st.pickup_lng \
         FROM store_menus m JOIN stores st ON st.id = m.store_id \
         WHERE m.tenant_id = $1 AND m.store_id = $2 AND st.deleted_at IS NULL",
    )
    .bind(t.as_str())
    .bind(s.as_str())
    .fetch_optional(&mut *c)
    .await?
    .ok_or(StorageError::NotFound)?;
    let rows = sqlx::query(&format!(
        "SELECT {ITEM_COLS} FROM menu_items WHERE store_id = $1 AND removed_at IS NULL ORDER BY position"
    ))
    .bind(s.as_str())
    .fetch_all(&mut *c)
    .await?;
    let made_to_order: Vec<String> = rows
        .iter()
        .filter(|r| get::<String>(r, "stock_kind").is_ok_and(|k| k == "made_to_order"))
        .map(|r| get(r, "id"))
        .collect::<Result<_>>()?;
    let held = reserved_in_hour(&mut *c, &made_to_order, hour_start(now_ms())).await?;
    let items: Vec<StoredItem> = rows
        .iter()
        .map(|r| {
            let id: String = get(r, "id")?;
            item_from_row(r, held.get(&id).copied().unwrap_or(0))
        })
        .collect::<Result<_>>()?;
    let store = CatalogStore {
        id: s.0.clone(),
        tenant_id: t.0.clone(),
        name: get(&head, "name")?,
        location: GeoPoint::new(get(&head, "pickup_lat")?, get(&head, "pickup_lng")?).map_err(crate::corrupt)?,
        cuisine: json_col(&head, "cuisine_json")?,
        hours: json_col(&head, "hours_json")?,
        delivery_radius_m: get(&head, "delivery_radius_m")?,
        dishes: items.iter().map(dish_of).collect(),
    };
    Ok(MenuView { store, version: get(&head, "version")?, items })
}

/// One attempt at a catalog order inside the write transaction.
async fn place_in(
    c: &mut WriteConn,
    src: &IntakeSource,
    mut order: NormalizedOrder,
    lines: &[(String, i64)],
    plan: ReadyPlan,
    idem: Option<&IdempotencyRef>,
) -> Result<CatalogOrderOutcome> {
    let now = now_ms();
    let hour = hour_start(now);
    // The dishes, read with their versions; the same dish on two lines is one reservation.
    let mut dishes: HashMap<String, StoredItem> = HashMap::new();
    let mut need: Vec<(String, i64)> = Vec::new();
    let mut unknown = Vec::new();
    for (i, (id, qty)) in lines.iter().enumerate() {
        if !dishes.contains_key(id) {
            let row = sqlx::query(&format!(
                "SELECT {ITEM_COLS} FROM menu_items WHERE tenant_id = $1 AND store_id = $2 AND id = $3 AND removed_at IS NULL"
            ))
            .bind(src.tenant_id.as_str())
            .bind(src.store_id.as_str())
            .bind(id.as_str())
            .fetch_optional(&mut *c)
            .await?;
            match row {
                Some(r) => {
                    dishes.insert(id.clone(), item_from_row(&r, 0)?);
                }
                None => {
                    unknown.push(i);
                    continue;
                }
            }
        }
        match need.iter_mut().find(|(n, _)| n == id) {
            Some(e) => e.1 += qty,
            None => need.push((id.clone(), *qty)),
        }
    }
    if !unknown.is_empty() {
        return Ok(CatalogOrderOutcome::UnknownItems(unknown));
    }
    if let Some(existing) = find_in(c, src, &order.platform_order_id).await? {
        // A repeated external id: the first order stands, and holds the only reservation.
        if let Some(k) = idem {
            let body = serde_json::to_string(&existing).map_err(crate::corrupt)?;
            complete_idempotency_in(c, &src.tenant_id, k, 200, &body).await?;
        }
        return Ok(CatalogOrderOutcome::Placed(Box::new(existing), IntakeResult::Duplicate));
    }
    let mto: Vec<String> = need
        .iter()
        .filter(|(id, _)| matches!(dishes[id].item.stock, Stock::MadeToOrder { .. }))
        .map(|(id, _)| id.clone())
        .collect();
    let held = reserved_in_hour(&mut *c, &mto, hour).await?;
    let mut shortages = Vec::new();
    for (id, qty) in &need {
        let d = dishes.get_mut(id).expect("read above");
        d.reserved_this_hour = held.get(id).copied().unwrap_or(0);
        if d.orderable() < *qty {
            shortages.push(Shortage { item_id: id.clone(), requested: *qty, available: d.orderable() });
        }
    }
    if !shortages.is_empty() {
        return Ok(CatalogOrderOutcome::OutOfStock(shortages));
    }
    let priced: Vec<(PricedDish, i64)> = lines
        .iter()
        .map(|(id, q)| {
            let d = &dishes[id].item;
            let dish = PricedDish {
                sku: d.sku.clone(),
                name: d.name.clone(),
                price_minor: d.price_minor,
                currency: d.currency.clone(),
                prep_time_s: d.prep_time_s,
            };
            (dish, *q)
        })
        .collect();
    let (items, totals, prep_s) = price_order(&priced);
    order.items = items;
    order.totals = totals;
    let in_prep = orders_in_prep_in(c, src, plan.placed_at).await?;
    let planned_s = planned_prep_s(prep_s as f64, in_prep, plan.load_per_order_s);
    let ready_in = ready_in_s(prep_s as f64, in_prep, plan.load_per_order_s, plan.prep_factor);
    let ready_at = plan.not_before.max(plan.placed_at + (ready_in * 1000.0).round() as i64);
    let Some(order_id) = insert_order_in(c, src, &order, ready_at, None).await? else {
        // Another request took this external id since the check above: try again.
        return Err(StorageError::Conflict(STOCK_RACE.into()));
    };
    crate::learned::record_placed_in(c, &src.tenant_id, &order_id, plan.placed_at, planned_s).await?;
    bump_menu_version_in(c, src.store_id.as_str()).await?;
    for (id, qty) in &need {
        let d = &dishes[id];
        let done = sqlx::query(
            "UPDATE menu_items SET quantity = CASE WHEN stock_kind = 'count' THEN quantity - $1 ELSE quantity END, \
             version = version + 1, updated_at = $2 WHERE id = $3 AND version = $4",
        )
        .bind(*qty)
        .bind(now)
        .bind(id.as_str())
        .bind(d.version)
        .execute(&mut *c)
        .await
        .map_err(StorageError::from_db)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::Conflict(STOCK_RACE.into()));
        }
        sqlx::query(
            "INSERT INTO stock_reservations (order_id, item_id, tenant_id, quantity, hour_start) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(order_id.as_str())
        .bind(id.as_str())
        .bind(src.tenant_id.as_str())
        .bind(*qty)
        .bind(hour)
        .execute(&mut *c)
        .await?;
    }
    let placed = load_order_in(c, &src.tenant_id, &order_id).await?;
    if let Some(k) = idem {
        complete_idempotency_in(c, &src.tenant_id, k, 201, &serde_json::to_string(&placed).map_err(crate::corrupt)?)
            .await?;
    }
    Ok(CatalogOrderOutcome::Placed(Box::new(placed), IntakeResult::Created))
}
