//! Raw events, newest first, one page at a time: the columns and row every listing reads,
//! the cursor (`{time_ms}_{id}`), and the query, written once for every endpoint that lists
//! events (`/events`, `/users/{distinct_id}/events`).

use chrono::DateTime;
use serde_json::json;
use sqlx::{MySql, MySqlPool, QueryBuilder};

use super::auth::Project;
use super::error::ApiError;
use super::params::TimeRange;
use insightflow_store::DbText;

/// The query of every event listing: `event_type`, the range, `limit` and `cursor`.
#[derive(Debug, serde::Deserialize)]
pub struct ListingQuery {
    pub event_type: Option<String>,
    #[serde(flatten)]
    pub range: super::params::RangeParams,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

impl ListingQuery {
    /// The page asked for: the range (default: as far back as a range may reach), the page
    /// size (default 50, at most 500) and where to resume.
    pub fn page(&self) -> Result<(TimeRange, u32, Option<Cursor>), ApiError> {
        let (range, _) = self
            .range
            .resolve(chrono::Duration::days(super::params::MAX_RANGE_DAYS))?;
        let limit = super::params::limit("limit", self.limit.as_deref(), 50, 500)?;
        Ok((range, limit, Cursor::parse(self.cursor.as_deref())?))
    }
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

/// Cuts the `limit + 1` rows read into one page and the cursor of the next, if any.
fn page_of(rows: Vec<EventRow>, limit: u32) -> (Vec<serde_json::Value>, Option<String>) {
    let more = rows.len() > limit as usize;
    let page: Vec<&EventRow> = rows.iter().take(limit as usize).collect();
    let next = if more {
        page.last().map(|r| r.cursor().encode())
    } else {
        None
    };
    (page.iter().map(|r| r.to_json()).collect(), next)
}

/// One page of the project's events in `range`, newest first, after `cursor`: `filter`
/// appends the endpoint's own conditions (each starting with ` AND `). Reads `limit + 1`
/// rows so it knows whether another page exists.
pub async fn event_page(
    db: &MySqlPool,
    project: &Project,
    range: TimeRange,
    cursor: Option<Cursor>,
    limit: u32,
    filter: impl FnOnce(&mut QueryBuilder<'_, MySql>),
) -> Result<(Vec<serde_json::Value>, Option<String>), ApiError> {
    let mut q = QueryBuilder::<MySql>::new(format!(
        "SELECT {EVENT_COLUMNS} FROM user_events WHERE project = "
    ));
    q.push_bind(project.as_str().to_owned())
        .push(" AND event_time >= ")
        .push_bind(range.from_naive())
        .push(" AND event_time < ")
        .push_bind(range.to_naive());
    filter(&mut q);
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
    let rows: Vec<EventRow> = q.build_query_as().fetch_all(db).await?;
    Ok(page_of(rows, limit))
}
