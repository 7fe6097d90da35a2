//! The event bus: how committed events leave the outbox and reach consumers (dispatcher,
//! realtime hub, tracking streams) on this node and, in a cluster, on every node.
//!
//! Owns: the `EventBus` trait and its two implementations — in-process (a broadcast of
//! serialized messages) and NATS JetStream (a stream with message-id deduplication).
//! Must not: read or write the database (the outbox relay in the server does that), or
//! interpret events beyond (de)serializing them.
//!
//! Delivery is at least once; consumers deduplicate by event id. Events cross every bus as
//! serialized bytes with their id, so both implementations behave the same to consumers.

use async_trait::async_trait;
use lastmile_core::Event;
use std::sync::Arc;
use tokio::sync::broadcast;

pub mod fanout;
pub mod nats;

/// A serialized event as it crosses the bus.
#[derive(Debug, Clone)]
pub struct BusMessage {
    pub id: String,
    pub subject: String,
    pub payload: Arc<[u8]>,
}

impl BusMessage {
    pub fn encode(event: &Event) -> anyhow::Result<Self> {
        Ok(Self { id: event.id.0.clone(), subject: event.kind.subject(), payload: serde_json::to_vec(event)?.into() })
    }

    pub fn decode(&self) -> anyhow::Result<Event> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
}

/// What a subscriber gets: the next event, or notice that it fell behind and must resync
/// from the database.
#[derive(Debug)]
pub enum Received {
    Event(Box<Event>),
    Lagged(u64),
}

pub struct Subscription {
    rx: broadcast::Receiver<BusMessage>,
}

impl Subscription {
    /// The next event; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        loop {
            match self.rx.recv().await {
                Ok(msg) => match msg.decode() {
                    Ok(e) => return Some(Received::Event(Box::new(e))),
                    Err(err) => {
                        tracing::warn!(id = %msg.id, error = %err, "undecodable bus message skipped");
                        continue;
                    }
                },
                Err(broadcast::error::RecvError::Lagged(n)) => return Some(Received::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publish one event; returns once the bus has accepted it.
    async fn publish(&self, event: &Event) -> anyhow::Result<()>;
    /// Receive every event published from now on (on this node's view of the bus).
    fn subscribe(&self) -> Subscription;
    fn name(&self) -> &'static str;
}

/// Single-node bus: a bounded broadcast channel of serialized messages.
#[derive(Clone)]
pub struct InProcessBus {
    tx: broadcast::Sender<BusMessage>,
}

impl InProcessBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        Self { tx }
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new(65_536)
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: &Event) -> anyhow::Result<()> {
        // No subscribers is not an error: events are durable in the outbox.
        let _ = self.tx.send(BusMessage::encode(event)?);
        Ok(())
    }

    fn subscribe(&self) -> Subscription {
        Subscription { rx: self.tx.subscribe() }
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_core::{EventId, EventKind, TenantId};

    pub(crate) fn event(seq: i64) -> Event {
        Event {
            id: EventId::generate(),
            seq,
            tenant_id: TenantId::from("ten_1"),
            kind: EventKind::OrderCreated,
            subject_id: format!("ord_{seq}"),
            data: serde_json::json!({"n": seq}),
            occurred_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn in_process_bus_delivers_in_order_as_serialized_messages() {
        let bus = InProcessBus::new(64);
        let mut sub = bus.subscribe();
        for i in 1..=10 {
            bus.publish(&event(i)).await.unwrap();
        }
        for i in 1..=10 {
            match sub.recv().await.unwrap() {
                Received::Event(e) => assert_eq!(e.seq, i),
                Received::Lagged(_) => panic!("lagged"),
            }
        }
    }

    #[tokio::test]
    async fn slow_subscriber_learns_it_lagged() {
        let bus = InProcessBus::new(16);
        let mut sub = bus.subscribe();
        for i in 0..40 {
            bus.publish(&event(i)).await.unwrap();
        }
        assert!(matches!(sub.recv().await, Some(Received::Lagged(_))));
    }
}
