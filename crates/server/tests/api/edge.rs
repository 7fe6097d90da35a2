//! The connection edge: slow headers, idle sockets and floods from one address are cut
//! off, while everyone else is still served. Timeouts here are real (seconds), and each
//! wait is for the server's own action, bounded by a deadline.

use crate::helpers::{Backend, TestApp};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Wait until the server closes `s` (EOF or reset); how long it took.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

async fn healthz_from(source: [u8; 4], to: SocketAddr) -> String {
    let mut s = connect_from(source, to).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_sockets_are_closed() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.edge.header_read_timeout_s = 1;
        c.edge.idle_timeout_s = 2;
    })
    .await;

    // A client that dribbles a header byte every 300 ms never completes its headers.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    let dribble = async {
        for b in b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            if slow.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(4), dribble).await;
    let took = closed_within(&mut slow, Duration::from_secs(3)).await;
    assert!(took.is_some(), "a slow-header client must be cut off");

    // A socket that never sends anything is closed after the idle timeout.
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(8)).await.expect("idle socket closed");
    assert!(took >= Duration::from_millis(900), "closed too early: {took:?}");

    // A kept-alive connection that goes quiet after a request is closed the same way.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut kept, Duration::from_secs(8)).await.is_some(), "idle keep-alive closed");

    // The server still answers.
    assert!(healthz_from([127, 0, 0, 1], app.addr).await.starts_with("HTTP/1.1 200"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.edge.max_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from([127, 0, 0, 7], app.addr).await);
    }
    // The fourth from the same address is closed at once, without a byte.
    let mut fourth = connect_from([127, 0, 0, 7], app.addr).await;
    assert!(closed_within(&mut fourth, Duration::from_secs(5)).await.is_some(), "over the per-address cap");
    // Another address is served, and so is the flooding one once it lets go.
    assert!(healthz_from([127, 0, 0, 8], app.addr).await.starts_with("HTTP/1.1 200"));
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if healthz_from([127, 0, 0, 7], app.addr).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the address never got its places back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_are_refused() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.edge.max_headers = 16).await;
    let mut req = app.http.get(app.url("/healthz"));
    for i in 0..40 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let res = req.send().await;
    // hyper answers 431 and closes; either way the request is not served.
    if let Ok(r) = res {
        assert_eq!(r.status(), 431);
    }
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_websocket_message_closes_with_1009() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (_, admin) = app.tenant("acme").await;
    let (_, token) = app.driver(&admin, "Pekka").await;
    let mut ws = app.driver_ws(&token, 0).await;
    let big = format!("{{\"type\":\"ack\",\"pad\":\"{}\"}}", "x".repeat(80 * 1024));
    ws.send(Message::Text(big.into())).await.unwrap();
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the server closes the socket");
    assert_eq!(close.expect("a close frame with a code").code, CloseCode::Size);
    app.stop().await;
}
