//! A request body -> accepted events and per-event rejections.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::raw::Text;
use crate::shape::{Canonical, EventShape};
use crate::{parse_timestamp, ClientInfo, Event, FieldError, Limits, ProjectId, RequestClock};

/// Why a whole request body was refused (per-event problems are [`Rejection`]s instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not valid JSON: {0}")]
    Malformed(String),
    #[error(
        "body must be a JSON object (one event or {{\"events\": [...]}}) or an array of events"
    )]
    NotAnObjectOrArray,
    #[error("batch has {count} events, limit {max}")]
    TooManyEvents { count: usize, max: usize },
    #[error("batch has no events")]
    Empty,
    #[error("{0}")]
    Field(FieldError),
}

impl BodyError {
    /// The field the client should look at.
    pub fn field(&self) -> &str {
        match self {
            Self::Malformed(_) | Self::NotAnObjectOrArray => "body",
            Self::TooManyEvents { .. } | Self::Empty => "events",
            Self::Field(e) => &e.field,
        }
    }
}

/// The request body, scanned once: the event list is kept as unparsed slices of the body.
#[derive(Debug)]
pub struct RawBody<'a> {
    pub sent_at: Option<&'a RawValue>,
    pub write_key: Option<Text<'a>>,
    /// The events; a body that is a single event is a one-element list.
    pub events: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct BatchShape<'a> {
    #[serde(borrow, default)]
    events: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    write_key: Option<Text<'a>>,
}

/// Segment's envelope: `{"batch": [..], "sentAt", "writeKey"}` or one message, which may
/// carry `sentAt` and `writeKey` itself.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SegmentEnvelope<'a> {
    #[serde(borrow, default)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    write_key: Option<Text<'a>>,
}

impl<'a> RawBody<'a> {
    /// Accepts one event, `{"sent_at": .., "events": [..]}` or a bare array of events.
    pub fn parse(body: &'a str, limits: &Limits) -> Result<Self, BodyError> {
        let malformed = |e: serde_json::Error| BodyError::Malformed(e.to_string());
        let parsed = match body.trim_start().as_bytes().first() {
            Some(b'[') => Self {
                sent_at: None,
                write_key: None,
                events: serde_json::from_str(body).map_err(malformed)?,
            },
            Some(b'{') => {
                let shape: BatchShape<'a> = serde_json::from_str(body).map_err(malformed)?;
                let events = match shape.events {
                    Some(events) => events,
                    None => vec![serde_json::from_str(body).map_err(malformed)?],
                };
                Self {
                    sent_at: shape.sent_at,
                    write_key: shape.write_key,
                    events,
                }
            }
            _ => {
                // Distinguish "not JSON at all" from "JSON of the wrong kind".
                return Err(match serde_json::from_str::<serde::de::IgnoredAny>(body) {
                    Ok(_) => BodyError::NotAnObjectOrArray,
                    Err(e) => malformed(e),
                });
            }
        };
        parsed.check_count(limits)
    }

    /// Segment's `/v1/batch` body or one Segment message (`/v1/track`, `/v1/page` ...).
    /// Batches from analytics.js may carry `sentAt` and `writeKey` on their messages only: the
    /// first message's are used then (a batch is sent at one instant, with one key).
    pub fn parse_segment(body: &'a str, limits: &Limits) -> Result<Self, BodyError> {
        let envelope: SegmentEnvelope<'a> = match body.trim_start().as_bytes().first() {
            Some(b'{') => {
                serde_json::from_str(body).map_err(|e| BodyError::Malformed(e.to_string()))?
            }
            _ => {
                return Err(match serde_json::from_str::<serde::de::IgnoredAny>(body) {
                    Ok(_) => BodyError::NotAnObjectOrArray,
                    Err(e) => BodyError::Malformed(e.to_string()),
                })
            }
        };
        let parsed = match envelope.batch {
            None => Self {
                sent_at: envelope.sent_at,
                write_key: envelope.write_key,
                events: vec![
                    serde_json::from_str(body).map_err(|e| BodyError::Malformed(e.to_string()))?
                ],
            },
            Some(events) => {
                let first: Option<SegmentEnvelope<'a>> =
                    match (&envelope.sent_at, &envelope.write_key) {
                        (Some(_), Some(_)) => None,
                        _ => events
                            .first()
                            .and_then(|m| serde_json::from_str(m.get()).ok()),
                    };
                let (first_sent_at, first_key) =
                    first.map_or((None, None), |f| (f.sent_at, f.write_key));
                Self {
                    sent_at: envelope.sent_at.or(first_sent_at),
                    write_key: envelope.write_key.or(first_key),
                    events,
                }
            }
        };
        parsed.check_count(limits)
    }

    fn check_count(self, limits: &Limits) -> Result<Self, BodyError> {
        let parsed = self;
        if parsed.events.is_empty() {
            return Err(BodyError::Empty);
        }
        if parsed.events.len() > limits.max_events_per_batch {
            return Err(BodyError::TooManyEvents {
                count: parsed.events.len(),
                max: limits.max_events_per_batch,
            });
        }
        Ok(parsed)
    }

    pub fn sent_at(&self) -> Result<Option<DateTime<Utc>>, BodyError> {
        self.sent_at
            .map(|v| parse_timestamp(v, "sent_at"))
            .transpose()
            .map_err(BodyError::Field)
    }
}

