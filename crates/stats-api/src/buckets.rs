//! The local-time buckets of a time series: minutes, hours or days in the caller's time zone,
//! across daylight-saving changes and zones whose offset is not a whole hour.

use chrono::{DateTime, Duration, NaiveDateTime, Offset, Timelike, Utc};
use chrono_tz::Tz;

use super::error::ApiError;
use super::params::TimeRange;

/// The most buckets one time series returns.
pub const MAX_BUCKETS: usize = 1500;

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
}
