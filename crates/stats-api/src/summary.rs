//! Online now, the range summary, event counts by type (and the reference services' count
//! routes), and the recent raw events of a type.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use deadpool_redis::redis;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::MySqlPool;

use super::auth::Project;
use super::error::ApiError;
use super::limits::Heavy;
use super::params::{self, TimeRange};
use super::stats::{AsOf, Counters, Meta};
use super::{ApiState, RedisGeneration};
use insightflow_store::keys;
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
    pipe.zcount(keys.online(), since, "+inf")
        .hgetall(keys.meta())
        .hgetall(keys::positions(state.redis.prefix()));
    let ((online, meta, positions), generation): ((u64, Meta, Meta), _) =
        state.redis_read(pipe).await?;
    Ok((online, AsOf::from_parts(&meta, positions), generation))
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
    Ok(HttpResponse::Ok().json(generation.stamp(json!({
        "project": project.as_str(),
        "seconds": seconds,
        "online_users": online,
        "exact": true,
        "source": "redis",
        "as_of": as_of,
    }))))
}

#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub tz: Option<String>,
    pub compare: Option<String>,
    pub types: Option<String>,
}

/// Range parameters common to most endpoints, with a default length.
pub fn range_of(
    from: Option<&str>,
    to: Option<&str>,
    tz: Option<&str>,
    default_len: Duration,
) -> Result<(TimeRange, chrono_tz::Tz), ApiError> {
    let tz = params::time_zone(tz)?;
    Ok((TimeRange::parse(from, to, tz, default_len, Utc::now())?, tz))
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Figures {
    pub events: i64,
    pub page_views: i64,
    pub unique_users: i64,
    pub sessions: i64,
}

/// Events and page views from the minute rollups; people from `user_events`; sessions by
/// their start time from `sessions`. All exact.
pub async fn figures(db: &MySqlPool, project: &str, range: TimeRange) -> Result<Figures, ApiError> {
    let (from, to) = (range.from_naive(), range.to_naive());
    let events = sqlx::query_as::<_, (i64, i64)>(
        "SELECT CAST(COALESCE(SUM(events), 0) AS SIGNED), \
         CAST(COALESCE(SUM(IF(event_type = 'page_view', events, 0)), 0) AS SIGNED) \
         FROM rollup_events_minute WHERE project = ? AND bucket >= ? AND bucket < ?",
    )
    .bind(project)
    .bind(from)
    .bind(to)
    .fetch_one(db);
    let people = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(DISTINCT distinct_id) FROM user_events \
         WHERE project = ? AND event_time >= ? AND event_time < ?",
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
    let ((events, page_views), unique_users, sessions) =
        tokio::try_join!(events, people, sessions)?;
    Ok(Figures {
        events,
        page_views,
        unique_users,
        sessions,
    })
}

pub fn range_json(range: TimeRange) -> serde_json::Value {
    json!({"from": range.from, "to": range.to})
}

/// `GET /summary?from=&to=&tz=&compare=previous`: events, page views, unique users and
/// sessions for a range (default the last 24 hours), optionally with the previous period.
pub async fn summary(
    state: web::Data<ApiState>,
    project: Project,
    // Unique users over up to 400 days (twice with compare=previous) scan user_events.
    _turn: Heavy,
    query: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    let (range, _) = range_of(
        query.from.as_deref(),
        query.to.as_deref(),
        query.tz.as_deref(),
        Duration::hours(24),
    )?;
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
    let as_of = state.as_of(&project).await?;
    let current = figures(state.db(), project.as_str(), range).await?;
    let previous = if compare {
        let prev = range.previous();
        Some(json!({
            "range": range_json(prev),
            "figures": figures(state.db(), project.as_str(), prev).await?,
        }))
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(json!({
        "project": project.as_str(),
        "range": range_json(range),
        "figures": current,
        "previous": previous,
        "unique_users_exact": true,
        "source": "mysql",
        "as_of": as_of,
    })))
}

/// Event counts by type over a range, from the minute rollups.
pub async fn counts_by_type(
    db: &MySqlPool,
    project: &str,
    range: TimeRange,
    types: &[String],
) -> Result<BTreeMap<String, i64>, ApiError> {
    let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
        "SELECT event_type, CAST(SUM(events) AS SIGNED) FROM rollup_events_minute WHERE project = ",
    );
    q.push_bind(project)
        .push(" AND bucket >= ")
        .push_bind(range.from_naive())
        .push(" AND bucket < ")
        .push_bind(range.to_naive());
    if !types.is_empty() {
        q.push(" AND event_type IN (");
        let mut list = q.separated(", ");
        for t in types {
            list.push_bind(t.as_str());
        }
        q.push(")");
    }
    q.push(" GROUP BY event_type");
    let rows: Vec<(DbText, i64)> = q.build_query_as().fetch_all(db).await?;
    let mut counts: BTreeMap<String, i64> = types.iter().map(|t| (t.clone(), 0)).collect();
    counts.extend(rows.into_iter().map(|(t, n)| (t.0, n)));
    Ok(counts)
}

