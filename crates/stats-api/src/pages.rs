//! Hot pages, property breakdowns and the click heatmap.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use deadpool_redis::redis;
use serde::Deserialize;
use serde_json::json;

use super::auth::Project;
use super::envelope::Answer;
use super::error::ApiError;
use super::filters::{Dimension, Filter};
use super::limits::Heavy;
use super::params::{self, RangeParams, TimeRange};
use super::{ApiState, RedisGeneration};
use insightflow_store::DbText;

/// Redis answers hot pages for ranges starting at most this long ago: its hourly rankings
/// live 8 days after their hour ends, so every hour of such a range is complete there.
const LIVE_PAGES_HOURS: i64 = 7 * 24;

/// Views of one page in a range, from the hourly rollups.
#[derive(sqlx::FromRow)]
struct PageRow {
    page_path: DbText,
    views: i64,
}

/// One line of a breakdown: the dimensions' values (`v2` NULL without a second one), events
/// and distinct users.
#[derive(sqlx::FromRow)]
struct BreakdownRow {
    v1: Option<DbText>,
    v2: Option<DbText>,
    #[sqlx(rename = "n")]
    events: i64,
    #[sqlx(rename = "u")]
    unique_users: i64,
}

/// A clicked element of a page.
#[derive(sqlx::FromRow)]
struct ElementRow {
    element_selector: Option<DbText>,
    element_text: Option<DbText>,
    clicks: i64,
    unique_users: i64,
}

/// One cell of the click grid (cell coordinates, not pixels).
#[derive(sqlx::FromRow)]
struct GridCell {
    gx: i64,
    gy: i64,
    clicks: i64,
}

#[derive(Debug, Deserialize)]
pub struct HotPagesQuery {
    #[serde(flatten)]
    pub range: RangeParams,
    pub limit: Option<String>,
    pub source: Option<String>,
    pub filter: Option<String>,
    pub include_bots: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PageViews {
    pub path: String,
    pub views: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagesSource {
    Redis,
    Mysql,
}

impl PagesSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Mysql => "mysql",
        }
    }
}

/// Hot pages work in whole UTC hours: `from` rounded down, `to` rounded up.
pub fn hour_range(range: TimeRange) -> TimeRange {
    let floor = |t: DateTime<Utc>| {
        DateTime::from_timestamp(t.timestamp().div_euclid(3600) * 3600, 0).unwrap_or(t)
    };
    let to = if floor(range.to) == range.to {
        range.to
    } else {
        floor(range.to) + Duration::hours(1)
    };
    TimeRange {
        from: floor(range.from),
        to,
    }
}

/// The top pages by views in an hour-aligned range: the live Redis ranking for recent ranges,
/// the MySQL hourly rollup for older ones (or as forced by `source`), the matching raw page
/// views under a filter. Ties by path. Also says whether Redis was whole (always `Ready` for
/// MySQL).
pub async fn top_pages(
    state: &ApiState,
    project: &Project,
    hours: TimeRange,
    limit: u32,
    source: Option<PagesSource>,
    filter: &Filter,
) -> Result<(Vec<PageViews>, PagesSource, RedisGeneration), ApiError> {
    let mut generation = RedisGeneration::Ready;
    let recent = hours.from >= Utc::now() - Duration::hours(LIVE_PAGES_HOURS);
    if !filter.is_empty() {
        if source == Some(PagesSource::Redis) {
            return Err(ApiError::bad(
                "source",
                "the Redis rankings are not filtered: use source=auto or mysql with a filter",
            ));
        }
        let pages = filtered_top_pages(state, project, hours, limit, filter).await?;
        return Ok((pages, PagesSource::Mysql, generation));
    }
    let source = source.unwrap_or(if recent {
        PagesSource::Redis
    } else {
        PagesSource::Mysql
    });
    let mut pages: Vec<PageViews> = match source {
        PagesSource::Redis => {
            if !recent {
                return Err(ApiError::bad(
                    "source",
                    format!(
                        "redis keeps hourly rankings for the last {LIVE_PAGES_HOURS} hours only"
                    ),
                ));
            }
            let keys = state.keys(project);
            let (first, last) = (hours.from.timestamp() / 3600, hours.to.timestamp() / 3600);
            let names: Vec<String> = (first..last).map(|h| keys.pages_hour(h)).collect();
            let mut pipe = redis::pipe();
            pipe.cmd("ZUNION")
                .arg(names.len())
                .arg(&names)
                .arg("WITHSCORES");
            let ((scored,), read_generation): ((Vec<(String, f64)>,), _) =
                state.redis_read(project, pipe).await?;
            generation = read_generation;
            scored
                .into_iter()
                .map(|(path, views)| PageViews {
                    path,
                    views: views as i64,
                })
                .collect()
        }
        PagesSource::Mysql => {
            let rows: Vec<PageRow> = sqlx::query_as(
                "SELECT page_path, CAST(SUM(views) AS SIGNED) AS views FROM rollup_page_views_hour \
                 WHERE project = ? AND bucket >= ? AND bucket < ? GROUP BY page_path \
                 ORDER BY views DESC, page_path LIMIT ?",
            )
            .bind(project.as_str())
            .bind(hours.from_naive())
            .bind(hours.to_naive())
            .bind(limit)
            .fetch_all(state.db())
            .await?;
            rows.into_iter()
                .map(|r| PageViews {
                    path: r.page_path.0,
                    views: r.views,
                })
                .collect()
        }
    };
    pages.sort_by(|a, b| b.views.cmp(&a.views).then_with(|| a.path.cmp(&b.path)));
    pages.truncate(limit as usize);
    Ok((pages, source, generation))
}

