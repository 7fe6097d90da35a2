-- Payments of catalog orders: authorized before the order is placed (a declined card
-- reserves no stock and creates no order), captured once it is placed, voided when it
-- could not be, refunded when a captured order is cancelled.
CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    store_id TEXT NOT NULL,
    order_id TEXT,
    provider TEXT NOT NULL,
    provider_ref TEXT,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    -- declined, authorized, captured, voided, refunded
    state TEXT NOT NULL,
    decline_code TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX payments_order ON payments(tenant_id, order_id);
