//! Online now, the range summary, event counts by type, and the recent raw events of a type
//! (paged by `event_pages`).

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use chrono::{Duration, Utc};
use deadpool_redis::redis;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::MySqlPool;

use super::auth::Project;
use super::envelope::Answer;
use super::error::ApiError;
use super::event_pages::{event_page, ListingQuery};
use super::filters::{push_types, Filter};
use super::limits::Heavy;
use super::params::{self, RangeParams, TimeRange};
use super::sessions::{session_figures, PAGES_DEFAULT};
use super::stats::AsOf;
use super::{ApiState, RedisGeneration};
use insightflow_store::DbText;

/// The online window when none is asked for, and the largest one (Redis keeps this much).
pub const ONLINE_DEFAULT_SECONDS: u32 = 300;
pub const ONLINE_MAX_SECONDS: u32 = 1800;

#[derive(Debug, Deserialize)]
pub struct OnlineQuery {
    pub seconds: Option<String>,
}

/// Users seen in the last `seconds` (by event time), the freshness and whether Redis is
/// whole, in one round trip.
pub async fn online_count(
    state: &ApiState,
    project: &Project,
    seconds: u32,
) -> Result<(u64, AsOf, RedisGeneration), ApiError> {
    let keys = state.keys(project);
    let since = Utc::now().timestamp_millis() - i64::from(seconds) * 1000;
    let mut pipe = redis::pipe();
    pipe.zcount(keys.online(), since, "+inf");
    let ((online,), as_of, generation): ((u64,), _, _) =
        state.redis_read_as_of(project, pipe).await?;
    Ok((online, as_of, generation))
}

pub fn online_seconds(raw: Option<&str>) -> Result<u32, ApiError> {
    params::limit("seconds", raw, ONLINE_DEFAULT_SECONDS, ONLINE_MAX_SECONDS)
}

/// `GET /online?seconds=300`: distinct users with an event in the last N seconds (1..1800).
pub async fn online(
    state: web::Data<ApiState>,
    project: Project,
    query: web::Query<OnlineQuery>,
) -> Result<HttpResponse, ApiError> {
    let seconds = online_seconds(query.seconds.as_deref())?;
    let (online, as_of, generation) = online_count(&state, &project, seconds).await?;
    Ok(Answer::about(&project, as_of)
        .source("redis")
        .redis(generation)
        .with(json!({"seconds": seconds, "online_users": online}))
        .ok())
}

#[derive(Debug, Deserialize)]
pub struct SummaryQuery {
    #[serde(flatten)]
    pub range: RangeParams,
    pub compare: Option<String>,
    pub types: Option<String>,
    pub filter: Option<String>,
    pub include_bots: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct Figures {
    pub events: i64,
    pub page_views: i64,
    pub unique_users: i64,
    pub sessions: i64,
}

#[derive(sqlx::FromRow)]
struct EventTotals {
    events: i64,
    page_views: i64,
}

/// Events of one type in a range, from the rollups.
#[derive(sqlx::FromRow)]
struct TypeCount {
    event_type: DbText,
    events: i64,
}

/// Events and page views from the minute rollups; people from `user_events`; sessions by
/// their start time from `sessions`. All exact. Under a filter, all from the matching raw
/// events (`filtered_figures`).
pub async fn figures(
    db: &MySqlPool,
    project: &str,
    range: TimeRange,
    filter: &Filter,
) -> Result<Figures, ApiError> {
    if !filter.is_empty() {
        return filtered_figures(db, project, range, filter).await;
    }
    let (from, to) = (range.from_naive(), range.to_naive());
    let events = sqlx::query_as::<_, EventTotals>(
        "SELECT CAST(COALESCE(SUM(events), 0) AS SIGNED) AS events, \
         CAST(COALESCE(SUM(IF(event_type = 'page_view', events, 0)), 0) AS SIGNED) AS page_views \
         FROM rollup_events_minute WHERE project = ? AND bucket >= ? AND bucket < ?",
    )
    .bind(project)
    .bind(from)
    .bind(to)
    .fetch_one(db);
    let people = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(DISTINCT distinct_id) FROM user_events \
         WHERE project = ? AND event_time >= ? AND event_time < ? AND is_bot = 0",
    )
    .bind(project)
    .bind(from)
    .bind(to)
    .fetch_one(db);
    let sessions = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM sessions WHERE project = ? AND started_at >= ? AND started_at < ?",
    )
    .bind(project)
    .bind(from)
    .bind(to)
    .fetch_one(db);
    let (totals, unique_users, sessions) = tokio::try_join!(events, people, sessions)?;
    Ok(Figures {
        events: totals.events,
        page_views: totals.page_views,
        unique_users,
        sessions,
    })
}

/// The figures of the raw events `filter` accepts, in one scan: events, page views, people,
/// and the sessions that started in the range and hold a matching event in it.
async fn filtered_figures(
    db: &MySqlPool,
    project: &str,
    range: TimeRange,
    filter: &Filter,
) -> Result<Figures, ApiError> {
    let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
        "SELECT COUNT(*) AS events, \
         CAST(COALESCE(SUM(e.event_type = 'page_view'), 0) AS SIGNED) AS page_views, \
         COUNT(DISTINCT e.distinct_id) AS unique_users, COUNT(DISTINCT s.session_id) AS sessions \
         FROM user_events e LEFT JOIN sessions s ON s.project = e.project \
         AND s.session_id = e.session_id AND s.started_at >= ",
    );
    q.push_bind(range.from_naive())
        .push(" AND s.started_at < ")
        .push_bind(range.to_naive())
        .push(" WHERE e.project = ")
        .push_bind(project)
        .push(" AND e.event_time >= ")
        .push_bind(range.from_naive())
        .push(" AND e.event_time < ")
        .push_bind(range.to_naive());
    filter.push_sql(&mut q);
    Ok(q.build_query_as::<Figures>().fetch_one(db).await?)
}

