-- Events out: tenants subscribe HTTP endpoints to order events, delivered as Standard
-- Webhooks through a job queue with retries, dead letters and replay.

CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    url TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- JSON array of event kinds, or ["*"] for every kind.
    events TEXT NOT NULL,
    enabled BIGINT NOT NULL DEFAULT 1,
    -- The signing secret (whsec_...), sealed with the at-rest key.
    secret_enc BYTEA NOT NULL,
    -- After a rotation the previous secret still signs until it expires, so a receiver can
    -- switch over without dropping a delivery.
    previous_secret_enc BYTEA,
    previous_expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints(tenant_id, created_at);

-- One delivery per (endpoint, event): the relay may hand an event over twice, it is
-- queued once.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_seq BIGINT NOT NULL,
    event_kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until BIGINT,
    last_status BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    completed_at BIGINT,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_attempt_at);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, created_at);
