//! The dedupe window is a guarantee only if nothing older than it can be read again.
//!
//! A message can be read again (a group reset to the beginning, committed offsets expired
//! after `offsets.retention.minutes`, a replay by an operator) as long as the topic keeps it.
//! MySQL's dedupe row per event (`event_ids`, keyed `(project, event_id)`), and the origin it
//! keeps, which tells Redis whether a message counts its event, last as long as the raw row
//! (`retention.raw_event_days`). Redis's positions per partition never expire, but rows stored
//! before origins were recorded are told apart by their Redis dedupe marks, which expire
//! `aggregates.dedupe_ttl_seconds` after they were set. If the topic keeps messages longer
//! than either, a replay could count those events again, so the worker refuses to start.

use std::time::Duration;

use crate::settings::{AggregateSettings, RetentionSettings};

/// `Err` with what to change when `topic_retention` (`None`: forever) outlasts a store's
/// memory of applied events.
pub fn check(
    topic: &str,
    topic_retention: Option<Duration>,
    aggregates: &AggregateSettings,
    retention: &RetentionSettings,
) -> Result<(), String> {
    let redis = Duration::from_secs(aggregates.dedupe_ttl_seconds);
    let mysql = (retention.raw_event_days > 0)
        .then(|| Duration::from_secs(retention.raw_event_days.saturating_mul(86_400)));
    let kept = match topic_retention {
        Some(kept) => kept,
        None => {
            return Err(format!(
                "topic {topic} keeps messages forever (retention.ms=-1), but Redis remembers an \
                 applied event for {redis:?} (aggregates.dedupe_ttl_seconds): a replay would count \
                 older events twice. Give the topic a retention.ms of at most {} ms",
                redis.as_millis()
            ));
        }
    };
    if kept > redis {
        return Err(format!(
            "topic {topic} keeps messages for {kept:?} (retention.ms={}), longer than Redis \
             remembers an applied event ({redis:?}, aggregates.dedupe_ttl_seconds): a replay \
             would count older events twice. Raise WORKER__AGGREGATES__DEDUPE_TTL_SECONDS to at \
             least {} or lower the topic's retention.ms",
            kept.as_millis(),
            kept.as_secs()
        ));
    }
    if let Some(mysql) = mysql.filter(|mysql| kept > *mysql) {
        return Err(format!(
            "topic {topic} keeps messages for {kept:?}, longer than MySQL keeps raw events \
             ({mysql:?}, retention.raw_event_days), whose unique key is what makes a replay \
             harmless: raise WORKER__RETENTION__RAW_EVENT_DAYS or lower the topic's retention.ms"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn settings(dedupe_days: u64, raw_days: u64) -> (AggregateSettings, RetentionSettings) {
        let mut defaults = crate::Settings::load().expect("defaults");
        defaults.aggregates.dedupe_ttl_seconds = dedupe_days * DAY;
        defaults.retention.raw_event_days = raw_days;
        (defaults.aggregates, defaults.retention)
    }

    fn days(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n * DAY))
    }

    #[test]
    fn a_topic_kept_no_longer_than_both_stores_remember_passes() {
        let (aggregates, retention) = settings(7, 90);
        assert_eq!(check("t", days(7), &aggregates, &retention), Ok(()));
        assert_eq!(check("t", days(1), &aggregates, &retention), Ok(()));
    }

    #[test]
    fn a_topic_kept_longer_than_the_dedupe_window_is_refused_with_what_to_change() {
        let (aggregates, retention) = settings(7, 90);
        let error = check("events", days(8), &aggregates, &retention).unwrap_err();
        assert!(error.contains("events"), "{error}");
        assert!(
            error.contains("DEDUPE_TTL_SECONDS to at least 691200"),
            "{error}"
        );
    }

    #[test]
    fn a_topic_kept_forever_is_refused() {
        let (aggregates, retention) = settings(7, 90);
        let error = check("events", None, &aggregates, &retention).unwrap_err();
        assert!(error.contains("forever"), "{error}");
    }

    #[test]
    fn a_topic_kept_longer_than_the_raw_events_is_refused_unless_they_are_kept_forever() {
        let (aggregates, retention) = settings(30, 14);
        let error = check("events", days(20), &aggregates, &retention).unwrap_err();
        assert!(error.contains("RAW_EVENT_DAYS"), "{error}");
        let (aggregates, forever) = settings(30, 0);
        assert_eq!(check("events", days(20), &aggregates, &forever), Ok(()));
    }
}