/// `GET /summary?from=&to=&tz=&compare=previous`: events, page views, unique users and
/// sessions for a range (default the last 24 hours), optionally with the previous period.
pub async fn summary(
    state: web::Data<ApiState>,
    project: Project,
    // Unique users over up to 400 days (twice with compare=previous) scan user_events.
    _turn: Heavy,
    query: web::Query<SummaryQuery>,
) -> Result<HttpResponse, ApiError> {
    let (range, _) = query.range.resolve(Duration::hours(24))?;
    let compare = match query.compare.as_deref() {
        None | Some("none") => false,
        Some("previous") => true,
        Some(other) => {
            return Err(ApiError::bad(
                "compare",
                format!("{other:?} is not one of previous, none"),
            ))
        }
    };
    let filter = Filter::parse(query.filter.as_deref(), query.include_bots.as_deref())?;
    let as_of = state.as_of(&project).await?;
    // Session figures describe sessions, not events: not under a filter. Read beside the
    // event figures, which they do not depend on.
    let sessions = async {
        if filter.is_empty() {
            session_figures(state.db(), project.as_str(), range, PAGES_DEFAULT)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    };
    let (current, session_figures) = tokio::try_join!(
        figures(state.db(), project.as_str(), range, &filter),
        sessions
    )?;
    let previous = if compare {
        let prev = range.previous();
        Some(json!({
            "range": prev.as_json(),
            "figures": figures(state.db(), project.as_str(), prev, &filter).await?,
        }))
    } else {
        None
    };
    Ok(Answer::about(&project, as_of)
        .range(range)
        .filter(&filter)
        .source("mysql")
        .with(json!({"figures": current, "previous": previous, "sessions": session_figures, "unique_users_exact": true}))
        .ok())
}

/// Event counts by type over a range, from the minute rollups, or under a filter from the
/// matching raw events (the range is in whole minutes, so both count the same events).
pub async fn counts_by_type(
    db: &MySqlPool,
    project: &str,
    range: TimeRange,
    types: &[String],
    filter: &Filter,
) -> Result<BTreeMap<String, i64>, ApiError> {
    let (select, time) = if filter.is_empty() {
        (
            "SELECT event_type, CAST(SUM(events) AS SIGNED) AS events FROM rollup_events_minute",
            "bucket",
        )
    } else {
        (
            "SELECT event_type, COUNT(*) AS events FROM user_events",
            "event_time",
        )
    };
    let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(select);
    q.push(" WHERE project = ")
        .push_bind(project)
        .push(format!(" AND {time} >= "))
        .push_bind(range.from_naive())
        .push(format!(" AND {time} < "))
        .push_bind(range.to_naive());
    push_types(&mut q, types);
    if !filter.is_empty() {
        filter.push_sql(&mut q);
    }
    q.push(" GROUP BY event_type");
    let rows: Vec<TypeCount> = q.build_query_as().fetch_all(db).await?;
    let mut counts: BTreeMap<String, i64> = types.iter().map(|t| (t.clone(), 0)).collect();
    counts.extend(rows.into_iter().map(|r| (r.event_type.0, r.events)));
    Ok(counts)
}

/// `GET /counts?from=&to=&types=a,b`: event counts by type for a range (MySQL rollups).
pub async fn counts(
    state: web::Data<ApiState>,
    project: Project,
    query: web::Query<SummaryQuery>,
) -> Result<HttpResponse, ApiError> {
    let (range, _) = query.range.resolve(Duration::hours(24))?;
    let types = params::event_types("types", query.types.as_deref())?;
    let filter = Filter::parse(query.filter.as_deref(), query.include_bots.as_deref())?;
    // Filtered counts scan raw events instead of reading rollups: they take turns.
    let _turn = filter.turn(&state).await?;
    let as_of = state.as_of(&project).await?;
    let counts = counts_by_type(state.db(), project.as_str(), range, &types, &filter).await?;
    Ok(Answer::about(&project, as_of)
        .range(range)
        .filter(&filter)
        .source("mysql")
        .with(json!({"total": counts.values().sum::<i64>(), "counts": counts}))
        .ok())
}

/// `GET /events?event_type=click&limit=50&cursor=`: the most recent raw events of a type,
/// newest first, cursor-paginated.
pub async fn recent_events(
    state: web::Data<ApiState>,
    project: Project,
    query: web::Query<ListingQuery>,
) -> Result<HttpResponse, ApiError> {
    let event_type = params::required_event_type("event_type", query.event_type.as_deref())?;
    let (range, limit, cursor) = query.page()?;
    let as_of = state.as_of(&project).await?;
    let (events, next_cursor) = event_page(state.db(), &project, range, cursor, limit, |q| {
        q.push(" AND event_type = ").push_bind(event_type.clone());
    })
    .await?;
    Ok(Answer::about(&project, as_of)
        .range(range)
        .source("mysql")
        .with(json!({"event_type": event_type, "events": events, "next_cursor": next_cursor}))
        .ok())
}
