//! Session figures for a range: how many sessions started in it, how many bounced, how long
//! they lasted (average and median), how many pages each viewed, and where they entered and
//! left. Served alone (`/sessions`) and inside `/summary` and `/dashboard`.
//!
//! Definitions:
//! - a session counts in the range it **started** in (as everywhere in this API);
//! - its duration is its last event's time minus its first's;
//! - a **bounce** is a session with a single event;
//! - its pages are its page views, whenever they happened (a session started in the range may
//!   go on after it), its **entry** page the path of its first page view and its **exit**
//!   page that of its last, by (event time, event id); sessions without a page view have
//!   neither.
//!
//! The worker keeps each session's page views, entry and exit on its row (`sessions`, written
//! with the session, late events included), so every figure here reads the range's session
//! rows alone, never their raw events.

use actix_web::{web, HttpResponse};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use super::auth::Project;
use super::envelope::Answer;
use super::error::ApiError;
use super::limits::Heavy;
use super::params::{self, RangeParams, TimeRange};
use super::ApiState;
use insightflow_store::DbText;

/// Entry and exit pages listed by default, and at most.
pub const PAGES_DEFAULT: u32 = 10;
const PAGES_MAX: u32 = 100;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionFigures {
    pub sessions: i64,
    pub bounces: i64,
    /// `bounces / sessions` (0 without sessions), to four decimals.
    pub bounce_rate: f64,
    /// Seconds, to the millisecond; `null` without sessions.
    pub average_duration_seconds: Option<f64>,
    pub median_duration_seconds: Option<f64>,
    pub page_views: i64,
    /// `page_views / sessions` (0 without sessions), to two decimals.
    pub pages_per_session: f64,
    pub entry_pages: Vec<PageSessions>,
    pub exit_pages: Vec<PageSessions>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PageSessions {
    pub path: String,
    pub sessions: i64,
}

#[derive(sqlx::FromRow)]
struct Totals {
    sessions: i64,
    bounces: i64,
    total_ms: i64,
    page_views: i64,
}

/// An entry or exit page and how many sessions entered (left) on it.
#[derive(sqlx::FromRow)]
struct PathRow {
    path: Option<DbText>,
    sessions: i64,
}

/// `n / d` rounded to `places` decimals, 0 when `d` is 0: how a share is written in an answer
/// (bounce rate, pages per session, retention rates).
pub(crate) fn ratio(n: i64, d: i64, places: i32) -> f64 {
    if d == 0 {
        return 0.0;
    }
    let scale = 10_f64.powi(places);
    (n as f64 / d as f64 * scale).round() / scale
}

/// The figures of the sessions of `project` that started in `range`.
pub async fn session_figures(
    db: &MySqlPool,
    project: &str,
    range: TimeRange,
    pages: u32,
) -> Result<SessionFigures, ApiError> {
    let (from, to) = (range.from_naive(), range.to_naive());
    let totals: Totals = sqlx::query_as(
        "SELECT COUNT(*) AS sessions, CAST(COALESCE(SUM(events = 1), 0) AS SIGNED) AS bounces, \
         CAST(COALESCE(SUM(TIMESTAMPDIFF(MICROSECOND, started_at, last_seen)) DIV 1000, 0) AS SIGNED) AS total_ms, \
         CAST(COALESCE(SUM(page_views), 0) AS SIGNED) AS page_views \
         FROM sessions WHERE project = ? AND started_at >= ? AND started_at < ?",
    )
    .bind(project)
    .bind(from)
    .bind(to)
    .fetch_one(db)
    .await?;
    // The median reads after the totals (its offset); the pages need neither: at once.
    let (median_ms, entry_pages, exit_pages) = tokio::try_join!(
        median_ms(db, project, range, totals.sessions),
        top_pages(db, project, range, End::Entry, pages, totals.sessions),
        top_pages(db, project, range, End::Exit, pages, totals.sessions),
    )?;
    let page_views = totals.page_views;
    let seconds = |ms: i64| ms as f64 / 1000.0;
    Ok(SessionFigures {
        sessions: totals.sessions,
        bounces: totals.bounces,
        bounce_rate: ratio(totals.bounces, totals.sessions, 4),
        average_duration_seconds: (totals.sessions > 0)
            .then(|| seconds(totals.total_ms / totals.sessions)),
        median_duration_seconds: median_ms.map(seconds),
        page_views,
        pages_per_session: ratio(page_views, totals.sessions, 2),
        entry_pages,
        exit_pages,
    })
}

/// The lower median of the durations of the `sessions` sessions started in `range`, in
/// milliseconds (a duration some session really had); `None` without sessions.
async fn median_ms(
    db: &MySqlPool,
    project: &str,
    range: TimeRange,
    sessions: i64,
) -> Result<Option<i64>, ApiError> {
    if sessions == 0 {
        return Ok(None);
    }
    Ok(sqlx::query_scalar(
        "SELECT CAST(TIMESTAMPDIFF(MICROSECOND, started_at, last_seen) DIV 1000 AS SIGNED) AS ms \
         FROM sessions WHERE project = ? AND started_at >= ? AND started_at < ? \
         ORDER BY ms LIMIT 1 OFFSET ?",
    )
    .bind(project)
    .bind(range.from_naive())
    .bind(range.to_naive())
    .bind((sessions - 1) / 2)
    .fetch_optional(db)
    .await?)
}

/// Which end of a session a page list is about.
#[derive(Debug, Clone, Copy)]
enum End {
    Entry,
    Exit,
}

/// The `pages` paths most sessions started in `range` entered (left) on, most first, then by
/// path; sessions without a page view are in neither list.
async fn top_pages(
    db: &MySqlPool,
    project: &str,
    range: TimeRange,
    end: End,
    pages: u32,
    sessions: i64,
) -> Result<Vec<PageSessions>, ApiError> {
    if sessions == 0 {
        return Ok(Vec::new());
    }
    let (path, at) = match end {
        End::Entry => ("entry_path", "entry_at"),
        End::Exit => ("exit_path", "exit_at"),
    };
    let rows: Vec<PathRow> = sqlx::query_as(&format!(
        "SELECT COALESCE({path}, '') AS path, COUNT(*) AS sessions FROM sessions \
         WHERE project = ? AND started_at >= ? AND started_at < ? AND {at} IS NOT NULL \
         GROUP BY 1 ORDER BY sessions DESC, path LIMIT ?"
    ))
    .bind(project)
    .bind(range.from_naive())
    .bind(range.to_naive())
    .bind(pages)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PageSessions {
            path: r.path.map(|t| t.0).unwrap_or_default(),
            sessions: r.sessions,
        })
        .collect())
}

#[derive(Debug, Deserialize)]
pub struct SessionsQuery {
    #[serde(flatten)]
    pub range: RangeParams,
    pub pages: Option<String>,
}

/// `GET /sessions?from=&to=&pages=10`: the figures of the sessions started in the range
/// (default the last 24 hours).
pub async fn sessions(
    state: web::Data<ApiState>,
    project: Project,
    _turn: Heavy,
    query: web::Query<SessionsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (range, _) = query.range.resolve(Duration::hours(24))?;
    let pages = params::limit("pages", query.pages.as_deref(), PAGES_DEFAULT, PAGES_MAX)?;
    let as_of = state.as_of(&project).await?;
    let figures = session_figures(state.db(), project.as_str(), range, pages).await?;
    Ok(Answer::about(&project, as_of)
        .range(range)
        .source("mysql")
        .with(figures)
        .ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_round_and_survive_an_empty_range() {
        assert_eq!(ratio(1, 3, 4), 0.3333);
        assert_eq!(ratio(2, 3, 2), 0.67);
        assert_eq!(ratio(5, 0, 4), 0.0);
    }
}
