//! What the ETA model learns, kept: a delivery teaches once, averages follow the domain's
//! rule, they survive a new handle (a restart), and learners on two handles (two nodes)
//! lose no sample. The same tests on SQLite and PostgreSQL.

use lastmile_core::learned::{Ewma, SpeedKey, ZoneCell, ALL_HOURS};
use lastmile_core::*;
use lastmile_storage::testing::TestDb;
use lastmile_storage::{Db, DbOptions, EstimateKey};

fn zone_key() -> EstimateKey {
    EstimateKey::Speed(SpeedKey { zone: Some(ZoneCell { row: 6017, col: 1247 }), hour: 12 })
}

fn city_key() -> EstimateKey {
    EstimateKey::Speed(SpeedKey { zone: None, hour: ALL_HOURS })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_teaches_once_and_the_lesson_is_kept() {
    for t in TestDb::all().await {
        eprintln!("on {}", t.backend());
        let db = &t.db;
        let tenant = TenantId(format!("ten_{}", OrderId::generate().0));
        let first = OrderId::generate();
        db.record_pickup(&tenant, &first, 1_000).await.unwrap();
        let leg = db.delivery_leg(&tenant, &first).await.unwrap().unwrap();
        assert_eq!((leg.picked_up_at, leg.delivered_at, leg.placed_at), (Some(1_000), None, None));

        let samples = vec![(zone_key(), 4.0), (city_key(), 4.0), (EstimateKey::Prep("st_1".into()), 1.5)];
        let now = db.learn_delivery(&tenant, &first, 2_000, samples.clone(), 0.2).await.unwrap().unwrap();
        assert_eq!(now[0], (zone_key(), Ewma { mean: 4.0, samples: 1 }));
        // The same delivery again (a retried request): nothing more is learned.
        assert_eq!(db.learn_delivery(&tenant, &first, 2_500, samples, 0.2).await.unwrap(), None);
        assert_eq!(db.delivery_leg(&tenant, &first).await.unwrap().unwrap().delivered_at, Some(2_000));

        let second = OrderId::generate();
        db.record_pickup(&tenant, &second, 3_000).await.unwrap();
        let now = db.learn_delivery(&tenant, &second, 4_000, vec![(zone_key(), 2.0)], 0.2).await.unwrap().unwrap();
        assert_eq!(now, vec![(zone_key(), Ewma::first(4.0).update(2.0, 0.2))]);

        // A new handle — a restart — reads back what was learned.
        let again = Db::connect(&t.url, DbOptions::default()).await.unwrap();
        let all = again.learned_etas().await.unwrap();
        let mine = &all[&tenant];
        let zone = SpeedKey { zone: Some(ZoneCell { row: 6017, col: 1247 }), hour: 12 };
        assert_eq!(mine.speed[&zone], Ewma { mean: 3.0, samples: 2 });
        assert_eq!(mine.speed[&SpeedKey { zone: None, hour: ALL_HOURS }], Ewma::first(4.0));
        assert_eq!(mine.prep["st_1"], Ewma::first(1.5));
        again.close().await;
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_on_two_nodes_lose_no_sample() {
    for t in TestDb::all().await {
        eprintln!("on {}", t.backend());
        let other = Db::connect(&t.url, DbOptions::default()).await.unwrap();
        let tenant = TenantId(format!("ten_{}", OrderId::generate().0));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let db = if i % 2 == 0 { t.db.clone() } else { other.clone() };
            let tenant = tenant.clone();
            tasks.push(tokio::spawn(async move {
                let order = OrderId::generate();
                db.record_pickup(&tenant, &order, i).await.unwrap();
                db.learn_delivery(&tenant, &order, 10_000 + i, vec![(city_key(), 5.0)], 0.2).await.unwrap().unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let all = t.db.learned_etas().await.unwrap();
        assert_eq!(all[&tenant].speed[&SpeedKey { zone: None, hour: ALL_HOURS }], Ewma { mean: 5.0, samples: 16 });
        other.close().await;
        t.cleanup().await;
    }
}
