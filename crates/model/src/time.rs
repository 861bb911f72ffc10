use chrono::{DateTime, TimeDelta, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::FieldError;

/// Which clock the event time came from, recorded on every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampSource {
    /// The client's `timestamp`, corrected by the batch's clock skew (`sent_at` was given).
    ClientSkewCorrected,
    /// The client's `timestamp` as sent (no `sent_at` to correct it with).
    Client,
    /// No client time: the gateway's receive time.
    Server,
    /// The client's time was too far in the future and was clamped to the receive time.
    Clamped,
}

impl TimestampSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSkewCorrected => "client_skew_corrected",
            Self::Client => "client",
            Self::Server => "server",
            Self::Clamped => "clamped",
        }
    }
}

/// The earliest time an event may carry: 2000-01-01T00:00:00Z. No analytics event is older;
/// an earlier time is a broken device clock or a unit mistake (epoch seconds sent as
/// milliseconds land in January 1970).
pub const EARLIEST_TIME: DateTime<Utc> = at_millis(946_684_800_000);

/// The latest time an event may carry: 9999-12-31T23:59:59.999Z, the last millisecond MySQL's
/// `DATETIME(3)` holds. Event times never come near it (they are clamped to the receive time
/// beyond `max_future_seconds`); it keeps the client's own time, stored as sent in
/// `client_time`, storable.
pub const LATEST_TIME: DateTime<Utc> = at_millis(253_402_300_799_999);

const fn at_millis(millis: i64) -> DateTime<Utc> {
    match DateTime::from_timestamp_millis(millis) {
        Some(t) => t,
        None => panic!("a time chrono cannot represent"),
    }
}

/// `time` if the stores can hold it, or why not. A leap second (`23:59:60`, which RFC 3339
/// allows and MySQL does not) is read as the last millisecond of its minute.
pub fn stored_time(time: DateTime<Utc>, field: &str) -> Result<DateTime<Utc>, FieldError> {
    let time = if time.nanosecond() >= 1_000_000_000 {
        time.with_nanosecond(999_000_000).unwrap_or(time)
    } else {
        time
    };
    if time < EARLIEST_TIME {
        return Err(FieldError::new(
            field,
            format!(
                "is {}, before {}, the earliest time accepted",
                time.to_rfc3339(),
                EARLIEST_TIME.to_rfc3339()
            ),
        ));
    }
    if time > LATEST_TIME {
        return Err(FieldError::new(
            field,
            format!(
                "is {}, after {}, the latest time that can be stored",
                time.to_rfc3339(),
                LATEST_TIME.to_rfc3339()
            ),
        ));
    }
    Ok(time)
}

/// Parses a client timestamp: an RFC 3339 string, or a number of milliseconds since the epoch,
/// from [`EARLIEST_TIME`] to [`LATEST_TIME`].
pub fn parse_timestamp(value: &RawValue, field: &str) -> Result<DateTime<Utc>, FieldError> {
    let text = value.get();
    let time = if text.starts_with('"') {
        let s: &str = serde_json::from_str(text).map_err(|_| {
            FieldError::new(field, "must be an RFC 3339 string or epoch milliseconds")
        })?;
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                FieldError::new(field, format!("{s:?} is not an RFC 3339 timestamp: {e}"))
            })?
    } else {
        let millis: i64 = serde_json::from_str::<f64>(text)
            .ok()
            .filter(|m| m.is_finite() && m.abs() < 1e15)
            .map(|m| m as i64)
            .ok_or_else(|| {
                FieldError::new(field, "must be an RFC 3339 string or epoch milliseconds")
            })?;
        Utc.timestamp_millis_opt(millis)
            .single()
            .ok_or_else(|| FieldError::new(field, "is out of range"))?
    };
    stored_time(time, field)
}

/// The request's view of time: when it arrived and how far the client's clock is off.
#[derive(Debug, Clone, Copy)]
pub struct RequestClock {
    pub received_at: DateTime<Utc>,
    /// `sent_at - received_at` when the batch carried `sent_at`: positive when the client's
    /// clock runs ahead. Subtracted from every client timestamp in the batch.
    pub skew: Option<TimeDelta>,
    pub max_future: TimeDelta,
}

impl RequestClock {
    pub fn new(
        received_at: DateTime<Utc>,
        sent_at: Option<DateTime<Utc>>,
        max_future_seconds: i64,
    ) -> Self {
        Self {
            received_at,
            skew: sent_at.map(|sent| sent - received_at),
            max_future: TimeDelta::seconds(max_future_seconds),
        }
    }

