//! A thin client of Lastmile's public HTTP API, as a store, an operator, an API client or
//! a driver's app would call it. Setup calls retry politely on `429` (rate limits are
//! per credential); everything answers `(status, json)` so callers can count outcomes.

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

/// One answer: status, JSON body (Null when not JSON) and how long it took.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub elapsed: Duration,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }
    pub fn str(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Api { base: base.trim_end_matches('/').to_owned(), http })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The WebSocket URL of a path (`http` → `ws`).
    pub fn ws_url(&self, path_and_query: &str) -> String {
        let base = self.base.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
        format!("{base}{path_and_query}")
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let start = Instant::now();
        let res = req.send().await?;
        let status = res.status();
        let bytes = res.bytes().await?;
        let elapsed = start.elapsed();
        Ok(Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), elapsed })
    }

    pub async fn call(&self, method: Method, path: &str, bearer: &str, body: Option<&Value>) -> anyhow::Result<Answer> {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(bearer);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(req).await
    }

    /// A setup call that must succeed: retried on 429 and 503 (after `Retry-After`, or a
    /// short pause), an error with the server's answer otherwise.
    pub async fn must(&self, method: Method, path: &str, bearer: &str, body: &Value) -> anyhow::Result<Value> {
        for attempt in 0..50 {
            let a = self.call(method.clone(), path, bearer, Some(body)).await?;
            if a.ok() {
                return Ok(a.body);
            }
            if a.status == StatusCode::TOO_MANY_REQUESTS || a.status == StatusCode::SERVICE_UNAVAILABLE {
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1).min(10))).await;
                continue;
            }
            bail!("{method} {path} answered {}: {}", a.status, a.body);
        }
        bail!("{method} {path} kept answering 429")
    }

    pub async fn create_store(&self, admin: &str, body: &Value) -> anyhow::Result<String> {
        let v = self.must(Method::POST, "/v1/stores", admin, body).await?;
        v["id"].as_str().map(str::to_owned).context("store answer has no id")
    }

    /// `(driver id, device token)`.
    pub async fn create_driver(
        &self,
        admin: &str,
        name: &str,
        phone: &str,
        vehicle: &str,
    ) -> anyhow::Result<(String, String)> {
        let body = json!({"name": name, "phone": phone, "vehicle": vehicle, "capacity": 1});
        let v = self.must(Method::POST, "/v1/drivers", admin, &body).await?;
        Ok((
            v["id"].as_str().context("driver answer has no id")?.to_owned(),
            v["token"].as_str().context("driver answer has no token")?.to_owned(),
        ))
    }

    /// A JWT for a new API client (client credentials grant).
    pub async fn api_client_token(&self, admin: &str, name: &str) -> anyhow::Result<String> {
        let c = self.must(Method::POST, "/v1/api-clients", admin, &json!({"name": name})).await?;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", c["client_id"].as_str().context("client_id")?),
            ("client_secret", c["client_secret"].as_str().context("client_secret")?),
        ];
        let a = self.send(self.http.post(self.url("/oauth/token")).form(&form)).await?;
        if !a.ok() {
            bail!("POST /oauth/token answered {}: {}", a.status, a.body);
        }
        a.str("access_token").map(str::to_owned).context("no access_token")
    }

    /// A signed platform webhook.
    pub async fn webhook(
        &self,
        platform: &str,
        store_id: &str,
        d: &crate::payloads::Delivery,
    ) -> anyhow::Result<Answer> {
        let mut req = self.http.post(self.url(&format!("/v1/webhooks/{platform}/{store_id}"))).body(d.body.clone());
        for (k, v) in &d.headers {
            req = req.header(*k, v);
        }
        self.send(req).await
    }

    pub async fn create_order(&self, jwt: &str, idempotency_key: &str, body: &Value) -> anyhow::Result<Answer> {
        self.send(
            self.http
                .post(self.url("/v1/orders"))
                .bearer_auth(jwt)
                .header("Idempotency-Key", idempotency_key)
                .json(body),
        )
        .await
    }

    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        Ok(self.http.get(self.url("/metrics")).send().await?.text().await?)
    }
}

/// The sum of a Prometheus counter over the series whose labels contain every `filter`
/// (`key="value"` strings), from `/metrics` text.
pub fn counter_sum(metrics: &str, name: &str, filters: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_matching_series() {
        let text = "# TYPE lastmile_gps_updates_total counter\n\
            lastmile_gps_updates_total{result=\"accepted\"} 10\n\
            lastmile_gps_updates_total{result=\"coalesced\"} 3\n\
            lastmile_gps_updates_total_other 99\n";
        assert_eq!(counter_sum(text, "lastmile_gps_updates_total", &[]), 13.0);
        assert_eq!(counter_sum(text, "lastmile_gps_updates_total", &["result=\"accepted\""]), 10.0);
    }
}
