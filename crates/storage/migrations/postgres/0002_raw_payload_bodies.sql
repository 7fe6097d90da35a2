-- The raw payload archive keeps each distinct body once per tenant: a platform (or an
-- attacker with a captured signed delivery) re-posting the same body costs a row, not
-- another copy of the body. New archive rows carry the body's SHA-256 and an empty body.
CREATE TABLE raw_payload_bodies (
    tenant_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    body BYTEA NOT NULL,
    first_seen_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, sha256)
);
ALTER TABLE raw_payloads ADD COLUMN body_sha256 TEXT;
CREATE INDEX raw_payloads_body ON raw_payloads(tenant_id, body_sha256);