/// One refused event of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rejection {
    /// Position in the request's event list, from 0.
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub field: String,
    pub reason: String,
}

#[derive(Debug)]
pub struct BatchOutcome {
    pub accepted: Vec<Event>,
    pub rejected: Vec<Rejection>,
}

/// Validates every canonical event of a body; see [`parse_batch_as`].
pub fn parse_batch(
    body: &RawBody<'_>,
    project: &ProjectId,
    clock: &RequestClock,
    limits: &Limits,
    client_for: impl FnMut(Option<&str>) -> Arc<ClientInfo>,
) -> BatchOutcome {
    parse_batch_as(&Canonical, body, project, clock, limits, client_for)
}

/// Validates every event of a body read in `shape`. Valid events are accepted even when
/// others are not; a repeated `event_id` within the batch is dropped and reported.
///
/// `client_for` maps an event's `context.user_agent` (if any) to the sender description,
/// so the caller can parse and cache user agents.
pub fn parse_batch_as(
    shape: &impl EventShape,
    body: &RawBody<'_>,
    project: &ProjectId,
    clock: &RequestClock,
    limits: &Limits,
    mut client_for: impl FnMut(Option<&str>) -> Arc<ClientInfo>,
) -> BatchOutcome {
    let mut accepted = Vec::with_capacity(body.events.len());
    // The position in the request of each accepted event, for the duplicates' rejections.
    let mut accepted_at = Vec::with_capacity(body.events.len());
    let mut rejected = Vec::new();
    for (index, raw) in body.events.iter().enumerate() {
        let reject = |event_id: Option<String>, e: FieldError| Rejection {
            index,
            event_id,
            field: shape.client_field(&e.field).into_owned(),
            reason: e.reason,
        };
        let json = raw.get();
        if json.len() > limits.max_event_bytes {
            rejected.push(reject(
                None,
                FieldError::new(
                    "event",
                    format!(
                        "event is {} bytes, limit {}",
                        json.len(),
                        limits.max_event_bytes
                    ),
                ),
            ));
            continue;
        }
        let raw_event = match shape.decode(json) {
            Ok(e) => e,
            Err(e) => {
                rejected.push(reject(None, e));
                continue;
            }
        };
        // Borrowed from the body (a copy only if it had escapes), owned only if refused.
        let client_event_id = raw_event.event_id.clone();
        let client = client_for(
            raw_event
                .context
                .as_ref()
                .and_then(|c| c.user_agent.as_ref())
                .map(Text::as_str),
        );
        match Event::from_raw(raw_event, project, clock, client, limits) {
            Ok(event) => {
                accepted.push(event);
                accepted_at.push(index);
            }
            Err(e) => rejected.push(reject(client_event_id.map(String::from), e)),
        }
    }
    drop_repeated_ids(shape, &mut accepted, &accepted_at, &mut rejected);
    BatchOutcome { accepted, rejected }
}

