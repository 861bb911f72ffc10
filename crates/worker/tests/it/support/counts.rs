//! The events the exactly-once and crash tests send, how they send them (as an SDK does), and
//! the totals they check against the number of events sent: an independent count.

// A test panics to fail: unwrapping in its helpers is how it reports.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{json, Value};

use super::{TestIngest, WorkerTarget};

/// How long a test waits for the pipeline to catch up.
pub const WAIT: Duration = Duration::from_secs(90);

/// `n` events starting at `first`, spread over `users` users and several sessions, pages and
/// types, with properties: what a day of a small shop looks like.
pub fn events(first: usize, n: usize, users: usize) -> Vec<Value> {
    const TYPES: [&str; 5] = ["page_view", "click", "product_view", "cart_add", "purchase"];
    (first..first + n)
        .map(|i| {
            let user = i % users;
            json!({
                "event_id": format!("ev-{i}"),
                "event_type": TYPES[i % TYPES.len()],
                "user_id": format!("user-{user}"),
                "session_id": format!("sess-{user}-{}", i / 97),
                "page": {"url": format!("https://shop.example/p/{}", i % 13)},
                "properties": {"n": i},
                "user_properties": {"plan": if i % 2 == 0 { "free" } else { "pro" }},
            })
        })
        .collect()
}

/// Posts the events in batches of 500 as an SDK does: a 503 means "retry the whole batch",
/// which may resend events Kafka already holds (event ids make that harmless downstream).
pub async fn send(ingest: &TestIngest, events: Vec<Value>) {
    send_to(&ingest.address, events, 500).await;
}

/// `send` to a gateway's address, in batches of `batch`.
pub async fn send_to(address: &str, events: Vec<Value>, batch: usize) {
    let http = reqwest::Client::new();
    for chunk in events.chunks(batch) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let response = http
                .post(format!("{address}/api/v1/events"))
                .json(&json!({ "events": chunk }))
                .send()
                .await
                .expect("gateway answered");
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            if status == 503 && attempt < 5 {
                eprintln!("gateway answered 503 ({body}); retrying the batch as an SDK would");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            assert_eq!(status, 200, "the gateway acknowledged the batch: {body}");
            assert_eq!(
                body["accepted"].as_u64(),
                Some(chunk.len() as u64),
                "{body}"
            );
            break;
        }
    }
}

pub async fn mysql_count(target: &WorkerTarget) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM user_events")
        .fetch_one(&target.pool().await)
        .await
        .unwrap()
}

/// The sum of the all-time Redis counters of the default project.
pub async fn redis_total(target: &WorkerTarget) -> i64 {
    let mut redis = target.redis().await;
    let counts: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(insightflow_store::keys::Keys::new(&target.redis_prefix, "default").events_total())
        .query_async(&mut redis)
        .await
        .unwrap();
    counts.values().sum()
}

/// Waits until MySQL and Redis both hold exactly `n` events.
pub async fn wait_for_both(target: &WorkerTarget, n: i64) {
    let mut last = (0, 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (mysql, redis) = (mysql_count(target).await, redis_total(target).await);
        assert!(
            mysql <= n && redis <= n,
            "more than {n} events counted: mysql {mysql}, redis {redis}"
        );
        if (mysql, redis) == (n, n) {
            return;
        }
        if (mysql, redis) != last {
            eprintln!("waiting for {n} events: MySQL has {mysql}, Redis {redis}");
            last = (mysql, redis);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {n} events: MySQL has {mysql}, Redis {redis}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Totals that must equal the number of events in every derived table and aggregate.
pub async fn assert_exactly_once(target: &WorkerTarget, n: i64) {
    let pool = target.pool().await;
    for (what, query) in [
        (
            "users.total_events",
            "SELECT CAST(SUM(total_events) AS SIGNED) FROM users",
        ),
        (
            "rollup_events_minute",
            "SELECT CAST(SUM(events) AS SIGNED) FROM rollup_events_minute",
        ),
        (
            "rollup_events_hour",
            "SELECT CAST(SUM(events) AS SIGNED) FROM rollup_events_hour",
        ),
        (
            "sessions.events",
            "SELECT CAST(SUM(events) AS SIGNED) FROM sessions WHERE 1",
        ),
    ] {
        let sum: Option<i64> = sqlx::query_scalar(query).fetch_one(&pool).await.unwrap();
        assert_eq!(sum, Some(n), "{what}");
    }
    assert_eq!(redis_total(target).await, n, "Redis events:total");
    let sessions_total: Option<i64> =
        sqlx::query_scalar("SELECT CAST(SUM(total_sessions) AS SIGNED) FROM users")
            .fetch_one(&pool)
            .await
            .unwrap();
    let sessions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        sessions_total,
        Some(sessions),
        "every session counted once for its user"
    );
}

pub async fn metric(address: &str, line_prefix: &str) -> Option<f64> {
    let text = reqwest::get(format!("{address}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Assignments the worker at `address` has received (rebalances that handed it partitions).
pub async fn assignments(address: &str) -> f64 {
    metric(address, r#"worker_rebalances_total{kind="assign"}"#)
        .await
        .unwrap_or(0.0)
}

/// Waits until the worker at `address` holds partitions.
pub async fn wait_for_partitions(address: &str) {
    super::eventually(WAIT, "the worker to hold partitions", || async {
        (assignments(address).await >= 1.0).then_some(())
    })
    .await;
}

/// After `first` held partitions, `second` joined: waits for the rebalance that gives both
/// theirs (the first member's second assignment, the second member's first).
pub async fn wait_until_both_hold_partitions(first: &str, second: &str) {
    super::eventually(WAIT, "both workers to hold partitions", || async {
        let (a, b) = (assignments(first).await, assignments(second).await);
        (a >= 2.0 && b >= 1.0).then_some(())
    })
    .await;
}
