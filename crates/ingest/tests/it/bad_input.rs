//! Bad input, table-driven, through the real HTTP app: every case gets its status and a JSON
//! error body naming the field and the reason.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic as test failures

use std::io::Write;

use crate::support::{read_topic, TestGateway};
use serde_json::{json, Value};

const KEY: &str = "wk_bad_input";

struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    status: u16,
    error: &'static str,
    /// The top-level `field`, or for 400 `no_valid_events` the first rejection's field.
    field: &'static str,
    /// Part of the reason the client reads.
    reason: &'static str,
}

fn nested(depth: usize) -> String {
    format!(
        r#"{{"event_type":"click","user_id":"u","properties":{}1{}}}"#,
        r#"{"a":"#.repeat(depth),
        "}".repeat(depth)
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn case(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    error: &'static str,
    field: &'static str,
    reason: &'static str,
) -> Case {
    Case {
        name,
        path: "/api/v1/events",
        headers: vec![("content-type", "application/json"), ("x-write-key", KEY)],
        body: body.into(),
        status,
        error,
        field,
        reason,
    }
}

fn cases() -> Vec<Case> {
    let event = r#"{"event_type":"click","user_id":"u"}"#;
    let too_many = format!("[{}]", [event; 11].join(","));
    let big_event = format!(
        r#"{{"event_type":"click","user_id":"u","properties":{{"blob":"{}"}}}}"#,
        "x".repeat(5000)
    );
    let big_body = format!(r#"{{"events":[],"pad":"{}"}}"#, "x".repeat(70_000));
    let bomb = gzip(&vec![b' '; 4 * 1024 * 1024]);
    vec![
        case(
            "malformed JSON",
            r#"{"event_type":"click","#,
            400,
            "invalid_body",
            "body",
            "not valid JSON",
        ),
        case(
            "not an object",
            "42",
            400,
            "invalid_body",
            "body",
            "must be a JSON object",
        ),
        case(
            "wrong type of a field",
            r#"{"event_type":"click","user_id":{"a":1}}"#,
            400,
            "no_valid_events",
            "user_id",
            "a string or an integer",
        ),
        case(
            "wrong type of the event type",
            r#"{"event_type":5,"user_id":"u"}"#,
            400,
            "no_valid_events",
            "event_type",
            "expected a string",
        ),
        case(
            "missing ids",
            r#"{"event_type":"click"}"#,
            400,
            "no_valid_events",
            "user_id",
            "user_id or anonymous_id is required",
        ),
        case(
            "missing event type",
            r#"{"user_id":"u"}"#,
            400,
            "no_valid_events",
            "event_type",
            "is required",
        ),
        case(
            "event type outside the pattern",
            r#"{"event_type":"1click","user_id":"u"}"#,
            400,
            "no_valid_events",
            "event_type",
            "must match",
        ),
        case(
            "empty batch",
            r#"{"events":[]}"#,
            400,
            "invalid_body",
            "events",
            "no events",
        ),
        case(
            "oversize body",
            big_body,
            413,
            "payload_too_large",
            "body",
            "exceeds 65536 bytes",
        ),
        case(
            "oversize event",
            big_event,
            400,
            "no_valid_events",
            "event",
            "limit 4096",
        ),
        case(
            "too many events",
            too_many,
            413,
            "payload_too_large",
            "events",
            "limit 10",
        ),
        case(
            "deep properties",
            nested(9),
            400,
            "no_valid_events",
            "properties",
            "limit 8",
        ),
        case(
            "bad timestamp",
            r#"{"event_type":"click","user_id":"u","timestamp":"yesterday"}"#,
            400,
            "no_valid_events",
            "timestamp",
            "RFC 3339",
        ),
        case(
            "bad sent_at",
            r#"{"sent_at":"soon","events":[{"event_type":"click","user_id":"u"}]}"#,
            400,
            "invalid_body",
            "sent_at",
            "RFC 3339",
        ),
        case(
            "time before year 0 (issue 13: accepted, then unstorable)",
            r#"{"event_type":"click","anonymous_id":"a","timestamp":-100000000000000}"#,
            400,
            "no_valid_events",
            "timestamp",
            "the earliest time accepted",
        ),
        case(
            "time after year 9999",
            r#"{"event_type":"click","user_id":"u","timestamp":253402300800000}"#,
            400,
            "no_valid_events",
            "timestamp",
            "the latest time that can be stored",
        ),
        case(
            "sent_at out of range",
            r#"{"sent_at":"1970-01-01T00:00:00Z","events":[{"event_type":"click","user_id":"u"}]}"#,
            400,
            "invalid_body",
            "sent_at",
            "the earliest time accepted",
        ),
        case(
            "unpaired surrogate in properties",
            r#"{"event_type":"click","user_id":"u","properties":{"s":"\ud800"}}"#,
            400,
            "no_valid_events",
            "properties",
            "unpaired UTF-16 surrogate",
        ),
        case(
            "non-UTF-8",
            vec![b'{', 0xff, 0xfe, b'}'],
            400,
            "invalid_body",
            "body",
            "UTF-8",
        ),
        Case {
            headers: vec![
                ("content-type", "application/json"),
                ("x-write-key", KEY),
                ("content-encoding", "gzip"),
            ],
            ..case(
                "gzip bomb",
                bomb,
                413,
                "payload_too_large",
                "body",
                "decompressed body exceeds",
            )
        },
        Case {
            headers: vec![
                ("content-type", "application/json"),
                ("x-write-key", KEY),
                ("content-encoding", "gzip"),
            ],
            ..case(
                "corrupt gzip",
                "not gzip at all",
                415,
                "unsupported_media_type",
                "content-encoding",
                "not valid gzip",
            )
        },
        Case {
            headers: vec![
                ("content-type", "application/json"),
                ("x-write-key", KEY),
                ("content-encoding", "br"),
            ],
            ..case(
                "unsupported encoding",
                event,
                415,
                "unsupported_media_type",
                "content-encoding",
                "\"br\" is not supported",
            )
        },
        Case {
            headers: vec![("content-type", "application/xml"), ("x-write-key", KEY)],
            ..case(
                "unsupported media type",
                event,
                415,
                "unsupported_media_type",
                "content-type",
                "application/xml",
            )
        },
        Case {
            headers: vec![
                ("content-type", "application/json"),
                ("x-write-key", "wk_nope"),
            ],
            ..case(
                "unknown key",
                event,
                401,
                "unauthorized",
                "write_key",
                "unknown write key",
            )
        },
        Case {
            headers: vec![("content-type", "application/json")],
            ..case(
                "missing key",
                event,
                401,
                "unauthorized",
                "write_key",
                "a write key is required",
            )
        },
        Case {
            path: "/v1/track",
            ..case(
                "Segment field names in rejections",
                format!(r#"{{"writeKey":"{KEY}","event":"x","userId":[1]}}"#),
                400,
                "no_valid_events",
                "userId",
                "a string or an integer",
            )
        },
        Case {
            path: "/v1/batch",
            ..case(
                "Segment call without a type",
                format!(r#"{{"writeKey":"{KEY}","batch":[{{"userId":"u"}}]}}"#),
                400,
                "no_valid_events",
                "type",
                "is required",
            )
        },
        Case {
            path: "/api/v1/track",
            ..case(
                "reference field names in rejections",
                r#"{"event_type":"x","user_id":"u","page_url":7}"#,
                400,
                "no_valid_events",
                "page_url",
                "expected a string",
            )
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_status_and_a_json_error_naming_field_and_reason() {
    let gateway = TestGateway::spawn(|s| {
        s.auth.write_keys = vec![format!("{KEY}=shop")];
        s.limits.max_body_bytes = 64 * 1024;
        s.limits.max_event_bytes = 4096;
        s.limits.max_events_per_batch = 10;
    })
    .await;
    let mut failures = Vec::new();
    for case in cases() {
        let mut request = gateway
            .http
            .post(gateway.url(case.path))
            .body(case.body.clone());
        for (name, value) in &case.headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let field = if case.error == "no_valid_events" {
            assert_eq!(body["field"], "events", "{}", case.name);
            &body["rejected"][0]["field"]
        } else {
            &body["field"]
        };
        let reason = if case.error == "no_valid_events" {
            &body["rejected"][0]["reason"]
        } else {
            &body["reason"]
        };
        let ok = status == case.status
            && content_type.as_deref() == Some("application/json")
            && body["error"] == case.error
            && *field == case.field
            && reason.as_str().is_some_and(|r| r.contains(case.reason));
        if !ok {
            failures.push(format!(
                "{}: expected {} {} field={} reason~{:?}, got {status} {body}",
                case.name, case.status, case.error, case.field, case.reason
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // A timestamp far in the future is not an error: the event is kept, at the receive time.
    let response = gateway
        .http
        .post(gateway.url("/api/v1/events"))
        .header("x-write-key", KEY)
        .json(&json!({"event_type": "click", "user_id": "future", "timestamp": "2100-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let records = read_topic(&gateway.topic, 1).await;
    assert_eq!(
        records[0].key, "shop:future",
        "refused requests put nothing on the topic"
    );
    let event = &records[0].payload;
    assert_eq!(event["timestamp_source"], "clamped", "{event}");
    assert_eq!(event["timestamp"], event["received_at"], "{event}");
    assert_eq!(event["client_timestamp"], "2100-01-01T00:00:00Z", "{event}");
    gateway.stop().await;
}
