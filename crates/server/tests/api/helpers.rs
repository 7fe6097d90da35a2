//! Black-box test support: the real app on port 0 with a fresh database per test, on
//! SQLite or PostgreSQL.

// Several test binaries include this module; each uses a different part of it.
#![allow(dead_code)]

use lastmile_server::config::Config;
use lastmile_server::state::AppState;
use lastmile_storage::testing::TestDb;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backends to run a test on: SQLite always, PostgreSQL when configured.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    if lastmile_storage::testing::postgres_url().is_some() {
        v.push(Backend::Postgres);
    }
    v
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub cfg: Config,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pg: Option<TestDb>,
}

pub fn test_config(dir: &std::path::Path, database_url: String) -> Config {
    let mut cfg = Config {
        listen: "127.0.0.1:0".into(),
        database_url,
        secret_key_file: Some(dir.join("lastmile.key")),
        ..Config::default()
    };
    cfg.dispatch.tick_ms = 50;
    cfg.sync.poll_ms = 20;
    // Platform stand-ins listen on 127.0.0.1.
    cfg.allow_private_urls = true;
    // Tests that pause tokio time jump it by minutes; the edge's header and idle timeouts
    // would then close the client's pooled keep-alive connections under it. The edge tests
    // set their own short timeouts.
    cfg.edge.header_read_timeout_s = 3600;
    cfg.edge.idle_timeout_s = 3600;
    cfg.edge.body_read_timeout_s = 3600;
    cfg
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, pg) = match backend {
            Backend::Sqlite => (format!("sqlite://{}", dir.path().join("lastmile.db").display()), None),
            Backend::Postgres => {
                let pg = TestDb::postgres().await.expect("PostgreSQL configured");
                (pg.url.clone(), Some(pg))
            }
        };
        let mut cfg = test_config(dir.path(), url);
        tweak(&mut cfg);
        Self::start(cfg, dir, pg).await
    }

    async fn start(cfg: Config, dir: tempfile::TempDir, pg: Option<TestDb>) -> TestApp {
        let app = lastmile_server::build(cfg.clone()).await.expect("build app");
        let addr = app.addr;
        let state = app.state.clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));
        TestApp {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            state,
            cfg,
            dir,
            shutdown,
            task: Some(task),
            pg,
        }
    }

    /// Stop gracefully and start again on the same database and key (same port not kept).
    pub async fn restart(mut self) -> TestApp {
        self.stop_inner().await;
        let mut cfg = self.cfg.clone();
        cfg.listen = "127.0.0.1:0".into();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        let pg = self.pg.take();
        Self::start(cfg, dir, pg).await
    }

    /// [`TestApp::restart`], running `between` while the app is stopped.
    pub async fn restart_with(mut self, between: impl std::future::Future<Output = ()>) -> TestApp {
        self.stop_inner().await;
        between.await;
        let mut cfg = self.cfg.clone();
        cfg.listen = "127.0.0.1:0".into();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        let pg = self.pg.take();
        Self::start(cfg, dir, pg).await
    }

    async fn stop_inner(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("server ran cleanly");
        }
    }

    pub async fn stop(mut self) {
        self.stop_inner().await;
        if let Some(pg) = self.pg.take() {
            pg.cleanup().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A new tenant and its admin key.
    pub async fn tenant(&self, name: &str) -> (String, String) {
        let t = lastmile_server::admin::create_tenant(&self.state.db, name).await.expect("create tenant");
        (t.tenant_id, t.admin_key)
    }

    pub async fn post_json(&self, path: &str, bearer: &str, body: &Value) -> (u16, Value) {
        let res = self.http.post(self.url(path)).bearer_auth(bearer).json(body).send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_json(&self, path: &str, bearer: &str) -> (u16, Value) {
        let res = self.http.get(self.url(path)).bearer_auth(bearer).send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// A store of `platform` with `secret`, created through the admin API.
    pub async fn store(&self, admin: &str, platform: &str, identity: &str, secret: &str) -> Value {
        let (s, body) = self
            .post_json(
                "/v1/stores",
                admin,
                &json!({"name": format!("{platform} store"), "platform": platform, "platform_store_id": identity,
                        "webhook_secret": secret, "pickup": {"lat": 60.1699, "lng": 24.9384, "address": "Aleksanterinkatu 1, Helsinki"}}),
            )
            .await;
        assert_eq!(s, 201, "{body}");
        body
    }

    pub async fn driver(&self, admin: &str, name: &str) -> (String, String) {
        let (s, body) = self
            .post_json(
                "/v1/drivers",
                admin,
                &json!({"name": name, "phone": "+358401234567", "vehicle": "bike", "capacity": 1}),
            )
            .await;
        assert_eq!(s, 201, "{body}");
        (body["id"].as_str().unwrap().to_owned(), body["token"].as_str().unwrap().to_owned())
    }

    /// An API client's JWT for the tenant of `admin`.
    pub async fn client_token(&self, admin: &str) -> String {
        let (s, c) = self.post_json("/v1/api-clients", admin, &json!({"name": "pos"})).await;
        assert_eq!(s, 201, "{c}");
        let res = self
            .http
            .post(self.url("/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", c["client_id"].as_str().unwrap()),
                ("client_secret", c["client_secret"].as_str().unwrap()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    /// A native order through the ordering API; returns the order JSON.
    pub async fn native_order(&self, jwt: &str, store_id: &str, lat: f64, lng: f64) -> Value {
        let res = self
            .http
            .post(self.url("/v1/orders"))
            .bearer_auth(jwt)
            .header("Idempotency-Key", uuid_key())
            .json(&native_body(store_id, lat, lng))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        res.json().await.unwrap()
    }
}

pub fn uuid_key() -> String {
    lastmile_core::OrderId::generate().0
}

pub fn native_body(store_id: &str, lat: f64, lng: f64) -> Value {
    json!({
        "store_id": store_id,
        "customer": {"name": "Aino Virtanen", "phone": "+358401111111", "email": "aino@example.com"},
        "dropoff": {"address": {"line1": "Mannerheimintie 10", "city": "Helsinki", "postal_code": "00100", "country": "FI"}, "lat": lat, "lng": lng},
        "items": [{"sku": "SOUP-1", "name": "Salmon soup", "quantity": 2, "unit_price_minor": 1450}],
        "currency": "EUR"
    })
}

/// Run `f` once per configured backend.
#[macro_export]
macro_rules! on_backends {
    ($($name:ident => $body:path),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for backend in $crate::helpers::backends() {
                eprintln!("{} on {:?}", stringify!($name), backend);
                $body(backend).await;
            }
        }
    )*};
}

// ---- Driver real-time clients (WebSocket, SSE) and time control --------------------
// Used by the dispatch and realtime test binaries.

/// A client WebSocket to the app.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl TestApp {
    pub async fn put_json(&self, path: &str, bearer: &str, body: &Value) -> (u16, Value) {
        let res = self.http.put(self.url(path)).bearer_auth(bearer).json(body).send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// `PUT /v1/driver/status`, asserting it succeeds.
    pub async fn driver_status(&self, token: &str, status: &str) {
        let (s, body) = self.put_json("/v1/driver/status", token, &json!({ "status": status })).await;
        assert_eq!(s, 200, "{body}");
    }

    /// `POST /v1/driver/location` with one fix recorded now (wall clock).
    pub async fn locate(&self, token: &str, lat: f64, lng: f64) -> (u16, Value) {
        self.post_json("/v1/driver/location", token, &fix(lat, lng, 0)).await
    }

    /// The driver's WebSocket (`Authorization: Bearer`), resuming after `after`.
    pub async fn driver_ws(&self, token: &str, after: i64) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{}/v1/driver/ws?after={after}", self.addr).into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("driver websocket connects");
        ws
    }
}

/// A GPS fix as the driver app sends it, recorded `offset_ms` from now (wall clock).
pub fn fix(lat: f64, lng: f64, offset_ms: i64) -> Value {
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(offset_ms);
    json!({"lat": lat, "lng": lng, "accuracy_m": 5.0, "recorded_at": at.to_rfc3339()})
}

/// Send one JSON text message up a socket.
pub async fn ws_send(ws: &mut Ws, msg: Value) {
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(msg.to_string().into())).await.expect("websocket send");
}

/// The next JSON text message on a socket, failing the test after `within` (pings are
/// answered by the client library and skipped).
pub async fn ws_next(ws: &mut Ws, within: std::time::Duration) -> Value {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str::<Value>(t.as_str()).expect("JSON message"),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                other => panic!("websocket ended or failed: {other:?}"),
            }
        }
    };
    tokio::time::timeout(within, read).await.expect("no websocket message in time")
}

