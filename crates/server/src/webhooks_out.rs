//! Events out: delivers queued order events to the tenants' webhook endpoints as Standard
//! Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256
//! of "{id}.{timestamp}.{body}">` with the endpoint's `whsec_` secret; during a rotation's
//! overlap both secrets sign, space-separated). The worker claims due deliveries with a
//! lease, keeps one circuit breaker and a concurrency bound per endpoint (a failing or
//! hanging endpoint leaves the others alone), retries on the schedule (honouring
//! `Retry-After`), and dead-letters a delivery whose schedule is used up; a replay of that
//! letter queues it again. Redirects are not followed, and an endpoint whose address turns
//! private (DNS rebinding) is refused at send time unless `allow_private_urls` is on.

use crate::config::WebhooksConfig;
use crate::state::AppState;
use base64::Engine;
use hmac::{Hmac, Mac};
use lastmile_connectors::{Admission, BreakerConfig, CallResult, CircuitBreaker, RetrySchedule};
use lastmile_storage::ClaimedWebhookDelivery;
use rand::RngCore;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const SECRET_PREFIX: &str = "whsec_";
/// Deliveries handled at once by this node.
const IN_FLIGHT: usize = 64;
/// How much of an endpoint's answer is kept with a failed attempt.
const KEEP_BODY: usize = 256;

/// A fresh signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(key))
}

/// The `v1,<base64>` signature of one message under `secret` (`whsec_<base64 key>`).
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &str) -> anyhow::Result<String> {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|e| anyhow::anyhow!("{e}"))?;
    mac.update(format!("{msg_id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())))
}

fn schedule(cfg: &WebhooksConfig) -> RetrySchedule {
    let steps: Vec<Duration> = cfg.retry_schedule_s.iter().map(|s| Duration::from_secs(*s)).collect();
    let total: Duration = steps.iter().sum();
    RetrySchedule { steps, then_every: None, give_up_after: total, ..RetrySchedule::default() }
}

/// Per-endpoint circuit breakers, shared by the worker's tasks.
type Breakers = Arc<Mutex<HashMap<String, CircuitBreaker>>>;

/// Claims due deliveries and sends them until `shutdown`, then waits for those in flight.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let cfg = state.cfg.webhooks.clone();
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(cfg.timeout_s))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Lastmile-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook delivery worker could not build its HTTP client; not started");
            return;
        }
    };
    let breakers: Breakers = Arc::default();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut held: HashMap<String, usize> = HashMap::new();
    let mut gauge_at: Option<Instant> = None;
    loop {
        while let Some(done) = tasks.try_join_next() {
            match done {
                Ok(endpoint) => release(&mut held, &endpoint),
                Err(e) => {
                    tracing::error!(error = %e, "a webhook delivery task failed");
                    held.clear();
                }
            }
        }
        let free = IN_FLIGHT.saturating_sub(tasks.len());
        if free > 0 {
            let per = cfg.max_concurrency_per_endpoint;
            let skip: Vec<String> = held.iter().filter(|(_, n)| **n >= per).map(|(e, _)| e.clone()).collect();
            let now = state.clock.now_ms();
            let lease = Duration::from_secs(cfg.lease_s);
            match state.db.claim_webhook_deliveries(now, lease.as_millis() as i64, free as i64, per as i64, skip).await
            {
                Ok(list) => {
                    for d in list {
                        let endpoint = d.endpoint_id.0.clone();
                        *held.entry(endpoint.clone()).or_default() += 1;
                        let (state, http, breakers) = (state.clone(), http.clone(), breakers.clone());
                        tasks.spawn(async move {
                            let id = d.id.clone();
                            let run = deliver(&state, &http, &breakers, d);
                            if tokio::time::timeout(lease.mul_f64(0.9), run).await.is_err() {
                                tracing::warn!(delivery = %id, "webhook delivery outlived its lease; left for the next claim");
                            }
                            endpoint
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming webhook deliveries failed"),
            }
        }
        if gauge_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            gauge_at = Some(Instant::now());
            if let Ok(n) = state.db.webhook_backlog().await {
                metrics::gauge!("lastmile_webhook_backlog").set(n as f64);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(cfg.poll_ms)) => {}
        }
    }
    while tasks.join_next().await.is_some() {}
    tracing::debug!("webhook delivery worker stopped");
}

fn release(held: &mut HashMap<String, usize>, endpoint: &str) {
    if let Some(n) = held.get_mut(endpoint) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            held.remove(endpoint);
        }
    }
}

/// How one attempt ended.
enum Attempt {
    Delivered(u16),
    /// Worth another try; `health` is what it says about the endpoint.
    Failed {
        error: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
        health: CallResult,
    },
    /// No attempt made: the endpoint's breaker is open.
    Deferred(Duration),
    /// Another try cannot help (the secret cannot be read, the address is refused).
    Refused(String),
}

