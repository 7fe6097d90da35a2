//! Cluster mode: many nodes on one PostgreSQL and one NATS, interchangeable behind a load
//! balancer. This module makes them one dispatcher:
//!
//! - **One fleet view.** Every `cluster.share_ms` a node tells the others, over core NATS
//!   (`<name>.fleet.<tenant>`), what it heard from drivers since the last time: status,
//!   newest fix, how long ago it last heard them. Every node's live index so holds every
//!   driver wherever they are connected, and presence is judged on the cluster's word, not
//!   one node's silence.
//! - **Membership.** Nodes announce themselves on `<name>.nodes` with every share; a node
//!   not heard for `cluster.member_timeout_ms` is gone.
//! - **One matcher per tenant.** A lease row per tenant in the database names the node
//!   that matches it ([`lastmile_storage::DispatchLease`]). Tenants are spread over the
//!   live members by rendezvous hashing; a node takes a lease when it is free or run out,
//!   renews its own every third of `cluster.lease_ttl_ms`, and hands a lease to the
//!   tenant's preferred member once that member has been up a while. A node that dies
//!   stops renewing, and its tenants move when their leases run out. Database constraints
//!   stay the last wall should two nodes ever both believe they hold one.
//!
//! Durable events (inbox appends that wake a driver's socket, order changes) do not pass
//! here: they go through the event bus, which every node reads.
//!
//! Single node (in-process bus): there is no one to share with, and the node matches
//! every tenant.

use crate::state::AppState;
use futures::StreamExt;
use lastmile_bus::fanout::Fanout;
use lastmile_core::TenantId;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name in leases and logs; default: a fresh random id per start.
    pub node_id: Option<String>,
    /// Subject prefix on NATS, so clusters sharing a NATS server stay apart.
    pub name: String,
    /// How long a dispatch lease lasts unrenewed: about how long a dead node's tenants
    /// wait for a new matcher. Nodes' clocks must agree to well within this.
    pub lease_ttl_ms: u64,
    /// How often a node shares its fleet news and announces itself.
    pub share_ms: u64,
    /// A node not heard from for this long has left the cluster.
    pub member_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { node_id: None, name: "lastmile".into(), lease_ttl_ms: 5000, share_ms: 100, member_timeout_ms: 2000 }
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), String> {
        let token_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !token_ok(&self.name) {
            return Err("cluster.name must be letters, digits, `-` or `_`".into());
        }
        if self.node_id.as_deref().is_some_and(|n| !token_ok(n)) {
            return Err("cluster.node_id must be letters, digits, `-` or `_`".into());
        }
        if self.share_ms == 0 || self.member_timeout_ms < 3 * self.share_ms {
            return Err("cluster.share_ms must be positive and cluster.member_timeout_ms at least 3 × share_ms".into());
        }
        if self.lease_ttl_ms < 1000 {
            return Err("cluster.lease_ttl_ms must be at least 1000".into());
        }
        Ok(())
    }
}

/// What one node tells the others about one driver.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DriverNote {
    pub id: String,
    pub status: String,
    /// Wall-clock ms of that status (newer wins).
    pub status_at: i64,
    /// The newest fix: lat, lng, recorded_at (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<(f64, f64, i64)>,
    /// How long before sending the sender last heard from the driver.
    pub seen_ago_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct FleetNews {
    node: String,
    drivers: Vec<DriverNote>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    node: String,
    /// False when the node is leaving (graceful shutdown): drop it at once.
    #[serde(default = "yes")]
    alive: bool,
    /// False when the node does not dispatch (`dispatch.enabled = false`): it takes no
    /// tenants, so no lease is handed to it.
    #[serde(default = "yes")]
    matches: bool,
}

fn yes() -> bool {
    true
}

struct Peer {
    first: Instant,
    last: Instant,
    matches: bool,
}

#[derive(Default)]
struct Membership {
    /// Other nodes: when first and last heard, and whether they take tenants.
    peers: HashMap<String, Peer>,
    /// Tenants whose lease this node holds, and until when it may act on each (a margin
    /// short of the lease's end in the database, measured from before the renewal).
    held: HashMap<TenantId, Instant>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    node_id: Arc<str>,
    cfg: Arc<ClusterConfig>,
    /// None on a single node.
    fanout: Option<Fanout>,
    /// A std Mutex: a few map operations, never held across an await.
    inner: Arc<Mutex<Membership>>,
}

