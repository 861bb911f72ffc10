//! `as_of` and the all-time event counts (`/stats/events`).

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use deadpool_redis::redis;
use serde::{Deserialize, Serialize};

use super::auth::Project;
use super::envelope::Answer;
use super::error::ApiError;
use super::ApiState;
use insightflow_store::keys::Keys;

#[derive(Debug, Deserialize)]
pub struct ProjectQuery {
    pub project: Option<String>,
}

/// A Redis hash of counters (event type -> count).
pub type Counters = BTreeMap<String, u64>;
/// The `meta` or positions hash, as read for `as_of`.
pub type Meta = BTreeMap<String, i64>;

/// How fresh an answer is: the newest event time applied, and the consumer's position.
#[derive(Debug, Serialize)]
pub struct AsOf {
    pub newest_event_time: Option<chrono::DateTime<chrono::Utc>>,
    pub applied_events: u64,
    pub positions: BTreeMap<String, i64>,
}

pub async fn as_of(
    conn: &mut insightflow_store::redis::Pooled,
    keys: &Keys,
) -> Result<AsOf, ApiError> {
    let (meta, positions): (BTreeMap<String, i64>, BTreeMap<String, i64>) = redis::pipe()
        .hgetall(keys.meta())
        .hgetall(keys.positions())
        .query_async(&mut **conn)
        .await?;
    Ok(AsOf::from_parts(&meta, positions))
}

impl AsOf {
    /// From the project's `meta` hash and the positions hash, read in the caller's pipeline.
    pub fn from_parts(meta: &BTreeMap<String, i64>, positions: BTreeMap<String, i64>) -> Self {
        Self {
            newest_event_time: meta
                .get("newest_event_ms")
                .and_then(|ms| chrono::DateTime::from_timestamp_millis(*ms)),
            applied_events: meta.get("applied_events").copied().unwrap_or(0).max(0) as u64,
            positions,
        }
    }
}

/// `GET /api/v1/stats/events?project=`: all-time event counts by type (live, from Redis).
pub async fn event_counts(
    state: web::Data<ApiState>,
    project: Project,
) -> Result<HttpResponse, ApiError> {
    let keys = state.keys(&project);
    let mut pipe = redis::pipe();
    pipe.hgetall(keys.events_total());
    let ((counts,), as_of, generation): ((Counters,), _, _) =
        state.redis_read_as_of(&project, pipe).await?;
    Ok(Answer::about(&project, as_of)
        .redis(generation)
        .with(serde_json::json!({"total": counts.values().sum::<u64>(), "counts": counts}))
        .ok())
}
