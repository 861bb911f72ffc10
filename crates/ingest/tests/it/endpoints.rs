//! Every endpoint shape, posted exactly as its client sends it, read back from the real Kafka
//! topic: payload, key and headers.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic as test failures

use std::io::Write;

use crate::support::{read_topic, Record, TestGateway};
use base64::Engine;
use serde_json::{json, Value};

const WRITE_KEY: &str = "wk_shop_test";

/// One event a request must put on the topic: its Kafka key, its event type, and checks on
/// its payload (JSON pointer -> value).
type Expected = (&'static str, &'static str, Vec<(&'static str, Value)>);

/// What one request must put on the topic.
struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    expect: Vec<Expected>,
}

fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn cases() -> Vec<Case> {
    let json_header = ("content-type", "application/json".to_owned());
    let key_header = ("x-write-key", WRITE_KEY.to_owned());
    vec![
        Case {
            name: "canonical single event",
            path: "/api/v1/events",
            headers: vec![json_header.clone(), key_header.clone()],
            body: json_body(&json!({
                "event_id": "0190c2a8-1111-7000-8000-000000000001", "event_type": "Page View",
                "user_id": "c-single", "session_id": "s-1",
                "page": {"url": "https://shop.example/products/7?ref=home", "title": "Shoes"},
                "context": {"library": {"name": "insightflow-js", "version": "1.2.0"}, "locale": "de-DE"}
            })),
            expect: vec![(
                "shop:c-single",
                "page_view",
                vec![
                    ("/page/path", json!("/products/7")),
                    ("/session_id", json!("s-1")),
                    ("/context/locale", json!("de-DE")),
                    ("/event_id", json!("0190c2a8-1111-7000-8000-000000000001")),
                ],
            )],
        },
        Case {
            name: "canonical batch with sent_at",
            path: "/api/v1/events/batch",
            headers: vec![json_header.clone(), key_header.clone()],
            body: json_body(&json!({
                "sent_at": "2030-01-01T00:00:00Z",
                "events": [
                    {"event_type": "click", "anonymous_id": "c-batch", "timestamp": "2030-01-01T00:00:00Z",
                     "element": {"tag": "button", "classes": ["buy", "primary"], "x": 10.4, "y": 20}},
                    {"event_type": "scroll", "anonymous_id": "c-batch", "properties": {"depth": 75}}
                ]
            })),
            expect: vec![
                (
                    "shop:c-batch",
                    "click",
                    vec![
                        ("/element/classes", json!("buy primary")),
                        ("/element/x", json!(10)),
                        ("/timestamp_source", json!("client_skew_corrected")),
                    ],
                ),
                (
                    "shop:c-batch",
                    "scroll",
                    vec![("/properties/depth", json!(75))],
                ),
            ],
        },
        Case {
            name: "sendBeacon: text/plain, key in the query, gzip",
            path: "/api/v1/events?key=wk_shop_test",
            headers: vec![
                ("content-type", "text/plain;charset=UTF-8".to_owned()),
                ("content-encoding", "gzip".to_owned()),
            ],
            body: gzip(&json_body(
                &json!([{"event_type": "form_submit", "user_id": 77}]),
            )),
            expect: vec![("shop:77", "form_submit", vec![])],
        },
        Case {
            name: "reference collector {type, data}",
            path: "/api/v1/events",
            headers: vec![json_header.clone(), key_header.clone()],
            body: json_body(
                &json!({"type": "search", "data": {"user_id": "c-typed", "query": "red shoes"}}),
            ),
            expect: vec![(
                "shop:c-typed",
                "search",
                vec![("/properties/query", json!("red shoes"))],
            )],
        },
        Case {
            name: "analytics-node batch (Basic auth, top-level sentAt)",
            path: "/v1/batch",
            headers: vec![
                json_header.clone(),
                ("authorization", basic(WRITE_KEY)),
                ("user-agent", "analytics-node-next/latest".to_owned()),
            ],
            body: json_body(&json!({
                "batch": [
                    {"userId": "seg-node", "event": "Order Completed",
                     "properties": {"order_id": "o-1", "revenue": 42.5},
                     "type": "track", "messageId": "node-next-1700000000000-aa11",
                     "timestamp": "2026-01-01T10:00:00.000Z",
                     "context": {"library": {"name": "@segment/analytics-node", "version": "2.1.0"}},
                     "_metadata": {"jsRuntime": "node"}, "integrations": {}},
                    {"userId": "seg-node", "traits": {"email": "a@shop.example", "plan": "pro"},
                     "type": "identify", "messageId": "node-next-1700000000000-bb22",
                     "timestamp": "2026-01-01T10:00:01.000Z",
                     "context": {"library": {"name": "@segment/analytics-node", "version": "2.1.0"}},
                     "_metadata": {"jsRuntime": "node"}, "integrations": {}}
                ],
                "sentAt": "2026-01-01T10:00:02.000Z"
            })),
            expect: vec![
                (
                    "shop:seg-node",
                    "purchase",
                    vec![
                        ("/event_name", json!("Order Completed")),
                        ("/event_id", json!("node-next-1700000000000-aa11")),
                        ("/properties/order_id", json!("o-1")),
                        ("/context/library/name", json!("@segment/analytics-node")),
                    ],
                ),
                (
                    "shop:seg-node",
                    "identify",
                    vec![("/user_properties/plan", json!("pro"))],
                ),
            ],
        },
        Case {
            name: "analytics.js track (text/plain to /v1/t, writeKey in the body)",
            path: "/v1/t",
            headers: vec![("content-type", "text/plain".to_owned())],
            body: json_body(&json!({
                "timestamp": "2026-01-01T10:00:00.000Z", "integrations": {}, "type": "track",
                "properties": {"product_id": "p-9", "price": 19.9}, "event": "Product Added",
                "messageId": "ajs-next-1700000000000-7a1b", "anonymousId": "seg-ajs",
                "context": {
                    "page": {"path": "/p/9", "referrer": "https://www.google.com/", "search": "",
                             "title": "Sneaker", "url": "https://shop.example/p/9"},
                    "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                    "locale": "en-US", "library": {"name": "analytics.js", "version": "npm:next-1.70.0"},
                    "timezone": "Europe/Berlin"
                },
                "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
                "writeKey": WRITE_KEY, "userId": null, "sentAt": "2026-01-01T10:00:00.120Z"
            })),
            expect: vec![(
                "shop:seg-ajs",
                "cart_add",
                vec![
                    ("/event_name", json!("Product Added")),
                    ("/page/title", json!("Sneaker")),
                    ("/page/referrer", json!("https://www.google.com/")),
                    ("/context/timezone", json!("Europe/Berlin")),
                    ("/client/device_type", json!("mobile")),
                ],
            )],
        },
        Case {
            name: "analytics.js batching (/v1/b)",
            path: "/v1/b",
            headers: vec![("content-type", "text/plain".to_owned())],
            body: json_body(&json!({
                "writeKey": WRITE_KEY,
                "batch": [
                    {"type": "page", "name": "Home", "properties": {"path": "/", "url": "https://shop.example/", "title": "Home"},
                     "anonymousId": "seg-ajs-b", "messageId": "ajs-next-b-1", "writeKey": WRITE_KEY,
                     "timestamp": "2026-01-01T10:00:00.000Z", "context": {"library": {"name": "analytics.js", "version": "npm:next-1.70.0"}}},
                    {"type": "track", "event": "Signed Up!", "anonymousId": "seg-ajs-b", "messageId": "ajs-next-b-2",
                     "writeKey": WRITE_KEY, "timestamp": "2026-01-01T10:00:01.000Z"}
                ],
                "sentAt": "2026-01-01T10:00:02.000Z"
            })),
            expect: vec![
                (
                    "shop:seg-ajs-b",
                    "page_view",
                    vec![
                        ("/event_name", json!("Home")),
                        ("/page/url", json!("https://shop.example/")),
                    ],
                ),
                (
                    "shop:seg-ajs-b",
                    "signed_up",
                    vec![("/event_name", json!("Signed Up!"))],
                ),
            ],
        },
        segment_single(
            "/v1/track",
            json!({"userId": "seg-http-track", "event": "Products Searched", "properties": {"query": "boots"}}),
            "shop:seg-http-track",
            "search",
        ),
        segment_single(
            "/v1/identify",
            json!({"userId": "seg-http-identify", "traits": {"name": "Ada"}}),
            "shop:seg-http-identify",
            "identify",
        ),
        segment_single(
            "/v1/page",
            json!({"anonymousId": "seg-http-page", "name": "Pricing", "properties": {"url": "https://shop.example/pricing"}}),
            "shop:seg-http-page",
            "page_view",
        ),
        segment_single(
            "/v1/screen",
            json!({"userId": "seg-http-screen", "name": "Cart"}),
            "shop:seg-http-screen",
            "screen_view",
        ),
        segment_single(
            "/v1/group",
            json!({"userId": "seg-http-group", "groupId": "acme", "traits": {"seats": 5}}),
            "shop:seg-http-group",
            "group",
        ),
        segment_single(
            "/v1/alias",
            json!({"userId": "seg-http-alias", "previousId": "anon-1"}),
            "shop:seg-http-alias",
            "alias",
        ),
        segment_single(
            "/v1/i",
            json!({"type": "identify", "anonymousId": "seg-short-i", "traits": {}}),
            "shop:seg-short-i",
            "identify",
        ),
        segment_single(
            "/v1/p",
            json!({"type": "page", "anonymousId": "seg-short-p"}),
            "shop:seg-short-p",
            "page_view",
        ),
        segment_single(
            "/v1/s",
            json!({"type": "screen", "anonymousId": "seg-short-s", "name": "Home"}),
            "shop:seg-short-s",
            "screen_view",
        ),
        segment_single(
            "/v1/g",
            json!({"type": "group", "anonymousId": "seg-short-g", "groupId": 7}),
            "shop:seg-short-g",
            "group",
        ),
        segment_single(
            "/v1/a",
            json!({"type": "alias", "userId": "seg-short-a", "previousId": "x"}),
            "shop:seg-short-a",
            "alias",
        ),
        Case {
            name: "reference /api/v1/track",
            path: "/api/v1/track",
            headers: vec![json_header.clone(), key_header.clone()],
            body: json_body(
                &json!({"event_type": "page_view", "event_name": "homepage_visited",
                "session_id": "ref-track", "page_url": "https://example.com/", "referrer": "https://ref.example/"}),
            ),
            expect: vec![(
                "shop:ref-track",
                "page_view",
                vec![
                    ("/event_name", json!("homepage_visited")),
                    ("/anonymous_id", json!("ref-track")),
                    ("/page/referrer", json!("https://ref.example/")),
                ],
            )],
        },
        Case {
            name: "reference /api/v1/track/batch",
            path: "/api/v1/track/batch",
            headers: vec![json_header.clone(), key_header.clone()],
            body: json_body(&json!({"events": [
                {"event_type": "page_view", "event_name": "page_visited", "user_id": "ref-batch"},
                {"event_type": "click", "event_name": "button_clicked", "user_id": "ref-batch", "button": "buy"}
            ]})),
            expect: vec![
                (
                    "shop:ref-batch",
                    "page_view",
                    vec![("/event_name", json!("page_visited"))],
                ),
                (
                    "shop:ref-batch",
                    "click",
                    vec![("/properties/button", json!("buy"))],
                ),
            ],
        },
        Case {
            name: "reference /api/v1/page-view",
            path: "/api/v1/page-view",
            headers: vec![json_header.clone(), key_header.clone()],
            body: json_body(
                &json!({"user_id": "ref-pv", "page_url": "https://example.com/a?b=1", "page_title": "A"}),
            ),
            expect: vec![(
                "shop:ref-pv",
                "page_view",
                vec![("/page/path", json!("/a")), ("/page/title", json!("A"))],
            )],
        },
        Case {
            name: "reference /api/v1/product-view",
            path: "/api/v1/product-view",
            headers: vec![json_header.clone(), key_header.clone()],
            body: json_body(
                &json!({"user_id": "ref-prv", "product_id": "sku-1", "price": 99.0, "category": "shoes"}),
            ),
            expect: vec![(
                "shop:ref-prv",
                "product_view",
                vec![
                    ("/properties/product_id", json!("sku-1")),
                    ("/properties/category", json!("shoes")),
                ],
            )],
        },
        Case {
            name: "reference /api/v1/purchase",
            path: "/api/v1/purchase",
            headers: vec![json_header, key_header],
            body: json_body(
                &json!({"user_id": "ref-buy", "order_id": "o-77", "total": 120.5, "currency": "EUR",
                "items": [{"product_id": "sku-1", "quantity": 2}]}),
            ),
            expect: vec![(
                "shop:ref-buy",
                "purchase",
                vec![
                    ("/properties/order_id", json!("o-77")),
                    ("/properties/items/0/quantity", json!(2)),
                ],
            )],
        },
    ]
}

/// A call to Segment's HTTP API as its docs show it: Basic auth with the write key.
fn segment_single(
    path: &'static str,
    body: Value,
    key: &'static str,
    event_type: &'static str,
) -> Case {
    Case {
        name: path,
        path,
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("authorization", basic(WRITE_KEY)),
        ],
        body: json_body(&body),
        expect: vec![(key, event_type, vec![])],
    }
}

