//! One HTTP exchange with a platform, classified: success, rate limited, worth retrying, or
//! not. The platform modules build requests; this module decides what an answer means.

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::RequestBuilder;
use serde::de::DeserializeOwned;
use std::error::Error as _;
use std::time::Duration;

/// Bodies kept for the dead-letter record are cut to this many bytes.
const BODY_KEEP: usize = 2048;
/// Retry-After values above this are treated as this (a day: the whole retry schedule).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A 2xx answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a call did not give a usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// 429 or a platform throttle: pause the store for `retry_after`, then retry.
    RateLimited { error: String, retry_after: Option<Duration>, status: Option<u16>, body: Option<String> },
    /// Network trouble, timeouts, 5xx, malformed answers: retry later.
    Transient { error: String, retry_after: Option<Duration>, status: Option<u16>, body: Option<String> },
    /// The platform understood and refused (4xx, validation errors): retrying cannot help.
    Permanent { error: String, status: Option<u16>, body: Option<String> },
}

impl CallError {
    pub fn transient(error: impl Into<String>) -> Self {
        CallError::Transient { error: error.into(), retry_after: None, status: None, body: None }
    }

    pub fn permanent(error: impl Into<String>) -> Self {
        CallError::Permanent { error: error.into(), status: None, body: None }
    }

    pub fn message(&self) -> &str {
        match self {
            CallError::RateLimited { error, .. }
            | CallError::Transient { error, .. }
            | CallError::Permanent { error, .. } => error,
        }
    }
}

/// A path segment from a platform id; anything but `[A-Za-z0-9_-]` is refused rather than
/// escaped, since every platform id we send is numeric.
pub(crate) fn path_segment(id: &str) -> Result<&str, CallError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Ok(id)
    } else {
        Err(CallError::permanent(format!("invalid platform order id {id:?}")))
    }
}

pub(crate) fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

fn keep_body(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let cut = &body[..body.len().min(BODY_KEEP)];
    Some(String::from_utf8_lossy(cut).into_owned())
}

/// Sends the request and classifies the answer. `what` names the call in errors ("GET order").
pub(crate) async fn send(request: RequestBuilder, what: &str) -> Result<Reply, CallError> {
    let response = request.send().await.map_err(|e| CallError::transient(format!("{what}: {}", error_chain(&e))))?;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers(), Utc::now());
    let body = response
        .bytes()
        .await
        .map_err(|e| CallError::Transient {
            error: format!("{what}: reading the body: {}", error_chain(&e)),
            retry_after: None,
            status: Some(status),
            body: None,
        })?
        .to_vec();
    match status {
        200..=299 => Ok(Reply { status, body }),
        429 => Err(CallError::RateLimited {
            error: format!("{what}: rate limited (429)"),
            retry_after,
            status: Some(status),
            body: keep_body(&body),
        }),
        408 | 500..=599 => Err(CallError::Transient {
            error: format!("{what}: platform answered {status}"),
            retry_after,
            status: Some(status),
            body: keep_body(&body),
        }),
        _ => Err(CallError::Permanent {
            error: format!("{what}: platform answered {status}"),
            status: Some(status),
            body: keep_body(&body),
        }),
    }
}

/// Parses a 2xx body. A body that is not the expected JSON is transient: a proxy or a
/// half-deployed platform garbles answers for a while, check-before-act makes retrying safe,
/// and a body that stays garbled uses up the retry schedule and reaches the dead letters.
pub(crate) fn json<T: DeserializeOwned>(reply: &Reply, what: &str) -> Result<T, CallError> {
    serde_json::from_slice(&reply.body).map_err(|e| CallError::Transient {
        error: format!("{what}: malformed answer: {e}"),
        retry_after: None,
        status: Some(reply.status),
        body: keep_body(&reply.body),
    })
}

/// How long the platform asked us to wait: BigCommerce's `X-Rate-Limit-Time-Reset-Ms`
/// first, then `Retry-After`.
fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = text("x-rate-limit-time-reset-ms").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms).min(MAX_RETRY_AFTER));
    }
    text("retry-after").and_then(|v| parse_retry_after(v, now))
}

/// A `Retry-After` value: delay seconds (Shopify sends decimals such as `2.0`) or an HTTP
/// date (`Sun, 06 Nov 1994 08:49:37 GMT`), as a wait from `now`. A date in the past is zero.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER))
}

/// `reqwest`'s error with its sources ("error sending request: connection refused").
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() { format!("timed out: {error}") } else { error.to_string() };
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_decimals_and_dates() {
        let now = DateTime::parse_from_rfc3339("1994-11-06T08:49:30Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 2.0 ", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn bigcommerce_reset_header_wins() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "30".parse().unwrap());
        headers.insert("x-rate-limit-time-reset-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&headers, Utc::now()), Some(Duration::from_millis(1500)));
        headers.remove("x-rate-limit-time-reset-ms");
        assert_eq!(retry_after(&headers, Utc::now()), Some(Duration::from_secs(30)));
    }

    #[test]
    fn path_segments_are_plain_ids() {
        assert_eq!(path_segment("727"), Ok("727"));
        assert!(path_segment("../admin").is_err());
        assert!(path_segment("").is_err());
        assert!(path_segment("1?x=2").is_err());
    }
}
