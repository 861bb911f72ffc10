//! The HTTP contract around the events: the OpenAPI document covers every registered route,
//! CORS preflights are answered and cacheable, rate limits answer 429 with Retry-After.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic as test failures

use crate::support::TestGateway;
use insightflow_ingest::routes::ENDPOINTS;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_lists_every_registered_route() {
    let gateway = TestGateway::spawn(|_| {}).await;
    let response = gateway
        .http
        .get(gateway.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let mut missing = Vec::new();
    for endpoint in ENDPOINTS {
        if doc["paths"][endpoint.path][endpoint.method].is_null() {
            missing.push(format!("{} {}", endpoint.method, endpoint.path));
        }
    }
    assert!(missing.is_empty(), "not documented: {missing:?}");
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        ENDPOINTS.len(),
        "the document lists routes the app does not serve"
    );
    for schema in [
        "BatchReport",
        "Rejection",
        "ErrorBody",
        "CanonicalEvent",
        "SegmentMessage",
        "FlatEvent",
        "Limits",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }

    let limits: Value = gateway
        .http
        .get(gateway.url("/api/v1/limits"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(limits["limits"]["max_events_per_batch"], 500);
    assert_eq!(
        limits["content_encodings"],
        json!(["identity", "gzip", "deflate"])
    );

    // A route answers its own method only; any other is not found.
    let wrong_method = [
        gateway.http.get(gateway.url("/api/v1/events")),
        gateway.http.post(gateway.url("/health")),
    ];
    for request in wrong_method {
        assert_eq!(request.send().await.unwrap().status(), 404);
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_for_allowed_origins_only_and_cached() {
    let gateway = TestGateway::spawn(|s| {
        s.http.cors_allowed_origins = vec!["https://shop.example".to_owned()];
        s.http.cors_max_age_seconds = 600;
    })
    .await;
    let preflight = |origin: &'static str| {
        gateway
            .http
            .request(reqwest::Method::OPTIONS, gateway.url("/v1/t"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, x-write-key",
            )
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert_eq!(allowed.status(), 200);
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(headers["access-control-max-age"], "600");
    let methods = headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");

    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));

    let post = gateway
        .http
        .post(gateway.url("/api/v1/events"))
        .header("origin", "https://shop.example")
        .json(&json!({"event_type": "click", "user_id": "cors"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    assert_eq!(
        post.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after_per_ip_and_per_key() {
    let gateway = TestGateway::spawn(|s| {
        // Buckets that do not refill while the test runs.
        s.rate_limit.per_ip_per_second = 0.001;
        s.rate_limit.per_ip_burst = 3;
        s.rate_limit.per_write_key_per_second = 0.001;
        s.rate_limit.per_write_key_burst = 1;
    })
    .await;
    let post = |key: Option<&'static str>| {
        let mut request = gateway
            .http
            .post(gateway.url("/api/v1/events"))
            .json(&json!({"event_type": "click", "user_id": "limited"}));
        if let Some(key) = key {
            request = request.header("x-write-key", key);
        }
        request.send()
    };
    assert_eq!(post(Some("k1")).await.unwrap().status(), 200);
    let by_key = post(Some("k1")).await.unwrap();
    assert_eq!(by_key.status(), 429);
    assert!(
        by_key.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let body: Value = by_key.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["reason"], "rate limit exceeded for this write_key");

    assert_eq!(
        post(None).await.unwrap().status(),
        200,
        "third request from this IP"
    );
    let by_ip = post(Some("k2")).await.unwrap();
    assert_eq!(by_ip.status(), 429);
    assert!(by_ip.headers().contains_key("retry-after"));
    let body: Value = by_ip.json().await.unwrap();
    assert_eq!(body["reason"], "rate limit exceeded for this ip");

    let metrics = gateway
        .http
        .get(gateway.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"ingest_rate_limited_total{limiter="ip"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ingest_rate_limited_total{limiter="write_key"} 1"#),
        "{metrics}"
    );
    gateway.stop().await;
}
