//! Any request body, through every shape's parser: it must never panic, and every event
//! must come out accepted or rejected with a field and a reason, and every accepted one
//! written to Kafka as serde writes it.
#![no_main]

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use insightflow_model::shape::{Canonical, EventShape, Flat, Segment};
use insightflow_model::{
    parse_batch_as, Event, Limits, PayloadWriter, ProjectId, RawBody, RequestClock,
};
use libfuzzer_sys::fuzz_target;

fn check(body: &str, shape: &impl EventShape, segment: bool) {
    let limits = Limits::default();
    let parsed = if segment {
        RawBody::parse_segment(body, &limits)
    } else {
        RawBody::parse(body, &limits)
    };
    let raw = match parsed {
        Ok(raw) => raw,
        Err(e) => {
            assert!(!e.field().is_empty());
            return;
        }
    };
    let received = Utc
        .timestamp_opt(1_767_225_600, 0)
        .single()
        .expect("a fixed instant");
    let sent_at = match raw.sent_at() {
        Ok(sent_at) => sent_at,
        Err(e) => {
            assert!(!e.field().is_empty());
            return;
        }
    };
    let clock = RequestClock::new(received, sent_at, limits.max_future_seconds);
    let project = ProjectId::parse("fuzz").expect("a valid project");
    let out = parse_batch_as(shape, &raw, &project, &clock, &limits, |_| Arc::default());
    assert_eq!(out.accepted.len() + out.rejected.len(), raw.events.len());
    for rejection in &out.rejected {
        assert!(!rejection.field.is_empty() && !rejection.reason.is_empty());
    }
    let mut writer = PayloadWriter::new();
    for event in &out.accepted {
        // What the gateway writes to Kafka is what serde writes, and must read back as an
        // Event (the worker's check).
        let payload = serde_json::to_string(event).expect("an event serializes");
        let mut written = Vec::new();
        writer.write(event, &mut written);
        assert_eq!(
            written,
            payload.as_bytes(),
            "the payload writer and serde disagree"
        );
        if let Err(e) = serde_json::from_str::<Event>(&payload) {
            panic!("an accepted event does not read back: {e}: {payload}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    check(body, &Canonical, false);
    check(body, &Flat::new(), false);
    check(body, &Segment::default(), true);
});
