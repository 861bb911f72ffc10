use chrono::{DateTime, TimeDelta, TimeZone, Utc};
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

/// Parses a client timestamp: an RFC 3339 string, or a number of milliseconds since the epoch.
pub fn parse_timestamp(value: &RawValue, field: &str) -> Result<DateTime<Utc>, FieldError> {
    let text = value.get();
    if text.starts_with('"') {
        let s: &str = serde_json::from_str(text).map_err(|_| {
            FieldError::new(field, "must be an RFC 3339 string or epoch milliseconds")
        })?;
        return DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                FieldError::new(field, format!("{s:?} is not an RFC 3339 timestamp: {e}"))
            });
    }
    let millis: i64 = serde_json::from_str::<f64>(text)
        .ok()
        .filter(|m| m.is_finite() && m.abs() < 1e15)
        .map(|m| m as i64)
        .ok_or_else(|| {
            FieldError::new(field, "must be an RFC 3339 string or epoch milliseconds")
        })?;
    Utc.timestamp_millis_opt(millis)
        .single()
        .ok_or_else(|| FieldError::new(field, "is out of range"))
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
    /// `received_at + max_future`.
    pub fn event_time(&self, client: Option<DateTime<Utc>>) -> (DateTime<Utc>, TimestampSource) {
        let Some(client) = client else {
            return (self.received_at, TimestampSource::Server);
        };
        let (time, source) = match self.skew {
            Some(skew) => (client - skew, TimestampSource::ClientSkewCorrected),
            None => (client, TimestampSource::Client),
        };
        if time > self.received_at + self.max_future {
            (self.received_at, TimestampSource::Clamped)
        } else {
            (time, source)
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
        let (t, src) = clock.event_time(Some(received + TimeDelta::minutes(5)));
        assert_eq!(t, received - TimeDelta::minutes(5));
        assert_eq!(src, TimestampSource::ClientSkewCorrected);

        let no_sent_at = RequestClock::new(received, None, 60);
        let (t, src) = no_sent_at.event_time(Some(received + TimeDelta::days(2)));
        assert_eq!((t, src), (received, TimestampSource::Clamped));
        assert_eq!(
            no_sent_at.event_time(None),
            (received, TimestampSource::Server)
        );
    }
}
