//! Events written straight through the worker's stores, as the consumer writes them, without
//! Kafka: validated as the gateway validates them, then given the messages they would have
//! come in.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use insightflow_model::{parse_batch, ClientInfo, Event, Limits, ProjectId, RawBody, RequestClock};
use insightflow_worker::store::mysql::{Source, Sourced};
use serde_json::{json, Value};

/// `raw` events of project `default` as the gateway would have published them; every one
/// must be valid.
pub fn validated(raw: &[Value], now: DateTime<Utc>) -> Vec<Event> {
    let body = json!({ "events": raw }).to_string();
    let limits = Limits::default();
    let parsed = RawBody::parse(&body, &limits).expect("a valid body");
    let clock = RequestClock::new(now, None, limits.max_future_seconds);
    let outcome = parse_batch(
        &parsed,
        &ProjectId::parse("default").expect("a valid project"),
        &clock,
        &limits,
        |_| Arc::new(ClientInfo::default()),
    );
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    outcome.accepted
}

/// `events` as consecutive messages of one partition, from offset 0.
pub fn sourced<'a>(events: &'a [Event], topic: &'a str, partition: i32) -> Vec<Sourced<'a>> {
    events
        .iter()
        .zip(0..)
        .map(|(event, offset)| Sourced {
            event,
            source: Source {
                topic,
                partition,
                offset,
            },
        })
        .collect()
}
