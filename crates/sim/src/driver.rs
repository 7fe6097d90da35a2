//! One simulated driver's app: goes online, holds its WebSocket (resuming from the last
//! seen seq if it drops), sends a GPS fix every interval while driving along real roads,
//! takes or declines offers as the scenario decides, drives to the store, waits for the
//! order to be ready, picks up, drives to the customer and delivers.

use crate::client::Api;
use crate::movement::{Mover, Route};
use crate::scenario::{DriverSpec, Scenario};
use crate::stats::SimStats;
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use lastmile_core::GeoPoint;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// What every driver of a run shares.
#[derive(Clone)]
pub struct Fleet {
    pub scenario: Arc<Scenario>,
    pub api: Api,
    pub stats: Arc<SimStats>,
    pub shutdown: CancellationToken,
}

/// The job in hand.
#[derive(Debug, Clone)]
enum Task {
    /// Cruising between random nearby road nodes; `resume` is when a pause ends.
    Roaming {
        resume: Option<Instant>,
    },
    ToStore {
        job: Job,
    },
    /// At the store until the order is ready and handed over.
    AtStore {
        job: Job,
        leave: Instant,
    },
    ToDoor {
        job: Job,
    },
    AtDoor {
        job: Job,
        leave: Instant,
    },
}

/// An accepted order.
#[derive(Debug, Clone)]
struct Job {
    order_id: String,
    pickup: GeoPoint,
    dropoff: GeoPoint,
    ready_at: DateTime<Utc>,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Driver {
    fleet: Fleet,
    spec: DriverSpec,
    token: String,
    mover: Mover,
    task: Task,
    /// Offers sent an accept, waiting for the answer.
    pending: HashMap<String, Job>,
    offers_seen: u64,
    roams: u64,
    last_seq: i64,
}

fn parse_point(v: &Value) -> Option<GeoPoint> {
    GeoPoint::new(v.get("lat")?.as_f64()?, v.get("lng")?.as_f64()?).ok()
}

impl Driver {
    fn roam_speed(&self) -> f64 {
        self.fleet.scenario.cfg.speed_mps * 0.6
    }

    /// A route along the roads from where the driver is to `to`.
    fn route_to(&self, to: GeoPoint) -> Route {
        let g = &self.fleet.scenario.graph;
        let here = self.mover.position();
        let (a, b) = (g.nearest_node(&here), g.nearest_node(&to));
        let mut points = vec![here];
        if let Some(path) = g.shortest_path(a, b) {
            points.extend(g.polyline(&path));
        }
        points.push(to);
        Route::new(points)
    }

    fn drive_to(&mut self, to: GeoPoint, speed: f64) {
        let route = self.route_to(to);
        self.mover.follow(route);
        self.mover.speed_mps = speed;
    }

    fn roam_on(&mut self) {
        let here = self.mover.position();
        let node = self.fleet.scenario.roam_target(self.spec.index, self.roams, &here);
        self.roams += 1;
        let to = self.fleet.scenario.graph.point(node);
        self.drive_to(to, self.roam_speed());
        self.task = Task::Roaming { resume: None };
    }

