//! Helpers for the stats API tests, on top of the lead's `support` harness: a pipeline whose
//! worker has stats API keys, and GETs with a bearer key.

use std::time::Duration;

use crate::support::{worker_settings, TestPipeline, WorkerTarget};

/// A pipeline whose stats API requires `keys` ("token=project|..." pairs).
pub async fn pipeline_with_keys(keys: &[&str], per_second: u32, burst: u32) -> TestPipeline {
    let target = WorkerTarget::create().await;
    let mut settings = worker_settings(&target);
    settings.stats.api_keys = keys.iter().map(|k| (*k).to_owned()).collect();
    settings.stats.rate_limit_per_second = per_second;
    settings.stats.rate_limit_burst = burst;
    TestPipeline::start_with(target, settings).await
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

/// GET on the worker with an optional bearer key and extra headers.
pub async fn get_with(
    pipeline: &TestPipeline,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = pipeline
        .http
        .get(format!("{}{path}", pipeline.worker.address));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("worker answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// GET that must answer 200; returns the body.
pub async fn ok(pipeline: &TestPipeline, path: &str) -> serde_json::Value {
    let (status, body) = pipeline.get(path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    assert!(
        body.get("as_of").is_some() || path.contains("funnels") && !path.contains("analysis"),
        "GET {path} has no as_of: {body}"
    );
    body
}

/// Sends `body` with `method` to the worker; returns status and JSON.
pub async fn send(
    pipeline: &TestPipeline,
    method: reqwest::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = pipeline
        .http
        .request(method, format!("{}{path}", pipeline.worker.address));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("worker answered");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// A query-string value, encoded (`+` of a time zone, `$`, `|`, `=` of a filter, ...).
pub fn query_value(raw: &str) -> String {
    form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

/// A time as a query-string value, RFC 3339 with milliseconds.
pub fn query_time(t: chrono::DateTime<chrono::Utc>) -> String {
    query_value(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Posts events to the gateway in batches of at most 400.
pub async fn ingest(pipeline: &TestPipeline, events: &[serde_json::Value]) {
    for chunk in events.chunks(400) {
        let (status, body) = pipeline
            .post("/api/v1/events", &serde_json::json!({ "events": chunk }))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["accepted"].as_u64(),
            Some(chunk.len() as u64),
            "{body}"
        );
    }
}

/// Waits until Redis has applied `n` events of the default project (MySQL is written first,
/// so both stores then hold them).
pub async fn wait_applied(pipeline: &TestPipeline, n: u64) {
    pipeline.wait_for_events("default", n as i64).await;
    crate::support::eventually(
        Duration::from_secs(30),
        "Redis to apply every event",
        || async {
            let (status, body) = pipeline.get("/api/v1/stats/events?project=default").await;
            (status == 200 && body["as_of"]["applied_events"].as_u64() >= Some(n)).then_some(())
        },
    )
    .await;
}
