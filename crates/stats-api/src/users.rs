//! A user's profile and event path.

use actix_web::{web, HttpResponse};
use chrono::NaiveDateTime;

use serde_json::json;

use super::auth::Project;
use super::envelope::Answer;
use super::error::ApiError;
use super::event_pages::{event_page, ListingQuery};
use super::params;
use super::ApiState;
use insightflow_store::DbText;

/// A row of `users`.
#[derive(sqlx::FromRow)]
struct ProfileRow {
    distinct_id: DbText,
    user_id: Option<DbText>,
    anonymous_id: Option<DbText>,
    first_seen: NaiveDateTime,
    last_seen: NaiveDateTime,
    total_events: u64,
    total_sessions: u64,
    device_type: Option<DbText>,
    browser: Option<DbText>,
    os: Option<DbText>,
    properties: Option<DbText>,
}

pub(crate) fn distinct_id(raw: &str) -> Result<&str, ApiError> {
    if raw.is_empty() || raw.chars().count() > 255 {
        return Err(ApiError::bad(
            "distinct_id",
            "must have 1 to 255 characters",
        ));
    }
    Ok(raw)
}

/// `{distinct_id}` by name: under `/api/v1/projects/{project}` the path has two segments, and a
/// positional read would take the project for the user.
#[derive(Debug, serde::Deserialize)]
pub struct UserPath {
    pub distinct_id: String,
}

/// `GET /users/{distinct_id}`: first and last seen, totals, latest device, merged properties.
pub async fn profile(
    state: web::Data<ApiState>,
    project: Project,
    path: web::Path<UserPath>,
) -> Result<HttpResponse, ApiError> {
    let who = distinct_id(&path.distinct_id)?;
    let as_of = state.as_of(&project).await?;
    let row: Option<ProfileRow> = sqlx::query_as(
        "SELECT distinct_id, user_id, anonymous_id, first_seen, last_seen, total_events, \
         total_sessions, device_type, browser, os, CAST(properties AS CHAR) AS properties \
         FROM users WHERE project = ? AND distinct_id = ?",
    )
    .bind(project.as_str())
    .bind(who)
    .fetch_optional(state.db())
    .await?;
    let Some(user) = row else {
        return Err(ApiError::not_found(
            "distinct_id",
            format!("no user {who:?} in project {}", project.as_str()),
        ));
    };
    Ok(Answer::about(&project, as_of).source("mysql").with(json!({
        "distinct_id": user.distinct_id,
        "user_id": user.user_id,
        "anonymous_id": user.anonymous_id,
        "first_seen": user.first_seen.and_utc(),
        "last_seen": user.last_seen.and_utc(),
        "total_events": user.total_events,
        "total_sessions": user.total_sessions,
        "device": {"device_type": user.device_type, "browser": user.browser, "os": user.os},
        "properties": user.properties.and_then(|p| serde_json::from_str::<serde_json::Value>(p.as_str()).ok()),
    })).ok())
}

/// `GET /users/{distinct_id}/events?event_type=&from=&to=&limit=&cursor=`: the user's events,
/// newest first, cursor-paginated.
pub async fn path(
    state: web::Data<ApiState>,
    project: Project,
    path: web::Path<UserPath>,
    query: web::Query<ListingQuery>,
) -> Result<HttpResponse, ApiError> {
    let who = distinct_id(&path.distinct_id)?;
    let event_type = query
        .event_type
        .as_deref()
        .map(|t| params::event_type("event_type", t))
        .transpose()?;
    let (range, limit, cursor) = query.page()?;
    let as_of = state.as_of(&project).await?;
    let (events, next_cursor) = event_page(state.db(), &project, range, cursor, limit, |q| {
        q.push(" AND distinct_id = ").push_bind(who.to_owned());
        if let Some(t) = event_type.clone() {
            q.push(" AND event_type = ").push_bind(t);
        }
    })
    .await?;
    Ok(Answer::about(&project, as_of)
        .range(range)
        .source("mysql")
        .with(json!({"distinct_id": who, "events": events, "next_cursor": next_cursor}))
        .ok())
}
