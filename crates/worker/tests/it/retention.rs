//! Raw events past their retention are deleted, recent ones kept, and the job runs once per
//! interval across instances (the Redis lock), against real MySQL and Redis.

// A test panics to fail: unwrapping in its helpers is how it reports.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::support::{direct, worker_settings, WorkerTarget};
use chrono::{TimeDelta, Utc};
use insightflow_worker::metrics::WorkerMetrics;
use insightflow_worker::retention;
use insightflow_worker::store::mysql::MysqlStore;
use insightflow_worker::store::redis::RedisStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_raw_events_are_deleted_once_per_interval_and_recent_ones_kept() {
    let target = WorkerTarget::create().await;
    let settings = worker_settings(&target);
    let mysql = MysqlStore::connect(&settings.mysql).await.unwrap();
    let redis = RedisStore::connect(&settings.redis, &settings.aggregates)
        .await
        .unwrap();

    // 30 events 100 days old and 20 from an hour ago, through the real store.
    let now = Utc::now();
    let events: Vec<serde_json::Value> = (0..50)
        .map(|i| {
            let age = if i < 30 {
                TimeDelta::days(100)
            } else {
                TimeDelta::hours(1)
            };
            serde_json::json!({"event_id": format!("r{i}"), "event_type": "page_view",
                "user_id": format!("u{}", i % 7), "timestamp": (now - age).to_rfc3339()})
        })
        .collect();
    let events = direct::validated(&events, now);
    let accepted = direct::sourced(&events, "written-directly", 0);
    assert_eq!(mysql.write(&accepted).await.unwrap().inserted, 50);

    let mut retention_settings = settings.retention.clone();
    retention_settings.raw_event_days = 90;
    retention_settings.chunk_rows = 7; // several chunks
    let metrics = WorkerMetrics::register(&prometheus::Registry::new()).unwrap();
    let interval = Duration::from_secs(60);

    let ran = retention::run_once(&retention_settings, &mysql, &redis, &metrics, interval)
        .await
        .unwrap();
    assert!(ran, "the first instance takes the lock and runs");
    let second = retention::run_once(&retention_settings, &mysql, &redis, &metrics, interval)
        .await
        .unwrap();
    assert!(!second, "another instance in the same interval skips");

    let remaining: Vec<i64> = sqlx::query_scalar(
        "SELECT TIMESTAMPDIFF(DAY, event_time, UTC_TIMESTAMP(3)) FROM user_events",
    )
    .fetch_all(mysql.pool())
    .await
    .unwrap();
    assert_eq!(
        remaining.len(),
        20,
        "the 30 old events are gone, the 20 recent ones stay"
    );
    assert!(remaining.iter().all(|days| *days < 90));
    assert_eq!(metrics.retention_deleted.get(), 30);
    target.cleanup().await;
}
