//! Property tests of body parsing: valid events survive the whole path unchanged, and no
//! input, however broken, panics or goes unanswered.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic as test failures

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use insightflow_model::shape::{Canonical, EventShape, Flat, Segment};
use insightflow_model::{parse_batch_as, Event, Limits, ProjectId, RawBody, RequestClock};
use proptest::prelude::*;
use serde_json::{json, Value};

fn clock() -> RequestClock {
    RequestClock::new(
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap(),
        None,
        60,
    )
}

/// Every event of a parsed body is either accepted or rejected with a field and a reason.
fn check_accounted(body: &str, shape: &impl EventShape, segment: bool) {
    let limits = Limits::default();
    let parsed = if segment {
        RawBody::parse_segment(body, &limits)
    } else {
        RawBody::parse(body, &limits)
    };
    match parsed {
        Err(e) => {
            assert!(!e.field().is_empty(), "{e:?}");
            assert!(!e.to_string().is_empty());
        }
        Ok(raw) => {
            let project = ProjectId::parse("p").unwrap();
            let out = parse_batch_as(shape, &raw, &project, &clock(), &limits, |_| Arc::default());
            assert_eq!(out.accepted.len() + out.rejected.len(), raw.events.len());
            for r in &out.rejected {
                assert!(!r.field.is_empty() && !r.reason.is_empty(), "{r:?}");
            }
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("event_type"),
            Just("user_id"),
            Just("click"),
            Just("2026-01-01T00:00:00Z")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("event_type".to_owned()),
            Just("user_id".to_owned()),
            Just("anonymous_id".to_owned()),
            Just("events".to_owned()),
            Just("batch".to_owned()),
            Just("type".to_owned()),
            Just("data".to_owned()),
            Just("properties".to_owned()),
            Just("page".to_owned()),
            Just("sent_at".to_owned()),
            "[a-zA-Z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_and_always_get_an_answer(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            check_accounted(text, &Canonical, false);
            check_accounted(text, &Flat::new(), false);
            check_accounted(text, &Segment::default(), true);
        }
    }

    #[test]
    fn arbitrary_json_never_panics_and_always_gets_an_answer(value in json_value()) {
        let text = value.to_string();
        check_accounted(&text, &Canonical, false);
        check_accounted(&text, &Flat::of_type("purchase"), false);
        check_accounted(&text, &Segment::default(), true);
    }

    #[test]
    fn any_valid_event_round_trips_through_the_kafka_payload(
        event_type in "[a-z][a-z0-9_]{0,30}",
        user_id in "[A-Za-z0-9_@.-]{1,40}",
        session_id in proptest::option::of("[A-Za-z0-9-]{1,36}"),
        path in "(/[a-z0-9]{1,8}){0,4}",
        title in proptest::option::of("[^\u{0}-\u{1f}]{0,40}"),
        props in prop::collection::btree_map("[a-z]{1,6}", any::<i32>(), 0..5),
        millis in 1_600_000_000_000i64..1_767_225_600_000i64,
    ) {
        let mut event = json!({
            "event_type": event_type,
            "user_id": user_id,
            "timestamp": millis,
            "page": {"url": format!("https://shop.example{path}?q=1")},
            "properties": props,
        });
        if let Some(s) = &session_id {
            event["session_id"] = json!(s);
        }
        if let Some(t) = &title {
            event["page"]["title"] = json!(t);
        }
        let body = event.to_string();
        let limits = Limits::default();
        let raw = RawBody::parse(&body, &limits).unwrap();
        let project = ProjectId::parse("p").unwrap();
        let out = parse_batch_as(&Canonical, &raw, &project, &clock(), &limits, |_| Arc::default());
        prop_assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        let accepted = &out.accepted[0];
        let payload = serde_json::to_string(accepted).unwrap();
        let back: Event = serde_json::from_str(&payload).unwrap();
        prop_assert_eq!(back.event_type().as_str(), event_type.as_str());
        prop_assert_eq!(back.user_id().unwrap().as_str(), user_id.as_str());
        prop_assert_eq!(back.session_id().map(|s| s.as_str().to_owned()), session_id);
        prop_assert_eq!(back.timestamp().timestamp_millis(), millis);
        let page = back.page().unwrap();
        let expected_path = if path.is_empty() { "/".to_owned() } else { path.clone() };
        prop_assert_eq!(page.path.as_deref(), Some(expected_path.as_str()));
        prop_assert_eq!(page.title.as_deref(), title.as_deref().filter(|t| !t.is_empty()));
        let sent: Value = serde_json::from_str(back.properties().unwrap().get()).unwrap();
        prop_assert_eq!(sent, json!(props));
        prop_assert_eq!(back.kafka_key(), format!("p:{user_id}"));
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), payload);
    }
}
