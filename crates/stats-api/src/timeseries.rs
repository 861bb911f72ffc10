//! Counts per local-time bucket for one or several event types.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::json;
use sqlx::MySqlPool;

use super::auth::Project;
use super::buckets::{self, BucketUnit};
use super::envelope::Answer;
use super::error::ApiError;
use super::filters::{push_types, Filter};
use super::limits::Heavy;
use super::params::{self, RangeParams, TimeRange};
use super::segments::Segmentation;
use super::ApiState;
use insightflow_store::DbText;

#[derive(Debug, Deserialize)]
pub struct SeriesQuery {
    pub bucket: Option<String>,
    #[serde(flatten)]
    pub range: RangeParams,
    pub types: Option<String>,
    pub filter: Option<String>,
    pub include_bots: Option<String>,
    pub by: Option<String>,
    pub by2: Option<String>,
    pub by_limit: Option<String>,
}

/// One rollup row: a minute or hour bucket's count of one type.
#[derive(sqlx::FromRow)]
struct BucketRow {
    bucket: chrono::NaiveDateTime,
    event_type: DbText,
    events: i64,
}

/// One bucket: its local start, and a count per requested type (zeros included).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Bucket {
    pub start: String,
    pub end: String,
    pub counts: BTreeMap<String, i64>,
    pub total: i64,
}

/// The series for `types` (all types present when empty) over the local buckets covering
/// `range`. Counts come from the UTC minute rollups, or the hour rollups when every bucket
/// boundary is a whole UTC hour (whole-hour zones, hour and day buckets), and are summed
/// into the local buckets; both are exact. Under a filter, the matching raw events are
/// counted per UTC minute or hour instead, and summed the same way.
pub async fn series(
    db: &MySqlPool,
    project: &str,
    unit: BucketUnit,
    tz: Tz,
    range: TimeRange,
    types: &[String],
    filter: &Filter,
) -> Result<(TimeRange, Vec<Bucket>), ApiError> {
    let boundaries = buckets::bucket_boundaries(unit, tz, range)?;
    let (first, last) = match (boundaries.first(), boundaries.last()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => return Err(ApiError::bad("from", "the range holds no bucket")),
    };
    let hourly = unit != BucketUnit::Minute && boundaries.iter().all(|b| b.timestamp() % 3600 == 0);
    let (select, time) = match (filter.is_empty(), hourly) {
        (true, true) => (
            "SELECT bucket, event_type, CAST(events AS SIGNED) AS events FROM rollup_events_hour"
                .to_owned(),
            "bucket",
        ),
        (true, false) => (
            "SELECT bucket, event_type, CAST(events AS SIGNED) AS events FROM rollup_events_minute"
                .to_owned(),
            "bucket",
        ),
        (false, _) => (
            format!(
                "SELECT CAST(DATE_FORMAT(event_time, '{}') AS DATETIME) AS bucket, event_type, \
                 COUNT(*) AS events FROM user_events",
                if hourly {
                    "%Y-%m-%d %H:00:00"
                } else {
                    "%Y-%m-%d %H:%i:00"
                }
            ),
            "event_time",
        ),
    };
    let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(select);
    q.push(" WHERE project = ")
        .push_bind(project)
        .push(format!(" AND {time} >= "))
        .push_bind(first.naive_utc())
        .push(format!(" AND {time} < "))
        .push_bind(last.naive_utc());
    push_types(&mut q, types);
    if !filter.is_empty() {
        filter.push_sql(&mut q);
        q.push(" GROUP BY bucket, event_type");
    }
    let rows: Vec<BucketRow> = q.build_query_as().fetch_all(db).await?;
    let mut names: Vec<String> = types.to_vec();
    if names.is_empty() {
        let mut seen: Vec<String> = rows.iter().map(|r| r.event_type.0.clone()).collect();
        seen.sort();
        seen.dedup();
        names = seen;
    }
    let zeros: BTreeMap<String, i64> = names.iter().map(|n| (n.clone(), 0)).collect();
    let mut buckets: Vec<Bucket> = boundaries
        .windows(2)
        .map(|w| Bucket {
            start: buckets::local_label(tz, w[0]),
            end: buckets::local_label(tz, w[1]),
            counts: zeros.clone(),
            total: 0,
        })
        .collect();
    for row in rows {
        let at: DateTime<Utc> = row.bucket.and_utc();
        let index = boundaries.partition_point(|b| *b <= at);
        if let Some(bucket) = index.checked_sub(1).and_then(|i| buckets.get_mut(i)) {
            *bucket.counts.entry(row.event_type.0).or_default() += row.events;
            bucket.total += row.events;
        }
    }
    Ok((
        TimeRange {
            from: first,
            to: last,
        },
        buckets,
    ))
}

/// `GET /timeseries?bucket=hour&from=&to=&tz=Asia/Kolkata&types=page_view,click`: counts per
/// local bucket (default: hourly over the last 24 hours, UTC), every bucket listed.
pub async fn timeseries(
    state: web::Data<ApiState>,
    project: Project,
    _turn: Heavy,
    query: web::Query<SeriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let unit = BucketUnit::parse(query.bucket.as_deref(), BucketUnit::Hour)?;
    let (range, tz) = query.range.resolve(unit.default_range())?;
    let types = params::event_types("types", query.types.as_deref())?;
    let filter = Filter::parse(query.filter.as_deref(), query.include_bots.as_deref())?;
    let by = Segmentation::parse(
        query.by.as_deref(),
        query.by2.as_deref(),
        query.by_limit.as_deref(),
    )?;
    let as_of = state.as_of(&project).await?;
    let (covered, buckets) = series(
        state.db(),
        project.as_str(),
        unit,
        tz,
        range,
        &types,
        &filter,
    )
    .await?;
    let mut answer = json!({"bucket": unit.as_str(), "tz": tz.name(), "buckets": buckets});
    if let Some(by) = by {
        let span = (covered.from_naive(), covered.to_naive());
        let values = by
            .top_values(state.db(), project.as_str(), span, &types, &filter)
            .await?;
        let mut segments = Vec::with_capacity(values.len());
        for values in values {
            let segment = by.narrow(&filter, &values);
            let (_, buckets) = series(
                state.db(),
                project.as_str(),
                unit,
                tz,
                covered,
                &types,
                &segment,
            )
            .await?;
            segments.push(by.segment(&values, json!({ "buckets": buckets })));
        }
        by.answer(&mut answer, segments);
    }
    Ok(Answer::about(&project, as_of)
        .range(covered)
        .filter(&filter)
        .source("mysql")
        .with(answer)
        .ok())
}
