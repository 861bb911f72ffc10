//! Query parameters shared by the stats endpoints, parsed into validated values: time zones,
//! time ranges, limits and event types. The local-time buckets of a series are in `buckets`.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::error::ApiError;

/// The longest range any endpoint accepts.
pub const MAX_RANGE_DAYS: i64 = 400;

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

/// The instant a local date starts (its midnight, or the first instant after a DST gap).
pub fn local_midnight(tz: Tz, date: NaiveDate) -> Option<DateTime<Utc>> {
    local_start(tz, date.and_hms_opt(0, 0, 0)?)
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

/// A parameter that must be given: absent is a 400 naming it.
pub fn required<'a>(field: &'static str, raw: Option<&'a str>) -> Result<&'a str, ApiError> {
    raw.ok_or_else(|| ApiError::bad(field, "is required"))
}

/// A required event-type parameter, validated as the gateway validates event types.
pub fn required_event_type(field: &'static str, raw: Option<&str>) -> Result<String, ApiError> {
    event_type(field, required(field, raw)?)
}

pub fn event_type(field: &'static str, raw: &str) -> Result<String, ApiError> {
    insightflow_model::EventType::parse(raw)
        .map(|t| t.as_str().to_owned())
        .map_err(|e| ApiError::bad(field, e.reason))
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
