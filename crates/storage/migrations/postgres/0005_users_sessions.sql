-- Web apps: console users and their sessions, one-time driver login codes, proof-of-delivery
-- photos, and the choices customers make on the tracking page.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    -- Sign-in name; unique across tenants so signing in needs nothing else.
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'dispatcher', 'viewer')),
    created_at BIGINT NOT NULL,
    disabled_at BIGINT
);
CREATE UNIQUE INDEX users_email ON users(email);

CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    -- A person's session names the user; an admin key's names the key.
    user_id TEXT,
    admin_key_id TEXT,
    role TEXT NOT NULL,
    csrf_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions(expires_at);

CREATE TABLE driver_login_codes (
    code_hash TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    driver_id TEXT NOT NULL REFERENCES drivers(id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX driver_login_codes_driver ON driver_login_codes(driver_id);

CREATE TABLE delivery_photos (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    order_id TEXT NOT NULL REFERENCES orders(id),
    driver_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    bytes BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX delivery_photos_order ON delivery_photos(tenant_id, order_id);

CREATE TABLE customer_choices (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    order_id TEXT NOT NULL REFERENCES orders(id),
    choice TEXT NOT NULL CHECK (choice IN ('keep_waiting', 'cancel')),
    created_at BIGINT NOT NULL
);
CREATE INDEX customer_choices_tenant ON customer_choices(tenant_id, created_at);
