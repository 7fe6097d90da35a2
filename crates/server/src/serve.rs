//! The connection edge: accepting TCP connections and serving HTTP/1.1, HTTP/2 and
//! WebSocket upgrades on them, with the limits a public endpoint needs and that
//! `axum::serve` does not set — a deadline for a request's headers (slow-header
//! clients), an inactivity timeout on every connection (idle keep-alive sockets,
//! stalled bodies, dead WebSockets), caps on header count and size, and caps on open
//! connections in total and per source address, so a flood of idle sockets from one
//! place cannot starve everyone else of file descriptors.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// What the edge enforces; from the `edge` settings.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// A request's headers must arrive within this (from the first byte of the request).
    pub header_read_timeout: Duration,
    /// A connection with no byte read or written for this long is closed. Long-lived
    /// streams stay open: SSE sends a comment every 15 s and WebSockets ping every 20 s.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// 0 = no per-address cap (behind a load balancer every connection has its address).
    pub max_connections_per_ip: usize,
    pub max_headers: usize,
    /// The most bytes of a request head (request line and headers) read before `431`.
    pub max_header_bytes: usize,
}

/// Open connections, in total and per source address. A std Mutex: held only to count.
#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; gives its place back when dropped.
struct Admitted {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Admitted {
    fn admit(counts: &Arc<Mutex<Counts>>, ip: IpAddr, limits: &EdgeLimits) -> Option<Admitted> {
        let mut c = counts.lock().expect("connection counts poisoned");
        if c.total >= limits.max_connections {
            return None;
        }
        let mine = c.per_ip.get(&ip).copied().unwrap_or(0);
        if limits.max_connections_per_ip > 0 && mine >= limits.max_connections_per_ip {
            return None;
        }
        c.total += 1;
        c.per_ip.insert(ip, mine + 1);
        Some(Admitted { counts: counts.clone(), ip })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self.counts.lock().expect("connection counts poisoned");
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Serve `app` on `listener` until `shutdown` fires, then let open connections finish
/// (bounded by `drain`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: EdgeLimits,
    shutdown: CancellationToken,
    drain: Duration,
) -> io::Result<()> {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let tracker = tokio_util::task::TaskTracker::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_header_list_size(limits.max_header_bytes as u32);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors (or another transient error): back off
                    // instead of spinning; connections closing will free some.
                    tracing::warn!(error = %e, "accept failed");
                    metrics::counter!("lastmile_connections_refused_total", "reason" => "accept_error").increment(1);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(admitted) = Admitted::admit(&counts, peer.ip(), &limits) else {
            metrics::counter!("lastmile_connections_refused_total", "reason" => "connection_cap").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
        let service = app.clone().map_request(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.map(axum::body::Body::new)
        });
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _admitted = admitted;
            let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        tracing::trace!(error = %e, "connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!(open = tracker.len(), "connections still open after the drain period; closing them");
    }
    Ok(())
}

/// A connection that fails with `TimedOut` once no byte has moved either way for
/// `timeout`. The deadline moves forward on every successful read or write.
struct IdleTimeout {
    inner: TcpStream,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl IdleTimeout {
    fn new(inner: TcpStream, timeout: Duration) -> Self {
        Self { inner, timeout, deadline: Box::pin(tokio::time::sleep(timeout)) }
    }

    fn touch(&mut self) {
        let next = Instant::now() + self.timeout;
        // Resetting a timer costs a little; do it at most every ~second of progress.
        if next.saturating_duration_since(self.deadline.deadline()) > Duration::from_millis(500) {
            self.deadline.as_mut().reset(next);
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    /// A write's outcome: progress moves the deadline; waiting past it is a timeout.
    fn written(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle past the edge idle timeout")
}

impl AsyncRead for IdleTimeout {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        self.written(cx, polled)
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
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
