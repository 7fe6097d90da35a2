//! Dispatch leases on SQLite and PostgreSQL: one holder at a time, taken over only once run
//! out, renewed by the holder only, given back on release — and racing takers never both win.

use lastmile_core::TenantId;
use lastmile_storage::testing::TestDb;

async fn tenant(db: &lastmile_storage::Db, name: &str) -> TenantId {
    let key = format!("key_{}", TenantId::generate().0);
    db.create_tenant(name, &key, &format!("hash_{key}")).await.unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_holds_a_tenants_lease_until_it_runs_out() {
    for tdb in TestDb::all().await {
        eprintln!("leases on {}", tdb.backend());
        let db = &tdb.db;
        let (t1, t2) = (tenant(db, "one").await, tenant(db, "two").await);
        let ids = db.tenant_ids().await.unwrap();
        assert!(ids.contains(&t1) && ids.contains(&t2));

        assert!(db.try_dispatch_lease(&t1, "a", 1_000, 6_000).await.unwrap(), "a free lease is taken");
        assert!(!db.try_dispatch_lease(&t1, "b", 5_999, 10_999).await.unwrap(), "a live lease is not");
        assert!(db.try_dispatch_lease(&t1, "a", 2_000, 7_000).await.unwrap(), "its holder extends it");
        assert!(db.try_dispatch_lease(&t2, "b", 2_000, 7_000).await.unwrap());

        // Renewal extends only the caller's own leases.
        assert_eq!(db.renew_dispatch_leases("a", 9_000).await.unwrap(), vec![t1.clone()]);
        let leases = db.dispatch_leases().await.unwrap();
        let of = |t: &TenantId| leases.iter().find(|l| &l.tenant_id == t).unwrap().clone();
        assert_eq!((of(&t1).node_id.as_str(), of(&t1).expires_at), ("a", 9_000));
        assert_eq!((of(&t2).node_id.as_str(), of(&t2).expires_at), ("b", 7_000));

        // Run out: another node takes it, and the old holder's renewal no longer reaches it.
        assert!(db.try_dispatch_lease(&t1, "b", 9_001, 14_000).await.unwrap(), "a run-out lease moves");
        assert!(db.renew_dispatch_leases("a", 20_000).await.unwrap().is_empty());
        assert!(!db.try_dispatch_lease(&t1, "a", 9_500, 14_500).await.unwrap());

        // Released: free at once for anyone; releasing what is not yours does nothing.
        assert!(!db.release_dispatch_lease(&t2, "a").await.unwrap());
        assert!(db.release_dispatch_lease(&t2, "b").await.unwrap());
        assert!(db.try_dispatch_lease(&t2, "a", 9_600, 14_600).await.unwrap());

        // Many nodes racing for one run-out lease: exactly one wins.
        let t3 = tenant(db, "three").await;
        let racers = (0..8).map(|i| {
            let db = db.clone();
            let t3 = t3.clone();
            tokio::spawn(async move { db.try_dispatch_lease(&t3, &format!("n{i}"), 20_000, 25_000).await.unwrap() })
        });
        let wins = futures::future::join_all(racers).await.into_iter().filter(|w| *w.as_ref().unwrap()).count();
        assert_eq!(wins, 1, "exactly one racer holds the lease");
        tdb.cleanup().await;
    }
}