/// Keeps the first event of each `event_id` and refuses the others, at their positions in
/// the request (`accepted_at`), among the other rejections in order of position.
///
/// An accepted event's id is the client's text as sent (or a fresh UUID, which repeats
/// nothing), so the rejection names it as the client sent it. Done once the batch is read,
/// so the ids are borrowed from the events instead of copied into a set one by one.
fn drop_repeated_ids(
    shape: &impl EventShape,
    accepted: &mut Vec<Event>,
    accepted_at: &[usize],
    rejected: &mut Vec<Rejection>,
) {
    if accepted.len() < 2 {
        return;
    }
    let mut seen = HashSet::with_capacity(accepted.len());
    let repeated: Vec<bool> = accepted
        .iter()
        .map(|event| !seen.insert(event.event_id().as_str()))
        .collect();
    drop(seen);
    if !repeated.contains(&true) {
        return;
    }
    let field = shape.client_field("event_id");
    for (i, event) in accepted.iter().enumerate() {
        if repeated[i] {
            rejected.push(Rejection {
                index: accepted_at[i],
                event_id: Some(event.event_id().as_str().to_owned()),
                field: field.clone().into_owned(),
                reason: "duplicate event_id in this batch: dropped".to_owned(),
            });
        }
    }
    rejected.sort_by_key(|r| r.index);
    let mut position = 0;
    accepted.retain(|_| {
        position += 1;
        !repeated[position - 1]
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn run(body: &str) -> Result<BatchOutcome, BodyError> {
        let limits = Limits::default();
        let raw = RawBody::parse(body, &limits)?;
        let received = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let clock = RequestClock::new(received, raw.sent_at()?, limits.max_future_seconds);
        let project = ProjectId::parse("default").unwrap();
        Ok(parse_batch(&raw, &project, &clock, &limits, |_| {
            Arc::default()
        }))
    }

    #[test]
    fn a_single_event_and_a_batch_are_both_accepted() {
        let one = run(r#"{"event_type":"click","user_id":"u1"}"#).unwrap();
        assert_eq!((one.accepted.len(), one.rejected.len()), (1, 0));
        let many = run(r#"{"events":[{"event_type":"click","user_id":"u1"},{"event_type":"page_view","anonymous_id":"a"}]}"#).unwrap();
        assert_eq!(many.accepted.len(), 2);
        let array = run(r#"[{"event_type":"click","user_id":7}]"#).unwrap();
        assert_eq!(array.accepted[0].user_id().unwrap().as_str(), "7");
    }

    #[test]
    fn valid_events_survive_invalid_neighbours() {
        let out = run(r#"{"events":[
            {"event_type":"click","user_id":"u1"},
            {"event_type":"click"},
            {"event_type":"click","user_id":{"nested":true}},
            {"user_id":"u2"},
            {"event_type":"click","user_id":"u1","page":{"url":5}}
        ]}"#)
        .unwrap();
        assert_eq!(out.accepted.len(), 1);
        let fields: Vec<(usize, &str)> = out
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                (1, "user_id"),
                (2, "user_id"),
                (3, "event_type"),
                (4, "page.url")
            ]
        );
    }

    #[test]
    fn duplicate_event_ids_in_one_batch_are_dropped_and_reported() {
        let out = run(r#"{"events":[
            {"event_id":"e1","event_type":"click","user_id":"u1"},
            {"event_id":"e1","event_type":"click","user_id":"u1"}
        ]}"#)
        .unwrap();
        assert_eq!(out.accepted.len(), 1);
        assert_eq!(out.rejected[0].index, 1);
        assert_eq!(out.rejected[0].event_id.as_deref(), Some("e1"));
    }

    #[test]
    fn repeated_ids_are_refused_in_order_among_other_rejections() {
        let out = run(r#"{"events":[
            {"event_id":"e1","event_type":"click","user_id":"u1"},
            {"event_id":"e1","event_type":"click"},
            {"event_id":"e1","event_type":"click","user_id":"u2"},
            {"event_id":"e2","event_type":"click","user_id":"u1"},
            {"event_id":"e2","user_id":"u1"},
            {"event_id":"e1","event_type":"click","user_id":"u3"},
            {"event_id":"e2","event_type":"click","user_id":"u4"}
        ]}"#)
        .unwrap();
        let users: Vec<&str> = out
            .accepted
            .iter()
            .map(|e| e.user_id().unwrap().as_str())
            .collect();
        assert_eq!(users, ["u1", "u1"]);
        let rejected: Vec<(usize, Option<&str>, &str)> = out
            .rejected
            .iter()
            .map(|r| (r.index, r.event_id.as_deref(), r.field.as_str()))
            .collect();
        assert_eq!(
            rejected,
            [
                (1, Some("e1"), "user_id"),
                (2, Some("e1"), "event_id"),
                (4, Some("e2"), "event_type"),
                (5, Some("e1"), "event_id"),
                (6, Some("e2"), "event_id"),
            ]
        );
    }

    #[test]
    fn a_repeated_id_is_named_as_the_shape_names_it() {
        let limits = Limits::default();
        let body = RawBody::parse_segment(
            r#"{"batch":[{"type":"track","event":"A","userId":"u","messageId":"m"},
                         {"type":"track","event":"A","userId":"u","messageId":"m"}]}"#,
            &limits,
        )
        .unwrap();
        let clock = RequestClock::new(Utc::now(), None, 60);
        let out = parse_batch_as(
            &crate::shape::Segment::default(),
            &body,
            &ProjectId::parse("p").unwrap(),
            &clock,
            &limits,
            |_| Arc::default(),
        );
        assert_eq!(out.accepted.len(), 1);
        assert_eq!(out.rejected[0].index, 1);
        assert_eq!(out.rejected[0].field, "messageId");
        assert_eq!(out.rejected[0].event_id.as_deref(), Some("m"));
    }

    #[test]
    fn sent_at_corrects_every_event_time() {
        // Client clock 1 h fast: it sent at 13:00 (server 12:00) an event stamped 12:59.
        let out = run(r#"{"sent_at":"2026-01-01T13:00:00Z","events":[
            {"event_type":"click","user_id":"u1","timestamp":"2026-01-01T12:59:00Z"}]}"#)
        .unwrap();
        let e = &out.accepted[0];
        assert_eq!(e.timestamp().to_rfc3339(), "2026-01-01T11:59:00+00:00");
        assert_eq!(
            e.timestamp_source(),
            crate::TimestampSource::ClientSkewCorrected
        );
    }

    #[test]
    fn body_level_errors_name_their_field() {
        assert_eq!(run("{").unwrap_err().field(), "body");
        assert_eq!(run("42").unwrap_err(), BodyError::NotAnObjectOrArray);
        assert_eq!(run(r#"{"events":[]}"#).unwrap_err(), BodyError::Empty);
        let too_many = format!(
            "[{}]",
            vec![r#"{"event_type":"x","user_id":"u"}"#; 501].join(",")
        );
        assert!(matches!(
            run(&too_many).unwrap_err(),
            BodyError::TooManyEvents {
                count: 501,
                max: 500
            }
        ));
        assert_eq!(
            run(r#"{"sent_at":"soon","events":[{}]}"#)
                .unwrap_err()
                .field(),
            "sent_at"
        );
    }

    #[test]
    fn events_round_trip_through_the_kafka_payload() {
        let out = run(r#"{"event_type":"Purchase","user_id":"u1","session_id":"s",
            "page":{"url":"https://shop.example/checkout?step=2","title":"Checkout"},
            "properties":{"amount":12.5,"items":[{"sku":"A"}]}}"#)
        .unwrap();
        let event = &out.accepted[0];
        let json = serde_json::to_string(event).unwrap();
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back.event_type().as_str(), "purchase");
        assert_eq!(back.page().unwrap().path.as_deref(), Some("/checkout"));
        assert_eq!(
            back.properties().unwrap().get(),
            r#"{"amount":12.5,"items":[{"sku":"A"}]}"#
        );
        assert_eq!(back.kafka_key(), "default:u1");
    }

    #[test]
    fn a_time_before_year_zero_is_refused_with_its_field() {
        // Issue 13: this event was accepted, then the worker could not insert it, ever.
        let out = run(r#"{"event_type":"click","anonymous_id":"a","timestamp":-100000000000000}"#)
            .unwrap();
        assert!(out.accepted.is_empty());
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].field, "timestamp");
        assert!(
            out.rejected[0].reason.contains("2000-01-01T00:00:00+00:00"),
            "{}",
            out.rejected[0].reason
        );
    }

    #[test]
    fn a_sent_at_outside_the_range_refuses_the_body() {
        let err = run(
            r#"{"sent_at":"1970-01-01T00:00:00Z","events":[{"event_type":"click","user_id":"u"}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.field(), "sent_at");
    }

    #[test]
    fn json_mysql_refuses_is_refused_in_every_shape() {
        let out = run(r#"{"events":[
            {"event_type":"click","user_id":"u","properties":{"s":"\ud800"}},
            {"event_type":"click","user_id":"u","user_properties":{"n":1e400}},
            {"event_type":"click","user_id":"u","properties":{"s":"\ud83d\ude00","t":"\\ud800"}}
        ]}"#)
        .unwrap();
        let fields: Vec<(usize, &str)> = out
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_str()))
            .collect();
        assert_eq!(fields, vec![(0, "properties"), (1, "user_properties")]);
        assert_eq!(out.accepted.len(), 1, "a surrogate pair is a character");

        let limits = Limits::default();
        let project = ProjectId::parse("p").unwrap();
        let clock = RequestClock::new(Utc::now(), None, 60);
        // Flat events gather loose fields into properties; Segment's traits are user_properties.
        let flat = RawBody::parse(
            r#"{"event_type":"x","user_id":"u","note":"\udc00"}"#,
            &limits,
        )
        .unwrap();
        let out = parse_batch_as(
            &crate::shape::Flat::new(),
            &flat,
            &project,
            &clock,
            &limits,
            |_| Arc::default(),
        );
        assert_eq!(out.rejected[0].field, "properties");
        let segment = RawBody::parse_segment(
            r#"{"type":"identify","userId":"u","traits":{"name":"\ud800x"}}"#,
            &limits,
        )
        .unwrap();
        let out = parse_batch_as(
            &crate::shape::Segment::default(),
            &segment,
            &project,
            &clock,
            &limits,
            |_| Arc::default(),
        );
        assert_eq!(out.rejected[0].field, "traits");
    }

    #[test]
    fn the_worker_fits_or_refuses_payloads_that_cannot_be_stored() {
        let ok = r#"{"schema_version":1,"event_id":"e","project":"p","event_type":"click","user_id":"u",
            "timestamp":"2026-01-01T00:00:00Z","timestamp_source":"server","received_at":"2026-01-01T00:00:00Z"}"#;
        for (from, to) in [
            ("\"timestamp\":\"2026", "\"timestamp\":\"0999"),
            ("\"received_at\":\"2026", "\"received_at\":\"1970"),
            (
                "\"user_id\":\"u\",",
                "\"user_id\":\"u\",\"properties\":{\"s\":\"\\ud800\"},",
            ),
        ] {
            let bad = ok.replace(from, to);
            assert_ne!(bad, ok);
            assert!(serde_json::from_str::<Event>(&bad).is_err(), "{bad}");
        }
        let long_version = ok.replace(
            "\"user_id\":\"u\",",
            &format!(
                "\"user_id\":\"u\",\"client\":{{\"browser_version\":\"{}\"}},\"page\":{{\"path\":\"/{}\"}},",
                "1.".repeat(100),
                "p".repeat(600)
            ),
        );
        let event: Event = serde_json::from_str(&long_version).unwrap();
        assert_eq!(
            event.client().browser_version.as_deref().map(str::len),
            Some(crate::columns::BROWSER_VERSION.width())
        );
        assert_eq!(
            event.page().unwrap().path.as_deref().map(str::len),
            Some(crate::columns::PAGE_PATH.width())
        );
    }

    #[test]
    fn the_worker_refuses_payloads_that_break_invariants() {
        let ok = r#"{"schema_version":1,"event_id":"e","project":"p","event_type":"click","user_id":"u",
            "timestamp":"2026-01-01T00:00:00Z","timestamp_source":"server","received_at":"2026-01-01T00:00:00Z"}"#;
        assert!(serde_json::from_str::<Event>(ok).is_ok());
        let no_identity = ok.replace(r#""user_id":"u","#, "");
        assert!(serde_json::from_str::<Event>(&no_identity).is_err());
        let future_schema = ok.replace(r#""schema_version":1"#, r#""schema_version":99"#);
        let err = serde_json::from_str::<Event>(&future_schema)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown schema version 99"), "{err}");
    }
}
