//! PostgreSQL row-level security per tenant: the second wall behind the tenant filter that
//! every repository query carries (migration 0013 has the policies).
//!
//! [`Db::tenant_scope`] runs reads made on a tenant's behalf in a transaction that drops to
//! the restricted role `lastmile_tenant` and names the tenant (`set_config(…, true)`, which
//! lasts until the transaction ends, so a pooled connection never carries it to the next
//! user). For that role a tenant-scoped table shows only that tenant's rows — a query that
//! forgot its `tenant_id` filter still sees nothing of another tenant — and nothing at all
//! when no tenant is named. Work that spans tenants (relay, dispatcher, workers, the
//! group-commit writer, whose batches mix tenants) runs as the schema owner, which the
//! policies do not bind. SQLite has no row security: there, the filters are the wall.

use crate::{Db, Dialect, Result};
use futures::future::BoxFuture;
use lastmile_core::TenantId;
use sqlx::any::AnyRow;

impl Db {
    /// Run `f` inside a transaction scoped to `tenant` (`None`: to no tenant, which on
    /// PostgreSQL sees no tenant's rows).
    pub async fn tenant_scope<T, F>(&self, tenant: Option<&TenantId>, f: F) -> Result<T>
    where
        T: Send,
        F: for<'c> FnOnce(&'c mut sqlx::AnyConnection) -> BoxFuture<'c, Result<T>> + Send,
    {
        let walled = self.dialect == Dialect::Postgres && self.may_take_tenant_role().await?;
        let mut tx = self.pool.begin().await?;
        if walled {
            sqlx::query("SELECT set_config('role', 'lastmile_tenant', true), set_config('lastmile.tenant', $1, true)")
                .bind(tenant.map(|t| t.as_str()).unwrap_or(""))
                .execute(&mut *tx)
                .await?;
        }
        let out = f(&mut tx).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// The rows `sql` selects for `tenant`, inside its scope: `$1` is the tenant's id and
    /// `$2…` are `binds`, in order.
    pub(crate) async fn tenant_rows(&self, tenant: &TenantId, sql: String, binds: Vec<String>) -> Result<Vec<AnyRow>> {
        let t = tenant.clone();
        self.tenant_scope(Some(tenant), move |c| -> BoxFuture<'_, Result<Vec<AnyRow>>> {
            Box::pin(async move {
                let mut q = sqlx::query(&sql).bind(t.as_str());
                for b in &binds {
                    q = q.bind(b.as_str());
                }
                Ok(q.fetch_all(&mut *c).await?)
            })
        })
        .await
    }

    /// Whether the restricted role exists and this connection's role may take it (the
    /// migration could not make it without CREATEROLE): asked once per handle.
    async fn may_take_tenant_role(&self) -> Result<bool> {
        let ok = self
            .tenant_role
            .get_or_try_init(|| async {
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n FROM pg_roles WHERE rolname = 'lastmile_tenant' \
                     AND pg_has_role(current_user, oid, 'MEMBER')",
                )
                .fetch_one(&self.pool)
                .await?;
                let ok = crate::get::<i64>(&row, "n")? == 1;
                if !ok {
                    tracing::warn!(
                        "role lastmile_tenant is missing or not granted: tenant reads run without row security"
                    );
                }
                Ok::<bool, crate::StorageError>(ok)
            })
            .await?;
        Ok(*ok)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::TestDb;
    use crate::{Db, Result};
    use futures::future::BoxFuture;
    use lastmile_core::TenantId;

    /// Every `tenant_id` a query without a tenant filter sees from inside a tenant scope.
    async fn unfiltered(db: &Db, scope: Option<&TenantId>, sql: &'static str) -> Vec<String> {
        db.tenant_scope(scope, |c| -> BoxFuture<'_, Result<Vec<String>>> {
            Box::pin(async move {
                let rows = sqlx::query(sql).fetch_all(&mut *c).await?;
                rows.iter().map(|r| crate::get::<String>(r, "t")).collect()
            })
        })
        .await
        .expect("scoped query")
    }

    #[tokio::test]
    async fn a_query_that_forgets_its_tenant_filter_sees_nothing_of_another_tenant() {
        for t in TestDb::all().await {
            let db = &t.db;
            let mut seeded = Vec::new();
            for _ in 0..2 {
                let src = crate::write_path_tests::seed(db).await;
                let it = crate::write_path_tests::item(&src, "1001", 1);
                db.intake_platform_order(it.src, it.n, it.raw).await.unwrap();
                seeded.push(src);
            }
            let (a, b) = (seeded[0].tenant_id.clone(), seeded[1].tenant_id.clone());
            let stores = db.list_stores(&a).await.unwrap();
            assert_eq!(stores.iter().map(|s| &s.id).collect::<Vec<_>>(), vec![&seeded[0].store_id]);
            assert!(db.get_store(&b, &seeded[0].store_id).await.is_err(), "another tenant's store is not found");
            assert!(db.get_store(&a, &seeded[0].store_id).await.is_ok());
            // The owner (system work) sees both tenants.
            let all: Vec<String> = sqlx::query("SELECT DISTINCT tenant_id AS t FROM orders")
                .fetch_all(db.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| crate::get::<String>(r, "t").unwrap())
                .collect();
            assert_eq!(all.len(), 2, "{}", t.backend());
            // Repository reads keep working inside the wall.
            let listed = db.list_orders(&a, &crate::OrderFilter { limit: 10, ..Default::default() }).await.unwrap();
            assert_eq!(listed.len(), 1);
            assert!(db.get_order(&b, &listed[0].id).await.is_err(), "not-yours is not-found");
            assert_eq!(db.get_order(&a, &listed[0].id).await.unwrap().id, listed[0].id);
            if t.backend() == "postgres" {
                let sql = "SELECT tenant_id AS t FROM orders";
                assert_eq!(unfiltered(db, Some(&a), sql).await, vec![a.0.clone()]);
                assert_eq!(unfiltered(db, Some(&b), sql).await, vec![b.0.clone()]);
                assert!(unfiltered(db, None, sql).await.is_empty(), "no tenant named: no rows");
                let sql = "SELECT id AS t FROM tenants";
                assert_eq!(unfiltered(db, Some(&a), sql).await, vec![a.0.clone()]);
                let sql = "SELECT tenant_id AS t FROM stores";
                assert!(unfiltered(db, Some(&a), sql).await.iter().all(|x| *x == a.0));
                // Writing another tenant's row from inside the wall is refused.
                let b2 = b.clone();
                let refused = db
                    .tenant_scope(Some(&a), move |c| -> BoxFuture<'_, Result<u64>> {
                        Box::pin(async move {
                            let done = sqlx::query("UPDATE orders SET notes = 'x' WHERE tenant_id = $1")
                                .bind(b2.as_str())
                                .execute(&mut *c)
                                .await?;
                            Ok(done.rows_affected())
                        })
                    })
                    .await
                    .unwrap();
                assert_eq!(refused, 0, "another tenant's rows cannot be changed either");
                // The connection goes back to the pool as the owner, without a tenant.
                let after: i64 = sqlx::query("SELECT COUNT(*) AS n FROM orders")
                    .fetch_one(db.pool())
                    .await
                    .map(|r| crate::get(&r, "n").unwrap())
                    .unwrap();
                assert_eq!(after, 2);
            }
            t.cleanup().await;
        }
    }
}
