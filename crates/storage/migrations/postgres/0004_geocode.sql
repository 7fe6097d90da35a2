-- Geocoding: answers of a remote geocoding service, and orders the geocoder could not
-- locate (why, and when it tries again), so a failure is not retried in a hot loop.

CREATE TABLE geocode_cache (
    -- The service's URL and the folded query: one address costs one call per service.
    query_key TEXT PRIMARY KEY,
    found BIGINT NOT NULL,
    lat DOUBLE PRECISION,
    lng DOUBLE PRECISION,
    confidence DOUBLE PRECISION,
    matched TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE geocode_attempts (
    order_id TEXT PRIMARY KEY REFERENCES orders(id),
    tenant_id TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
