//! One call for a whole dashboard, with an ETag so an unchanged dashboard costs a 304.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Duration, Utc};
use deadpool_redis::redis;
use serde::Deserialize;
use serde_json::json;

use super::auth::Project;
use super::pages::{hour_range, top_pages};
use super::params::{self, BucketUnit, TimeRange};
use super::stats::{unavailable, ApiError, AsOf};
use super::summary::{counts_by_type, figures, online_seconds, range_json};
use super::timeseries::series;
use super::ApiState;
use crate::keys;

#[derive(Debug, Deserialize)]
pub struct DashboardQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub tz: Option<String>,
    pub bucket: Option<String>,
    pub online_seconds: Option<String>,
    pub pages: Option<String>,
}

/// `GET /dashboard?tz=Europe/Paris&from=&to=&bucket=hour`: summary (with the previous
/// period), online now, hot pages, counts by type and a time series, all for one range
/// (default the last 24 hours). `ETag` names the data version, the minute and the online
/// count: `If-None-Match` with it answers 304 without touching MySQL.
pub async fn dashboard(
    state: web::Data<ApiState>,
    project: Project,
    query: web::Query<DashboardQuery>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let tz = params::time_zone(query.tz.as_deref())?;
    let now = Utc::now();
    let range = TimeRange::parse(
        query.from.as_deref(),
        query.to.as_deref(),
        tz,
        Duration::hours(24),
        now,
    )?;
    let unit = BucketUnit::parse(query.bucket.as_deref(), BucketUnit::Hour)?;
    let seconds = online_seconds(query.online_seconds.as_deref())?;
    let pages_limit = params::limit("pages", query.pages.as_deref(), 10, 100)?;

    let keys = state.keys(&project);
    let since = now.timestamp_millis() - i64::from(seconds) * 1000;
    let mut conn = state.redis_conn().await?;
    let (online, meta, positions): (u64, BTreeMap<String, i64>, BTreeMap<String, i64>) =
        redis::pipe()
            .zcount(keys.online(), since, "+inf")
            .hgetall(keys.meta())
            .hgetall(keys::positions(state.redis.prefix()))
            .query_async(&mut *conn)
            .await
            .map_err(unavailable)?;
    drop(conn);
    let etag = {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            project.as_str(),
            request.query_string(),
            &meta,
            now.timestamp().div_euclid(60),
            online,
        )
            .hash(&mut hasher);
        format!("\"{:016x}\"", hasher.finish())
    };
    let unchanged = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if unchanged {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    let as_of = AsOf::from_parts(&meta, positions);
    let db = state.db();
    let hours = hour_range(range);
    let (current, previous, counts, (covered, buckets), (pages, pages_source)) = tokio::try_join!(
        figures(db, project.as_str(), range),
        figures(db, project.as_str(), range.previous()),
        counts_by_type(db, project.as_str(), range, &[]),
        series(db, project.as_str(), unit, tz, range, &[]),
        top_pages(&state, &project, hours, pages_limit, None),
    )?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .json(json!({
            "project": project.as_str(),
            "range": range_json(range),
            "tz": tz.name(),
            "summary": {"figures": current, "previous": {"range": range_json(range.previous()), "figures": previous}},
            "online": {"seconds": seconds, "online_users": online},
            "hot_pages": {"range": range_json(hours), "pages": pages, "source": pages_source.as_str()},
            "event_counts": {"total": counts.values().sum::<i64>(), "counts": counts},
            "timeseries": {"bucket": unit.as_str(), "range": range_json(covered), "buckets": buckets},
            "unique_users_exact": true,
            "as_of": as_of,
        })))
}
