-- Lastmile schema, SQLite dialect. Times are unix milliseconds (BIGINT) and JSON is TEXT
-- so that both backends share one set of queries; see crates/storage/src/lib.rs.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE admin_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    key_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE api_clients (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_clients_tenant ON api_clients(tenant_id);

CREATE TABLE stores (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    platform TEXT NOT NULL,
    platform_store_id TEXT NOT NULL,
    webhook_secret_enc BLOB NOT NULL,
    api_base_url TEXT,
    api_credentials_enc BLOB,
    custom_auth_header TEXT,
    pickup_lat DOUBLE PRECISION NOT NULL,
    pickup_lng DOUBLE PRECISION NOT NULL,
    pickup_address TEXT NOT NULL,
    tier TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX stores_platform_identity ON stores(tenant_id, platform, platform_store_id) WHERE deleted_at IS NULL;
CREATE INDEX stores_lookup ON stores(platform, platform_store_id);

CREATE TABLE drivers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    phone TEXT NOT NULL,
    vehicle TEXT NOT NULL,
    capacity BIGINT NOT NULL CHECK (capacity >= 1),
    -- Active assignments; the CHECK makes the database refuse a driver over capacity (invariant 6).
    active_count BIGINT NOT NULL DEFAULT 0 CHECK (active_count >= 0 AND active_count <= capacity),
    token_hash TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'offline',
    inbox_seq BIGINT NOT NULL DEFAULT 0,
    last_lat DOUBLE PRECISION,
    last_lng DOUBLE PRECISION,
    last_seen_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX drivers_tenant ON drivers(tenant_id);

CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    store_id TEXT NOT NULL REFERENCES stores(id),
    platform TEXT NOT NULL,
    platform_order_id TEXT NOT NULL,
    platform_order_number TEXT,
    status TEXT NOT NULL,
    dispatch_stalled BIGINT NOT NULL DEFAULT 0,
    status_reason TEXT,
    customer_json TEXT NOT NULL,
    dropoff_json TEXT NOT NULL,
    dropoff_lat DOUBLE PRECISION,
    dropoff_lng DOUBLE PRECISION,
    items_json TEXT NOT NULL,
    totals_json TEXT NOT NULL,
    notes TEXT,
    placed_at BIGINT,
    ready_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    platform_updated_at BIGINT,
    tracking_token TEXT NOT NULL UNIQUE,
    driver_id TEXT,
    eta_at BIGINT,
    raw_payload_id TEXT,
    dispatch_attempts BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT orders_platform_identity UNIQUE (tenant_id, platform, store_id, platform_order_id)
);
CREATE INDEX orders_tenant_updated ON orders(tenant_id, updated_at, id);
CREATE INDEX orders_dispatchable ON orders(status, ready_at);

CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    data TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox(published_at, seq);

CREATE TABLE raw_payloads (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    store_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    headers_json TEXT NOT NULL,
    body BLOB NOT NULL,
    result TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX raw_payloads_received ON raw_payloads(received_at);

CREATE TABLE dead_letters (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    platform TEXT NOT NULL,
    store_id TEXT NOT NULL,
    headers_json TEXT NOT NULL,
    body BLOB NOT NULL,
    error TEXT NOT NULL,
    context_json TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    replayed_at BIGINT,
    replay_outcome TEXT
);
CREATE INDEX dead_letters_tenant ON dead_letters(tenant_id, created_at);

CREATE TABLE idempotency_keys (
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    response_status BIGINT,
    response_body TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, client_id, idem_key)
);

CREATE TABLE offers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    order_id TEXT NOT NULL REFERENCES orders(id),
    driver_id TEXT NOT NULL REFERENCES drivers(id),
    state TEXT NOT NULL,
    reason TEXT,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    decided_at BIGINT
);
CREATE INDEX offers_order ON offers(order_id);
CREATE INDEX offers_pending ON offers(state, expires_at);
-- At most one open offer per order.
CREATE UNIQUE INDEX offers_one_pending ON offers(order_id) WHERE state = 'pending';

CREATE TABLE assignments (
    order_id TEXT NOT NULL REFERENCES orders(id),
    tenant_id TEXT NOT NULL,
    driver_id TEXT NOT NULL REFERENCES drivers(id),
    active BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    released_at BIGINT
);
CREATE UNIQUE INDEX assignments_one_active ON assignments(order_id) WHERE active = 1;
CREATE INDEX assignments_driver ON assignments(driver_id, active);

CREATE TABLE driver_inbox (
    driver_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (driver_id, seq)
);

CREATE TABLE location_history (
    driver_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    order_id TEXT,
    lat DOUBLE PRECISION NOT NULL,
    lng DOUBLE PRECISION NOT NULL,
    recorded_at BIGINT NOT NULL
);
CREATE INDEX location_history_driver ON location_history(driver_id, recorded_at);

CREATE TABLE sync_jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    store_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    order_id TEXT NOT NULL,
    platform_order_id TEXT NOT NULL,
    action TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until BIGINT,
    last_error TEXT,
    last_status BIGINT,
    last_body TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    completed_at BIGINT
);
CREATE INDEX sync_jobs_due ON sync_jobs(state, next_attempt_at);
