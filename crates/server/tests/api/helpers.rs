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
