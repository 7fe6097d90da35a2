//! Fault injection: the middleware that records each request and then misbehaves as told,
//! and the listener that refuses connections while the stand-in is `Down`.

use crate::{RecordedRequest, Shared};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lastmile_core::Platform;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// How the stand-in misbehaves. Switch with `StandIn::set_fault`; `None` is normal service.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Fault {
    #[default]
    None,
    /// New connections are accepted and dropped at once, and open keep-alive connections
    /// fail their next read, so no request gets an answer. The listener stays bound so the
    /// fault can be switched off again on the same port.
    Down,
    /// Every answer waits this long first.
    Slow(Duration),
    /// Requests are read and never answered.
    Hang,
    /// Every request gets this status, with the platform's usual error body.
    Status5xx(u16),
    /// Every request gets 429: `Retry-After` for Shopify and WooCommerce; BigCommerce's
    /// `X-Rate-Limit-*` headers (reset in milliseconds) for BigCommerce.
    TooManyRequests { retry_after_s: u64 },
    /// `200 OK`, `Content-Type: application/json`, and a body that is not JSON.
    Malformed,
    /// Shopify GraphQL only: `200 OK` with a top-level `THROTTLED` error, as the GraphQL
    /// Admin API answers when the query cost bucket is empty.
    GraphqlThrottled,
    /// Writes are applied, then the answer is replaced by this 5xx (as when a proxy gives up
    /// after the platform acted); reads are answered normally.
    ApplyThen5xx(u16),
    /// Writes are applied and never answered (the platform acted, and its answer is lost
    /// with the connection: the caller times out, or dies, not knowing); reads are answered
    /// normally.
    ApplyThenHang,
}

/// A fixed-window limit for `StandIn::set_rate_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
}

pub(crate) struct RateWindow {
    limit: RateLimit,
    started: Instant,
    used: u32,
}

impl RateWindow {
    pub fn new(limit: RateLimit) -> Self {
        RateWindow { limit, started: Instant::now(), used: 0 }
    }

    /// `Err(time until the window resets)` when the request is over the limit.
    fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        if now.duration_since(self.started) >= self.limit.window {
            self.started = now;
            self.used = 0;
        }
        if self.used >= self.limit.requests {
            return Err(self.limit.window.saturating_sub(now.duration_since(self.started)));
        }
        self.used += 1;
        Ok(())
    }
}

/// Marks a response whose handler applied a write (for [`Fault::ApplyThen5xx`]).
#[derive(Clone, Copy)]
pub(crate) struct WriteApplied;

impl Shared {
    /// The fault for this request; counted-down faults are used up here, except
    /// `ApplyThen5xx` and `ApplyThenHang`, which are used up only when they fire on a write.
    fn fault_for_request(&self) -> Fault {
        let mut state = self.lock();
        let fault = state.fault.clone();
        if !matches!(fault, Fault::ApplyThen5xx(_) | Fault::ApplyThenHang | Fault::Down) {
            use_up(&mut state);
        }
        fault
    }

    fn use_up_fault(&self) {
        use_up(&mut self.lock());
    }

    fn is_down(&self) -> bool {
        self.lock().fault == Fault::Down
    }

    fn refuse_connection(&self) -> bool {
        let mut state = self.lock();
        if state.fault != Fault::Down {
            return false;
        }
        use_up(&mut state);
        true
    }
}

fn use_up(state: &mut crate::State) {
    if let Some(remaining) = state.fault_remaining.as_mut() {
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            state.fault = Fault::None;
            state.fault_remaining = None;
        }
    }
}