impl Cluster {
    /// A node on its own: matches every tenant, shares nothing.
    pub fn single(cfg: &ClusterConfig) -> Self {
        Self::with(cfg, None)
    }

    /// A member of the cluster on the NATS server at `url`.
    pub async fn connect(cfg: &ClusterConfig, url: &str) -> anyhow::Result<Self> {
        let fanout = Fanout::connect(url, &cfg.name).await?;
        Ok(Self::with(cfg, Some(fanout)))
    }

    fn with(cfg: &ClusterConfig, fanout: Option<Fanout>) -> Self {
        let node_id = cfg.node_id.clone().unwrap_or_else(|| format!("node_{}", uuid::Uuid::now_v7().simple()));
        Self { node_id: node_id.into(), cfg: Arc::new(cfg.clone()), fanout, inner: Arc::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn is_clustered(&self) -> bool {
        self.fanout.is_some()
    }

    /// Whether this node matches `tenant` now.
    pub fn holds(&self, tenant: &TenantId) -> bool {
        !self.is_clustered() || self.lock().held.get(tenant).is_some_and(|until| *until > Instant::now())
    }

    /// Whether this node matches any tenant now.
    pub fn holds_any(&self) -> bool {
        !self.is_clustered() || self.lock().held.values().any(|until| *until > Instant::now())
    }

    /// Live members, this node included, sorted.
    pub fn members(&self) -> Vec<String> {
        self.live(Duration::ZERO, false, true)
    }

    /// Live members that take tenants, up for at least `settled`, sorted; this node
    /// included when `me` says it takes tenants.
    fn live(&self, settled: Duration, only_matchers: bool, me: bool) -> Vec<String> {
        let timeout = Duration::from_millis(self.cfg.member_timeout_ms);
        let mut out: Vec<String> = self
            .lock()
            .peers
            .iter()
            .filter(|(_, p)| {
                p.last.elapsed() <= timeout && p.first.elapsed() >= settled && (p.matches || !only_matchers)
            })
            .map(|(id, _)| id.clone())
            .collect();
        if me {
            out.push(self.node_id.to_string());
        }
        out.sort();
        out
    }

    /// For `/readyz`: this node, the members it sees, how many tenants it matches.
    pub fn summary(&self) -> serde_json::Value {
        let matching = if self.is_clustered() {
            serde_json::json!(self.lock().held.values().filter(|u| **u > Instant::now()).count())
        } else {
            serde_json::json!("all")
        };
        serde_json::json!({"node": &*self.node_id, "members": self.members().len(), "matching_tenants": matching})
    }

    /// The live member that should match `tenant` (highest rendezvous hash).
    fn preferred<'a>(tenant: &TenantId, members: &'a [String]) -> Option<&'a String> {
        members.iter().max_by_key(|m| rendezvous(tenant.as_str(), m))
    }

    fn heard_node(&self, hello: &Hello) {
        if hello.node == *self.node_id {
            return;
        }
        let mut g = self.lock();
        if !hello.alive {
            g.peers.remove(&hello.node);
            return;
        }
        let now = Instant::now();
        let peer = g.peers.entry(hello.node.clone()).or_insert(Peer { first: now, last: now, matches: hello.matches });
        peer.last = now;
        peer.matches = hello.matches;
    }
}