fn check_record(case: &str, record: &Record, event_type: &str, checks: &[(&str, Value)]) {
    let p = &record.payload;
    assert_eq!(p["event_type"], event_type, "{case}: {p}");
    assert_eq!(p["project"], "shop", "{case}");
    assert_eq!(
        p["schema_version"],
        insightflow_model::SCHEMA_VERSION,
        "{case}"
    );
    assert_eq!(
        record.headers["schema-version"],
        insightflow_model::SCHEMA_VERSION_TEXT,
        "{case}"
    );
    assert_eq!(record.headers["event-type"], event_type, "{case}");
    assert_eq!(record.headers["project"], "shop", "{case}");
    assert_eq!(
        record.headers["event-id"],
        p["event_id"].as_str().unwrap(),
        "{case}"
    );
    assert!(p["received_at"].is_string(), "{case}");
    assert!(p["client"]["ip"].is_string(), "{case}: client ip recorded");
    for (pointer, expected) in checks {
        assert_eq!(
            p.pointer(pointer),
            Some(expected),
            "{case}: {pointer} in {p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_shape_reaches_kafka_with_its_key_payload_and_headers() {
    let gateway = TestGateway::spawn(|s| {
        s.auth.write_keys = vec![format!("{WRITE_KEY}=shop")];
    })
    .await;
    let cases = cases();
    let mut expected = 0;
    for case in &cases {
        let mut request = gateway
            .http
            .post(gateway.url(case.path))
            .body(case.body.clone());
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{}: {body}", case.name);
        assert_eq!(
            body["success"], true,
            "{}: Segment SDKs look for success",
            case.name
        );
        assert_eq!(body["accepted"], case.expect.len(), "{}: {body}", case.name);
        assert_eq!(body["rejected"], json!([]), "{}", case.name);
        expected += case.expect.len();
    }

    let records = read_topic(&gateway.topic, expected).await;
    for case in &cases {
        for (key, event_type, checks) in &case.expect {
            let record = records
                .iter()
                .find(|r| r.key == *key && r.payload["event_type"] == *event_type)
                .unwrap_or_else(|| panic!("{}: no {event_type} message keyed {key}", case.name));
            check_record(case.name, record, event_type, checks);
        }
    }
    // One user's events share a key, hence a partition, hence an order.
    let node: Vec<&Record> = records
        .iter()
        .filter(|r| r.key == "shop:seg-node")
        .collect();
    assert_eq!(node.len(), 2);
    assert_eq!(node[0].payload["event_type"], "purchase");
    assert_eq!(node[1].payload["event_type"], "identify");
    gateway.stop().await;
}
