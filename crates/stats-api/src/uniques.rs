//! Unique users per UTC hour or day and over a whole range, estimated from the HyperLogLogs
//! the worker keeps in Redis (`uv:h:*`, `uv:d:*`): constant memory per bucket, O(1) per event,
//! and a range's union in one `PFCOUNT`. Estimates, so every answer says `"exact": false`
//! and gives the standard error; `/summary` counts unique users exactly from MySQL.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use deadpool_redis::redis;
use serde::{Deserialize, Serialize};

use super::auth::Project;
use super::buckets::BucketUnit;
use super::envelope::Answer;
use super::error::ApiError;
use super::limits::Heavy;
use super::params::{RangeParams, TimeRange};
use super::ApiState;

/// Redis HyperLogLog's standard error (1.04 / sqrt(16384 registers)).
pub const STANDARD_ERROR: f64 = 0.0081;

/// How far back each bucket size can start: the worker keeps hourly estimates 8 days and
/// daily ones 35 days after their bucket ends (`aggregates.hour_retention_days`,
/// `day_retention_days`), so every bucket of a range starting within these is whole.
const HOURS_BACK: i64 = 7 * 24;
const DAYS_BACK: i64 = 34;

#[derive(Debug, Deserialize)]
pub struct UniqueUsersQuery {
    #[serde(flatten)]
    pub range: RangeParams,
    pub bucket: Option<String>,
}

/// One bucket of the series: its UTC start and the users seen in it.
#[derive(Debug, Serialize)]
struct Bucket {
    start: DateTime<Utc>,
    unique_users: u64,
}

#[derive(Debug, Serialize)]
struct Estimate {
    method: &'static str,
    standard_error: f64,
}

#[derive(Debug, Serialize)]
struct UniqueUsers {
    bucket: &'static str,
    /// Users seen anywhere in the range (the union, not the sum of the buckets).
    unique_users: u64,
    series: Vec<Bucket>,
    estimate: Estimate,
}

/// The size of one bucket in seconds, and how far back a range of them may start.
fn unit(bucket: BucketUnit) -> Result<(i64, Duration), ApiError> {
    match bucket {
        BucketUnit::Hour => Ok((3600, Duration::hours(HOURS_BACK))),
        BucketUnit::Day => Ok((86_400, Duration::days(DAYS_BACK))),
        BucketUnit::Minute => Err(ApiError::bad(
            "bucket",
            "unique users are kept per hour and per day: use hour or day",
        )),
    }
}

/// The range widened to whole buckets of `seconds` (UTC), as bucket numbers `[first, last)`.
fn bucket_span(range: TimeRange, seconds: i64) -> (i64, i64) {
    let first = range.from.timestamp().div_euclid(seconds);
    let last = (range.to.timestamp() + seconds - 1).div_euclid(seconds);
    (first, last)
}

/// `GET /unique-users?from=&to=&bucket=hour|day`: estimated unique users per UTC bucket and
/// over the whole range (default: the last 24 hours by hour), from Redis.
pub async fn unique_users(
    state: web::Data<ApiState>,
    project: Project,
    // A week of hours is a 169-key union: cheap, but Redis runs it alone, so it takes turns.
    _turn: Heavy,
    query: web::Query<UniqueUsersQuery>,
) -> Result<HttpResponse, ApiError> {
    let bucket = BucketUnit::parse(query.bucket.as_deref(), BucketUnit::Hour)?;
    let (seconds, back) = unit(bucket)?;
    let (range, _) = query.range.resolve(bucket.default_range())?;
    let (first, last) = bucket_span(range, seconds);
    let earliest = Utc::now() - back;
    if first * seconds < earliest.timestamp().div_euclid(seconds) * seconds {
        return Err(ApiError::bad(
            "from",
            format!(
                "unique-user estimates per {} are kept for ranges starting within the last {} {}s; \
                 /summary counts unique users exactly for older ranges",
                bucket.as_str(),
                back.num_seconds() / seconds,
                bucket.as_str()
            ),
        ));
    }
    let keys = state.keys(&project);
    let names: Vec<String> = (first..last)
        .map(|n| match bucket {
            BucketUnit::Day => keys.unique_day(n),
            _ => keys.unique_hour(n),
        })
        .collect();
    let mut pipe = redis::pipe();
    pipe.cmd("PFCOUNT").arg(&names);
    for name in &names {
        pipe.cmd("PFCOUNT").arg(name);
    }
    let (counts, as_of, generation): (Vec<u64>, _, _) =
        state.redis_read_as_of(&project, pipe).await?;
    let (total, per_bucket) = counts
        .split_first()
        .ok_or_else(|| super::error::unavailable(anyhow::anyhow!("PFCOUNT gave no reply")))?;
    let series = (first..last)
        .zip(per_bucket)
        .map(|(n, &unique_users)| Bucket {
            start: DateTime::from_timestamp(n * seconds, 0).unwrap_or_default(),
            unique_users,
        })
        .collect();
    let covered = TimeRange {
        from: DateTime::from_timestamp(first * seconds, 0).unwrap_or(range.from),
        to: DateTime::from_timestamp(last * seconds, 0).unwrap_or(range.to),
    };
    Ok(Answer::about(&project, as_of)
        .range(covered)
        .source("redis")
        .redis(generation)
        .estimated()
        .with(UniqueUsers {
            bucket: bucket.as_str(),
            unique_users: *total,
            series,
            estimate: Estimate {
                method: "hyperloglog",
                standard_error: STANDARD_ERROR,
            },
        })
        .ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_range_covers_every_bucket_it_touches() {
        let range = TimeRange {
            from: at("2026-11-29T10:15:00Z"),
            to: at("2026-11-29T12:01:00Z"),
        };
        let (first, last) = bucket_span(range, 3600);
        assert_eq!(first * 3600, at("2026-11-29T10:00:00Z").timestamp());
        assert_eq!(last * 3600, at("2026-11-29T13:00:00Z").timestamp());
        let aligned = TimeRange {
            from: at("2026-11-28T00:00:00Z"),
            to: at("2026-11-29T00:00:00Z"),
        };
        assert_eq!(
            bucket_span(aligned, 86_400).1 - bucket_span(aligned, 86_400).0,
            1
        );
    }

    #[test]
    fn minutes_are_refused_naming_the_field() {
        let err = unit(BucketUnit::Minute).unwrap_err();
        assert!(format!("{err:?}").contains("bucket"));
    }
}