/// A stable 64-bit hash of (tenant, node), the same on every node and build: FNV-1a, then
/// a 64-bit finalizer (MurmurHash3's) so names differing only in their last byte still
/// spread evenly.
fn rendezvous(tenant: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant.bytes().chain([0u8]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Start the cluster's workers (nothing on a single node).
pub fn spawn_workers(workers: &mut tokio::task::JoinSet<()>, state: &AppState, shutdown: &CancellationToken) {
    if !state.cluster.is_clustered() {
        return;
    }
    let sup = &state.workers;
    sup.supervise_with(workers, "cluster-sharing", state, shutdown, run_sharing);
    sup.supervise_with(workers, "cluster-listening", state, shutdown, run_listening);
    if state.cfg.dispatch.enabled {
        sup.supervise_with(workers, "cluster-leases", state, shutdown, run_leases);
    }
}

/// Every `share_ms`: tell the cluster this node is here and what it heard from drivers.
async fn run_sharing(state: AppState, shutdown: CancellationToken) {
    let Some(fanout) = state.cluster.fanout.clone() else { return };
    let mut interval = tokio::time::interval(Duration::from_millis(state.cluster.cfg.share_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let node = state.cluster.node_id().to_owned();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        if let Err(e) = share_once(&state, &fanout, &node).await {
            tracing::warn!(error = %format!("{e:#}"), "sharing fleet news with the cluster failed");
        }
    }
    let bye = serde_json::to_vec(&Hello { node, alive: false, matches: false }).unwrap_or_default();
    let _ = fanout.publish("nodes", bye).await;
}

async fn share_once(state: &AppState, fanout: &Fanout, node: &str) -> anyhow::Result<()> {
    let hello = Hello { node: node.to_owned(), alive: true, matches: state.cfg.dispatch.enabled };
    fanout.publish("nodes", serde_json::to_vec(&hello)?).await?;
    let mut by_tenant: HashMap<TenantId, Vec<DriverNote>> = HashMap::new();
    for (tenant, note) in state.fleet.take_shared() {
        by_tenant.entry(tenant).or_default().push(note);
    }
    for (tenant, drivers) in by_tenant {
        // A few thousand drivers per message at most keeps each well under NATS's
        // default 1 MiB payload limit.
        for chunk in drivers.chunks(2000) {
            let news = FleetNews { node: node.to_owned(), drivers: chunk.to_vec() };
            fanout.publish(&format!("fleet.{}", tenant.as_str()), serde_json::to_vec(&news)?).await?;
        }
    }
    Ok(())
}

/// Apply other nodes' news to this node's fleet and membership.
async fn run_listening(state: AppState, shutdown: CancellationToken) {
    let Some(fanout) = state.cluster.fanout.clone() else { return };
    let (fleet, nodes) = match (fanout.subscribe("fleet.>").await, fanout.subscribe("nodes").await) {
        (Ok(f), Ok(n)) => (f, n),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "cannot listen to the cluster: this node sees only its own drivers");
            return;
        }
    };
    let mut messages = futures::stream::select(fleet, nodes);
    let me = state.cluster.node_id().to_owned();
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = messages.next() => m,
        };
        let Some(msg) = msg else {
            tracing::error!("cluster subscription ended");
            break;
        };
        if msg.subject == "nodes" {
            match serde_json::from_slice::<Hello>(&msg.payload) {
                Ok(hello) => state.cluster.heard_node(&hello),
                Err(e) => tracing::debug!(error = %e, "undecodable node announcement"),
            }
            continue;
        }
        let Some(tenant) = msg.subject.strip_prefix("fleet.") else { continue };
        let news: FleetNews = match serde_json::from_slice(&msg.payload) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable fleet news");
                continue;
            }
        };
        if news.node == me {
            continue;
        }
        let tenant = TenantId(tenant.to_owned());
        for note in &news.drivers {
            state.fleet.apply_shared(&tenant, note);
        }
    }
}

/// Keep this node's share of the dispatch leases: renew its own, take the free or run-out
/// leases of tenants it is preferred for (or any that stayed unclaimed for a whole lease),
/// and hand over those another settled member is preferred for.
async fn run_leases(state: AppState, shutdown: CancellationToken) {
    let ttl = Duration::from_millis(state.cluster.cfg.lease_ttl_ms);
    let mut interval = tokio::time::interval(ttl / 3);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        match lease_round(&state).await {
            Ok(true) => {
                // New tenants: learn who is busy from the database before matching them.
                if let Err(e) = crate::dispatcher::resync_busy(&state).await {
                    tracing::warn!(error = %format!("{e:#}"), "reading busy drivers failed");
                }
                state.fleet.wake_matcher();
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "dispatch lease round failed"),
        }
    }
    // Leaving: give the leases back so the other nodes take them now.
    let node = state.cluster.node_id().to_owned();
    let held: Vec<TenantId> = state.cluster.lock().held.drain().map(|(t, _)| t).collect();
    for tenant in held {
        let _ = state.db.release_dispatch_lease(&tenant, &node).await;
    }
}

