-- The batched write path and the dispatcher's due set (see the PostgreSQL migration).

-- Unused on SQLite (one writer: `seq` order is commit order); kept so both schemas match.
ALTER TABLE outbox ADD COLUMN txid BIGINT;

CREATE INDEX orders_due ON orders(tenant_id, ready_at) WHERE status = 'received' AND dispatch_stalled = 0;
CREATE INDEX orders_waiting ON orders(status, dispatch_stalled, ready_at) WHERE status IN ('received', 'dispatching') AND dispatch_stalled = 0;
