//! The storage story: one suite, run unchanged on SQLite and on PostgreSQL.

use lastmile_core::*;
use lastmile_storage::*;

fn normalized(id: &str, updated_at: i64, with_coords: bool) -> NormalizedOrder {
    NormalizedOrder {
        platform: Platform::Shopify,
        platform_order_id: id.into(),
        platform_order_number: Some("#1001".into()),
        state: PlatformState::Open,
        customer: Customer { name: "Ada".into(), email: Some("ada@example.com".into()), phone: None },
        dropoff: Dropoff {
            address: Address {
                line1: "Mannerheimintie 1".into(),
                city: "Helsinki".into(),
                postal_code: "00100".into(),
                country: "FI".into(),
                ..Default::default()
            },
            lat: with_coords.then_some(60.17),
            lng: with_coords.then_some(24.94),
        },
        items: vec![LineItem { sku: Some("SKU".into()), name: "Soup".into(), quantity: 2, unit_price_minor: 1250 }],
        totals: Totals {
            subtotal_minor: 2500,
            shipping_minor: 0,
            tax_minor: 0,
            total_minor: 2500,
            currency: "EUR".into(),
        },
        notes: None,
        placed_at: None,
        platform_updated_at: Some(from_ms(updated_at)),
    }
}

fn raw() -> RawDelivery {
    RawDelivery { headers_json: "{}".into(), body: b"{}".to_vec() }
}

async fn seed(db: &Db) -> (TenantId, StoreRecord) {
    let tenant = db.create_tenant("acme", &format!("key_{}", uuid_like()), &uuid_like()).await.unwrap();
    let now = now_ms();
    let store = StoreRecord {
        id: StoreId::generate(),
        tenant_id: tenant.id.clone(),
        name: "Acme".into(),
        platform: Platform::Shopify,
        platform_store_id: format!("{}.myshopify.com", uuid_like()),
        webhook_secret_enc: vec![1, 2, 3],
        api_base_url: None,
        api_credentials_enc: None,
        pickup_lat: 60.17,
        pickup_lng: 24.94,
        pickup_address: "Store street 1".into(),
        tier: "standard".into(),
        created_at: now,
        updated_at: now,
    };
    let store = db.create_store(store).await.unwrap();
    (tenant.id, store)
}

fn uuid_like() -> String {
    OrderId::generate().0
}

fn src(t: &TenantId, s: &StoreRecord) -> IntakeSource {
    IntakeSource { tenant_id: t.clone(), store_id: s.id.clone(), platform: s.platform }
}

const POLICY: StallPolicy = StallPolicy { max_attempts: 3 };

async fn tenants_stores_and_scoping(db: &Db) {
    let (t1, store) = seed(db).await;
    let (t2, _) = seed(db).await;
    assert_eq!(db.get_store(&t1, &store.id).await.unwrap().name, "Acme");
    assert!(matches!(db.get_store(&t2, &store.id).await, Err(StorageError::NotFound)), "other tenant must not see it");
    let dup = StoreRecord { id: StoreId::generate(), ..store.clone() };
    assert!(matches!(db.create_store(dup).await, Err(StorageError::Conflict(_))));
    // Another tenant cannot register the same shop either; a native store names itself freely.
    let theirs = StoreRecord { id: StoreId::generate(), tenant_id: t2.clone(), ..store.clone() };
    assert!(matches!(db.create_store(theirs).await, Err(StorageError::Conflict(_))), "one shop, one owner");
    let native = StoreRecord { platform: Platform::Native, platform_store_id: "pos-1".into(), ..store.clone() };
    db.create_store(StoreRecord { id: StoreId::generate(), ..native.clone() }).await.unwrap();
    db.create_store(StoreRecord { id: StoreId::generate(), tenant_id: t2.clone(), ..native }).await.unwrap();
    let patched =
        db.patch_store(&t1, &store.id, StorePatch { name: Some("Acme 2".into()), ..Default::default() }).await.unwrap();
    assert_eq!(patched.name, "Acme 2");
    assert!(matches!(db.patch_store(&t2, &store.id, StorePatch::default()).await, Err(StorageError::NotFound)));
    assert_eq!(db.find_stores_by_identity(Platform::Shopify, &store.platform_store_id).await.unwrap().len(), 1);
    db.delete_store(&t1, &store.id).await.unwrap();
    assert!(matches!(db.get_store(&t1, &store.id).await, Err(StorageError::NotFound)));
    assert_eq!(db.list_stores(&t1).await.unwrap().len(), 1, "only the native store is left");
}

