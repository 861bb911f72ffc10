//! Retention cohorts: the people who started in each local day, week or month of a range, and
//! the share of them that came back in each period after.
//!
//! - **Who starts when:** by default a person's cohort is the period of their first event
//!   ever (`users.first_seen`); with `start_event`, of the first time they did that event
//!   (among the raw events retention keeps).
//! - **Coming back:** any event (or `return_event`) in the period; period 0 is the cohort's own
//!   period. Periods run up to the one holding now; the last is in progress.
//! - **Periods** are local to `tz`: days start at local midnight, weeks on Monday, months on the
//!   1st, across daylight-saving changes. Activity is read per person and UTC quarter hour
//!   (every zone's offset is whole quarter hours), then placed in local periods here.

use std::collections::{BTreeMap, HashMap, HashSet};

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Tz;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use super::auth::Project;
use super::envelope::Answer;
use super::error::ApiError;
use super::limits::Heavy;
use super::params::{self, RangeParams, TimeRange};
use super::sessions::ratio;
use super::ApiState;
use insightflow_store::DbText;

/// Activity is read in quarter hours counted from this instant (2000-01-01, the earliest event
/// time the gateway accepts).
const QUARTER_EPOCH: &str = "2000-01-01 00:00:00";
const QUARTER_SECONDS: i64 = 900;
const QUARTER_EPOCH_TS: i64 = 946_684_800;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        match raw {
            None | Some("week") => Ok(Self::Week),
            Some("day") => Ok(Self::Day),
            Some("month") => Ok(Self::Month),
            Some(other) => Err(ApiError::bad(
                "period",
                format!("{other:?} is not one of day, week, month"),
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The range when `from` is not given, and the longest one accepted (cohorts x periods
    /// stays in the thousands).
    fn default_and_max(self) -> (Duration, Duration) {
        match self {
            Self::Day => (Duration::days(14), Duration::days(92)),
            Self::Week => (Duration::weeks(8), Duration::weeks(53)),
            Self::Month => (Duration::days(183), Duration::days(400)),
        }
    }

    /// The local date that names the period holding `date`.
    fn key(self, date: NaiveDate) -> NaiveDate {
        match self {
            Self::Day => date,
            Self::Week => date - Duration::days(i64::from(date.weekday().num_days_from_monday())),
            Self::Month => date.with_day(1).unwrap_or(date),
        }
    }

    /// How many periods after the one named `from` the one named `to` is.
    fn distance(self, from: NaiveDate, to: NaiveDate) -> i64 {
        match self {
            Self::Day => (to - from).num_days(),
            Self::Week => (to - from).num_days().div_euclid(7),
            Self::Month => {
                i64::from(to.year() - from.year()) * 12 + i64::from(to.month())
                    - i64::from(from.month())
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RetentionQuery {
    #[serde(flatten)]
    pub range: RangeParams,
    pub period: Option<String>,
    pub start_event: Option<String>,
    pub return_event: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Cohort {
    /// The local date naming the cohort's period (its first day).
    pub start: NaiveDate,
    pub users: usize,
    /// Per period from the cohort's own (0): how many of its people came back.
    pub returned: Vec<usize>,
    /// `returned` as a share of `users`.
    pub rates: Vec<f64>,
}

#[derive(sqlx::FromRow)]
struct Start {
    distinct_id: DbText,
    first: NaiveDateTime,
}

#[derive(sqlx::FromRow)]
struct Active {
    distinct_id: DbText,
    quarter: i64,
}

fn local_date(tz: Tz, t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}

/// Each person's cohort (the period key of their start), for starts in `range`.
async fn starts(
    db: &MySqlPool,
    project: &str,
    range: TimeRange,
    start_event: Option<&str>,
) -> Result<Vec<Start>, ApiError> {
    let rows = match start_event {
        None => {
            sqlx::query_as::<_, Start>(
                "SELECT distinct_id, first_seen AS first FROM users \
                 WHERE project = ? AND first_seen >= ? AND first_seen < ?",
            )
            .bind(project)
            .bind(range.from_naive())
            .bind(range.to_naive())
            .fetch_all(db)
            .await?
        }
        Some(event_type) => {
            sqlx::query_as::<_, Start>(
                "SELECT distinct_id, MIN(event_time) AS first FROM user_events \
                 WHERE project = ? AND event_type = ? AND event_time < ? AND is_bot = 0 \
                 GROUP BY distinct_id HAVING MIN(event_time) >= ?",
            )
            .bind(project)
            .bind(event_type)
            .bind(range.to_naive())
            .bind(range.from_naive())
            .fetch_all(db)
            .await?
        }
    };
    Ok(rows)
}

/// Per person in `people`, the local period keys in which they were active from `from` on.
async fn activity(
    db: &MySqlPool,
    project: &str,
    from: DateTime<Utc>,
    return_event: Option<&str>,
    tz: Tz,
    period: Period,
    people: &HashMap<String, NaiveDate>,
) -> Result<HashMap<String, HashSet<NaiveDate>>, ApiError> {
    let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(format!(
        "SELECT DISTINCT distinct_id, \
         CAST(TIMESTAMPDIFF(MINUTE, '{QUARTER_EPOCH}', event_time) DIV 15 AS SIGNED) AS quarter \
         FROM user_events WHERE project = "
    ));
    q.push_bind(project);
    if let Some(event_type) = return_event {
        q.push(" AND event_type = ").push_bind(event_type);
    }
    q.push(" AND is_bot = 0 AND event_time >= ")
        .push_bind(from.naive_utc());
    let mut rows = q.build_query_as::<Active>().fetch(db);
    let mut active: HashMap<String, HashSet<NaiveDate>> = HashMap::new();
    // A person is active in the same quarter hour often: place each quarter once.
    let mut placed: HashMap<i64, NaiveDate> = HashMap::new();
    while let Some(row) = rows.try_next().await? {
        if !people.contains_key(row.distinct_id.as_str()) {
            continue;
        }
        let key = *placed.entry(row.quarter).or_insert_with(|| {
            let at = DateTime::from_timestamp(QUARTER_EPOCH_TS + row.quarter * QUARTER_SECONDS, 0)
                .unwrap_or_default();
            period.key(local_date(tz, at))
        });
        active.entry(row.distinct_id.0).or_default().insert(key);
    }
    Ok(active)
}

/// The cohorts from the starts and the activity, periods up to the one holding `now`.
pub fn cohorts(
    period: Period,
    people: &HashMap<String, NaiveDate>,
    active: &HashMap<String, HashSet<NaiveDate>>,
    now_key: NaiveDate,
) -> Vec<Cohort> {
    let mut by_cohort: BTreeMap<NaiveDate, Vec<&str>> = BTreeMap::new();
    for (who, key) in people {
        by_cohort.entry(*key).or_default().push(who);
    }
    by_cohort
        .into_iter()
        .map(|(start, members)| {
            let periods = period.distance(start, now_key).max(0) as usize + 1;
            let mut returned = vec![0_usize; periods];
            for who in &members {
                for key in active.get(*who).into_iter().flatten() {
                    let k = period.distance(start, *key);
                    if let Some(n) = usize::try_from(k).ok().and_then(|k| returned.get_mut(k)) {
                        *n += 1;
                    }
                }
            }
            let users = members.len();
            let rates = returned
                .iter()
                .map(|n| ratio(*n as i64, users as i64, 4))
                .collect();
            Cohort {
                start,
                users,
                returned,
                rates,
            }
        })
        .collect()
}

/// `GET /retention?period=week&tz=&from=&to=&start_event=&return_event=`: cohorts by the
/// local period people started in, and per period after, the share that came back.
pub async fn retention(
    state: web::Data<ApiState>,
    project: Project,
    _turn: Heavy,
    query: web::Query<RetentionQuery>,
) -> Result<HttpResponse, ApiError> {
    let period = Period::parse(query.period.as_deref())?;
    let (default_len, max_len) = period.default_and_max();
    let (asked, tz) = query.range.resolve(default_len)?;
    // Widened to whole periods, so the first cohort is whole.
    let range = TimeRange {
        from: params::local_midnight(tz, period.key(local_date(tz, asked.from)))
            .unwrap_or(asked.from),
        to: asked.to,
    };
    if range.len() > max_len {
        return Err(ApiError::bad(
            "from",
            format!(
                "{} cohorts span at most {} days",
                period.as_str(),
                max_len.num_days()
            ),
        ));
    }
    let start_event = query
        .start_event
        .as_deref()
        .map(|raw| params::event_type("start_event", raw))
        .transpose()?;
    let return_event = query
        .return_event
        .as_deref()
        .map(|raw| params::event_type("return_event", raw))
        .transpose()?;
    let as_of = state.as_of(&project).await?;
    let db = state.db();
    let people: HashMap<String, NaiveDate> =
        starts(db, project.as_str(), range, start_event.as_deref())
            .await?
            .into_iter()
            .map(|s| {
                (
                    s.distinct_id.0,
                    period.key(local_date(tz, s.first.and_utc())),
                )
            })
            .collect();
    // Activity from the first cohort's first day: nothing earlier can count.
    let first_day = people.values().min().copied();
    let active = match first_day {
        Some(day) => {
            let from = params::local_midnight(tz, day).unwrap_or(range.from);
            activity(
                db,
                project.as_str(),
                from,
                return_event.as_deref(),
                tz,
                period,
                &people,
            )
            .await?
        }
        None => HashMap::new(),
    };
    let now_key = period.key(local_date(tz, Utc::now()));
    Ok(Answer::about(&project, as_of)
        .range(range)
        .source("mysql")
        .with(serde_json::json!({
            "period": period.as_str(),
            "tz": tz.name(),
            "start_event": start_event,
            "return_event": return_event,
            "cohorts": cohorts(period, &people, &active, now_key),
        }))
        .ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn periods_are_named_by_their_first_day_and_counted_between() {
        assert_eq!(Period::Week.key(d("2026-11-29")), d("2026-11-23")); // a Sunday
        assert_eq!(Period::Week.key(d("2026-11-23")), d("2026-11-23"));
        assert_eq!(Period::Month.key(d("2026-02-28")), d("2026-02-01"));
        assert_eq!(Period::Month.distance(d("2025-11-01"), d("2026-02-01")), 3);
        assert_eq!(Period::Week.distance(d("2026-11-02"), d("2026-11-23")), 3);
        assert_eq!(Period::Day.distance(d("2026-03-07"), d("2026-03-09")), 2);
    }

    #[test]
    fn each_person_counts_once_per_period_and_only_from_their_cohort_on() {
        let people: HashMap<String, NaiveDate> = [
            ("a".to_owned(), d("2026-11-01")),
            ("b".to_owned(), d("2026-11-01")),
            ("c".to_owned(), d("2026-11-02")),
        ]
        .into();
        let active: HashMap<String, HashSet<NaiveDate>> = [
            ("a".to_owned(), [d("2026-11-01"), d("2026-11-03")].into()),
            ("b".to_owned(), [d("2026-11-01"), d("2026-11-02")].into()),
            // before its cohort: ignored
            ("c".to_owned(), [d("2026-11-01"), d("2026-11-02")].into()),
        ]
        .into();
        let got = cohorts(Period::Day, &people, &active, d("2026-11-03"));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].returned, [2, 1, 1]);
        assert_eq!(got[0].rates, [1.0, 0.5, 0.5]);
        assert_eq!(got[1].returned, [1, 0]);
    }
}
