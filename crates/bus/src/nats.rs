//! The cluster bus on NATS JetStream. Every event goes to the `LASTMILE_EVENTS` stream with
//! its event id as `Nats-Msg-Id`, so a relay that republishes after a crash is deduplicated
//! by JetStream itself (within the stream's duplicate window). Each node reads the stream
//! with an ordered consumer from "new" and fans messages out locally.

use crate::{BusMessage, EventBus, Subscription};
use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use futures::StreamExt;
use lastmile_core::Event;
use tokio::sync::broadcast;

pub const STREAM: &str = "LASTMILE_EVENTS";

#[derive(Clone)]
pub struct NatsBus {
    js: jetstream::Context,
    local: broadcast::Sender<BusMessage>,
}

impl NatsBus {
    /// Connect, ensure the stream exists, and start this node's reader.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = async_nats::connect(url).await?;
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec!["lastmile.events.>".into()],
                duplicate_window: std::time::Duration::from_secs(120),
                max_age: std::time::Duration::from_secs(24 * 3600),
                ..Default::default()
            })
            .await?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await?;
        let (local, _) = broadcast::channel(65_536);
        let tx = local.clone();
        let mut messages = consumer.messages().await?;
        tokio::spawn(async move {
            while let Some(msg) = messages.next().await {
                match msg {
                    Ok(m) => {
                        let id = m
                            .headers
                            .as_ref()
                            .and_then(|h| h.get("Nats-Msg-Id"))
                            .map(|v| v.to_string())
                            .unwrap_or_default();
                        let _ = tx.send(BusMessage {
                            id,
                            subject: m.subject.to_string(),
                            payload: m.payload.to_vec().into(),
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "JetStream consumer error"),
                }
            }
            tracing::warn!("JetStream consumer ended");
        });
        Ok(Self { js, local })
    }
}

#[async_trait]
impl EventBus for NatsBus {
    async fn publish(&self, event: &Event) -> anyhow::Result<()> {
        let msg = BusMessage::encode(event)?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg.id.as_str());
        let ack = self.js.publish_with_headers(msg.subject, headers, msg.payload.to_vec().into()).await?;
        ack.await?;
        Ok(())
    }

    fn subscribe(&self) -> Subscription {
        Subscription { rx: self.local.subscribe() }
    }

    fn name(&self) -> &'static str {
        "nats-jetstream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Received;

    /// Runs against the NATS at LASTMILE_TEST_NATS_URL (skipped, loudly, when unset).
    #[tokio::test]
    async fn jetstream_bus_round_trips_and_dedupes_by_event_id() {
        let Ok(url) = std::env::var("LASTMILE_TEST_NATS_URL") else {
            eprintln!("!!! SKIPPED NATS JetStream bus test: set LASTMILE_TEST_NATS_URL to run it !!!");
            return;
        };
        let bus = NatsBus::connect(&url).await.expect("connect to NATS");
        let mut sub = bus.subscribe();
        let e1 = crate::tests::event(1);
        let e2 = crate::tests::event(2);
        bus.publish(&e1).await.unwrap();
        bus.publish(&e1).await.unwrap(); // a relay retry: JetStream drops the duplicate
        bus.publish(&e2).await.unwrap();
        // The stream is shared: other tests (and nodes) publish on it too, so look only at ours.
        let mut got = Vec::new();
        while got.len() < 2 {
            match tokio::time::timeout(std::time::Duration::from_secs(5), sub.recv()).await {
                Ok(Some(Received::Event(e))) if e.id == e1.id || e.id == e2.id => got.push(e.id.clone()),
                Ok(Some(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, vec![e1.id.clone(), e2.id.clone()]);
        // Nothing more of ours: the republished e1 was dropped by JetStream.
        while let Ok(Some(r)) = tokio::time::timeout(std::time::Duration::from_millis(300), sub.recv()).await {
            if let Received::Event(e) = r {
                assert!(e.id != e1.id && e.id != e2.id, "duplicate delivery of {}", e.id);
            }
        }
    }
}

#[cfg(test)]
mod burst_tests {
    use super::*;
    use crate::Received;

    #[tokio::test]
    async fn jetstream_bus_delivers_a_burst_in_order() {
        let Ok(url) = std::env::var("LASTMILE_TEST_NATS_URL") else {
            eprintln!("!!! SKIPPED NATS JetStream burst test: set LASTMILE_TEST_NATS_URL to run it !!!");
            return;
        };
        let bus = NatsBus::connect(&url).await.expect("connect to NATS");
        let mut sub = bus.subscribe();
        let events: Vec<_> = (0..200).map(crate::tests::event).collect();
        for e in &events {
            bus.publish(e).await.unwrap();
        }
        let ours: std::collections::HashSet<_> = events.iter().map(|e| e.id.clone()).collect();
        let mut got = Vec::new();
        while got.len() < events.len() {
            match tokio::time::timeout(std::time::Duration::from_secs(5), sub.recv()).await {
                Ok(Some(Received::Event(e))) if ours.contains(&e.id) => got.push(e.id.clone()),
                Ok(Some(_)) => {} // another test's events on the shared stream
                other => panic!("after {} of ours: {other:?}", got.len()),
            }
        }
        assert_eq!(got, events.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), "in publish order");
    }
}