async fn credentials(db: &Db) {
    let t = db.create_tenant("t", "key_a", "hash_a").await.unwrap();
    assert_eq!(db.tenant_for_admin_key("hash_a").await.unwrap().0, t.id);
    assert!(db.tenant_for_admin_key("nope").await.is_err());
    let c = db.create_api_client(&t.id, "pos", "argon").await.unwrap();
    assert_eq!(db.get_api_client(c.id.as_str()).await.unwrap().tenant_id, t.id);
    let d = db.create_driver(&t.id, "Dan", "+358", "bike", 1, "tok_hash").await.unwrap();
    assert_eq!(db.driver_for_token("tok_hash").await.unwrap().id, d.id);
    let other = db.create_tenant("u", "key_b", "hash_b").await.unwrap();
    assert!(matches!(db.get_driver(&other.id, &d.id).await, Err(StorageError::NotFound)));
}

async fn intake_exactly_once_and_in_order(db: &Db) {
    let (t, store) = seed(db).await;
    let first =
        db.intake_platform_order(src(&t, &store), normalized("820982911946154508", 1000, true), raw()).await.unwrap();
    assert_eq!(first.result, IntakeResult::Created);
    let id = first.order_id.clone().unwrap();
    let again =
        db.intake_platform_order(src(&t, &store), normalized("820982911946154508", 1000, true), raw()).await.unwrap();
    assert_eq!((again.result, again.order_id.clone()), (IntakeResult::Duplicate, Some(id.clone())));
    let mut newer = normalized("820982911946154508", 3000, true);
    newer.notes = Some("ring twice".into());
    assert_eq!(db.intake_platform_order(src(&t, &store), newer, raw()).await.unwrap().result, IntakeResult::Updated);
    let mut older = normalized("820982911946154508", 2000, true);
    older.notes = Some("stale note".into());
    assert_eq!(db.intake_platform_order(src(&t, &store), older, raw()).await.unwrap().result, IntakeResult::Stale);
    let order = db.get_order(&t, &id).await.unwrap();
    assert_eq!(order.notes.as_deref(), Some("ring twice"), "a stale update must not overwrite newer state");
    assert_eq!(order.platform_order_id, "820982911946154508");
    assert_eq!(order.status, OrderStatus::Received);
    assert_eq!(db.count_raw_payloads(&t).await.unwrap(), 4, "every authenticated delivery is archived");

    // No coordinates: the order waits with a reason until ops locate it.
    let o2 = db.intake_platform_order(src(&t, &store), normalized("2", 1, false), raw()).await.unwrap();
    let o2 = db.get_order(&t, &o2.order_id.unwrap()).await.unwrap();
    assert_eq!(o2.status, OrderStatus::NeedsLocation);
    assert!(o2.status_reason.is_some());
    let located = db.patch_order(&t, &o2.id, Some((60.2, 24.9)), None).await.unwrap();
    assert_eq!(located.status, OrderStatus::Received);

    // Platform cancellation.
    let mut cancelled = normalized("2", 5, false);
    cancelled.state = PlatformState::Cancelled;
    db.intake_platform_order(src(&t, &store), cancelled, raw()).await.unwrap();
    assert_eq!(db.get_order(&t, &o2.id).await.unwrap().status, OrderStatus::Cancelled);

    // Concurrent duplicates: one order, every answer carries its id.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (db, s) = (db.clone(), src(&t, &store));
        tasks.push(tokio::spawn(async move {
            db.intake_platform_order(s, normalized("race", 7, true), raw()).await.unwrap()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for task in tasks {
        let out = task.await.unwrap();
        created += usize::from(out.result == IntakeResult::Created);
        ids.insert(out.order_id.unwrap());
    }
    assert_eq!((created, ids.len()), (1, 1));
}

async fn idempotency_keys(db: &Db) {
    let (t, store) = seed(db).await;
    let key = IdempotencyRef { client_id: "cli".into(), key: "k1".into() };
    assert_eq!(db.begin_idempotency(&t, &key, "h1", 86_400_000).await.unwrap(), IdempotencyBegin::Fresh);
    assert_eq!(db.begin_idempotency(&t, &key, "h1", 86_400_000).await.unwrap(), IdempotencyBegin::InFlight);
    assert_eq!(db.begin_idempotency(&t, &key, "h2", 86_400_000).await.unwrap(), IdempotencyBegin::Mismatch);
    let mut n = normalized("native-1", 1, true);
    n.platform = Platform::Native;
    let native_src = IntakeSource { platform: Platform::Native, ..src(&t, &store) };
    let (order, result) = db.create_native_order(native_src, n, now_ms(), Some(key.clone())).await.unwrap();
    assert_eq!(result, IntakeResult::Created);
    match db.begin_idempotency(&t, &key, "h1", 86_400_000).await.unwrap() {
        IdempotencyBegin::Completed { status, body } => {
            assert_eq!(status, 201);
            assert!(body.contains(order.id.as_str()));
        }
        other => panic!("expected the stored response, got {other:?}"),
    }
}

async fn listing_with_cursor(db: &Db) {
    let (t, store) = seed(db).await;
    for i in 0..5 {
        db.intake_platform_order(src(&t, &store), normalized(&format!("L{i}"), 1, true), raw()).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page =
            db.list_orders(&t, &OrderFilter { limit: 2, after: after.clone(), ..Default::default() }).await.unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        after = Some((to_ms(last.updated_at), last.id.0.clone()));
        seen.extend(page.into_iter().map(|o| o.id));
    }
    assert_eq!(seen.len(), 5);
    let filtered = db
        .list_orders(&t, &OrderFilter { limit: 10, status: Some(OrderStatus::Delivered), ..Default::default() })
        .await
        .unwrap();
    assert!(filtered.is_empty());
}

async fn offers_capacity_and_lifecycle(db: &Db) {
    let (t, store) = seed(db).await;
    let d = db.create_driver(&t, "Dan", "+358", "bike", 1, &uuid_like()).await.unwrap();
    db.set_driver_status(&t, &d.id, "online").await.unwrap();
    let a = db.intake_platform_order(src(&t, &store), normalized("A", 1, true), raw()).await.unwrap().order_id.unwrap();
    let b = db.intake_platform_order(src(&t, &store), normalized("B", 1, true), raw()).await.unwrap().order_id.unwrap();
    let (offer_a, seq_a) = db.create_offer(&t, &a, &d.id, now_ms(), 30_000).await.unwrap();
    let (offer_b, seq_b) = db.create_offer(&t, &b, &d.id, now_ms(), 30_000).await.unwrap();
    assert!(seq_b > seq_a);
    // Both accepted at once: the database lets exactly one through (capacity 1).
    let (r1, r2) =
        tokio::join!(db.accept_offer(&t, &d.id, &offer_a, now_ms()), db.accept_offer(&t, &d.id, &offer_b, now_ms()));
    assert_eq!(usize::from(r1.is_ok()) + usize::from(r2.is_ok()), 1, "{r1:?} {r2:?}");
    assert_eq!(db.active_assignments(&d.id).await.unwrap(), 1);
    let (won, lost_offer, lost_order) =
        if r1.is_ok() { (a.clone(), offer_b, b.clone()) } else { (b.clone(), offer_a, a.clone()) };
    db.decline_offer(&t, &d.id, &lost_offer, "busy", POLICY).await.unwrap();
    assert_eq!(db.get_order(&t, &lost_order).await.unwrap().status, OrderStatus::Received);
    let cands = db.dispatch_candidates(100).await.unwrap();
    let c = cands.iter().find(|c| c.order.id == lost_order).expect("declined order back in matching");
    assert_eq!(c.excluded, vec![d.id.clone()]);

    db.driver_order_step(&t, &d.id, &won, OrderStatus::PickedUp, serde_json::Value::Null).await.unwrap();
    let delivered = db
        .driver_order_step(&t, &d.id, &won, OrderStatus::Delivered, serde_json::json!({"recipient": "Ada"}))
        .await
        .unwrap();
    assert_eq!(delivered.status, OrderStatus::Delivered);
    assert_eq!(db.get_driver(&t, &d.id).await.unwrap().active_count, 0, "delivery frees the driver");
    let jobs = db.sync_jobs_for_order(&t, &won).await.unwrap();
    assert_eq!(jobs.iter().map(|j| j.0.as_str()).collect::<Vec<_>>(), vec!["picked_up", "delivered"]);

    // Inbox: ordered, complete, resumable.
    let inbox = db.inbox_after(&t, &d.id, 0, 100).await.unwrap();
    let seqs: Vec<i64> = inbox.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert_eq!(inbox[0].kind, "offer");
    assert_eq!(db.inbox_after(&t, &d.id, 1, 100).await.unwrap().len(), inbox.len() - 1);
}

async fn expiry_and_stall(db: &Db) {
    let (t, store) = seed(db).await;
    let o = db.intake_platform_order(src(&t, &store), normalized("E", 1, true), raw()).await.unwrap().order_id.unwrap();
    for i in 0..3 {
        let d = db.create_driver(&t, &format!("D{i}"), "+358", "car", 1, &uuid_like()).await.unwrap();
        db.set_driver_status(&t, &d.id, "online").await.unwrap();
        db.create_offer(&t, &o, &d.id, now_ms(), 0).await.unwrap();
        assert_eq!(db.expire_offers(now_ms() + 1, POLICY).await.unwrap(), 1);
        let kinds: Vec<String> = db.inbox_after(&t, &d.id, 0, 10).await.unwrap().into_iter().map(|m| m.kind).collect();
        assert_eq!(kinds, vec!["offer", "offer_expired"]);
    }
    let order = db.get_order(&t, &o).await.unwrap();
    assert!(order.dispatch_stalled, "three expiries must flag the order");
    assert_eq!(order.status, OrderStatus::Received, "a stalled order is never lost");
}

async fn cancel_releases_driver(db: &Db) {
    let (t, store) = seed(db).await;
    let d = db.create_driver(&t, "Dan", "+358", "bike", 1, &uuid_like()).await.unwrap();
    db.set_driver_status(&t, &d.id, "online").await.unwrap();
    let o = db.intake_platform_order(src(&t, &store), normalized("C", 1, true), raw()).await.unwrap().order_id.unwrap();
    let (offer, _) = db.create_offer(&t, &o, &d.id, now_ms(), 30_000).await.unwrap();
    db.accept_offer(&t, &d.id, &offer, now_ms()).await.unwrap();
    db.cancel_order(&t, &o, "customer called").await.unwrap();
    assert_eq!(db.get_driver(&t, &d.id).await.unwrap().active_count, 0);
    let last = db.inbox_after(&t, &d.id, 0, 10).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, "assignment_cancelled");
    assert_eq!(db.sync_jobs_for_order(&t, &o).await.unwrap()[0].0, "cancelled");
}

async fn sync_jobs_lease_retry_dead(db: &Db) {
    let (t, store) = seed(db).await;
    let o = db.intake_platform_order(src(&t, &store), normalized("S", 1, true), raw()).await.unwrap().order_id.unwrap();
    db.cancel_order(&t, &o, "x").await.unwrap();
    let now = now_ms();
    let jobs = db.claim_sync_jobs(now, 10, 60_000).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(db.claim_sync_jobs(now, 10, 60_000).await.unwrap().is_empty(), "a leased job is not claimed twice");
    db.retry_sync_job(&jobs[0].id, now + 1000, true, "503", Some(503), None).await.unwrap();
    assert!(db.claim_sync_jobs(now, 10, 60_000).await.unwrap().is_empty());
    let again = db.claim_sync_jobs(now + 1000, 10, 60_000).await.unwrap();
    assert_eq!(again[0].attempts, 1);
    let dl = db
        .dead_letter_sync_job(&again[0], serde_json::json!({"PUT": "/x"}), "exhausted", Some(503), Some("down".into()))
        .await
        .unwrap();
    let letters = db
        .list_dead_letters(&t, &DeadLetterFilter { kind: Some("sync".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(letters[0].id, dl);
    assert_eq!(letters[0].context["request"]["PUT"], "/x");
    assert!(db.requeue_sync_job(&t, &again[0].id).await.unwrap());
    assert!(!db.requeue_sync_job(&t, &again[0].id).await.unwrap(), "replay is idempotent");
    assert_eq!(db.sync_job_state(&t, &again[0].id).await.unwrap(), "pending");
}

async fn outbox_in_commit_order(db: &Db) {
    let before = db.unpublished_events(100_000).await.unwrap();
    let start = before.last().map(|e| e.seq).unwrap_or(0);
    db.mark_published_through(start).await.unwrap();
    let (t, store) = seed(db).await;
    let o = db.intake_platform_order(src(&t, &store), normalized("O", 1, true), raw()).await.unwrap().order_id.unwrap();
    db.cancel_order(&t, &o, "x").await.unwrap();
    let events = db.unpublished_events(100).await.unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EventKind::OrderCreated, EventKind::OrderCancelled]);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    db.mark_published_through(events[0].seq).await.unwrap();
    assert_eq!(db.unpublished_events(100).await.unwrap().len(), 1);
}

async fn failed_job_leaves_no_partial_write(db: &Db) {
    // Many jobs share one group commit; the failing ones must leave nothing behind while
    // their batch-mates commit (invariant 10: no partial writes).
    let mut tasks = Vec::new();
    for i in 0..40 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.write(move |c| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, 0)")
                        .bind(format!("ten_partial_{i}"))
                        .bind("p")
                        .execute(&mut *c)
                        .await?;
                    if i % 2 == 1 {
                        return Err(StorageError::Conflict("injected failure after a write".into()));
                    }
                    Ok(())
                })
            })
            .await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().is_ok(), i % 2 == 0);
    }
    for i in 0..40 {
        let found = db.get_tenant(&TenantId(format!("ten_partial_{i}"))).await.is_ok();
        assert_eq!(found, i % 2 == 0, "job {i}: committed iff it succeeded");
    }
}

