//! A comparable picture of everything the worker maintains: every MySQL table the worker
//! writes and every Redis key under the test's prefix, values only (no TTLs, ids or insert
//! times, which legitimately differ between two runs over the same events).

use std::collections::BTreeMap;

use super::WorkerTarget;

pub type Snapshot = BTreeMap<String, String>;

const TABLES: [(&str, &str); 6] = [
    (
        "user_events",
        "SELECT CONCAT_WS('|', project, event_id, event_type, distinct_id, IFNULL(session_id,''), \
         IFNULL(page_path,''), event_time, IFNULL(JSON_COMPACT(properties),'')) FROM user_events",
    ),
    (
        "users",
        "SELECT CONCAT_WS('|', project, distinct_id, first_seen, last_seen, total_events, total_sessions, \
         IFNULL(device_type,''), IFNULL(JSON_COMPACT(properties),'')) FROM users",
    ),
    (
        "sessions",
        "SELECT CONCAT_WS('|', project, session_id, distinct_id, started_at, last_seen, events) FROM sessions",
    ),
    (
        "rollup_events_minute",
        "SELECT CONCAT_WS('|', project, bucket, event_type, events) FROM rollup_events_minute",
    ),
    (
        "rollup_events_hour",
        "SELECT CONCAT_WS('|', project, bucket, event_type, events) FROM rollup_events_hour",
    ),
    (
        "rollup_page_views_hour",
        "SELECT CONCAT_WS('|', project, bucket, page_path, views) FROM rollup_page_views_hour",
    ),
];

pub async fn snapshot(target: &WorkerTarget) -> Snapshot {
    let mut snap = Snapshot::new();
    let pool = target.pool().await;
    for (table, query) in TABLES {
        let mut rows: Vec<String> = sqlx::query_scalar::<_, crate::support::DbTextRow>(query)
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("snapshot of {table}: {e}"))
            .into_iter()
            .map(|r| r.0)
            .collect();
        rows.sort();
        snap.insert(format!("mysql:{table}"), rows.join("\n"));
    }
    let mut redis = target.redis().await;
    let mut keys = super::keys_with_prefix(&mut redis, &target.redis_prefix).await;
    keys.sort();
    // Locks are operational (a random holder token), not aggregates.
    keys.retain(|k| !k.contains(":lock:"));
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .expect("TYPE");
        let value = match kind.as_str() {
            "string" => {
                let bytes: Vec<u8> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await
                    .expect("GET");
                if bytes.starts_with(b"HYLL") {
                    // A HyperLogLog's bytes depend on its encoding and cached count, not only
                    // on the ids added: compare what it estimates.
                    let count: u64 = redis::cmd("PFCOUNT")
                        .arg(&key)
                        .query_async(&mut redis)
                        .await
                        .expect("PFCOUNT");
                    format!("hyperloglog:{count}")
                } else {
                    String::from_utf8_lossy(&bytes).into_owned()
                }
            }
            "hash" => {
                let map: BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await
                    .expect("HGETALL");
                if key == insightflow_store::keys::projects(&target.redis_prefix) {
                    // The registry's values are when each project was registered.
                    format!("{:?}", map.keys().collect::<Vec<_>>())
                } else {
                    format!("{map:?}")
                }
            }
            "set" => {
                let mut members: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await
                    .expect("SMEMBERS");
                members.sort();
                members.join(",")
            }
            "zset" => {
                let members: Vec<(String, String)> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut redis)
                    .await
                    .expect("ZRANGE");
                format!("{members:?}")
            }
            "list" => {
                let items: Vec<String> = redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut redis)
                    .await
                    .expect("LRANGE");
                items.join(",")
            }
            other => format!("<{other}>"),
        };
        // Keys are compared without the run's unique prefix.
        let name = key.trim_start_matches(&target.redis_prefix).to_owned();
        snap.insert(format!("redis{name}"), value);
    }
    snap
}

/// Asserts two snapshots are equal, naming the first differing entry.
pub fn assert_same(expected: &Snapshot, actual: &Snapshot, context: &str) {
    let expected_keys: Vec<&String> = expected.keys().collect();
    let actual_keys: Vec<&String> = actual.keys().collect();
    assert_eq!(
        expected_keys, actual_keys,
        "{context}: different sets of keys/tables"
    );
    for (key, value) in expected {
        assert_eq!(Some(value), actual.get(key), "{context}: {key} differs");
    }
}