    async fn post(&self, path: &str, body: Value) -> bool {
        match self.fleet.api.call(Method::POST, path, &self.token, Some(&body)).await {
            Ok(a) if a.ok() => true,
            Ok(a) => {
                tracing::debug!(status = %a.status, body = %a.body, path, "driver call refused");
                self.fleet.stats.errors.fetch_add(1, Relaxed);
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, path, "driver call failed");
                self.fleet.stats.errors.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Advance the task after the vehicle moved.
    async fn step(&mut self) {
        let now = Instant::now();
        let handover = Duration::from_secs_f64(self.fleet.scenario.cfg.handover_s);
        let speed = self.fleet.scenario.cfg.speed_mps;
        match self.task.clone() {
            Task::Roaming { resume } => {
                if !self.mover.arrived() {
                    return;
                }
                match resume {
                    None => self.task = Task::Roaming { resume: Some(now + Duration::from_secs(8)) },
                    Some(t) if now >= t => self.roam_on(),
                    Some(_) => {}
                }
            }
            Task::ToStore { job } if self.mover.arrived() => {
                let until_ready = (job.ready_at - Utc::now()).to_std().unwrap_or_default();
                self.fleet.stats.record_driver_wait(until_ready);
                self.task = Task::AtStore { leave: now + until_ready.max(handover), job };
            }
            Task::AtStore { job, leave } if now >= leave => {
                if self.post(&format!("/v1/driver/orders/{}/pickup", job.order_id), json!({})).await {
                    self.fleet.stats.picked_up.fetch_add(1, Relaxed);
                    let late = (Utc::now() - job.ready_at).to_std().unwrap_or_default();
                    self.fleet.stats.record_order_wait(late);
                    self.drive_to(job.dropoff, speed);
                    self.task = Task::ToDoor { job };
                } else {
                    self.roam_on();
                }
            }
            Task::ToDoor { job } if self.mover.arrived() => {
                self.task = Task::AtDoor { leave: now + handover, job };
            }
            Task::AtDoor { job, leave } if now >= leave => {
                let at = self.mover.position();
                let proof = json!({"recipient_name": "at the door", "lat": at.lat, "lng": at.lng});
                if self.post(&format!("/v1/driver/orders/{}/deliver", job.order_id), proof).await {
                    self.fleet.stats.delivered(&job.order_id);
                }
                self.roam_on();
            }
            _ => {}
        }
    }

    fn busy(&self) -> bool {
        !matches!(self.task, Task::Roaming { .. }) || !self.pending.is_empty()
    }

    /// React to one server message; returns what to send back.
    fn on_message(&mut self, text: &str) -> Vec<Value> {
        let Ok(msg) = serde_json::from_str::<Value>(text) else { return vec![] };
        let kind = msg["type"].as_str().unwrap_or_default().to_owned();
        let data = &msg["data"];
        let mut out = Vec::new();
        if let Some(seq) = msg.get("seq").and_then(Value::as_i64) {
            self.last_seq = self.last_seq.max(seq);
            out.push(json!({"type": "ack", "seq": seq}));
        }
        match kind.as_str() {
            "offer" => {
                let (Some(offer_id), Some(order_id)) = (data["offer_id"].as_str(), data["order_id"].as_str()) else {
                    return out;
                };
                self.fleet.stats.offered(order_id);
                let expired = data["expires_at"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .is_some_and(|t| t < Utc::now());
                let job = (|| {
                    Some(Job {
                        order_id: order_id.to_owned(),
                        pickup: parse_point(&data["pickup"])?,
                        dropoff: parse_point(&data["dropoff"])?,
                        ready_at: data["ready_at"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(Utc::now),
                    })
                })();
                let k = self.offers_seen;
                self.offers_seen += 1;
                match job {
                    _ if expired => {} // a replayed old offer: nothing to answer
                    Some(job) if !self.busy() && self.fleet.scenario.accepts(self.spec.index, k) => {
                        self.pending.insert(offer_id.to_owned(), job);
                        out.push(json!({"type": "accept", "offer_id": offer_id}));
                    }
                    _ => {
                        let reason = if self.busy() { "busy" } else { "too far for me right now" };
                        self.fleet.stats.declined.fetch_add(1, Relaxed);
                        out.push(json!({"type": "decline", "offer_id": offer_id, "reason": reason}));
                    }
                }
            }
            "accepted" => {
                let offer_id = data["offer_id"].as_str().unwrap_or_default();
                if let Some(job) = self.pending.remove(offer_id) {
                    self.fleet.stats.accepted.fetch_add(1, Relaxed);
                    let speed = self.fleet.scenario.cfg.speed_mps;
                    self.drive_to(job.pickup, speed);
                    self.task = Task::ToStore { job };
                }
            }
            "error" => {
                let code = data["code"].as_str().unwrap_or_default();
                if !self.pending.is_empty() && matches!(code, "offer_closed" | "driver_at_capacity" | "not_found") {
                    self.pending.clear();
                    self.fleet.stats.accept_refused.fetch_add(1, Relaxed);
                } else {
                    tracing::debug!(code, message = %data["message"], "server reported an error on the socket");
                    self.fleet.stats.errors.fetch_add(1, Relaxed);
                }
            }
            "assignment_cancelled" => {
                let cancelled = data["order_id"].as_str();
                let current = match &self.task {
                    Task::ToStore { job }
                    | Task::AtStore { job, .. }
                    | Task::ToDoor { job }
                    | Task::AtDoor { job, .. } => Some(job.order_id.as_str()),
                    Task::Roaming { .. } => None,
                };
                if cancelled.is_some() && cancelled == current {
                    self.roam_on();
                }
            }
            _ => {}
        }
        out
    }

    async fn connect(&self) -> anyhow::Result<Socket> {
        let url = self.fleet.api.ws_url(&format!("/v1/driver/ws?after={}&token={}", self.last_seq, self.token));
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(ws)
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let api = self.fleet.api.clone();
        let online = json!({"status": "online"});
        api.must(Method::PUT, "/v1/driver/status", &self.token, &online).await?;
        let mut ws = self.connect().await?;
        self.fleet.stats.drivers_connected.fetch_add(1, Relaxed);
        let interval = Duration::from_millis(self.fleet.scenario.cfg.gps_interval_ms);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        self.roam_on();
        let shutdown = self.fleet.shutdown.clone();
        loop {
            let replies = tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => self.on_message(t.as_str()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        self.fleet.stats.drivers_connected.fetch_sub(1, Relaxed);
                        ws = self.reconnect(&shutdown).await?;
                        self.fleet.stats.drivers_connected.fetch_add(1, Relaxed);
                        continue;
                    }
                    Some(Ok(_)) => continue,
                },
                _ = tick.tick() => {
                    let dt = last.elapsed().as_secs_f64();
                    last = Instant::now();
                    self.mover.advance(dt);
                    self.step().await;
                    self.fleet.stats.gps_sent.fetch_add(1, Relaxed);
                    vec![json!({"type": "location", "data": self.mover.fix(Utc::now())})]
                }
            };
            for r in replies {
                if ws.send(Message::Text(r.to_string().into())).await.is_err() {
                    break;
                }
            }
        }
        self.fleet.stats.drivers_connected.fetch_sub(1, Relaxed);
        let _ = ws.close(None).await;
        let _ = api.call(Method::PUT, "/v1/driver/status", &self.token, Some(&json!({"status": "offline"}))).await;
        Ok(())
    }

    /// Reconnect with the last seen seq, so nothing sent meanwhile is missed.
    async fn reconnect(&self, shutdown: &CancellationToken) -> anyhow::Result<Socket> {
        for attempt in 1..=20u64 {
            if shutdown.is_cancelled() {
                anyhow::bail!("stopping");
            }
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            match self.connect().await {
                Ok(ws) => return Ok(ws),
                Err(e) => tracing::debug!(error = %e, attempt, "driver reconnect failed"),
            }
        }
        anyhow::bail!("driver {} could not reconnect", self.spec.index)
    }
}

/// Run one driver until the fleet's shutdown fires.
pub async fn drive(fleet: Fleet, spec: DriverSpec, token: String) {
    let start = fleet.scenario.graph.point(spec.start_node);
    let index = spec.index;
    let driver = Driver {
        mover: Mover::new(Route::stay(start), fleet.scenario.cfg.speed_mps),
        fleet: fleet.clone(),
        spec,
        token,
        task: Task::Roaming { resume: None },
        pending: HashMap::new(),
        offers_seen: 0,
        roams: 0,
        last_seq: 0,
    };
    if let Err(e) = driver.run().await {
        if !fleet.shutdown.is_cancelled() {
            tracing::warn!(driver = index, error = %format!("{e:#}"), "simulated driver stopped");
            fleet.stats.errors.fetch_add(1, Relaxed);
        }
    }
}