/// A statement the database refuses (PostgreSQL refuses NUL in TEXT) must not poison the
/// connection it ran on: every later write and read on every pooled connection succeeds.
async fn a_refused_statement_poisons_nothing(db: &Db) {
    let (t, store) = seed(db).await;
    for round in 0..6 {
        let mut bad = normalized(&format!("nul-{round}"), 1_000, true);
        bad.notes = Some("leave at the door\0please".into());
        bad.customer.name = format!("Ada\0{round}");
        let refused = db.intake_platform_order(src(&t, &store), bad, raw()).await;
        if db.dialect() == Dialect::Sqlite {
            refused.expect("SQLite stores NUL");
        } else {
            assert!(refused.is_err(), "PostgreSQL refuses NUL in TEXT");
        }
        for i in 0..4 {
            let id = format!("ok-{round}-{i}");
            let mut good = normalized(&id, 1_000 + i, i % 2 == 0);
            good.notes = (i % 2 == 1).then(|| "ring twice".to_owned());
            let out = db
                .intake_platform_order(src(&t, &store), good, raw())
                .await
                .unwrap_or_else(|e| panic!("round {round}, order {i}: a valid order after a refused one failed: {e}"));
            assert_eq!(out.result, IntakeResult::Created);
            db.get_order(&t, &out.order_id.expect("an id")).await.expect("and it reads back");
        }
    }
}

