//! Query parameters shared by the stats endpoints, parsed into validated values: time zones,
//! time ranges, limits, and the local-time buckets of a time series.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::error::ApiError;

/// The longest range any endpoint accepts.
pub const MAX_RANGE_DAYS: i64 = 400;
/// The most buckets one time series returns.
pub const MAX_BUCKETS: usize = 1500;

/// `tz=` an IANA zone name (default UTC).
pub fn time_zone(raw: Option<&str>) -> Result<Tz, ApiError> {
    match raw {
        None | Some("") => Ok(Tz::UTC),
        Some(name) => name.parse::<Tz>().map_err(|_| {
            ApiError::bad(
                "tz",
                format!("{name:?} is not an IANA time zone (e.g. Europe/Paris, Asia/Kolkata)"),
            )
        }),
    }
}

/// A point in time: RFC 3339 (`2026-11-01T06:30:00Z`), epoch milliseconds, or a local date or
/// date-time without offset (`2026-11-01`, `2026-11-01T06:30`) read in `tz`.
pub fn instant(field: &'static str, raw: &str, tz: Tz) -> Result<DateTime<Utc>, ApiError> {
    let raw = raw.trim();
    let parsed = if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        Some(t.with_timezone(&Utc))
    } else if let Ok(ms) = raw.parse::<i64>() {
        DateTime::from_timestamp_millis(ms)
    } else if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        local_start(tz, date.and_hms_opt(0, 0, 0).unwrap_or_default())
    } else {
        ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
            .and_then(|local| local_start(tz, local))
    };
    let t = parsed.ok_or_else(|| {
        ApiError::bad(
            field,
            format!(
                "{raw:?} is not a time: use RFC 3339, epoch milliseconds, or YYYY-MM-DD[THH:MM[:SS]] in tz"
            ),
        )
    })?;
    if t.timestamp() < 946_684_800 {
        return Err(ApiError::bad(field, "must not be before 2000-01-01"));
    }
    Ok(t)
}

/// The instant a local time names; in a DST gap, the first instant after it.
fn local_start(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    (0..=180).find_map(|m| {
        tz.from_local_datetime(&(local + Duration::minutes(m)))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// `from`, `to` and `tz` as sent: flattened into the query of every endpoint that takes a
/// range, and resolved here only.
#[derive(Debug, Default, Deserialize)]
pub struct RangeParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub tz: Option<String>,
}

impl RangeParams {
    /// The time zone and the range, `default_len` up to now when `from` is not given.
    pub fn resolve(&self, default_len: Duration) -> Result<(TimeRange, Tz), ApiError> {
        self.resolve_at(default_len, Utc::now())
    }

    pub fn resolve_at(
        &self,
        default_len: Duration,
        now: DateTime<Utc>,
    ) -> Result<(TimeRange, Tz), ApiError> {
        let tz = time_zone(self.tz.as_deref())?;
        let range = TimeRange::parse(
            self.from.as_deref(),
            self.to.as_deref(),
            tz,
            default_len,
            now,
        )?;
        Ok((range, tz))
    }
}

/// A half-open range `[from, to)` in whole UTC minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl TimeRange {
    /// `from`/`to` as given (default: the `default_len` up to now), then widened to whole
    /// minutes: `from` rounded down and `to` rounded up, so rollups answer exactly and the
    /// current minute is included. The effective range is echoed in every response.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        tz: Tz,
        default_len: Duration,
        now: DateTime<Utc>,
    ) -> Result<Self, ApiError> {
        let to = match to {
            Some(raw) => instant("to", raw, tz)?,
            None => now,
        };
        let from = match from {
            Some(raw) => instant("from", raw, tz)?,
            None => to - default_len,
        };
        if from >= to {
            return Err(ApiError::bad("from", "must be earlier than `to`"));
        }
        if to - from > Duration::days(MAX_RANGE_DAYS) {
            return Err(ApiError::bad(
                "to",
                format!("the range may span at most {MAX_RANGE_DAYS} days"),
            ));
        }
        Ok(Self {
            from: floor_minute(from),
            to: ceil_minute(to),
        })
    }

    pub fn len(&self) -> Duration {
        self.to - self.from
    }

    /// The range of equal length just before this one.
    pub fn previous(&self) -> Self {
        Self {
            from: self.from - self.len(),
            to: self.from,
        }
    }

    pub fn from_naive(&self) -> NaiveDateTime {
        self.from.naive_utc()
    }

    pub fn to_naive(&self) -> NaiveDateTime {
        self.to.naive_utc()
    }

    /// As echoed in answers: `{"from": ..., "to": ...}`.
    pub fn as_json(&self) -> serde_json::Value {
        serde_json::json!({"from": self.from, "to": self.to})
    }
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).unwrap_or(t)
}

fn ceil_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_minute(t);
    if floor == t {
        t
    } else {
        floor + Duration::minutes(1)
    }
}

