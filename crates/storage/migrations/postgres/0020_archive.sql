-- The order archive (crates/storage/src/archive/) looks up and deletes rows by order:
-- without these, each archived order's sync-job check and each batch's assignment delete
-- would scan the whole table.
CREATE INDEX sync_jobs_order ON sync_jobs(order_id);
CREATE INDEX assignments_order ON assignments(order_id);