/// The first order a connection stores has no coordinates, the next has them: the
/// statement prepared for the first must not refuse the second (a NULL double once
/// declared the parameter `float4` on PostgreSQL and poisoned the connection).
async fn an_order_without_coordinates_first_poisons_nothing(db: &Db) {
    let (t, store) = seed(db).await;
    for (i, with_coords) in [false, true, false, true].into_iter().enumerate() {
        let out = db
            .intake_platform_order(src(&t, &store), normalized(&format!("first-null-{i}"), 1_000, with_coords), raw())
            .await
            .unwrap_or_else(|e| panic!("order {i} (coordinates: {with_coords}) failed: {e}"));
        let order = db.get_order(&t, &out.order_id.expect("an id")).await.unwrap();
        assert_eq!(order.dropoff.lat.is_some(), with_coords);
    }
}

/// Re-posting one delivery costs a row, not another copy of its body; purging the rows
/// purges the body they shared.
async fn raw_payload_archive_keeps_each_body_once(db: &Db) {
    let (t, store) = seed(db).await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let delivery = || RawDelivery { headers_json: "{}".into(), body: body.clone() };
    let mut first = None;
    for _ in 0..20 {
        let out =
            db.intake_platform_order(src(&t, &store), normalized("replayed", 1_000, true), delivery()).await.unwrap();
        first.get_or_insert(out.order_id.expect("an id"));
    }
    assert_eq!(db.count_raw_payloads(&t).await.unwrap(), 20, "every delivery is recorded");
    assert_eq!(db.count_raw_payload_bodies(&t).await.unwrap(), 1, "one body for identical deliveries");
    let order = db.get_order(&t, &first.unwrap()).await.unwrap();
    let archived = db.raw_payload_body(&t, order.raw_payload_id.as_ref().expect("archived")).await.unwrap();
    assert_eq!(archived, body, "the archive gives back the exact bytes");
    db.intake_platform_order(src(&t, &store), normalized("other", 1_000, true), raw()).await.unwrap();
    assert_eq!(db.count_raw_payload_bodies(&t).await.unwrap(), 2);

    db.purge_raw_payloads(now_ms() + 1).await.unwrap();
    assert_eq!(db.count_raw_payloads(&t).await.unwrap(), 0);
    assert_eq!(db.count_raw_payload_bodies(&t).await.unwrap(), 0, "unreferenced bodies go with their rows");
}