async fn deliver(state: &AppState, http: &reqwest::Client, breakers: &Breakers, d: ClaimedWebhookDelivery) {
    let attempt = attempt(state, http, breakers, &d).await;
    let outcome = match attempt {
        Attempt::Delivered(status) => {
            metrics::counter!("lastmile_webhook_attempts_total", "outcome" => "delivered").increment(1);
            state.db.complete_webhook_delivery(&d.id, status).await
        }
        Attempt::Deferred(wait) => {
            let next = state.clock.now_ms() + wait.as_millis() as i64;
            state.db.retry_webhook_delivery(&d.id, next, false, "deferred: endpoint breaker open", None).await
        }
        Attempt::Refused(error) => {
            metrics::counter!("lastmile_webhook_attempts_total", "outcome" => "refused").increment(1);
            state.db.dead_letter_webhook_delivery(&d, &error, None).await.map(|_| ())
        }
        Attempt::Failed { error, status, retry_after, .. } => {
            metrics::counter!("lastmile_webhook_attempts_total", "outcome" => "failed").increment(1);
            let n = d.attempts as u32 + 1;
            let delay = schedule(&state.cfg.webhooks).delay_respecting(n, retry_after, &mut rand::thread_rng());
            match delay {
                Some(wait) => {
                    let next = state.clock.now_ms() + wait.as_millis() as i64;
                    state.db.retry_webhook_delivery(&d.id, next, true, &error, status).await
                }
                None => state
                    .db
                    .dead_letter_webhook_delivery(&d, &format!("retries exhausted: {error}"), status)
                    .await
                    .map(|_| ()),
            }
        }
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, delivery = %d.id, "recording a webhook delivery outcome failed; the lease will retry it");
    }
}

async fn attempt(state: &AppState, http: &reqwest::Client, breakers: &Breakers, d: &ClaimedWebhookDelivery) -> Attempt {
    let secrets = match signing_secrets(state, d) {
        Ok(s) => s,
        Err(e) => return Attempt::Refused(format!("the endpoint's secret cannot be read: {e}")),
    };
    if let Some(why) = crate::outbound::refuse_private(&d.url, state.cfg.allow_private_urls).await {
        return Attempt::Refused(format!("endpoint URL {why}"));
    }
    let admission = breakers
        .lock()
        .expect("breakers lock")
        .entry(d.endpoint_id.0.clone())
        .or_insert_with(|| CircuitBreaker::new(BreakerConfig::default()))
        .admit(Instant::now());
    if let Admission::Rejected { retry_in } = admission {
        return Attempt::Deferred(retry_in);
    }
    let result = send(http, d, &secrets).await;
    let health = match &result {
        Attempt::Delivered(_) => CallResult::Success,
        Attempt::Failed { health, .. } => *health,
        _ => CallResult::Neutral,
    };
    if let Some(b) = breakers.lock().expect("breakers lock").get_mut(d.endpoint_id.as_str()) {
        if let Some(now) = b.record(Instant::now(), health) {
            tracing::info!(endpoint = %d.endpoint_id, breaker = now.as_str(), "webhook endpoint breaker changed");
        }
    }
    result
}

/// The current secret, and the previous one while its overlap lasts.
fn signing_secrets(state: &AppState, d: &ClaimedWebhookDelivery) -> anyhow::Result<Vec<String>> {
    let mut out = vec![state.keys.decrypt_string(&d.secret_enc)?];
    if let (Some(prev), Some(until)) = (&d.previous_secret_enc, d.previous_expires_at) {
        if until > lastmile_storage::now_ms() {
            out.push(state.keys.decrypt_string(prev)?);
        }
    }
    Ok(out)
}

async fn send(http: &reqwest::Client, d: &ClaimedWebhookDelivery, secrets: &[String]) -> Attempt {
    let timestamp = chrono::Utc::now().timestamp();
    let mut signatures = Vec::with_capacity(secrets.len());
    for s in secrets {
        match sign(s, &d.event_id, timestamp, &d.payload) {
            Ok(sig) => signatures.push(sig),
            Err(e) => return Attempt::Refused(format!("the endpoint's secret is not a whsec_ secret: {e}")),
        }
    }
    let res = http
        .post(&d.url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signatures.join(" "))
        .body(d.payload.clone())
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => Attempt::Delivered(r.status().as_u16()),
        Ok(r) => {
            let status = r.status();
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| lastmile_connectors::parse_retry_after(v, chrono::Utc::now()));
            let body = r.text().await.unwrap_or_default();
            let shown: String = body.chars().take(KEEP_BODY).collect();
            // A 4xx says the endpoint is up and answering: no reason to stop calling it.
            let health = if status.is_server_error() { CallResult::Failure } else { CallResult::Neutral };
            Attempt::Failed {
                error: format!("endpoint answered {status}: {shown}"),
                status: Some(status.as_u16()),
                retry_after,
                health,
            }
        }
        Err(e) => Attempt::Failed {
            error: if e.is_timeout() { format!("timed out: {e}") } else { format!("request failed: {e}") },
            status: None,
            retry_after: None,
            health: CallResult::Failure,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The Standard Webhooks specification's worked example.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn new_secrets_are_distinct_and_sign() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("whsec_"));
        assert!(sign(&a, "evt_1", 1, "{}").unwrap().starts_with("v1,"));
    }
}
