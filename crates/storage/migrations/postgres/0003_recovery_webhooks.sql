-- Recovery and ops: orders a driver can no longer finish, and each order's timeline.

-- A picked-up order whose driver was revoked or fell silent: flagged for ops (it is not
-- offered again: the goods are with that driver). One row per order; the first reason stands.
CREATE TABLE order_attention (
    order_id TEXT PRIMARY KEY REFERENCES orders(id),
    tenant_id TEXT NOT NULL,
    driver_id TEXT,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- An order's timeline (`GET /v1/orders/{id}/events`) reads its events by subject.
CREATE INDEX outbox_subject ON outbox(tenant_id, subject_id, seq);
