//! The tenant event stream, `GET /v1/events` (SSE): every event of the tenant's outbox
//! in commit order, each with `id:` its outbox seq, so a client resumes with
//! `Last-Event-ID` (or `?after=`) and misses nothing. Without either it starts from now.
//! For the console (session) and API users (admin key) alike.

use crate::auth::AdminAuth;
use crate::error::{ApiResult, Query};
use crate::state::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use lastmile_bus::Received;
use lastmile_storage::FeedEvent;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/events", get(events))
}

const PAGE: i64 = 500;

/// Without a wake-up from the bus (another node's commit on an in-process bus, a lag) the
/// stream still looks at the database this often.
const RECHECK: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize, Default)]
pub struct EventsQuery {
    after: Option<i64>,
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(("after" = Option<i64>, Query, description = "resume after this seq (or send Last-Event-ID)")),
    responses((status = 200, description = "`event:` is the kind, `id:` the seq, `data:` {seq, id, kind, subject_id, data, occurred_at}", content_type = "text/event-stream", body = String)),
    security(("admin_key" = [])))]
pub async fn events(
    State(state): State<AppState>,
    auth: AdminAuth,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Response> {
    let last_event_id =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse::<i64>().ok());
    let after = match last_event_id.or(q.after) {
        Some(a) => a.max(0),
        None => state.db.tenant_last_event_seq(&auth.tenant_id).await?,
    };
    let sub = state.bus.subscribe();
    let closed = state.hub.closed();
    let st = (state, auth, sub, after, VecDeque::<FeedEvent>::new());
    let stream = futures::stream::unfold(st, |(state, auth, mut sub, mut after, mut queue)| async move {
        loop {
            if let Some(e) = queue.pop_front() {
                after = e.seq;
                let data = serde_json::to_string(&e).unwrap_or_default();
                let ev = SseEvent::default().id(e.seq.to_string()).event(e.kind.clone()).data(data);
                return Some((Ok::<_, Infallible>(ev), (state, auth, sub, after, queue)));
            }
            match state.db.tenant_events_after(&auth.tenant_id, after, PAGE).await {
                Ok(list) if !list.is_empty() => {
                    queue.extend(list);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "event stream read failed");
                    return None;
                }
            }
            // Wait for one of this tenant's events to be published (or a lag, or the recheck).
            let deadline = tokio::time::Instant::now() + RECHECK;
            loop {
                match tokio::time::timeout_at(deadline, sub.recv()).await {
                    Ok(Some(Received::Event(e))) if e.tenant_id != auth.tenant_id => continue,
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => return None,
                }
            }
        }
    });
    let stream = stream.take_until(closed);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}
