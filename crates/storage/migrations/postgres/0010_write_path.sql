-- The batched write path (several writer connections, no outbox lock) and the dispatcher's
-- due set.

-- Each outbox row remembers the transaction that wrote it: the relay publishes a row only
-- once every transaction older than it has finished (`pg_snapshot_xmin`), which keeps
-- commit order without a cluster-wide lock on outbox writers. Rows from before this
-- migration keep NULL (long committed).
ALTER TABLE outbox ADD COLUMN txid BIGINT;
ALTER TABLE outbox ALTER COLUMN txid SET DEFAULT (pg_current_xact_id()::text::bigint);

-- Orders waiting for a driver, per tenant, by readiness: a matching round reads only a
-- tenant with free drivers and only orders that can be offered (stalled ones drop out).
CREATE INDEX orders_due ON orders(tenant_id, ready_at) WHERE status = 'received' AND dispatch_stalled = 0;
-- Orders the stall check looks at; flagged ones drop out, so a backlog of stalled orders
-- costs the backstop tick nothing.
CREATE INDEX orders_waiting ON orders(status, dispatch_stalled, ready_at) WHERE status IN ('received', 'dispatching') AND dispatch_stalled = 0;
