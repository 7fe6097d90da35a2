//! Fan-out of short-lived state between the nodes of a cluster over core NATS: no stream,
//! no storage, at most once. For what is worth sending only while it is fresh — where the
//! fleet's drivers are, who has heard from them, which nodes are alive — and is sent again
//! soon anyway. Durable events go through [`crate::EventBus`] instead.
//!
//! Subjects are `<prefix>.<suffix>`, so clusters sharing one NATS server stay apart by
//! prefix.

use async_nats::Client;
use futures::{Stream, StreamExt};

#[derive(Clone)]
pub struct Fanout {
    client: Client,
    prefix: String,
}

/// One message received: its subject (without the prefix) and payload.
#[derive(Debug, Clone)]
pub struct FanoutMessage {
    pub subject: String,
    pub payload: bytes::Bytes,
}

impl Fanout {
    /// Connect to NATS (a connection of its own, so bursts of fan-out never queue behind
    /// the event stream's acknowledgements).
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = async_nats::connect(url).await?;
        Ok(Self { client, prefix: prefix.to_owned() })
    }

    /// Send `payload` to every node listening on `suffix`. Best effort: an error means
    /// NATS is unreachable, and the next round sends fresher state.
    pub async fn publish(&self, suffix: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        self.client.publish(format!("{}.{suffix}", self.prefix), payload.into()).await?;
        Ok(())
    }

    /// Wait until everything published so far has reached the NATS server.
    pub async fn flush(&self) -> anyhow::Result<()> {
        self.client.flush().await?;
        Ok(())
    }

    /// Everything published under `suffix` (NATS wildcards allowed: `fleet.>`), from now on.
    pub async fn subscribe(&self, suffix: &str) -> anyhow::Result<impl Stream<Item = FanoutMessage> + Send + 'static> {
        let strip = self.prefix.len() + 1;
        let sub = self.client.subscribe(format!("{}.{suffix}", self.prefix)).await?;
        Ok(sub.map(move |m| FanoutMessage {
            subject: m.subject.as_str().get(strip..).unwrap_or_default().to_owned(),
            payload: m.payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fanout_reaches_every_subscriber_under_its_prefix_only() {
        let Ok(url) = std::env::var("LASTMILE_TEST_NATS_URL") else {
            eprintln!("!!! SKIPPED NATS fan-out test: set LASTMILE_TEST_NATS_URL to run it !!!");
            return;
        };
        let prefix = format!("lmtest{}", uuid::Uuid::new_v4().simple());
        let a = Fanout::connect(&url, &prefix).await.unwrap();
        let b = Fanout::connect(&url, &prefix).await.unwrap();
        let other = Fanout::connect(&url, &format!("{prefix}x")).await.unwrap();
        let mut sub = b.subscribe("fleet.>").await.unwrap();
        // A subscription reaches the server a moment after `subscribe` returns, and what is
        // published before that is not delivered (at most once): publish until it arrives,
        // as the cluster's periodic sharing does.
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                other.publish("fleet.t1", b"not ours".to_vec()).await.unwrap();
                a.publish("fleet.t1", b"hello".to_vec()).await.unwrap();
                a.flush().await.unwrap();
                if let Ok(got) = tokio::time::timeout(std::time::Duration::from_millis(100), sub.next()).await {
                    return got.unwrap();
                }
            }
        })
        .await
        .expect("fan-out message within 5 s");
        assert_eq!((got.subject.as_str(), &got.payload[..]), ("fleet.t1", &b"hello"[..]));
    }
}