/// The top pages among the raw page views `filter` accepts (the rollups keep no dimensions).
async fn filtered_top_pages(
    state: &ApiState,
    project: &Project,
    hours: TimeRange,
    limit: u32,
    filter: &Filter,
) -> Result<Vec<PageViews>, ApiError> {
    let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
        "SELECT page_path, COUNT(*) AS views FROM user_events WHERE project = ",
    );
    q.push_bind(project.as_str())
        .push(" AND event_type = 'page_view' AND page_path IS NOT NULL AND event_time >= ")
        .push_bind(hours.from_naive())
        .push(" AND event_time < ")
        .push_bind(hours.to_naive());
    filter.push_sql(&mut q);
    q.push(" GROUP BY page_path ORDER BY views DESC, page_path LIMIT ")
        .push_bind(limit);
    let rows: Vec<PageRow> = q.build_query_as().fetch_all(state.db()).await?;
    Ok(rows
        .into_iter()
        .map(|r| PageViews {
            path: r.page_path.0,
            views: r.views,
        })
        .collect())
}

/// `GET /pages/hot?from=&to=&limit=10`: top pages by views (default: the last 24 hours).
pub async fn hot_pages(
    state: web::Data<ApiState>,
    project: Project,
    query: web::Query<HotPagesQuery>,
) -> Result<HttpResponse, ApiError> {
    let (range, _) = query.range.resolve(Duration::hours(24))?;
    let limit = params::limit("limit", query.limit.as_deref(), 10, 1000)?;
    let source = match query.source.as_deref() {
        None | Some("auto") => None,
        Some("redis") => Some(PagesSource::Redis),
        Some("mysql") => Some(PagesSource::Mysql),
        Some(other) => {
            return Err(ApiError::bad(
                "source",
                format!("{other:?} is not one of auto, redis, mysql"),
            ))
        }
    };
    let hours = hour_range(range);
    let filter = Filter::parse(query.filter.as_deref(), query.include_bots.as_deref())?;
    // Filtered hot pages scan raw events instead of reading rankings: they take turns.
    let _turn = filter.turn(&state).await?;
    let as_of = state.as_of(&project).await?;
    let (pages, source, generation) =
        top_pages(&state, &project, hours, limit, source, &filter).await?;
    Ok(Answer::about(&project, as_of)
        .range(hours)
        .filter(&filter)
        .source(source.as_str())
        .redis(generation)
        .with(json!({"pages": pages}))
        .ok())
}

#[derive(Debug, Deserialize)]
pub struct BreakdownQuery {
    pub event_type: Option<String>,
    pub by: Option<String>,
    pub by2: Option<String>,
    #[serde(flatten)]
    pub range: RangeParams,
    pub limit: Option<String>,
    pub filter: Option<String>,
    pub include_bots: Option<String>,
}

