-- What completed deliveries taught the ETA model, per tenant: kind 'speed' (key = zone
-- cell "row:col" or '*' for the whole city; hour 0-23 UTC or 24 for all day; mean in
-- metres per second) and kind 'prep' (key = store id; hour 24; mean = observed ÷ planned
-- prep time). Kept so a restart or another node starts from what was learned.
CREATE TABLE eta_estimates (
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    hour BIGINT NOT NULL,
    mean REAL NOT NULL,
    samples BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, kind, key, hour)
);

-- The moments of a delivery on the server's clock, from which it is learned: placed (with
-- the prep planned, for catalog orders), picked up, delivered.
CREATE TABLE delivery_legs (
    order_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    placed_at BIGINT,
    planned_prep_s REAL,
    picked_up_at BIGINT,
    delivered_at BIGINT
);
