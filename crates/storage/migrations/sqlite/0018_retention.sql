-- Retention (crates/storage/src/retention.rs) deletes the oldest rows in bounded batches;
-- these indexes let each batch find them without scanning the table.
CREATE INDEX driver_inbox_created ON driver_inbox(created_at);
CREATE INDEX offers_decided ON offers(decided_at) WHERE state <> 'pending';
CREATE INDEX idempotency_keys_expires ON idempotency_keys(expires_at);
CREATE INDEX location_history_recorded ON location_history(recorded_at);