/// One round; true when this node took a tenant it did not hold.
pub async fn lease_round(state: &AppState) -> anyhow::Result<bool> {
    let cluster = &state.cluster;
    let node = cluster.node_id().to_owned();
    let ttl_ms = cluster.cfg.lease_ttl_ms as i64;
    // Act on a lease only until a margin before it runs out in the database: the renewal
    // may come late, and the clock read here is taken before the statement runs.
    let started = Instant::now();
    let act_until = started + Duration::from_millis(cluster.cfg.lease_ttl_ms * 4 / 5);
    let now = lastmile_storage::now_ms();
    let mut held: HashSet<TenantId> = state.db.renew_dispatch_leases(&node, now + ttl_ms).await?.into_iter().collect();
    let leases: HashMap<TenantId, (String, i64)> =
        state.db.dispatch_leases().await?.into_iter().map(|l| (l.tenant_id, (l.node_id, l.expires_at))).collect();
    // Tenants go to the members that match (a node with dispatch off takes none); a lease
    // is handed over only to a member up for a while, so a node that is starting (or
    // flapping) does not pull tenants back and forth.
    let members = cluster.live(Duration::ZERO, true, true);
    let settled: HashSet<String> =
        cluster.live(Duration::from_millis(cluster.cfg.member_timeout_ms), true, true).into_iter().collect();
    let mut gained = false;
    for tenant in state.db.tenant_ids().await? {
        let preferred = Cluster::preferred(&tenant, &members).map(String::as_str);
        if held.contains(&tenant) {
            if let Some(other) = preferred.filter(|p| *p != node && settled.contains(*p)) {
                if state.db.release_dispatch_lease(&tenant, &node).await? {
                    tracing::info!(tenant = %tenant, to = other, "handing a tenant's matching to its preferred node");
                    held.remove(&tenant);
                }
            }
            continue;
        }
        let free_for = match leases.get(&tenant) {
            None => Some(0),
            Some((_, expires)) if *expires < now => Some(now - expires),
            Some(_) => None,
        };
        // Preferred: take it as soon as it is free. Not preferred: only once it stayed
        // unclaimed for a whole lease (the preferred node is not taking it).
        let take = free_for.is_some_and(|f| preferred == Some(node.as_str()) || f > ttl_ms);
        if take && state.db.try_dispatch_lease(&tenant, &node, now, now + ttl_ms).await? {
            tracing::info!(tenant = %tenant, "took a tenant's matching");
            held.insert(tenant);
            gained = true;
        }
    }
    let mut g = cluster.lock();
    let before: HashSet<TenantId> = g.held.keys().cloned().collect();
    g.held = held.iter().map(|t| (t.clone(), act_until)).collect();
    Ok(gained || held.iter().any(|t| !before.contains(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_tenants_and_moves_only_a_dead_nodes_share() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let two: Vec<String> = ["a", "c"].map(String::from).to_vec();
        let tenants: Vec<TenantId> = (0..300).map(|i| TenantId(format!("ten_{i:04}"))).collect();
        let mut per_node: HashMap<&str, usize> = HashMap::new();
        for t in &tenants {
            let p = Cluster::preferred(t, &three).unwrap();
            *per_node.entry(p.as_str()).or_default() += 1;
            let after = Cluster::preferred(t, &two).unwrap();
            if p != "b" {
                assert_eq!(p, after, "a live node keeps its tenants when another leaves");
            }
        }
        assert!(per_node.values().all(|n| (60..=140).contains(n)), "{per_node:?}");
    }

    #[test]
    fn config_names_must_be_subject_tokens() {
        assert!(ClusterConfig::default().validate().is_ok());
        let bad = ClusterConfig { name: "a.b".into(), ..ClusterConfig::default() };
        assert!(bad.validate().is_err());
        let bad = ClusterConfig { node_id: Some("x y".into()), ..ClusterConfig::default() };
        assert!(bad.validate().is_err());
        let bad = ClusterConfig { member_timeout_ms: 100, ..ClusterConfig::default() };
        assert!(bad.validate().is_err());
    }
}