/// `GET /counts?from=&to=&types=a,b`: event counts by type for a range (MySQL rollups).
pub async fn counts(
    state: web::Data<ApiState>,
    project: Project,
    query: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    let (range, _) = range_of(
        query.from.as_deref(),
        query.to.as_deref(),
        query.tz.as_deref(),
        Duration::hours(24),
    )?;
    let types = params::event_types("types", query.types.as_deref())?;
    let as_of = state.as_of(&project).await?;
    let counts = counts_by_type(state.db(), project.as_str(), range, &types).await?;
    Ok(HttpResponse::Ok().json(json!({
        "project": project.as_str(),
        "range": range_json(range),
        "total": counts.values().sum::<i64>(),
        "counts": counts,
        "exact": true,
        "source": "mysql",
        "as_of": as_of,
    })))
}

/// `GET /api/v1/events/{type}/count` (reference route): the type's all-time count.
pub async fn type_count(
    state: web::Data<ApiState>,
    project: Project,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let event_type = params::event_type("event_type", &path)?;
    let keys = state.keys(&project);
    let mut pipe = redis::pipe();
    pipe.hget(keys.events_total(), &event_type)
        .hgetall(keys.meta())
        .hgetall(keys::positions(state.redis.prefix()));
    let ((count, meta, positions), generation): ((Option<u64>, Meta, Meta), _) =
        state.redis_read(pipe).await?;
    Ok(HttpResponse::Ok().json(generation.stamp(json!({
        "project": project.as_str(),
        "event_type": event_type,
        "count": count.unwrap_or(0),
        "exact": true,
        "as_of": AsOf::from_parts(&meta, positions),
    }))))
}

/// `GET /api/v1/stats/` (reference route): totals by type and users online now.
pub async fn overall(
    state: web::Data<ApiState>,
    project: Project,
) -> Result<HttpResponse, ApiError> {
    let keys = state.keys(&project);
    let since = Utc::now().timestamp_millis() - i64::from(ONLINE_DEFAULT_SECONDS) * 1000;
    let mut pipe = redis::pipe();
    pipe.hgetall(keys.events_total())
        .zcount(keys.online(), since, "+inf")
        .hgetall(keys.meta())
        .hgetall(keys::positions(state.redis.prefix()));
    let ((counts, online, meta, positions), generation): ((Counters, u64, Meta, Meta), _) =
        state.redis_read(pipe).await?;
    Ok(HttpResponse::Ok().json(generation.stamp(json!({
        "project": project.as_str(),
        "total_events": counts.values().sum::<u64>(),
        "event_types": counts.len(),
        "counts": counts,
        "online_users": online,
        "exact": true,
        "as_of": AsOf::from_parts(&meta, positions),
    }))))
}

/// `GET /api/v1/stats/{type}` (reference route): one type's all-time total, its count in
/// the last 60 UTC minutes and in the last 24 UTC hours (both including the current one).
pub async fn type_stats(
    state: web::Data<ApiState>,
    project: Project,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let event_type = params::event_type("event_type", &path)?;
    let keys = state.keys(&project);
    let now = Utc::now().timestamp();
    let (minute, hour) = (now.div_euclid(60), now.div_euclid(3600));
    let mut pipe = redis::pipe();
    pipe.hget(keys.events_total(), &event_type);
    for m in minute - 59..=minute {
        pipe.hget(keys.events_minute(m), &event_type);
    }
    for h in hour - 23..=hour {
        pipe.hget(keys.events_hour(h), &event_type);
    }
    pipe.hgetall(keys.meta())
        .hgetall(keys::positions(state.redis.prefix()));
    let (values, generation): (Vec<redis::Value>, _) = state.redis_read(pipe).await?;
    let number = |v: &redis::Value| {
        redis::from_redis_value::<Option<u64>>(v.clone())
            .ok()
            .flatten()
            .unwrap_or(0)
    };
    let total = values.first().map_or(0, number);
    let last_hour: u64 = values.iter().skip(1).take(60).map(number).sum();
    let last_day: u64 = values.iter().skip(61).take(24).map(number).sum();
    let meta: BTreeMap<String, i64> = values
        .get(85)
        .and_then(|v| redis::from_redis_value(v.clone()).ok())
        .unwrap_or_default();
    let positions: BTreeMap<String, i64> = values
        .get(86)
        .and_then(|v| redis::from_redis_value(v.clone()).ok())
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(generation.stamp(json!({
        "project": project.as_str(),
        "event_type": event_type,
        "total": total,
        "last_60_minutes": last_hour,
        "last_24_hours": last_day,
        "exact": true,
        "as_of": AsOf::from_parts(&meta, positions),
    }))))
}

#[derive(Debug, Deserialize)]
pub struct RecentQuery {
    pub event_type: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub tz: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A position in a newest-first listing: the last row's event time (ms) and row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub time_ms: i64,
    pub id: u64,
}