    /// The time to use for an event: `received_at - (sent_at - timestamp)` when the batch has
    /// `sent_at`, the client time otherwise, the receive time without one; never later than
    /// `received_at + max_future`. Refused (field `timestamp`) when the skew correction moves
    /// it out of the stored range: both times were in range, their difference need not be.
    pub fn event_time(
        &self,
        client: Option<DateTime<Utc>>,
    ) -> Result<(DateTime<Utc>, TimestampSource), FieldError> {
        let Some(client) = client else {
            return Ok((self.received_at, TimestampSource::Server));
        };
        let (time, source) = match self.skew {
            Some(skew) => (
                client.checked_sub_signed(skew).ok_or_else(|| {
                    FieldError::new("timestamp", "is out of range once corrected by sent_at")
                })?,
                TimestampSource::ClientSkewCorrected,
            ),
            None => (client, TimestampSource::Client),
        };
        if time > self.received_at + self.max_future {
            return Ok((self.received_at, TimestampSource::Clamped));
        }
        match stored_time(time, "timestamp") {
            Ok(time) => Ok((time, source)),
            Err(e) if source == TimestampSource::ClientSkewCorrected => Err(FieldError::new(
                e.field,
                format!("{}, once corrected by the batch's sent_at", e.reason),
            )),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn parses_rfc3339_and_epoch_millis() {
        let a = parse_timestamp(&raw("\"2026-11-22T10:00:00+01:00\""), "timestamp").unwrap();
        let b = parse_timestamp(&raw("1795338000000"), "timestamp").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_rfc3339(), "2026-11-22T09:00:00+00:00");
    }

    #[test]
    fn rejects_garbage_timestamps_with_the_field_name() {
        for bad in ["\"yesterday\"", "true", "{}", "1e300"] {
            let err = parse_timestamp(&raw(bad), "sent_at").unwrap_err();
            assert_eq!(err.field, "sent_at", "{bad}");
        }
    }

    #[test]
    fn corrects_skew_and_clamps_the_future() {
        let received = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        // The client clock runs 10 minutes fast: it says it sent at 12:10.
        let sent = received + TimeDelta::minutes(10);
        let clock = RequestClock::new(received, Some(sent), 60);
        let (t, src) = clock
            .event_time(Some(received + TimeDelta::minutes(5)))
            .unwrap();
        assert_eq!(t, received - TimeDelta::minutes(5));
        assert_eq!(src, TimestampSource::ClientSkewCorrected);

        let no_sent_at = RequestClock::new(received, None, 60);
        let (t, src) = no_sent_at
            .event_time(Some(received + TimeDelta::days(2)))
            .unwrap();
        assert_eq!((t, src), (received, TimestampSource::Clamped));
        assert_eq!(
            no_sent_at.event_time(None).unwrap(),
            (received, TimestampSource::Server)
        );
    }

    #[test]
    fn every_timestamp_source_fits_its_column() {
        for source in [
            TimestampSource::ClientSkewCorrected,
            TimestampSource::Client,
            TimestampSource::Server,
            TimestampSource::Clamped,
        ] {
            assert!(crate::columns::TIMESTAMP_SOURCE.fits(source.as_str()));
        }
    }

    #[test]
    fn the_range_is_2000_to_the_end_of_mysqls_datetime() {
        // Computed independently of the constants' millisecond literals.
        assert_eq!(
            EARLIEST_TIME,
            Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            LATEST_TIME,
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap() + TimeDelta::milliseconds(999)
        );
    }

    #[test]
    fn times_outside_the_range_are_refused_at_its_edges() {
        let ok = [
            "946684800000",
            "\"2000-01-01T00:00:00Z\"",
            "253402300799999",
            "\"9999-12-31T23:59:59.999Z\"",
        ];
        for good in ok {
            assert!(parse_timestamp(&raw(good), "timestamp").is_ok(), "{good}");
        }
        let bad = [
            "946684799999",
            "\"1999-12-31T23:59:59.999Z\"",
            "\"2000-01-01T00:00:00+00:01\"",
            "253402300800000",
            "\"9999-12-31T23:59:59.9995Z\"",
            "\"9999-12-31T23:59:59-00:01\"",
            "\"0000-01-01T00:00:00Z\"",
            "-100000000000000",
            "0",
            // Epoch seconds sent as milliseconds: January 1970.
            "1767225600",
        ];
        for text in bad {
            let err = parse_timestamp(&raw(text), "timestamp").unwrap_err();
            assert_eq!(err.field, "timestamp", "{text}");
            assert!(
                err.reason.contains("the earliest time accepted")
                    || err.reason.contains("the latest time that can be stored"),
                "{text}: {}",
                err.reason
            );
        }
    }

    #[test]
    fn a_leap_second_is_the_last_millisecond_of_its_minute() {
        let t = parse_timestamp(&raw("\"2016-12-31T23:59:60.5Z\""), "timestamp").unwrap();
        assert_eq!(t.to_rfc3339(), "2016-12-31T23:59:59.999+00:00");
        let edge = parse_timestamp(&raw("\"9999-12-31T23:59:60Z\""), "timestamp").unwrap();
        assert_eq!(edge, LATEST_TIME);
    }

    #[test]
    fn a_skew_correction_that_leaves_the_range_is_refused() {
        let received = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        // The client says it sent in 9000; its event of 2001 would be some 7000 years BC.
        let sent = Utc.with_ymd_and_hms(9000, 1, 1, 0, 0, 0).unwrap();
        let clock = RequestClock::new(received, Some(sent), 60);
        let client = Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).unwrap();
        let err = clock.event_time(Some(client)).unwrap_err();
        assert_eq!(err.field, "timestamp");
        assert!(err.reason.contains("sent_at"), "{}", err.reason);
        // A client clock far behind moves times forward: clamped, as before.
        let behind = RequestClock::new(received, Some(EARLIEST_TIME), 60);
        let (t, source) = behind.event_time(Some(LATEST_TIME)).unwrap();
        assert_eq!((t, source), (received, TimestampSource::Clamped));
    }
}
