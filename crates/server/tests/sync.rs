//! Sync-back against platform outages (issue 5): a hanging platform leaves the others'
//! latency and intake alone; a ten-minute outage in paused time loses nothing and drains
//! exactly once; exhausted jobs become dead letters that replay once, one by one or by
//! filter; and every integration shows in `/metrics`. The SIGKILL test is the root
//! package's `tests/sync_kill.rs` (it runs the compiled binary).

#[path = "api/helpers.rs"]
mod helpers;
#[path = "sync/support.rs"]
mod support;

#[path = "sync/dead_letters.rs"]
mod dead_letters;
#[path = "sync/hang.rs"]
mod hang;
#[path = "sync/outage.rs"]
mod outage;

use helpers::TestApp;
use std::time::Duration;

/// The hang test measures latency: the other tests of this binary, which keep the CPU and
/// the disk busy in bursts, wait while it runs (they may run beside each other).
static TIMING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The value of the Prometheus sample `name{labels...}` in `/metrics`, whatever the order of
/// its labels.
async fn metric(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = app.http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("metrics body");
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        let inside = rest.strip_prefix('{')?.strip_suffix('}')?;
        labels
            .iter()
            .all(|(k, v)| inside.split(',').any(|l| l == format!("{k}=\"{v}\"")))
            .then(|| value.parse().ok())?
    })
}

fn api(app: &TestApp) -> support::Api<'_> {
    support::Api { http: &app.http, base: &app.base }
}

fn p99(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((sorted.len() as f64) * 0.99).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn p50(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
