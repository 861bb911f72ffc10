//! The reference services' routes, kept working (project in `?project=` only): one type's
//! all-time count, the totals by type with users online now, and one type's last hour and
//! day. All from Redis.

use actix_web::{web, HttpResponse};
use chrono::Utc;
use deadpool_redis::redis::{self, FromRedisValue, ParsingError, Value};
use serde_json::json;

use super::auth::Project;
use super::envelope::Answer;
use super::error::ApiError;
use super::params;
use super::stats::Counters;
use super::summary::ONLINE_DEFAULT_SECONDS;
use super::ApiState;

/// `type_stats` sums this many UTC minutes and hours, the current one included.
const LAST_MINUTES: i64 = 60;
const LAST_HOURS: i64 = 24;

/// `GET /api/v1/events/{type}/count` (reference route): the type's all-time count.
pub async fn type_count(
    state: web::Data<ApiState>,
    project: Project,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let event_type = params::event_type("event_type", &path)?;
    let keys = state.keys(&project);
    let mut pipe = redis::pipe();
    pipe.hget(keys.events_total(), &event_type);
    let ((count,), as_of, generation): ((Option<u64>,), _, _) =
        state.redis_read_as_of(&project, pipe).await?;
    Ok(Answer::about(&project, as_of)
        .redis(generation)
        .with(json!({"event_type": event_type, "count": count.unwrap_or(0)}))
        .ok())
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
        .zcount(keys.online(), since, "+inf");
    let ((counts, online), as_of, generation): ((Counters, u64), _, _) =
        state.redis_read_as_of(&project, pipe).await?;
    Ok(Answer::about(&project, as_of)
        .redis(generation)
        .with(json!({
            "total_events": counts.values().sum::<u64>(),
            "event_types": counts.len(),
            "counts": counts,
            "online_users": online,
        }))
        .ok())
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
    for m in minute + 1 - LAST_MINUTES..=minute {
        pipe.hget(keys.events_minute(m), &event_type);
    }
    for h in hour + 1 - LAST_HOURS..=hour {
        pipe.hget(keys.events_hour(h), &event_type);
    }
    let (replies, as_of, generation): (TypeStatsReplies, _, _) =
        state.redis_read_as_of(&project, pipe).await?;
    let (total, last_hour, last_day) = (
        replies.total,
        replies.minutes.iter().sum::<u64>(),
        replies.hours.iter().sum::<u64>(),
    );
    Ok(Answer::about(&project, as_of)
        .redis(generation)
        .with(json!({
            "event_type": event_type,
            "total": total,
            "last_60_minutes": last_hour,
            "last_24_hours": last_day,
        }))
        .ok())
}

/// The replies of `type_stats`' pipeline, by name: the all-time count, and one count per
/// minute key and per hour key (a missing or unreadable count is 0).
struct TypeStatsReplies {
    total: u64,
    minutes: Vec<u64>,
    hours: Vec<u64>,
}

impl FromRedisValue for TypeStatsReplies {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let Value::Array(replies) = v else {
            return Err("the type_stats pipeline did not answer an array".into());
        };
        let expected = 1 + LAST_MINUTES as usize + LAST_HOURS as usize;
        if replies.len() != expected {
            return Err(format!(
                "the type_stats pipeline answered {} replies, not {expected}",
                replies.len()
            )
            .into());
        }
        let count = |v: Value| {
            redis::from_redis_value::<Option<u64>>(v)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let mut replies = replies.into_iter();
        let total = replies.next().map_or(0, count);
        let minutes = replies
            .by_ref()
            .take(LAST_MINUTES as usize)
            .map(count)
            .collect();
        let hours = replies
            .by_ref()
            .take(LAST_HOURS as usize)
            .map(count)
            .collect();
        Ok(Self {
            total,
            minutes,
            hours,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(n: u64) -> Value {
        Value::BulkString(n.to_string().into_bytes())
    }

    #[test]
    fn type_stats_replies_are_read_by_section() {
        let mut replies = vec![count(1000)];
        replies.extend((0..LAST_MINUTES).map(|m| if m == 0 { Value::Nil } else { count(1) }));
        replies.extend((0..LAST_HOURS).map(|_| count(10)));
        let read = TypeStatsReplies::from_redis_value(Value::Array(replies)).expect("replies");
        assert_eq!(read.total, 1000);
        assert_eq!(
            read.minutes.iter().sum::<u64>(),
            59,
            "a missing minute counts 0"
        );
        assert_eq!(read.hours.iter().sum::<u64>(), 240);
        assert!(
            TypeStatsReplies::from_redis_value(Value::Array(vec![count(1)])).is_err(),
            "a short answer is an error, not zeros"
        );
    }
}