/// Records the request, then applies the fault in force.
pub(crate) async fn apply(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let fault = shared.fault_for_request();
    let limited = {
        let mut state = shared.lock();
        state.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: bytes.to_vec(),
            fault: fault.clone(),
            received_at: std::time::Instant::now(),
        });
        let now = Instant::now();
        state.rate_limit.as_mut().map(|w| w.admit(now)).unwrap_or(Ok(()))
    };
    if let Err(reset_in) = limited {
        return too_many_requests(shared.platform, reset_in);
    }
    let request = Request::from_parts(parts, Body::from(bytes));
    match fault {
        Fault::None | Fault::Down => next.run(request).await,
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Fault::Hang => std::future::pending().await,
        Fault::Status5xx(code) => server_error(shared.platform, code),
        Fault::TooManyRequests { retry_after_s } => {
            too_many_requests(shared.platform, Duration::from_secs(retry_after_s))
        }
        Fault::Malformed => {
            ([("content-type", "application/json")], r#"{"data": {"order": {"id": "gid://shopify/Or"#).into_response()
        }
        Fault::GraphqlThrottled => graphql_throttled(),
        Fault::ApplyThen5xx(code) => {
            let response = next.run(request).await;
            if response.extensions().get::<WriteApplied>().is_some() {
                shared.use_up_fault();
                return server_error(shared.platform, code);
            }
            response
        }
        Fault::ApplyThenHang => {
            let response = next.run(request).await;
            if response.extensions().get::<WriteApplied>().is_some() {
                shared.use_up_fault();
                return std::future::pending().await;
            }
            response
        }
    }
}

fn server_error(platform: Platform, code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match platform {
        Platform::Shopify => {
            serde_json::json!({"errors": status.canonical_reason().unwrap_or("Internal Server Error")})
        }
        Platform::Bigcommerce => serde_json::json!([{"status": code, "message": "Internal server error"}]),
        _ => {
            serde_json::json!({"code": "internal_server_error", "message": "Internal server error", "data": {"status": code}})
        }
    };
    (status, axum::Json(body)).into_response()
}

fn too_many_requests(platform: Platform, reset_in: Duration) -> Response {
    let mut response = match platform {
        Platform::Shopify => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(serde_json::json!({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."})),
        )
            .into_response(),
        Platform::Bigcommerce => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(serde_json::json!([{"status": 429, "message": "Too many requests"}])),
        )
            .into_response(),
        _ => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(serde_json::json!({"code": "too_many_requests", "message": "Too many requests", "data": {"status": 429}})),
        )
            .into_response(),
    };
    let headers = response.headers_mut();
    let header = |v: String| HeaderValue::from_str(&v).expect("numeric header value");
    if platform == Platform::Bigcommerce {
        // api-rate-limits.mdx: wait X-Rate-Limit-Time-Reset-Ms; the window is 30 s.
        headers.insert("x-rate-limit-time-reset-ms", header(reset_in.as_millis().to_string()));
        headers.insert("x-rate-limit-time-window-ms", header("30000".into()));
        headers.insert("x-rate-limit-requests-quota", header("150".into()));
        headers.insert("x-rate-limit-requests-left", header("0".into()));
    } else if platform == Platform::Shopify {
        // Shopify sends a decimal number of seconds ("2.0").
        headers.insert("retry-after", header(format!("{}.0", reset_in.as_secs_f64().ceil() as u64)));
    } else {
        headers.insert("retry-after", header((reset_in.as_secs_f64().ceil() as u64).to_string()));
    }
    response
}

fn graphql_throttled() -> Response {
    axum::Json(serde_json::json!({
        "errors": [{
            "message": "Throttled",
            "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}
        }],
        "extensions": {"cost": {
            "requestedQueryCost": 12,
            "actualQueryCost": null,
            "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 2, "restoreRate": 100.0}
        }}
    }))
    .into_response()
}

/// The TCP listener behind every stand-in: while the fault is `Down` it drops each new
/// connection as soon as it is accepted.
pub(crate) struct FaultyListener {
    inner: TcpListener,
    shared: Arc<Shared>,
}

impl FaultyListener {
    pub fn new(inner: TcpListener, shared: Arc<Shared>) -> Self {
        FaultyListener { inner, shared }
    }
}

impl axum::serve::Listener for FaultyListener {
    type Io = FaultyStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    if self.shared.refuse_connection() {
                        drop(stream);
                        continue;
                    }
                    return (FaultyStream { inner: stream, shared: self.shared.clone() }, addr);
                }
                Err(error) => {
                    // e.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "stand-in accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails its next read once the stand-in goes `Down`, so pooled
/// keep-alive connections stop being answered too.
pub(crate) struct FaultyStream {
    inner: TcpStream,
    shared: Arc<Shared>,
}

impl AsyncRead for FaultyStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.shared.is_down() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "stand-in is down")));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultyStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
