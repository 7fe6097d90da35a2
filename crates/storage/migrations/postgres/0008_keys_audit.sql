-- Named admin keys: the existing table gains a name, a display prefix and a last-use time.
-- Existing keys keep their id and hash (nothing to re-issue) and are named "initial".
ALTER TABLE admin_keys ADD COLUMN name TEXT NOT NULL DEFAULT 'initial';
-- The first characters of the key as issued (`lm_admin_AbCd`), to tell keys apart; keys
-- issued before this column existed have none.
ALTER TABLE admin_keys ADD COLUMN prefix TEXT;
ALTER TABLE admin_keys ADD COLUMN last_used_at BIGINT;
CREATE INDEX admin_keys_tenant ON admin_keys(tenant_id);

-- API-token signing keys, sealed with the at-rest secret key. The newest unretired one
-- signs; retired ones still verify until the tokens they signed have expired.
CREATE TABLE jwt_keys (
    kid TEXT PRIMARY KEY,
    key_enc BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

-- Who did what to which resource, when and from where. `tenant_id` is NULL for
-- operator-wide actions (key rotations from the command line).
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    actor_kind TEXT NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    target_id TEXT,
    source_ip TEXT,
    details TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, id);
