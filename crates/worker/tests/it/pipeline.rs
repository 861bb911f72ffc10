//! One batch through the whole real path: HTTP -> gateway -> Kafka -> worker -> MySQL + Redis
//! -> stats API, counted exactly once.

// A test panics to fail: unwrapping in its helpers is how it reports.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use crate::support::{eventually, TestPipeline};
use insightflow_worker::store::DbText;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_batch_is_stored_and_counted_exactly_once() {
    let pipeline = TestPipeline::start().await;
    let batch = json!({"events": [
        {"event_id": "e-1", "event_type": "page_view", "user_id": "u1", "session_id": "s1",
         "page": {"url": "https://shop.example/products/7?ref=home", "title": "Product 7"}},
        {"event_id": "e-2", "event_type": "click", "user_id": "u1", "session_id": "s1",
         "element": {"selector": "#buy", "text": "Buy", "x": 120, "y": 48}},
        {"event_id": "e-3", "event_type": "purchase", "anonymous_id": "anon-9",
         "properties": {"amount": 19.9, "currency": "EUR"}}
    ]});
    let (status, body) = pipeline.post("/api/v1/events", &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 3, "{body}");

    // The same batch again, as an SDK retrying after a lost response would send it.
    let (status, _) = pipeline.post("/api/v1/events", &batch).await;
    assert_eq!(status, 200);

    let counts = eventually(
        Duration::from_secs(30),
        "stats to count 3 events",
        || async {
            let (status, body) = pipeline.get("/api/v1/stats/events?project=default").await;
            (status == 200 && body["total"] == 3).then_some(body)
        },
    )
    .await;
    assert_eq!(
        counts["counts"],
        json!({"page_view": 1, "click": 1, "purchase": 1})
    );
    assert!(counts["as_of"]["newest_event_time"].is_string(), "{counts}");

    let pool = pipeline.target.pool().await;
    let rows: Vec<DbText> = sqlx::query_scalar(
        "SELECT CONCAT_WS('|', event_id, event_type, distinct_id, IFNULL(page_path, '-'), IFNULL(click_x, '-')) \
         FROM user_events ORDER BY event_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let rows: Vec<String> = rows.into_iter().map(DbText::into_string).collect();
    assert_eq!(
        rows,
        [
            "e-1|page_view|u1|/products/7|-",
            "e-2|click|u1|-|120",
            "e-3|purchase|anon-9|-|-"
        ]
    );
    let user: (u64, u64) =
        sqlx::query_as("SELECT total_events, total_sessions FROM users WHERE distinct_id = 'u1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(user, (2, 1), "the retried batch must not count twice");
    let rollup: i64 =
        sqlx::query_scalar("SELECT CAST(SUM(events) AS SIGNED) FROM rollup_events_minute")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rollup, 3);

    // Every message applied (the 3 events twice: the retry's copies are applied as
    // duplicates) is measured once for its age at apply time, and none is older than the test.
    let worker = pipeline.worker.address.as_str();
    let value = |name: &'static str| async move {
        support::counts::metric(worker, &format!("{name} "))
            .await
            .unwrap_or_else(|| panic!("{name} is not exported"))
    };
    assert_eq!(value("worker_event_age_seconds_count").await, 6.0);
    let age_sum = value("worker_event_age_seconds_sum").await;
    assert!((0.0..6.0 * 120.0).contains(&age_sum), "{age_sum}");
    assert!(value("process_resident_memory_bytes").await > 0.0);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_answer_on_both_services() {
    let pipeline = TestPipeline::start().await;
    for base in [&pipeline.ingest.address, &pipeline.worker.address] {
        for path in ["/health", "/ready"] {
            let response = pipeline
                .http
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{base}{path}");
        }
    }
    let (status, _) = pipeline
        .post(
            "/api/v1/events",
            &json!({"event_type": "click", "user_id": "u"}),
        )
        .await;
    assert_eq!(status, 200);
    pipeline.wait_for_events("default", 1).await;
    let ingest_metrics = pipeline
        .http
        .get(format!("{}/metrics", pipeline.ingest.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        ingest_metrics.contains("ingest_events_accepted_total 1"),
        "{ingest_metrics}"
    );
    assert!(
        ingest_metrics.contains(
            r#"ingest_http_requests_total{method="POST",route="/api/v1/events",status="200"} 1"#
        ),
        "{ingest_metrics}"
    );
    let worker_metrics = eventually(
        Duration::from_secs(10),
        "worker metrics to show the write",
        || async {
            let text = pipeline
                .http
                .get(format!("{}/metrics", pipeline.worker.address))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains(r#"worker_events_written_total{store="redis"} 1"#)
                .then_some(text)
        },
    )
    .await;
    assert!(
        worker_metrics.contains(r#"worker_events_written_total{store="mysql"} 1"#),
        "{worker_metrics}"
    );
    pipeline.stop().await;
}
