//! The outbox relay survives being killed mid-stream: after a restart the bus has seen
//! every event, in commit order (duplicates allowed, removed by event id — invariant 5).

use async_trait::async_trait;
use lastmile_bus::{EventBus, InProcessBus, Received, Subscription};
use lastmile_core::{Event, EventKind};
use lastmile_storage::testing::TestDb;
use lastmile_storage::Db;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Passes `allow` messages through, then hangs forever on the next publish: the relay is
/// stuck between publishing and marking, where a crash hurts most.
struct HangAfter {
    inner: Arc<dyn EventBus>,
    allow: usize,
    seen: AtomicUsize,
}

#[async_trait]
impl EventBus for HangAfter {
    async fn publish(&self, event: &Event) -> anyhow::Result<()> {
        if self.seen.fetch_add(1, Ordering::SeqCst) >= self.allow {
            std::future::pending::<()>().await;
        }
        self.inner.publish(event).await
    }
    fn subscribe(&self) -> Subscription {
        self.inner.subscribe()
    }
    fn name(&self) -> &'static str {
        "hang-after"
    }
}

async fn make_events(db: &Db, n: usize) -> Vec<String> {
    let tenant = lastmile_server::admin::create_tenant(db, "relay").await.unwrap();
    let tenant_id = lastmile_core::TenantId(tenant.tenant_id);
    let mut subjects = Vec::new();
    for i in 0..n {
        // Every inbox push writes an `inbox_appended` event in its transaction.
        let d = db.create_driver(&tenant_id, &format!("d{i}"), "", "", 1, &format!("h{i}-{}", uuid())).await.unwrap();
        db.push_inbox(&tenant_id, &d.id, "order_updated", serde_json::json!({"i": i})).await.unwrap();
        subjects.push(d.id.0);
    }
    subjects
}

fn uuid() -> String {
    lastmile_core::OrderId::generate().0
}

/// Read distinct events (by id) until `want` in all, counting `out` already held.
/// Events that are not in `ours` (a shared JetStream stream carries other tests' too) are skipped.
async fn collect_until(sub: &mut Subscription, ours: &HashSet<String>, mut out: Vec<Event>, want: usize) -> Vec<Event> {
    let mut seen: HashSet<_> = out.iter().map(|e| e.id.clone()).collect();
    while out.len() < want {
        match tokio::time::timeout(Duration::from_secs(10), sub.recv()).await {
            Ok(Some(Received::Event(e))) => {
                if ours.contains(&e.id.0) && seen.insert(e.id.clone()) {
                    out.push(*e);
                }
            }
            other => panic!("bus went quiet after {} distinct events: {other:?}", out.len()),
        }
    }
    out
}

async fn killed_relay_loses_and_reorders_nothing(bus: Arc<dyn EventBus>, tdb: TestDb) {
    let db = tdb.db.clone();
    // Start from a clean slate: mark what earlier setup produced.
    if let Some(last) = db.pending_events(100_000).await.unwrap().last() {
        db.mark_published_through(last.seq).await.unwrap();
    }
    let mut sub = bus.subscribe();
    let subjects = make_events(&db, 40).await;
    let expected: Vec<Event> = db
        .pending_events(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::InboxAppended || e.kind == EventKind::DriverStatusChanged)
        .collect();
    assert!(expected.len() >= subjects.len());

    let hanging: Arc<dyn EventBus> = Arc::new(HangAfter { inner: bus.clone(), allow: 17, seen: AtomicUsize::new(0) });
    let stop = CancellationToken::new();
    let relay = tokio::spawn(lastmile_server::relay::run(db.clone(), hanging, stop.clone()));
    let ours: HashSet<String> = expected.iter().map(|e| e.id.0.clone()).collect();
    let before_kill = collect_until(&mut sub, &ours, Vec::new(), 17).await;
    relay.abort(); // killed mid-stream: 17 published, none marked
    let _ = relay.await;
    assert_eq!(db.pending_events(10_000).await.unwrap().len(), expected.len(), "nothing was marked before the kill");

    let stop2 = CancellationToken::new();
    let relay2 = tokio::spawn(lastmile_server::relay::run(db.clone(), bus.clone(), stop2.clone()));
    // The in-process bus redelivers the first 17 (consumers dedupe by id); JetStream drops
    // them itself (Nats-Msg-Id). Either way the distinct sequence must be complete and ordered.
    let all = collect_until(&mut sub, &ours, before_kill, expected.len()).await;
    let got: Vec<_> = all.iter().map(|e| e.id.clone()).collect();
    let want: Vec<_> = expected.iter().map(|e| e.id.clone()).collect();
    assert_eq!(got, want, "every event, in commit order");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    stop2.cancel();
    relay2.await.unwrap();
    assert!(db.pending_events(10).await.unwrap().is_empty(), "all marked published after the restart");
    tdb.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_mid_stream_republishes_everything_in_order() {
    for tdb in TestDb::all().await {
        eprintln!("relay test on {}", tdb.backend());
        killed_relay_loses_and_reorders_nothing(Arc::new(InProcessBus::new(100_000)), tdb).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_over_nats_jetstream_survives_a_kill() {
    let Ok(url) = std::env::var("LASTMILE_TEST_NATS_URL") else {
        eprintln!("!!! SKIPPED NATS relay test: set LASTMILE_TEST_NATS_URL to run it !!!");
        return;
    };
    let bus: Arc<dyn EventBus> = Arc::new(lastmile_bus::nats::NatsBus::connect(&url).await.expect("NATS reachable"));
    killed_relay_loses_and_reorders_nothing(bus, TestDb::sqlite().await).await;
}