impl Cursor {
    pub fn parse(raw: Option<&str>) -> Result<Option<Self>, ApiError> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            return Ok(None);
        };
        raw.split_once('_')
            .and_then(|(t, id)| Some((t.parse().ok()?, id.parse().ok()?)))
            .map(|(time_ms, id)| Some(Self { time_ms, id }))
            .ok_or_else(|| ApiError::bad("cursor", "is not a cursor returned by this endpoint"))
    }

    pub fn encode(&self) -> String {
        format!("{}_{}", self.time_ms, self.id)
    }

    pub fn time(&self) -> chrono::NaiveDateTime {
        DateTime::from_timestamp_millis(self.time_ms)
            .unwrap_or_default()
            .naive_utc()
    }
}

/// The columns an event listing returns.
pub const EVENT_COLUMNS: &str = "id, event_id, event_type, event_name, distinct_id, session_id, \
    page_path, page_title, element_selector, element_text, click_x, click_y, \
    CAST(properties AS CHAR) AS properties, event_time";

#[derive(sqlx::FromRow)]
pub struct EventRow {
    pub id: u64,
    pub event_id: DbText,
    pub event_type: DbText,
    pub event_name: Option<DbText>,
    pub distinct_id: DbText,
    pub session_id: Option<DbText>,
    pub page_path: Option<DbText>,
    pub page_title: Option<DbText>,
    pub element_selector: Option<DbText>,
    pub element_text: Option<DbText>,
    pub click_x: Option<i32>,
    pub click_y: Option<i32>,
    pub properties: Option<DbText>,
    pub event_time: chrono::NaiveDateTime,
}

impl EventRow {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            time_ms: self.event_time.and_utc().timestamp_millis(),
            id: self.id,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "event_id": self.event_id,
            "event_type": self.event_type,
            "event_name": self.event_name,
            "distinct_id": self.distinct_id,
            "session_id": self.session_id,
            "page_path": self.page_path,
            "page_title": self.page_title,
            "element": self.element_selector.as_ref().map(|s| json!({
                "selector": s, "text": self.element_text, "x": self.click_x, "y": self.click_y,
            })),
            "properties": self.properties.as_ref()
                .and_then(|p| serde_json::from_str::<serde_json::Value>(p.as_str()).ok()),
            "timestamp": self.event_time.and_utc(),
        })
    }
}

/// Builds one newest-first page: rows matching `filter` before the cursor, `limit + 1` of
/// them so the caller knows whether another page exists.
pub fn page_of(rows: Vec<EventRow>, limit: u32) -> (Vec<serde_json::Value>, Option<String>) {
    let more = rows.len() > limit as usize;
    let page: Vec<&EventRow> = rows.iter().take(limit as usize).collect();
    let next = if more {
        page.last().map(|r| r.cursor().encode())
    } else {
        None
    };
    (page.iter().map(|r| r.to_json()).collect(), next)
}

/// `GET /events?event_type=click&limit=50&cursor=`: the most recent raw events of a type,
/// newest first, cursor-paginated.
pub async fn recent_events(
    state: web::Data<ApiState>,
    project: Project,
    query: web::Query<RecentQuery>,
) -> Result<HttpResponse, ApiError> {
    let event_type = params::event_type(
        "event_type",
        query
            .event_type
            .as_deref()
            .ok_or_else(|| ApiError::bad("event_type", "is required"))?,
    )?;
    let (range, _) = range_of(
        query.from.as_deref(),
        query.to.as_deref(),
        query.tz.as_deref(),
        Duration::days(params::MAX_RANGE_DAYS),
    )?;
    let limit = params::limit("limit", query.limit.as_deref(), 50, 500)?;
    let cursor = Cursor::parse(query.cursor.as_deref())?;
    let as_of = state.as_of(&project).await?;
    let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(format!(
        "SELECT {EVENT_COLUMNS} FROM user_events WHERE project = "
    ));
    q.push_bind(project.as_str())
        .push(" AND event_type = ")
        .push_bind(&event_type)
        .push(" AND event_time >= ")
        .push_bind(range.from_naive())
        .push(" AND event_time < ")
        .push_bind(range.to_naive());
    if let Some(c) = cursor {
        q.push(" AND (event_time < ")
            .push_bind(c.time())
            .push(" OR (event_time = ")
            .push_bind(c.time())
            .push(" AND id < ")
            .push_bind(c.id)
            .push("))");
    }
    q.push(" ORDER BY event_time DESC, id DESC LIMIT ")
        .push_bind(limit + 1);
    let rows: Vec<EventRow> = q.build_query_as().fetch_all(state.db()).await?;
    let (events, next_cursor) = page_of(rows, limit);
    Ok(HttpResponse::Ok().json(json!({
        "project": project.as_str(),
        "event_type": event_type,
        "events": events,
        "next_cursor": next_cursor,
        "source": "mysql",
        "as_of": as_of,
    })))
}
