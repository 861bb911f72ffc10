//! Server-sent events: the online count and per-type counts, every second.

use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use chrono::Utc;
use deadpool_redis::redis;
use serde::Deserialize;
use serde_json::json;

use super::auth::Project;
use super::error::ApiError;
use super::stats::Counters;
use super::summary::online_seconds;
use super::ApiState;

/// A stream ends after this long; `EventSource` reconnects by itself, which also re-checks
/// the key.
const MAX_STREAM: Duration = Duration::from_secs(3600);

#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    pub online_seconds: Option<String>,
}

/// One update: users online, all-time counts by type, counts by type in the current UTC
/// minute, and the freshness.
async fn snapshot(
    state: &ApiState,
    project: &Project,
    seconds: u32,
) -> Result<serde_json::Value, ApiError> {
    let keys = state.keys(project);
    let now = Utc::now();
    let since = now.timestamp_millis() - i64::from(seconds) * 1000;
    let mut pipe = redis::pipe();
    pipe.zcount(keys.online(), since, "+inf")
        .hgetall(keys.events_total())
        .hgetall(keys.events_minute(now.timestamp().div_euclid(60)));
    let ((online, totals, minute), as_of, generation): ((u64, Counters, Counters), _, _) =
        state.redis_read_as_of(project, pipe).await?;
    Ok(generation.stamp(json!({
        "at": now,
        "online_users": online,
        "online_seconds": seconds,
        "counts": totals,
        "current_minute": minute,
        "as_of": as_of,
    })))
}

fn frame(event: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// `GET /live`: `text/event-stream` of `stats` events every second until the client leaves
/// or the server stops. A failing read sends an `error` event and the stream goes on.
pub async fn stream(
    state: web::Data<ApiState>,
    project: Project,
    query: web::Query<LiveQuery>,
) -> Result<HttpResponse, ApiError> {
    let seconds = online_seconds(query.online_seconds.as_deref())?;
    // Held by the stream: dropped when it ends or the client leaves.
    let slot = state.limits.open_stream(project.key())?;
    // The first update is computed now so a broken store fails the request, not the stream.
    let first = snapshot(&state, &project, seconds).await?;
    let shutdown = state.shutdown.clone();
    let started = tokio::time::Instant::now();
    let updates = futures::stream::unfold(
        (
            state,
            project,
            Some(first),
            tokio::time::interval(Duration::from_secs(1)),
            slot,
        ),
        move |(state, project, first, mut ticks, slot)| {
            let shutdown = shutdown.clone();
            async move {
                if let Some(first) = first {
                    ticks.tick().await;
                    return Some((
                        Ok::<_, actix_web::Error>(frame("stats", &first)),
                        (state, project, None, ticks, slot),
                    ));
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = ticks.tick() => {}
                }
                if started.elapsed() > MAX_STREAM {
                    return None;
                }
                let body = match snapshot(&state, &project, seconds).await {
                    Ok(update) => frame("stats", &update),
                    Err(e) => {
                        tracing::warn!(error = %e, "live stream update failed");
                        frame("error", &json!({"reason": "a data store is unavailable"}))
                    }
                };
                Some((Ok(body), (state, project, None, ticks, slot)))
            }
        },
    );
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(updates))
}