/// Read messages until one has `"type": kind`; returns it and the ones before it.
pub async fn ws_until(ws: &mut Ws, kind: &str, within: std::time::Duration) -> (Value, Vec<Value>) {
    let deadline = tokio::time::Instant::now() + within;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = ws_next(ws, left).await;
        if m["type"] == kind {
            return (m, before);
        }
        before.push(m);
    }
}

/// One server-sent event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// A minimal `text/event-stream` reader over a streaming response.
pub struct SseStream {
    res: reqwest::Response,
    buf: String,
}

impl SseStream {
    /// GET `path` as an event stream, with a bearer token and `Last-Event-ID` if given.
    pub async fn open(app: &TestApp, path: &str, bearer: Option<&str>, last_event_id: Option<i64>) -> SseStream {
        let mut req = app.http.get(app.url(path)).header("accept", "text/event-stream");
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let res = req.send().await.expect("event stream request");
        assert_eq!(res.status(), 200, "event stream refused");
        let ctype = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert!(ctype.starts_with("text/event-stream"), "content-type {ctype}");
        SseStream { res, buf: String::new() }
    }

    /// True once the server ends the stream (anything else pending is skipped).
    pub async fn ended(&mut self, within: std::time::Duration) -> bool {
        let drain = async {
            loop {
                match self.res.chunk().await {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return true,
                }
            }
        };
        tokio::time::timeout(within, drain).await.unwrap_or(false)
    }

