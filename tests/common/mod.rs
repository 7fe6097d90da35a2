//! Shared by the tests that run the compiled `lastmile` binary as a child process.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `lastmile` on a test's database and key file, with no config file and readable logs.
pub fn lastmile(dir: &Path, database_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lastmile"));
    cmd.env_remove("LASTMILE_CONFIG")
        .env("LASTMILE_DATABASE_URL", database_url)
        .env("LASTMILE_SECRET_KEY_FILE", dir.join("lastmile.key"))
        .env("LASTMILE_LOG_FORMAT", "pretty")
        // Platform stand-ins listen on 127.0.0.1.
        .env("LASTMILE_ALLOW_PRIVATE_URLS", "true")
        .stdin(Stdio::null());
    cmd
}

/// Run a `lastmile` command to its end: (succeeded, stdout, stderr).
// Not every test binary that shares these helpers runs a command to its end.
#[allow(dead_code)]
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("lastmile runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `lastmile serve` child process. Dropping it kills it, so a failing assertion never
/// leaves a server running.
pub struct ChildServer {
    child: Child,
    pub base: String,
    log: PathBuf,
}

impl ChildServer {
    /// Start `lastmile serve` with `env` on a free port and wait (bounded) until `/readyz`
    /// answers. `tag` names its log file in `dir`.
    #[allow(dead_code)] // not every test binary starts servers both ways
    pub async fn start(
        dir: &Path,
        database_url: &str,
        env: &[(&str, &str)],
        tag: &str,
        http: &reqwest::Client,
    ) -> ChildServer {
        for attempt in 0..5 {
            // The port is free when chosen; if another process takes it first, the child
            // exits and we try another.
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log = dir.join(format!("serve-{tag}-{attempt}.log"));
            let mut cmd = lastmile(dir, database_url);
            cmd.arg("serve").env("LASTMILE_LISTEN", format!("127.0.0.1:{port}"));
            for (k, v) in env {
                cmd.env(k, v);
            }
            let child =
                cmd.stdout(Stdio::null()).stderr(File::create(&log).unwrap()).spawn().expect("spawn lastmile serve");
            let mut server = ChildServer { child, base: format!("http://127.0.0.1:{port}"), log };
            if server.ready(http).await {
                return server;
            }
        }
        panic!("lastmile serve did not start; see the logs in {}", dir.display());
    }

    /// Start `lastmile serve` on `port` (one that must stay the same across restarts, as
    /// behind a load balancer) and wait until `/readyz` answers; panics if it exits first.
    #[allow(dead_code)] // not every test binary starts servers both ways
    pub async fn start_at(
        dir: &Path,
        database_url: &str,
        env: &[(&str, &str)],
        tag: &str,
        port: u16,
        http: &reqwest::Client,
    ) -> ChildServer {
        let log = dir.join(format!("serve-{tag}.log"));
        let mut cmd = lastmile(dir, database_url);
        cmd.arg("serve").env("LASTMILE_LISTEN", format!("127.0.0.1:{port}"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child =
            cmd.stdout(Stdio::null()).stderr(File::create(&log).unwrap()).spawn().expect("spawn lastmile serve");
        let mut server = ChildServer { child, base: format!("http://127.0.0.1:{port}"), log };
        assert!(server.ready(http).await, "lastmile serve on port {port} did not start");
        server
    }

    /// Poll `/readyz` (a child process has no other readiness signal), bounded. False if
    /// the process exited first.
    async fn ready(&mut self, http: &reqwest::Client) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                eprintln!("lastmile serve exited with {status}:\n{}", self.log_text());
                return false;
            }
            if http.get(format!("{}/readyz", self.base)).send().await.is_ok_and(|r| r.status() == 200) {
                return true;
            }
            assert!(std::time::Instant::now() < deadline, "not ready within 60 s:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown hook, no flush, no recording of calls in flight.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL lastmile");
        self.child.wait().expect("reap lastmile");
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
