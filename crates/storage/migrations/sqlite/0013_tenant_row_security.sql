-- Row-level security per tenant is a PostgreSQL feature (see the PostgreSQL migration of
-- the same number). A SQLite database belongs to one process on one machine; its tenant
-- wall is the repositories' tenant filters. This migration keeps the numbering in step.
SELECT 1;
