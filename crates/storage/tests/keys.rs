//! Admin keys, signing keys and the audit log in storage, on SQLite and PostgreSQL: a key
//! stored before migration 0008 survives it unchanged; the audit entry of an audited
//! handle commits with the action or not at all; sealed values are replaced only if
//! unchanged.

use lastmile_core::{StoreId, TenantId};
use lastmile_storage::testing::{postgres_url, replace_db_name, TestDb};
use lastmile_storage::*;

/// A database migrated up to (not including) `version`, on each backend; PostgreSQL
/// databases are dropped by the returned cleanup names.
async fn databases_before(version: i64) -> Vec<(Db, Option<(String, String)>, tempfile::TempDir)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let db = Db::connect(&url, DbOptions::default()).await.unwrap();
    let mut m = sqlx::migrate!("./migrations/sqlite");
    m.migrations = m.migrations.iter().filter(|x| x.version < version).cloned().collect::<Vec<_>>().into();
    m.run(db.pool()).await.unwrap();
    out.push((db, None, dir));
    if let Some(admin_url) = postgres_url() {
        let name = format!("lm_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Db::connect(&admin_url, DbOptions { max_connections: 1, ..Default::default() }).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(admin.pool()).await.unwrap();
        admin.close().await;
        let db = Db::connect(&replace_db_name(&admin_url, &name), DbOptions::default()).await.unwrap();
        let mut m = sqlx::migrate!("./migrations/postgres");
        m.migrations = m.migrations.iter().filter(|x| x.version < version).cloned().collect::<Vec<_>>().into();
        m.run(db.pool()).await.unwrap();
        out.push((db, Some((admin_url, name)), tempfile::tempdir().unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_admin_key_survives_the_migration_unchanged() {
    for (db, pg, _dir) in databases_before(8).await {
        // As versions before 0008 stored a tenant and its key.
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ('ten_old', 'Old', 1)")
            .execute(db.pool())
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO admin_keys (id, tenant_id, key_hash, created_at) VALUES ('key_old', 'ten_old', 'hash_old', 1)",
        )
        .execute(db.pool())
        .await
        .unwrap();
        db.migrate().await.unwrap();
        let k = db.admin_key_by_hash("hash_old").await.unwrap();
        assert_eq!((k.id.as_str(), k.tenant_id.as_str(), k.name.as_str()), ("key_old", "ten_old", "initial"));
        assert_eq!((k.prefix, k.created_at, k.revoked_at), (None, 1, None));
        assert_eq!(db.list_admin_keys(&TenantId("ten_old".into())).await.unwrap().len(), 1);
        assert!(db.jwt_keys().await.unwrap().is_empty(), "signing keys are seeded by the server");
        db.close().await;
        if let Some((admin_url, name)) = pg {
            let admin = Db::connect(&admin_url, DbOptions { max_connections: 1, ..Default::default() }).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(admin.pool()).await.unwrap();
            admin.close().await;
        }
    }
}

fn entry(tenant: &TenantId, action: &str, target: Option<&str>) -> AuditEntry {
    AuditEntry {
        tenant_id: Some(tenant.clone()),
        actor_kind: "admin_key".into(),
        actor_id: Some("key_a".into()),
        action: action.into(),
        target_id: target.map(str::to_owned),
        source_ip: Some("192.0.2.1".into()),
        details: Some(serde_json::json!({"why": "test"})),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_commit_with_their_action_or_not_at_all() {
    for t in TestDb::all().await {
        let db = &t.db;
        let tenant = db.create_tenant("Audit", "key_a", "hash_a").await.unwrap().id;
        let other = db.create_tenant("Other", "key_b", "hash_b").await.unwrap().id;

        // A failed action records nothing; the handle's entry is spent with it.
        let audited = db.with_audit(entry(&tenant, "store.delete", Some("sto_missing")));
        assert!(matches!(
            audited.delete_store(&tenant, &StoreId("sto_missing".into())).await,
            Err(StorageError::NotFound)
        ));
        assert!(!audited.flush_audit().await.unwrap());
        assert!(db.audit_log(&tenant, None, 10).await.unwrap().is_empty());

        // Revoking the last live key is refused, and leaves no row.
        let refused =
            db.with_audit(entry(&tenant, "admin_key.revoke", Some("key_a"))).revoke_admin_key(&tenant, "key_a").await;
        assert!(matches!(refused, Err(StorageError::Conflict(ref c)) if c == "last_admin_key"), "{refused:?}");

        // A storage-made id names the target; the entry reads back with the actor's name.
        let key = NewAdminKey {
            id: "key_c".into(),
            name: "ci".into(),
            key_hash: "hash_c".into(),
            prefix: Some("lm_admin_abcd".into()),
        };
        db.with_audit(entry(&tenant, "admin_key.create", None)).create_admin_key(&tenant, key).await.unwrap();
        db.with_audit(entry(&tenant, "admin_key.revoke", Some("key_a")))
            .revoke_admin_key(&tenant, "key_a")
            .await
            .unwrap();
        assert!(matches!(db.admin_key_by_hash("hash_a").await, Err(StorageError::NotFound)));
        let log = db.audit_log(&tenant, None, 10).await.unwrap();
        let got: Vec<(&str, Option<&str>)> =
            log.iter().map(|r| (r.entry.action.as_str(), r.entry.target_id.as_deref())).collect();
        assert_eq!(got, [("admin_key.revoke", Some("key_a")), ("admin_key.create", Some("key_c"))]);
        assert_eq!(log[0].entry, entry(&tenant, "admin_key.revoke", Some("key_a")));
        assert_eq!(log[0].actor_name.as_deref(), Some("initial"));
        assert_eq!(db.audit_log(&tenant, Some(&log[0].id), 10).await.unwrap().len(), 1, "paged by id");

        // Operator-wide entries show to every tenant; tenant entries to their own only.
        let mut system = entry(&tenant, "jwt_key.rotate", Some("kid1"));
        system.tenant_id = None;
        db.record_audit(system).await.unwrap();
        let theirs = db.audit_log(&other, None, 10).await.unwrap();
        assert_eq!(theirs.iter().map(|r| r.entry.action.as_str()).collect::<Vec<_>>(), ["jwt_key.rotate"]);
        assert_eq!(db.audit_log(&tenant, None, 10).await.unwrap().len(), 3);
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_values_are_replaced_only_if_unchanged() {
    for t in TestDb::all().await {
        let db = &t.db;
        let row = |kid: &str, enc: &[u8], retired: Option<i64>| JwtKeyRow {
            kid: kid.into(),
            key_enc: enc.to_vec(),
            created_at: 1,
            retired_at: retired,
        };
        db.seed_jwt_keys(vec![row("k1", b"sealed-1", None), row("k0", b"sealed-0", Some(1))]).await.unwrap();
        db.seed_jwt_keys(vec![row("zz", b"ignored", None)]).await.unwrap();
        assert_eq!(db.current_jwt_kid().await.unwrap().as_deref(), Some("k1"));
        assert_eq!(db.jwt_keys().await.unwrap().len(), 2, "seeding only fills an empty table");
        let col = SealedColumn::ALL.iter().copied().find(|c| c.table == "jwt_keys").unwrap();
        assert!(!db.replace_sealed(col, "k1", b"stale".to_vec(), b"new".to_vec()).await.unwrap());
        assert!(db.replace_sealed(col, "k1", b"sealed-1".to_vec(), b"resealed-1".to_vec()).await.unwrap());
        let values = db.sealed_values(col).await.unwrap();
        assert_eq!(values, [("k0".to_owned(), b"sealed-0".to_vec()), ("k1".to_owned(), b"resealed-1".to_vec())]);

        // A rotation retires every key and purges long-retired ones.
        let mut new = row("k2", b"sealed-2", None);
        new.created_at = now_ms();
        db.rotate_jwt_key(new, 2).await.unwrap();
        let keys = db.jwt_keys().await.unwrap();
        assert_eq!(keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["k2", "k1"], "k0 purged");
        assert!(keys[1].retired_at.is_some() && keys[0].retired_at.is_none());
        assert_eq!(db.current_jwt_kid().await.unwrap().as_deref(), Some("k2"));
        t.cleanup().await;
    }
}