/// Each event reaches each subscribed endpoint's queue once, even when the relay hands a
/// batch over twice; unsubscribed kinds, disabled endpoints and other tenants get nothing;
/// a claimed delivery is leased, and a dead one goes back to the queue once.
async fn webhook_fan_out_once_per_endpoint(db: &Db) {
    use lastmile_storage::{NewWebhookEndpoint, WebhookEndpointPatch};
    let before = db.unpublished_events(100_000).await.unwrap();
    db.mark_published_through(before.last().map(|e| e.seq).unwrap_or(0)).await.unwrap();
    let (t, store) = seed(db).await;
    let ep = |events: &[&str]| NewWebhookEndpoint {
        url: "https://hooks.example/x".into(),
        description: String::new(),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        secret_enc: vec![1, 2, 3],
    };
    let all = db.create_webhook_endpoint(&t, ep(&["*"])).await.unwrap();
    let created_only = db.create_webhook_endpoint(&t, ep(&["order_created"])).await.unwrap();
    let off = db.create_webhook_endpoint(&t, ep(&["*"])).await.unwrap();
    db.update_webhook_endpoint(&t, &off.id, WebhookEndpointPatch { enabled: Some(false), ..Default::default() })
        .await
        .unwrap();
    let o = db.intake_platform_order(src(&t, &store), normalized("W", 1, true), raw()).await.unwrap().order_id.unwrap();
    db.cancel_order(&t, &o, "x").await.unwrap();
    let events = db.unpublished_events(100).await.unwrap();
    let last = events.last().unwrap().seq;
    let subscribable = events.iter().filter(|e| e.kind.subscribable()).count();
    let queued = db.fan_out_and_mark_published(events.clone(), last).await.unwrap();
    assert_eq!(queued, subscribable + 1, "every kind to `*`, order_created also to the second");
    assert!(db.unpublished_events(100).await.unwrap().is_empty(), "marked published in the same commit");
    assert_eq!(db.fan_out_and_mark_published(events, last).await.unwrap(), 0, "a batch handed over twice");
    assert_eq!(db.list_webhook_deliveries(&t, &created_only.id, 10).await.unwrap().len(), 1);
    assert!(db.list_webhook_deliveries(&t, &off.id, 10).await.unwrap().is_empty());

    let now = now_ms();
    let claimed = db.claim_webhook_deliveries(now, 60_000, 100, 100, vec![]).await.unwrap();
    assert_eq!(claimed.len(), queued);
    assert!(db.claim_webhook_deliveries(now, 60_000, 100, 100, vec![]).await.unwrap().is_empty(), "leased");
    let per_endpoint = db.claim_webhook_deliveries(now + 61_000, 1_000, 100, 1, vec![]).await.unwrap();
    assert_eq!(per_endpoint.len(), 2, "one per endpoint when the lease ran out");
    let d = claimed.iter().find(|d| d.endpoint_id == all.id).unwrap();
    db.dead_letter_webhook_delivery(d, "gone", Some(500)).await.unwrap();
    assert!(db.requeue_webhook_delivery(&t, &d.id).await.unwrap());
    assert!(!db.requeue_webhook_delivery(&t, &d.id).await.unwrap(), "requeued once");
    assert_eq!(db.get_webhook_delivery(&t, &d.id).await.unwrap().state, "pending");
}

macro_rules! story {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for tdb in lastmile_storage::testing::TestDb::all().await {
                eprintln!("{} on {}", stringify!($name), tdb.backend());
                super::$name(&tdb.db).await;
                tdb.cleanup().await;
            }
        }
    )*};
}

mod on_both_backends {
    story!(
        tenants_stores_and_scoping,
        credentials,
        intake_exactly_once_and_in_order,
        idempotency_keys,
        listing_with_cursor,
        offers_capacity_and_lifecycle,
        expiry_and_stall,
        cancel_releases_driver,
        sync_jobs_lease_retry_dead,
        outbox_in_commit_order,
        failed_job_leaves_no_partial_write,
        a_refused_statement_poisons_nothing,
        an_order_without_coordinates_first_poisons_nothing,
        raw_payload_archive_keeps_each_body_once,
        webhook_fan_out_once_per_endpoint,
    );
}
