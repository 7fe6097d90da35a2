//! The server under test: `lastmile serve` started as a child process on a fresh SQLite
//! file (or a given PostgreSQL URL), configured by `LASTMILE_*` variables, with a tenant
//! made by `lastmile admin create-tenant`. A separate process so its memory can be read
//! from `/proc/<pid>/status` and the client's own allocations do not blur it.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ServerProcess {
    child: Child,
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub admin_key: String,
    pub database: &'static str,
    /// Holds the database, key and log; removed when the bench ends.
    _dir: tempfile::TempDir,
    log: PathBuf,
}

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct ServerSpec {
    pub bin: Option<PathBuf>,
    pub database_url: Option<String>,
    /// Extra `LASTMILE_*` settings.
    pub env: Vec<(String, String)>,
}

impl ServerSpec {
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl ServerProcess {
    pub async fn start(spec: &ServerSpec) -> anyhow::Result<ServerProcess> {
        let bin = match &spec.bin {
            Some(b) => b.clone(),
            None => std::env::current_exe().context("locating the lastmile binary")?,
        };
        let dir = tempfile::Builder::new().prefix("lastmile-bench-").tempdir()?;
        let url = spec
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("lastmile.db").display()));
        let database = if url.starts_with("postgres") { "postgresql" } else { "sqlite" };
        let port = free_port()?;
        let mut env: Vec<(String, String)> = vec![
            ("LASTMILE_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("LASTMILE_DATABASE_URL".into(), url),
            ("LASTMILE_SECRET_KEY_FILE".into(), dir.path().join("lastmile.key").display().to_string()),
            ("LASTMILE_BENCH_BASELINE_ROUTES".into(), "true".into()),
            // Limits are per credential and per store; the bench is one client pushing hard.
            ("LASTMILE_RATE_LIMIT_PER_SECOND".into(), "10000000".into()),
            ("LASTMILE_RATE_LIMIT_BURST".into(), "10000000".into()),
            ("LASTMILE_STORE_INTAKE_PER_SECOND".into(), "10000000".into()),
            ("LASTMILE_LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), std::env::var("LASTMILE_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into())),
        ];
        env.extend(spec.env.iter().cloned());
        let command = |args: &[&str]| {
            let mut c = Command::new(&bin);
            c.args(args).env_remove("LASTMILE_CONFIG");
            for (k, v) in &env {
                c.env(k, v);
            }
            c
        };
        let out =
            command(&["admin", "create-tenant", "bench"]).output().context("running lastmile admin create-tenant")?;
        if !out.status.success() {
            bail!("lastmile admin create-tenant failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let created: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading the tenant")?;
        let admin_key = created["admin_key"].as_str().context("no admin_key")?.to_owned();
        let log = dir.path().join("server.log");
        let child = command(&["serve"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting lastmile serve")?;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let server = ServerProcess { child, base: format!("http://{addr}"), addr, admin_key, database, _dir: dir, log };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Poll `/healthz` (the child binds its port a moment after it starts).
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the server did not come up; its log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server process, KiB (`VmRSS` in /proc/<pid>/status).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Open file descriptors of the server process.
    pub fn open_files(&self) -> Option<usize> {
        Some(std::fs::read_dir(format!("/proc/{}/fd", self.pid())).ok()?.count())
    }

    /// SIGTERM and wait (then SIGKILL after 10 s).
    pub async fn stop(mut self) {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
