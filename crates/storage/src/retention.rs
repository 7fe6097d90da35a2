//! Retention: rows that have served their purpose are deleted in bounded batches, so a
//! long-running node's tables stop growing with its age and no single delete holds the
//! writer (or a PostgreSQL lock) for long.
//!
//! What each table keeps:
//! - `outbox`: unpublished events always; published events about an order as long as the
//!   order itself is in the live tables (they are its timeline and its proof of delivery,
//!   removed with it by the archive); other published events (driver inbox appends, driver
//!   and store changes) until they are older than the window.
//! - `driver_inbox`: messages younger than the window (a driver resuming from an older
//!   sequence gets what is left).
//! - `offers`: pending offers always; decided offers of finished orders until they are
//!   older than the window (an unfinished order's declined and expired offers count
//!   toward its dispatch attempts).
//! - `idempotency_keys`: until they expire.
//! - `location_history`: fixes younger than the window.

use crate::{Db, Dialect, Result};

/// A table [`Db::prune`] trims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retained {
    Events,
    Inbox,
    Offers,
    IdempotencyKeys,
    Locations,
}

impl Retained {
    pub const ALL: [Retained; 5] =
        [Retained::Events, Retained::Inbox, Retained::Offers, Retained::IdempotencyKeys, Retained::Locations];

    /// The table's name, as in metrics and logs.
    pub fn table(self) -> &'static str {
        match self {
            Retained::Events => "outbox",
            Retained::Inbox => "driver_inbox",
            Retained::Offers => "offers",
            Retained::IdempotencyKeys => "idempotency_keys",
            Retained::Locations => "location_history",
        }
    }

    /// One bounded delete: `$1` is the cutoff (epoch ms), `$2` the most rows.
    fn statement(self, dialect: Dialect) -> &'static str {
        match (self, dialect) {
            (Retained::Events, _) => {
                "DELETE FROM outbox WHERE seq IN (SELECT o.seq FROM outbox o WHERE o.published_at IS NOT NULL \
                 AND o.occurred_at < $1 AND NOT EXISTS (SELECT 1 FROM orders WHERE orders.id = o.subject_id) \
                 ORDER BY o.seq LIMIT $2)"
            }
            (Retained::Inbox, _) => {
                "DELETE FROM driver_inbox WHERE (driver_id, seq) IN (SELECT driver_id, seq FROM driver_inbox \
                 WHERE created_at < $1 ORDER BY created_at LIMIT $2)"
            }
            (Retained::Offers, _) => {
                "DELETE FROM offers WHERE id IN (SELECT f.id FROM offers f JOIN orders o ON o.id = f.order_id \
                 WHERE f.state <> 'pending' AND f.decided_at < $1 \
                 AND o.status IN ('delivered', 'failed', 'cancelled') ORDER BY f.decided_at LIMIT $2)"
            }
            (Retained::IdempotencyKeys, _) => {
                "DELETE FROM idempotency_keys WHERE (tenant_id, client_id, idem_key) IN \
                 (SELECT tenant_id, client_id, idem_key FROM idempotency_keys WHERE expires_at < $1 \
                 ORDER BY expires_at LIMIT $2)"
            }
            // The table has no key: its physical row address stands in for one.
            (Retained::Locations, Dialect::Sqlite) => {
                "DELETE FROM location_history WHERE rowid IN (SELECT rowid FROM location_history \
                 WHERE recorded_at < $1 ORDER BY recorded_at LIMIT $2)"
            }
            (Retained::Locations, Dialect::Postgres) => {
                "DELETE FROM location_history WHERE ctid = ANY(ARRAY(SELECT ctid FROM location_history \
                 WHERE recorded_at < $1 ORDER BY recorded_at LIMIT $2))"
            }
        }
    }
}

