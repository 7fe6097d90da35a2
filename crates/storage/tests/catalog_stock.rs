//! Stock is never oversold: random interleavings of catalog orders and cancellations
//! against the real repository (SQLite), and a true cross-node race on PostgreSQL, where
//! two independent handles (two writers, two pools) fight over the same dish and the
//! optimistic version check is what keeps the count right.

use lastmile_catalog::{Menu, Stock};
use lastmile_core::*;
use lastmile_storage::testing::TestDb;
use lastmile_storage::*;
use proptest::prelude::*;

const SUPPLY: i64 = 6;

fn order(n: usize) -> NormalizedOrder {
    NormalizedOrder {
        platform: Platform::Native,
        platform_order_id: format!("o-{n}-{}", OrderId::generate().0),
        platform_order_number: None,
        state: PlatformState::Open,
        customer: Customer { name: "Ada".into(), email: None, phone: None },
        dropoff: Dropoff {
            address: Address {
                line1: "Mannerheimintie 1".into(),
                city: "Helsinki".into(),
                postal_code: "00100".into(),
                country: "FI".into(),
                ..Default::default()
            },
            lat: Some(60.17),
            lng: Some(24.94),
        },
        items: vec![],
        totals: Totals { subtotal_minor: 0, shipping_minor: 0, tax_minor: 0, total_minor: 0, currency: "XXX".into() },
        notes: None,
        placed_at: None,
        platform_updated_at: None,
    }
}

/// A tenant, a store and a menu with one counted dish; returns the source and dish id.
async fn seed(db: &Db) -> (IntakeSource, String) {
    let tenant = db.create_tenant("acme", &OrderId::generate().0, &OrderId::generate().0).await.unwrap();
    let now = now_ms();
    let store = db
        .create_store(StoreRecord {
            id: StoreId::generate(),
            tenant_id: tenant.id.clone(),
            name: "Grill".into(),
            platform: Platform::Native,
            platform_store_id: OrderId::generate().0,
            webhook_secret_enc: vec![1],
            api_base_url: None,
            api_credentials_enc: None,
            pickup_lat: 60.17,
            pickup_lng: 24.94,
            pickup_address: "Street 1".into(),
            tier: "standard".into(),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    let menu: Menu =
        serde_json::from_value(serde_json::json!({"cuisine": ["turkish"], "categories": [{"name": "Mains",
        "items": [{"sku": "K1", "name": "Kebab", "price_minor": 990, "currency": "EUR", "prep_time_s": 600,
                   "stock": {"kind": "count", "quantity": SUPPLY}}]}]}))
        .unwrap();
    let view = db.put_menu(&tenant.id, &store.id, menu.validate().unwrap()).await.unwrap();
    let src = IntakeSource { tenant_id: tenant.id, store_id: store.id, platform: Platform::Native };
    (src, view.items[0].id.clone())
}

async fn on_hand(db: &Db, src: &IntakeSource) -> i64 {
    match db.menu_view(&src.tenant_id, &src.store_id).await.unwrap().items[0].item.stock {
        Stock::Count { quantity } => quantity,
        other => panic!("{other:?}"),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Order(i64),
    /// Cancel the n-th live order (modulo how many there are).
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => (1i64..4).prop_map(Op::Order), 1 => any::<usize>().prop_map(Op::Cancel)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Rounds of concurrent operations: after each, the stock on hand plus what live orders
    /// hold equals the supply, and nothing is ever below zero.
    #[test]
    fn stock_is_conserved_and_never_negative(rounds in prop::collection::vec(prop::collection::vec(op(), 1..5), 1..6)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let t = TestDb::sqlite().await;
            let (src, dish) = seed(&t.db).await;
            let mut live: Vec<(OrderId, i64)> = Vec::new();
            let mut n = 0;
            for round in rounds {
                let mut tasks = Vec::new();
                for op in round {
                    n += 1;
                    let (db, src, dish) = (t.db.clone(), src.clone(), dish.clone());
                    let cancel = match op {
                        Op::Cancel(i) if !live.is_empty() => Some(live.remove(i % live.len())),
                        _ => None,
                    };
                    tasks.push(tokio::spawn(async move {
                        match (op, cancel) {
                            (Op::Order(q), _) => {
                                let out = db.create_catalog_order(src, order(n), vec![(dish, q)], ReadyPlan::menu_prep(0), None).await.unwrap();
                                match out {
                                    CatalogOrderOutcome::Placed(o, _) => Some((o.id, q)),
                                    CatalogOrderOutcome::OutOfStock(s) => {
                                        assert!(s[0].available < q, "refused although {} were there for {q}", s[0].available);
                                        None
                                    }
                                    other => panic!("{other:?}"),
                                }
                            }
                            (Op::Cancel(_), Some((id, _))) => {
                                db.cancel_order(&src.tenant_id, &id, "test").await.unwrap();
                                None
                            }
                            (Op::Cancel(_), None) => None,
                        }
                    }));
                }
                for task in tasks {
                    if let Some(placed) = task.await.unwrap() {
                        live.push(placed);
                    }
                }
                let held: i64 = live.iter().map(|(_, q)| q).sum();
                let have = on_hand(&t.db, &src).await;
                assert!(have >= 0);
                assert_eq!(have + held, SUPPLY, "on hand {have}, held by live orders {held}");
            }
            t.cleanup().await;
        });
    }
}

/// Two nodes, one PostgreSQL: 20 orders for one unit each race over 6 in stock, split over
/// two independent handles. Exactly 6 are placed and the count ends at zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_on_postgres_never_oversell() {
    let Some(t) = TestDb::postgres().await else { return };
    let (src, dish) = seed(&t.db).await;
    let other = Db::connect(&t.url, DbOptions::default()).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let db = if i % 2 == 0 { t.db.clone() } else { other.clone() };
            let (src, dish) = (src.clone(), dish.clone());
            tokio::spawn(async move {
                db.create_catalog_order(src, order(i), vec![(dish, 1)], ReadyPlan::menu_prep(0), None).await.unwrap()
            })
        })
        .collect();
    let mut placed = 0;
    for task in tasks {
        if let CatalogOrderOutcome::Placed(..) = task.await.unwrap() {
            placed += 1;
        }
    }
    assert_eq!(placed, SUPPLY);
    assert_eq!(on_hand(&t.db, &src).await, 0);
    other.close().await;
    t.cleanup().await;
}
