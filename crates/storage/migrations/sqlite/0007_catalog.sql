-- Restaurant catalog: one menu per store, its dishes with live stock, and the stock each
-- order holds. Dishes keep their id across menu replacements (same store + sku); a dish
-- dropped from the menu is marked removed, never deleted, so old orders still name it.

CREATE TABLE store_menus (
    store_id TEXT PRIMARY KEY REFERENCES stores(id),
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    cuisine_json TEXT NOT NULL,
    hours_json TEXT NOT NULL,
    delivery_radius_m DOUBLE PRECISION,
    -- Bumped by every change to the menu or its stock: the menu's ETag follows it.
    version BIGINT NOT NULL DEFAULT 1,
    updated_at BIGINT NOT NULL,
    -- Set by menu PUTs and PATCHes only (not stock): other nodes re-index when it moves.
    menu_changed_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX store_menus_tenant ON store_menus(tenant_id);

CREATE TABLE menu_items (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    store_id TEXT NOT NULL REFERENCES stores(id),
    sku TEXT NOT NULL,
    category TEXT NOT NULL,
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    aliases_json TEXT NOT NULL,
    tags_json TEXT NOT NULL,
    price_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    prep_time_s BIGINT NOT NULL,
    photo_url TEXT,
    available BIGINT NOT NULL DEFAULT 1,
    stock_kind TEXT NOT NULL,
    -- Counted stock; the CHECK is the last line against overselling.
    quantity BIGINT CHECK (quantity IS NULL OR quantity >= 0),
    per_hour BIGINT,
    -- Optimistic concurrency: every reservation checks and bumps it.
    version BIGINT NOT NULL DEFAULT 1,
    removed_at BIGINT,
    updated_at BIGINT NOT NULL,
    CONSTRAINT menu_items_store_sku UNIQUE (store_id, sku)
);

CREATE TABLE stock_reservations (
    order_id TEXT NOT NULL REFERENCES orders(id),
    item_id TEXT NOT NULL REFERENCES menu_items(id),
    tenant_id TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    -- Start of the clock hour (unix ms) the order was placed in: made-to-order capacity.
    hour_start BIGINT NOT NULL,
    released_at BIGINT,
    PRIMARY KEY (order_id, item_id)
);
CREATE INDEX stock_reservations_hour ON stock_reservations(item_id, hour_start);