/// `GET /breakdown?event_type=purchase&by=currency&by2=$device_type&limit=10`: the top values
/// of one or two dimensions (properties or columns: `by=$channel`, `by2=$country`) over a
/// range, of one event type or of all, with events and unique users.
pub async fn breakdown(
    state: web::Data<ApiState>,
    project: Project,
    _turn: Heavy,
    query: web::Query<BreakdownQuery>,
) -> Result<HttpResponse, ApiError> {
    let event_type = query
        .event_type
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .map(|t| params::event_type("event_type", t))
        .transpose()?;
    let by = params::required("by", query.by.as_deref())?;
    let first = Dimension::parse("by", by)?;
    let second = query
        .by2
        .as_deref()
        .map(|raw| Dimension::parse("by2", raw))
        .transpose()?;
    let filter = Filter::parse(query.filter.as_deref(), query.include_bots.as_deref())?;
    let (range, _) = query.range.resolve(Duration::hours(24))?;
    let limit = params::limit("limit", query.limit.as_deref(), 10, 1000)?;
    let as_of = state.as_of(&project).await?;

    let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new("SELECT ");
    first.push_sql(&mut q);
    q.push(" AS v1, ");
    match &second {
        Some(d) => {
            d.push_sql(&mut q);
            q.push(" AS v2, ");
        }
        None => {
            q.push("NULL AS v2, ");
        }
    }
    q.push("COUNT(*) AS n, COUNT(DISTINCT distinct_id) AS u FROM user_events WHERE project = ")
        .push_bind(project.as_str());
    if let Some(event_type) = &event_type {
        q.push(" AND event_type = ").push_bind(event_type);
    }
    q.push(" AND event_time >= ")
        .push_bind(range.from_naive())
        .push(" AND event_time < ")
        .push_bind(range.to_naive());
    filter.push_sql(&mut q);
    q.push(" GROUP BY v1, v2 ORDER BY n DESC, v1, v2 LIMIT ")
        .push_bind(limit);
    let rows: Vec<BreakdownRow> = q.build_query_as().fetch_all(state.db()).await?;
    let values: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            let mut value =
                json!({"value": r.v1, "events": r.events, "unique_users": r.unique_users});
            if second.is_some() {
                value["value2"] = json!(r.v2);
            }
            value
        })
        .collect();
    Ok(Answer::about(&project, as_of)
        .range(range)
        .filter(&filter)
        .source("mysql")
        .with(json!({"event_type": event_type, "by": by, "by2": query.by2, "values": values}))
        .ok())
}

#[derive(Debug, Deserialize)]
pub struct HeatmapQuery {
    pub page: Option<String>,
    #[serde(flatten)]
    pub range: RangeParams,
    pub limit: Option<String>,
    pub cell: Option<String>,
}

/// `GET /heatmap?page=/pricing&cell=50&limit=20`: the page's most-clicked elements (selector,
/// text, clicks, unique users) and the click density on a grid of `cell`-pixel squares.
pub async fn heatmap(
    state: web::Data<ApiState>,
    project: Project,
    _turn: Heavy,
    query: web::Query<HeatmapQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query
        .page
        .as_deref()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad("page", "is required (a page path such as /pricing)"))?;
    if page.chars().count() > 512 {
        return Err(ApiError::bad(
            "page",
            "a page path has at most 512 characters",
        ));
    }
    let (range, _) = query.range.resolve(Duration::hours(24))?;
    let limit = params::limit("limit", query.limit.as_deref(), 20, 1000)?;
    let cell = params::limit("cell", query.cell.as_deref(), 50, 2000)?;
    let as_of = state.as_of(&project).await?;
    let elements = sqlx::query_as::<_, ElementRow>(
        "SELECT element_selector, MIN(element_text) AS element_text, COUNT(*) AS clicks, \
         COUNT(DISTINCT distinct_id) AS unique_users FROM user_events WHERE project = ? AND page_path = ? AND event_type = 'click' AND is_bot = 0 \
         AND event_time >= ? AND event_time < ? \
         GROUP BY element_selector ORDER BY clicks DESC, element_selector LIMIT ?",
    )
    .bind(project.as_str())
    .bind(page)
    .bind(range.from_naive())
    .bind(range.to_naive())
    .bind(limit)
    .fetch_all(state.db());
    let grid = sqlx::query_as::<_, GridCell>(
        "SELECT CAST(FLOOR(click_x / ?) AS SIGNED) AS gx, CAST(FLOOR(click_y / ?) AS SIGNED) AS gy, \
         COUNT(*) AS clicks FROM user_events WHERE project = ? AND page_path = ? AND event_type = 'click' AND is_bot = 0 \
         AND event_time >= ? AND event_time < ? AND click_x IS NOT NULL AND click_y IS NOT NULL \
         GROUP BY gx, gy ORDER BY gy, gx LIMIT 10000",
    )
    .bind(cell)
    .bind(cell)
    .bind(project.as_str())
    .bind(page)
    .bind(range.from_naive())
    .bind(range.to_naive())
    .fetch_all(state.db());
    let (elements, grid) = tokio::try_join!(elements, grid)?;
    let elements: Vec<serde_json::Value> = elements
        .into_iter()
        .map(|e| {
            json!({"selector": e.element_selector, "text": e.element_text, "clicks": e.clicks, "unique_users": e.unique_users})
        })
        .collect();
    let cells: Vec<serde_json::Value> = grid
        .into_iter()
        .map(|c| json!({"x": c.gx, "y": c.gy, "clicks": c.clicks}))
        .collect();
    Ok(Answer::about(&project, as_of)
        .range(range)
        .source("mysql")
        .with(json!({
            "page": page,
            "elements": elements,
            "grid": {"cell_px": cell, "cells": cells},
        }))
        .ok())
}
