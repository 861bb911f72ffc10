//! One call for a whole dashboard, with an ETag so an unchanged dashboard costs a 304.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::json;

use super::auth::Project;
use super::buckets::BucketUnit;
use super::dashboard_cache::RefreshingCache;
use super::envelope::Answer;
use super::error::ApiError;
use super::filters::Filter;
use super::limits::Heavy;
use super::pages::{hour_range, top_pages};
use super::params::{self, RangeParams, TimeRange};
use super::sessions::{session_figures, PAGES_DEFAULT};
use super::stats::AsOf;
use super::summary::{counts_by_type, figures, online_count, online_seconds};
use super::timeseries::series;
use super::{ApiState, RedisGeneration};

#[derive(Debug, Deserialize)]
pub struct DashboardQuery {
    #[serde(flatten)]
    pub range: RangeParams,
    pub bucket: Option<String>,
    pub online_seconds: Option<String>,
    pub pages: Option<String>,
}

/// A rendered dashboard: the body and the ETag naming it.
#[derive(Clone)]
pub struct Rendered {
    etag: String,
    body: Bytes,
}

/// Rendered dashboards (`dashboard_cache`): fresh for `stats.dashboard_cache_ms`, then served
/// while one background computation replaces them, for at most `stats.dashboard_max_stale_ms`.
pub type DashboardCache = RefreshingCache<Rendered>;

/// Distinct dashboards kept (project and parsed parameters).
const DASHBOARDS_KEPT: usize = 1024;

/// The cache the stats settings describe.
pub fn cache(settings: &crate::StatsSettings) -> Arc<DashboardCache> {
    RefreshingCache::new(
        std::time::Duration::from_millis(settings.dashboard_cache_ms),
        std::time::Duration::from_millis(settings.dashboard_max_stale_ms),
        DASHBOARDS_KEPT,
    )
}

/// `GET /dashboard?tz=Europe/Paris&from=&to=&bucket=hour`: summary (with the previous
/// period), online now, hot pages, counts by type and a time series, all for one range
/// (default the last 24 hours). `ETag` names the data version, the minute and the online
/// count: `If-None-Match` with the current one answers 304 from Redis alone, without
/// touching MySQL or the cache. An answer is fresh within one cache period and at most
/// `stats.dashboard_max_stale_ms` old (served while a newer one is computed); the body's
/// `as_of` and `generated_at` say how fresh.
pub async fn dashboard(
    state: web::Data<ApiState>,
    project: Project,
    query: web::Query<DashboardQuery>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Parameters are checked on every request, cached or not.
    let now = Utc::now();
    let (range, tz) = query.range.resolve_at(Duration::hours(24), now)?;
    let unit = BucketUnit::parse(query.bucket.as_deref(), BucketUnit::Hour)?;
    let seconds = online_seconds(query.online_seconds.as_deref())?;
    let pages_limit = params::limit("pages", query.pages.as_deref(), 10, 100)?;
    let parsed = Parsed {
        tz,
        range,
        unit,
        seconds,
        pages_limit,
    };
    // What the answer depends on, from the parsed parameters: spelling, order and unknown
    // parameters (`&x=1`) do not make a different dashboard.
    let identity = parsed.identity(query.range.from.is_some(), query.range.to.is_some());
    let if_none_match = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let matches = |etag: &str| {
        if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    };
    // A conditional request is answered from the data version alone when it still matches.
    if if_none_match.is_some() {
        let snapshot = Snapshot::read(&state, &project, &identity, seconds).await?;
        if matches(&snapshot.etag) {
            return Ok(HttpResponse::NotModified()
                .insert_header((header::ETAG, snapshot.etag))
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                .finish());
        }
    }
    let compute = {
        let (state, project, identity) = (state.clone(), project.clone(), identity.clone());
        // Boxed: the joined queries make a large future.
        move || async move {
            let _turn = Heavy::acquire(&state).await?;
            Box::pin(render(&state, &project, &identity, parsed)).await
        }
    };
    let cache = &state.dashboards;
    let rendered = if cache.is_off() {
        Arc::new(compute().await?)
    } else {
        cache
            .get((project.as_str().to_owned(), identity), compute)
            .await?
    };
    // The shared answer may predate the snapshot: it can still match what the client holds.
    let unchanged = matches(&rendered.etag);
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, rendered.etag.clone()))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    Ok(if unchanged {
        response.finish()
    } else {
        response
            .content_type("application/json")
            .body(rendered.body.clone())
    })
}