/// `limit=` between 1 and `max`.
pub fn limit(
    field: &'static str,
    raw: Option<&str>,
    default: u32,
    max: u32,
) -> Result<u32, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if (1..=u64::from(max)).contains(&n) => Ok(n as u32),
        _ => Err(ApiError::bad(
            field,
            format!("must be an integer from 1 to {max}, got {raw:?}"),
        )),
    }
}

/// A comma-separated list of event types (`types=page_view,click`).
pub fn event_types(field: &'static str, raw: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let mut types = Vec::new();
    for part in raw.split(',') {
        let t = event_type(field, part.trim())?;
        if !types.contains(&t) {
            types.push(t);
        }
    }
    if types.len() > 20 {
        return Err(ApiError::bad(field, "at most 20 event types"));
    }
    Ok(types)
}

pub fn event_type(field: &'static str, raw: &str) -> Result<String, ApiError> {
    insightflow_model::EventType::parse(raw)
        .map(|t| t.as_str().to_owned())
        .map_err(|e| ApiError::bad(field, e.reason))
}

/// Time-series bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketUnit {
    Minute,
    Hour,
    Day,
}

impl BucketUnit {
    pub fn parse(raw: Option<&str>, default: Self) -> Result<Self, ApiError> {
        match raw {
            None => Ok(default),
            Some("minute") => Ok(Self::Minute),
            Some("hour") => Ok(Self::Hour),
            Some("day") => Ok(Self::Day),
            Some(other) => Err(ApiError::bad(
                "bucket",
                format!("{other:?} is not one of minute, hour, day"),
            )),
        }
    }

    /// The range a series of these buckets covers when `from` is not given.
    pub fn default_range(self) -> Duration {
        match self {
            Self::Minute => Duration::hours(1),
            Self::Hour => Duration::hours(24),
            Self::Day => Duration::days(30),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    fn nominal_seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3600,
            Self::Day => 86_400,
        }
    }

    /// Every zone in use since 1970 has an offset in whole quarter hours, so local bucket
    /// boundaries are always whole UTC minutes, and hour and day boundaries whole UTC
    /// quarter hours: walking UTC in these steps finds every boundary.
    fn step_seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::Hour | Self::Day => 900,
        }
    }
}

/// Which local bucket an instant falls in. Hours and minutes carry the UTC offset so the
/// repeated hour of a DST fall-back is two buckets; days are local dates, so a DST day is one
/// bucket of 23 or 25 hours.
fn bucket_key(unit: BucketUnit, tz: Tz, t: DateTime<Utc>) -> (NaiveDateTime, i32) {
    let local = t.with_timezone(&tz);
    let naive = local.naive_local();
    let offset = local.offset().fix().local_minus_utc();
    match unit {
        BucketUnit::Minute => (naive.with_second(0).unwrap_or(naive), offset),
        BucketUnit::Hour => (
            naive
                .with_minute(0)
                .and_then(|n| n.with_second(0))
                .unwrap_or(naive),
            offset,
        ),
        BucketUnit::Day => (naive.date().and_hms_opt(0, 0, 0).unwrap_or(naive), 0),
    }
}

/// The boundaries of the local buckets covering `range`: `b[0] <= from < ... < to <= b[n]`,
/// bucket `i` is `[b[i], b[i+1])`.
pub fn bucket_boundaries(
    unit: BucketUnit,
    tz: Tz,
    range: TimeRange,
) -> Result<Vec<DateTime<Utc>>, ApiError> {
    let too_many = || {
        ApiError::bad(
            "bucket",
            format!(
                "the range holds more than {MAX_BUCKETS} {} buckets: use a larger bucket or a shorter range",
                unit.as_str()
            ),
        )
    };
    if range.len().num_seconds() / unit.nominal_seconds() > MAX_BUCKETS as i64 {
        return Err(too_many());
    }
    let step = Duration::seconds(unit.step_seconds());
    let step_s = unit.step_seconds();
    let mut start = DateTime::from_timestamp(range.from.timestamp().div_euclid(step_s) * step_s, 0)
        .unwrap_or(range.from);
    let key = bucket_key(unit, tz, start);
    while bucket_key(unit, tz, start - step) == key {
        start -= step;
    }
    let mut boundaries = vec![start];
    let mut current = key;
    let mut t = start;
    while t < range.to {
        t += step;
        let k = bucket_key(unit, tz, t);
        if k != current {
            current = k;
            boundaries.push(t);
            if boundaries.len() > MAX_BUCKETS + 1 {
                return Err(too_many());
            }
        }
    }
    if boundaries.last().is_some_and(|b| *b < range.to) || boundaries.len() < 2 {
        // The walk stopped inside the last bucket: run on to its end.
        loop {
            t += step;
            if bucket_key(unit, tz, t) != current {
                boundaries.push(t);
                break;
            }
        }
    }
    Ok(boundaries)
}