    /// The next event that carries data (keep-alive comments are skipped), failing after `within`.
    pub async fn next_event(&mut self, within: std::time::Duration) -> SseEvent {
        let read = async {
            loop {
                while let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let mut ev = SseEvent::default();
                    let mut data = Vec::new();
                    for line in block.lines() {
                        let (field, value) = line.split_once(':').unwrap_or((line, ""));
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "id" => ev.id = Some(value.to_owned()),
                            "event" => ev.event = Some(value.to_owned()),
                            "data" => data.push(value.to_owned()),
                            _ => {}
                        }
                    }
                    if !data.is_empty() {
                        ev.data = data.join("\n");
                        return ev;
                    }
                }
                let chunk = self.res.chunk().await.expect("event stream read").expect("event stream ended");
                self.buf.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
            }
        };
        tokio::time::timeout(within, read).await.expect("no server-sent event in time")
    }
}

/// Paused tokio time that moves only by `tokio::time::advance`. A paused runtime normally
/// jumps to the next timer whenever it idles — also while it waits on a database or a
/// socket — so deadlines would race ahead of the test; a running `spawn_blocking` task
/// inhibits that (documented in `tokio::time::pause`). The blocking task doubles as a
/// watchdog: after `watchdog` of real time it ends, auto-advance resumes, and any
/// `tokio::time::timeout` the test is stuck in fires instead of hanging.
/// Needs the current-thread runtime (plain `#[tokio::test]`).
pub struct ManualTime {
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl ManualTime {
    pub fn start(watchdog: std::time::Duration) -> ManualTime {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(watchdog) {
                eprintln!("ManualTime watchdog: {watchdog:?} of real time passed; letting paused time auto-advance");
            }
        });
        tokio::time::pause();
        ManualTime { stop: Some(tx) }
    }

    /// Advance paused time by `by` and let the timers that fired run.
    pub async fn advance(&self, by: std::time::Duration) {
        tokio::time::advance(by).await;
    }
}

impl Drop for ManualTime {
    fn drop(&mut self) {
        self.stop.take();
        tokio::time::resume();
    }
}

/// A customer's tracking view holds status, eta, driver {first_name, location?},
/// updated_at and the slow-delivery fields (slow_notice_at, can_cancel, choice) only, and none of the driver's or customer's other details. The people in
/// these tests: drivers "<First> Lahtinen" with phone +358401234567; the customer of
/// `native_body`, "Aino Virtanen", +358401111111, aino@example.com, Mannerheimintie 10.
pub fn assert_tracking_leaks_nothing(view: &Value) {
    let keys: Vec<&str> = view.as_object().expect("tracking view is an object").keys().map(String::as_str).collect();
    for k in &keys {
        let allowed = ["status", "eta", "driver", "updated_at", "slow_notice_at", "can_cancel", "choice"];
        assert!(allowed.contains(k), "tracking leaks `{k}`: {view}");
    }
    if let Some(d) = view["driver"].as_object() {
        for k in d.keys() {
            assert!(["first_name", "location"].contains(&k.as_str()), "tracking leaks driver `{k}`: {view}");
        }
    }
    let text = view.to_string();
    for secret in ["Lahtinen", "+358", "Aino", "Virtanen", "example.com", "Mannerheimintie", "Salmon", "SOUP", "1450"] {
        assert!(!text.contains(secret), "tracking leaks {secret:?}: {view}");
    }
}