#[derive(Clone, Copy)]
struct Parsed {
    tz: chrono_tz::Tz,
    range: TimeRange,
    unit: BucketUnit,
    seconds: u32,
    pages_limit: u32,
}

impl Parsed {
    /// Names the dashboard these parameters ask for. A range given explicitly is named by
    /// its parsed bounds; a default one ("the last 24 hours") by that, since its bounds move
    /// with every request.
    fn identity(&self, from_given: bool, to_given: bool) -> String {
        let bound = |given: bool, at: chrono::DateTime<Utc>| {
            if given {
                at.timestamp_millis().to_string()
            } else {
                "default".to_owned()
            }
        };
        format!(
            "tz={};from={};to={};bucket={};online={};pages={}",
            self.tz.name(),
            bound(from_given, self.range.from),
            bound(to_given, self.range.to),
            self.unit.as_str(),
            self.seconds,
            self.pages_limit
        )
    }
}

/// What names a dashboard's version, read from Redis: online now and `as_of`, and the ETag
/// built from them.
struct Snapshot {
    online: u64,
    as_of: AsOf,
    generation: RedisGeneration,
    etag: String,
}

impl Snapshot {
    async fn read(
        state: &ApiState,
        project: &Project,
        identity: &str,
        seconds: u32,
    ) -> Result<Self, ApiError> {
        let (online, as_of, generation) = online_count(state, project, seconds).await?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            project.as_str(),
            identity,
            // The data version: what has been applied so far.
            as_of.applied_events,
            as_of.newest_event_time,
            Utc::now().timestamp().div_euclid(60),
            online,
            // A rebuild's end must not answer 304 to a dashboard that said "not exact".
            generation,
        )
            .hash(&mut hasher);
        let etag = format!("\"{:016x}\"", hasher.finish());
        Ok(Self {
            online,
            as_of,
            generation,
            etag,
        })
    }
}

/// Renders the dashboard.
async fn render(
    state: &ApiState,
    project: &Project,
    identity: &str,
    p: Parsed,
) -> Result<Rendered, ApiError> {
    let now = Utc::now();
    let Snapshot {
        online,
        as_of,
        generation,
        etag,
    } = Snapshot::read(state, project, identity, p.seconds).await?;
    let db = state.db();
    let range = p.range;
    let hours = hour_range(range);
    let all = Filter::default();
    let (
        current,
        previous,
        counts,
        (covered, buckets),
        (pages, pages_source, pages_generation),
        sessions,
    ) = tokio::try_join!(
        figures(db, project.as_str(), range, &all),
        figures(db, project.as_str(), range.previous(), &all),
        counts_by_type(db, project.as_str(), range, &[], &all),
        series(db, project.as_str(), p.unit, p.tz, range, &[], &all),
        top_pages(state, project, hours, p.pages_limit, None, &all),
        session_figures(db, project.as_str(), range, PAGES_DEFAULT),
    )?;
    // Online now and hot pages may come from Redis; everything else is MySQL.
    let answer = Answer::about(project, as_of)
        .range(range)
        .redis(generation.and(pages_generation))
        .with(json!({
        "tz": p.tz.name(),
        "summary": {"figures": current, "previous": {"range": range.previous().as_json(), "figures": previous}},
        "online": {"seconds": p.seconds, "online_users": online},
        "sessions": sessions,
        "hot_pages": {"range": hours.as_json(), "pages": pages, "source": pages_source.as_str()},
        "event_counts": {"total": counts.values().sum::<i64>(), "counts": counts},
        "timeseries": {"bucket": p.unit.as_str(), "range": covered.as_json(), "buckets": buckets},
        "unique_users_exact": true,
        "generated_at": now,
    }));
    let body = serde_json::to_vec(&answer).map_err(|e| ApiError::Unavailable(e.into()))?;
    Ok(Rendered {
        etag,
        body: Bytes::from(body),
    })
}