/// A bucket's start as the caller's local time with its offset.
pub fn local_label(tz: Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz).to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn range_of(from: &str, to: &str) -> TimeRange {
        range(from, to)
    }

    fn range(from: &str, to: &str) -> TimeRange {
        TimeRange {
            from: utc(from),
            to: utc(to),
        }
    }

    #[test]
    fn a_fall_back_day_has_25_hours_and_one_day_bucket() {
        let tz: Tz = "America/New_York".parse().expect("zone");
        let r = TimeRange::parse(
            Some("2026-11-01"),
            Some("2026-11-02"),
            tz,
            Duration::days(1),
            Utc::now(),
        )
        .expect("range");
        assert_eq!(r.from, utc("2026-11-01T04:00:00Z"));
        let hours = bucket_boundaries(BucketUnit::Hour, tz, r).expect("hours");
        assert_eq!(hours.len(), 26, "25 hourly buckets");
        let days = bucket_boundaries(BucketUnit::Day, tz, r).expect("days");
        assert_eq!(
            days,
            vec![utc("2026-11-01T04:00:00Z"), utc("2026-11-02T05:00:00Z")]
        );
    }

    #[test]
    fn a_spring_forward_day_has_23_hours() {
        let tz: Tz = "Europe/Berlin".parse().expect("zone");
        let r = range("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z");
        assert_eq!(
            bucket_boundaries(BucketUnit::Hour, tz, r)
                .expect("hours")
                .len(),
            24
        );
        assert_eq!(
            bucket_boundaries(BucketUnit::Day, tz, r).expect("days"),
            vec![utc("2026-03-28T23:00:00Z"), utc("2026-03-29T22:00:00Z")]
        );
    }

    #[test]
    fn half_hour_zones_start_hours_at_half_past_utc() {
        let tz: Tz = "Asia/Kolkata".parse().expect("zone");
        let b = bucket_boundaries(
            BucketUnit::Hour,
            tz,
            range("2026-11-20T10:00:00Z", "2026-11-20T12:00:00Z"),
        )
        .expect("hours");
        assert_eq!(
            b,
            vec![
                utc("2026-11-20T09:30:00Z"),
                utc("2026-11-20T10:30:00Z"),
                utc("2026-11-20T11:30:00Z"),
                utc("2026-11-20T12:30:00Z"),
            ]
        );
        assert_eq!(local_label(tz, b[0]), "2026-11-20T15:00:00+05:30");
        let nepal: Tz = "Asia/Kathmandu".parse().expect("zone");
        let d = bucket_boundaries(
            BucketUnit::Day,
            nepal,
            range("2026-11-20T10:00:00Z", "2026-11-20T12:00:00Z"),
        )
        .expect("days");
        assert_eq!(
            d,
            vec![utc("2026-11-19T18:15:00Z"), utc("2026-11-20T18:15:00Z")]
        );
    }

    #[test]
    fn a_day_without_midnight_starts_at_the_first_local_instant() {
        // Chile springs forward at 00:00 -> 01:00 on 2026-09-06.
        let tz: Tz = "America/Santiago".parse().expect("zone");
        let d = bucket_boundaries(
            BucketUnit::Day,
            tz,
            range("2026-09-06T06:00:00Z", "2026-09-06T08:00:00Z"),
        )
        .expect("days");
        assert_eq!(d[0], utc("2026-09-06T04:00:00Z"));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn range_parameters_are_read_from_a_query_beside_the_endpoint_s_own() {
        #[derive(Debug, Deserialize)]
        struct Query {
            #[serde(flatten)]
            range: RangeParams,
            limit: Option<String>,
        }
        let query = actix_web::web::Query::<Query>::from_query(
            "limit=3&from=2026-11-01&to=2026-11-02&tz=America%2FNew_York",
        )
        .expect("query");
        assert_eq!(query.limit.as_deref(), Some("3"));
        let (range, tz) = query
            .range
            .resolve_at(Duration::hours(1), utc("2026-11-22T12:00:00Z"))
            .expect("range");
        assert_eq!(tz, chrono_tz::America::New_York);
        assert_eq!(
            range,
            range_of("2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z")
        );
    }

    #[test]
    fn ranges_are_validated_and_widened_to_minutes() {
        let now = utc("2026-11-22T12:00:30Z");
        let r = TimeRange::parse(None, None, Tz::UTC, Duration::hours(1), now).expect("default");
        assert_eq!(r, range("2026-11-22T11:00:00Z", "2026-11-22T12:01:00Z"));
        assert!(matches!(
            TimeRange::parse(
                Some("2026-11-02"),
                Some("2026-11-01"),
                Tz::UTC,
                Duration::hours(1),
                now
            ),
            Err(ApiError::BadRequest { field: "from", .. })
        ));
        assert!(matches!(
            TimeRange::parse(Some("yesterday"), None, Tz::UTC, Duration::hours(1), now),
            Err(ApiError::BadRequest { field: "from", .. })
        ));
        assert!(matches!(
            TimeRange::parse(Some("2020-01-01"), None, Tz::UTC, Duration::hours(1), now),
            Err(ApiError::BadRequest { field: "to", .. })
        ));
        assert!(matches!(
            time_zone(Some("Mars/Olympus")),
            Err(ApiError::BadRequest { field: "tz", .. })
        ));
        assert!(limit("limit", Some("1000000"), 10, 1000).is_err());
        assert_eq!(limit("limit", Some("7"), 10, 1000).ok(), Some(7));
    }
}