impl Db {
    /// Delete at most `batch` rows of `what` older than `cutoff_ms` (for idempotency keys:
    /// expired before it), in one short write. Returns how many went; call again while it
    /// returns `batch`.
    pub async fn prune(&self, what: Retained, cutoff_ms: i64, batch: i64) -> Result<u64> {
        let sql = what.statement(self.dialect);
        self.write(move |c| {
            Box::pin(async move {
                let done = sqlx::query(sql).bind(cutoff_ms).bind(batch).execute(&mut *c).await?;
                Ok(done.rows_affected())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::Retained;
    use crate::testing::TestDb;
    use crate::Db;

    const DAY: i64 = 86_400_000;
    const NOW: i64 = 1_800_000_000_000;

    async fn count(db: &Db, sql: &str) -> i64 {
        let row = sqlx::query(sql).fetch_one(db.pool()).await.expect(sql);
        crate::get(&row, "n").expect("n")
    }

    async fn exec(db: &Db, sql: &str) {
        sqlx::query(sql).execute(db.pool()).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Prune in batches of 2 until a batch comes back short; returns the batch sizes.
    async fn prune_all(db: &Db, what: Retained, cutoff: i64) -> Vec<u64> {
        let mut sizes = Vec::new();
        loop {
            let n = db.prune(what, cutoff, 2).await.expect("prune");
            sizes.push(n);
            if n < 2 {
                return sizes;
            }
        }
    }

    /// A tenant, a driver, and orders `o-live` (dispatching) and `o-done` (delivered).
    async fn seed(db: &Db) {
        exec(db, "INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'T', 0)").await;
        exec(
            db,
            "INSERT INTO drivers (id, tenant_id, name, phone, vehicle, capacity, token_hash, created_at, updated_at) \
             VALUES ('d1', 't1', 'D', '+358', 'bike', 1, 'h', 0, 0)",
        )
        .await;
        exec(
            db,
            "INSERT INTO stores (id, tenant_id, name, platform, platform_store_id, webhook_secret_enc, pickup_lat, \
             pickup_lng, pickup_address, tier, created_at, updated_at) \
             VALUES ('s1', 't1', 'S', 'native', 's1', 'x', 60.1, 24.9, 'a', 'standard', 0, 0)",
        )
        .await;
        for (id, status) in [("o-live", "dispatching"), ("o-done", "delivered")] {
            exec(
                db,
                &format!(
                    "INSERT INTO orders (id, tenant_id, store_id, platform, platform_order_id, status, \
                     customer_json, dropoff_json, items_json, totals_json, ready_at, created_at, updated_at, \
                     tracking_token) VALUES ('{id}', 't1', 's1', 'native', '{id}', '{status}', '{{}}', '{{}}', '[]', \
                     '{{}}', 0, 0, 0, 'tok-{id}')"
                ),
            )
            .await;
        }
    }

    #[tokio::test]
    async fn each_table_keeps_what_it_must_and_prunes_in_bounded_batches() {
        for t in TestDb::all().await {
            let db = &t.db;
            let backend = t.backend();
            seed(db).await;
            let old = NOW - 40 * DAY;
            let young = NOW - DAY;
            let cutoff = NOW - 30 * DAY;

            // outbox: 3 old published driver events go; an unpublished old one, an old one
            // about a live order, and a young one stay.
            for (i, (subject, published, at)) in [
                ("d1", true, old),
                ("d1", true, old),
                ("d1", true, old),
                ("d1", false, old),
                ("o-done", true, old),
                ("d1", true, young),
            ]
            .into_iter()
            .enumerate()
            {
                let published = if published { "1" } else { "NULL" };
                exec(
                    db,
                    &format!(
                        "INSERT INTO outbox (id, tenant_id, kind, subject_id, data, occurred_at, published_at) \
                         VALUES ('e{i}', 't1', 'inbox_appended', '{subject}', '{{}}', {at}, {published})"
                    ),
                )
                .await;
            }
            assert_eq!(prune_all(db, Retained::Events, cutoff).await, vec![2, 1], "{backend}");
            assert_eq!(count(db, "SELECT COUNT(*) AS n FROM outbox").await, 3, "{backend}");
            assert_eq!(
                count(db, "SELECT COUNT(*) AS n FROM outbox WHERE id IN ('e3', 'e4', 'e5')").await,
                3,
                "{backend}: unpublished, order timeline and young events stay"
            );

            // driver_inbox: 3 old messages go, the young one stays.
            for (seq, at) in [(1, old), (2, old), (3, old), (4, young)] {
                exec(
                    db,
                    &format!(
                        "INSERT INTO driver_inbox (driver_id, seq, tenant_id, kind, data, created_at) \
                         VALUES ('d1', {seq}, 't1', 'offer', '{{}}', {at})"
                    ),
                )
                .await;
            }
            assert_eq!(prune_all(db, Retained::Inbox, cutoff).await, vec![2, 1], "{backend}");
            assert_eq!(count(db, "SELECT MIN(seq) AS n FROM driver_inbox").await, 4, "{backend}");

            // offers: old decided offers of the delivered order go; the live order's old
            // declined offer (it counts toward its attempts) and a young one stay.
            for (id, order, state, decided) in [
                ("f1", "o-done", "declined", old),
                ("f2", "o-done", "expired", old),
                ("f3", "o-done", "accepted", old),
                ("f4", "o-live", "declined", old),
                ("f5", "o-done", "declined", young),
            ] {
                exec(
                    db,
                    &format!(
                        "INSERT INTO offers (id, tenant_id, order_id, driver_id, state, expires_at, created_at, \
                         decided_at) VALUES ('{id}', 't1', '{order}', 'd1', '{state}', 0, 0, {decided})"
                    ),
                )
                .await;
            }
            assert_eq!(prune_all(db, Retained::Offers, cutoff).await, vec![2, 1], "{backend}");
            assert_eq!(
                count(db, "SELECT COUNT(*) AS n FROM offers WHERE id IN ('f4', 'f5')").await,
                2,
                "{backend}: the live order's offer and the young one stay"
            );
            assert_eq!(count(db, "SELECT COUNT(*) AS n FROM offers").await, 2, "{backend}");

            // idempotency keys: expired ones go, the unexpired one stays.
            for (key, expires) in [("k1", NOW - 1), ("k2", NOW - 2), ("k3", NOW - 3), ("k4", NOW + DAY)] {
                exec(
                    db,
                    &format!(
                        "INSERT INTO idempotency_keys (tenant_id, client_id, idem_key, request_hash, state, \
                         created_at, expires_at) VALUES ('t1', 'c', '{key}', 'h', 'done', 0, {expires})"
                    ),
                )
                .await;
            }
            assert_eq!(prune_all(db, Retained::IdempotencyKeys, NOW).await, vec![2, 1], "{backend}");
            assert_eq!(count(db, "SELECT COUNT(*) AS n FROM idempotency_keys WHERE idem_key = 'k4'").await, 1);
            assert_eq!(count(db, "SELECT COUNT(*) AS n FROM idempotency_keys").await, 1, "{backend}");

            // location history: old fixes go, young ones stay.
            for at in [old, old - 1, old - 2, young, young + 1] {
                exec(
                    db,
                    &format!(
                        "INSERT INTO location_history (driver_id, tenant_id, lat, lng, recorded_at) \
                         VALUES ('d1', 't1', 60.1, 24.9, {at})"
                    ),
                )
                .await;
            }
            assert_eq!(prune_all(db, Retained::Locations, cutoff).await, vec![2, 1], "{backend}");
            assert_eq!(count(db, "SELECT COUNT(*) AS n FROM location_history").await, 2, "{backend}");
            assert_eq!(
                count(db, &format!("SELECT COUNT(*) AS n FROM location_history WHERE recorded_at < {cutoff}")).await,
                0,
                "{backend}"
            );
            t.cleanup().await;
        }
    }
}
