//! Stats endpoints.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use deadpool_redis::redis::{self, AsyncCommands};
use insightflow_model::ProjectId;
use serde::{Deserialize, Serialize};

use super::ApiState;
use crate::keys::{self, Keys};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {reason}")]
    BadRequest { field: &'static str, reason: String },
    #[error("a dependency is unavailable")]
    Unavailable(#[source] anyhow::Error),
}

impl actix_web::ResponseError for ApiError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        match self {
            Self::BadRequest { .. } => actix_web::http::StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::BadRequest { field, reason } => {
                HttpResponse::BadRequest().json(serde_json::json!({
                    "error": "invalid_parameter", "field": field, "reason": reason,
                }))
            }
            Self::Unavailable(e) => {
                tracing::error!(error = %format!("{e:#}"), "stats query failed");
                HttpResponse::ServiceUnavailable()
                    .insert_header(("Retry-After", "5"))
                    .json(serde_json::json!({"error": "unavailable", "field": "", "reason": "a data store is unavailable"}))
            }
        }
    }
}

fn unavailable(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Unavailable(e.into())
}

#[derive(Debug, Deserialize)]
pub struct ProjectQuery {
    pub project: Option<String>,
}

pub fn project(query: &ProjectQuery) -> Result<ProjectId, ApiError> {
    ProjectId::parse(
        query
            .project
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
    )
    .map_err(|e| ApiError::BadRequest {
        field: "project",
        reason: e.reason,
    })
}

/// How fresh an answer is: the newest event time applied, and the consumer's position.
#[derive(Debug, Serialize)]
pub struct AsOf {
    pub newest_event_time: Option<chrono::DateTime<chrono::Utc>>,
    pub applied_events: u64,
    pub positions: BTreeMap<String, i64>,
}

pub async fn as_of(
    conn: &mut deadpool_redis::Connection,
    prefix: &str,
    keys: &Keys,
) -> Result<AsOf, ApiError> {
    let meta: BTreeMap<String, i64> = conn.hgetall(keys.meta()).await.map_err(unavailable)?;
    let positions: BTreeMap<String, i64> = conn
        .hgetall(keys::positions(prefix))
        .await
        .map_err(unavailable)?;
    Ok(AsOf {
        newest_event_time: meta
            .get("newest_event_ms")
            .and_then(|ms| chrono::DateTime::from_timestamp_millis(*ms)),
        applied_events: meta.get("applied_events").copied().unwrap_or(0).max(0) as u64,
        positions,
    })
}

/// `GET /api/v1/stats/events?project=`: all-time event counts by type (live, from Redis).
pub async fn event_counts(
    state: web::Data<ApiState>,
    query: web::Query<ProjectQuery>,
) -> Result<HttpResponse, ApiError> {
    let project = project(&query)?;
    let keys = Keys::new(state.redis.prefix(), project.as_str());
    let mut conn = state.redis_pool().get().await.map_err(unavailable)?;
    let counts: BTreeMap<String, u64> = redis::cmd("HGETALL")
        .arg(keys.events_total())
        .query_async(&mut *conn)
        .await
        .map_err(unavailable)?;
    let as_of = as_of(&mut conn, state.redis.prefix(), &keys).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "project": project.as_str(),
        "total": counts.values().sum::<u64>(),
        "counts": counts,
        "exact": true,
        "as_of": as_of,
    })))
}
