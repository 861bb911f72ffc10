//! Requests about one person against the real pipeline: export, erasure (nothing naming them
//! stays in MySQL or Redis, an audit line names them by digest only, and their later events
//! are dropped before either store), and opt-out then resume.

use std::time::Duration;

use insightflow_worker::store::DbText;
use serde_json::{json, Value};
use sqlx::Row;

use crate::stats_support::{get_with, ingest, pipeline_with_keys};
use crate::support::counts::metric;
use crate::support::{eventually, keys_with_prefix, TestPipeline};

const ADMIN: &str = "sk_privacy_admin_key_01";
const READER: &str = "sk_privacy_read_key_001";

fn visit(who: &str, n: usize, tag: &str) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"event_id": format!("{tag}-{who}-{i}"), "event_type": "page_view",
                "user_id": who, "session_id": format!("{tag}-s-{who}"),
                "page": {"url": format!("https://shop.example/p/{i}")},
                "properties": {"note": format!("{who} was here")}})
        })
        .collect()
}

/// Sends with the admin key any method; returns status and JSON.
async fn call(p: &TestPipeline, method: reqwest::Method, path: &str, key: &str) -> (u16, Value) {
    let response = p
        .http
        .request(method, format!("{}{path}", p.worker.address))
        .bearer_auth(key)
        .send()
        .await
        .expect("worker answered");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Rows of the worker's tables naming `who`.
async fn rows_naming(p: &TestPipeline, who: &str) -> i64 {
    let pool = p.target.pool().await;
    let mut total = 0;
    for table in ["user_events", "users", "sessions"] {
        let n: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) FROM {table} WHERE distinct_id = ?"
        ))
        .bind(who)
        .fetch_one(&pool)
        .await
        .expect("count")
        .get(0);
        total += n;
    }
    total
}

/// Redis keys, and members of the online and session sets, naming `who`.
async fn redis_naming(p: &TestPipeline, who: &str) -> Vec<String> {
    let mut redis = p.target.redis().await;
    let mut found: Vec<String> = keys_with_prefix(&mut redis, &p.target.redis_prefix)
        .await
        .into_iter()
        .filter(|k| k.contains(who))
        .collect();
    let online: Vec<String> = redis::cmd("ZRANGE")
        .arg(insightflow_store::keys::Keys::new(&p.target.redis_prefix, "default").online())
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .expect("ZRANGE");
    found.extend(online.into_iter().filter(|m| m == who));
    found
}

/// Waits until Redis has applied `n` events of the project (read with the admin key).
async fn wait_redis_applied(p: &TestPipeline, n: u64) {
    eventually(
        Duration::from_secs(30),
        &format!("{n} events applied in Redis"),
        || async {
            let answer =
                get_with(p, "/api/v1/projects/default/stats/events", Some(ADMIN), &[]).await;
            (answer.body["as_of"]["applied_events"].as_u64() >= Some(n)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_person_leaves_no_trace_and_their_later_events_are_dropped() {
    let keys = [
        format!("{ADMIN}=default:admin"),
        format!("{READER}=default:read"),
    ];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let p = pipeline_with_keys(&keys, 1000, 1000).await;
    let mut first = visit("erin", 7, "a");
    first.extend(visit("olga", 3, "a"));
    ingest(&p, &first).await;
    wait_redis_applied(&p, 10).await;

    // Export: profile, her 7 events oldest first, and an end line that says 7.
    let response = p
        .http
        .get(format!(
            "{}/api/v1/projects/default/users/erin/export",
            p.worker.address
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.expect("body");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 9, "{text}");
    assert_eq!(lines[0]["record"], "profile", "{text}");
    assert_eq!(lines[0]["total_events"], 7, "{text}");
    assert!(lines[1..8].iter().all(|l| l["record"] == "event"
        && l["user_id"] == "erin"
        && l["properties"]["note"] == "erin was here"));
    assert_eq!(lines[8], json!({"record": "end", "events": 7}), "{text}");

    // A read key may not erase or export.
    let path = "/api/v1/projects/default/users/erin";
    assert_eq!(call(&p, reqwest::Method::DELETE, path, READER).await.0, 403);
    assert_eq!(
        get_with(&p, &format!("{path}/export"), Some(READER), &[])
            .await
            .status,
        403
    );

    let (status, erased) = call(&p, reqwest::Method::DELETE, path, ADMIN).await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["erased"]["events"], 7, "{erased}");
    assert_eq!(erased["erased"]["sessions"], 1, "{erased}");
    assert_eq!(erased["erased"]["profile"], true, "{erased}");
    assert!(
        erased["erased"]["redis_keys_and_members"].as_u64() >= Some(2),
        "{erased}"
    );
    assert_eq!(rows_naming(&p, "erin").await, 0);
    assert_eq!(redis_naming(&p, "erin").await, Vec::<String>::new());
    assert_eq!(
        rows_naming(&p, "olga").await,
        3 + 1 + 1,
        "olga: events, profile, session"
    );

    let pool = p.target.pool().await;
    // The dedupe rows name event ids too: olga's 3 stay, none of erin's 7.
    let dedupe: i64 = sqlx::query("SELECT COUNT(*) FROM event_ids")
        .fetch_one(&pool)
        .await
        .expect("count event_ids")
        .get(0);
    assert_eq!(dedupe, 3);
    let audit =
        sqlx::query("SELECT person_sha256, requested_by, events_deleted FROM person_erasures")
            .fetch_all(&pool)
            .await
            .expect("audit");
    assert_eq!(audit.len(), 1);
    let digest = audit[0].get::<DbText, _>(0).0;
    assert_eq!(digest, erased["audit"]["person_sha256"], "{erased}");
    assert_eq!(digest.len(), 64);
    assert!(!digest.contains("erin"));
    let by = audit[0].get::<DbText, _>(1).0;
    assert!(by.starts_with("key:") && by.len() == 16, "{by}");
    assert_eq!(audit[0].get::<u64, _>(2), 7);

    // Her later events are dropped before either store; olga's go on.
    let mut later = visit("erin", 4, "b");
    later.extend(visit("olga", 2, "b"));
    ingest(&p, &later).await;
    wait_redis_applied(&p, 12).await;
    let address = p.worker.address.clone();
    eventually(
        Duration::from_secs(30),
        "4 suppressed events counted",
        || {
            let address = address.clone();
            async move {
                (metric(&address, "worker_suppressed_events_total").await == Some(4.0))
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(rows_naming(&p, "erin").await, 0);
    assert_eq!(redis_naming(&p, "erin").await, Vec::<String>::new());
    let counts = get_with(
        &p,
        "/api/v1/projects/default/stats/events",
        Some(ADMIN),
        &[],
    )
    .await
    .body;
    assert_eq!(
        counts["counts"]["page_view"], 12,
        "Redis counted her first 7 (kept without identity) and none of the 4 later: {counts}"
    );

    // Erasing again finds nothing more and is audited again.
    let (status, again) = call(&p, reqwest::Method::DELETE, path, ADMIN).await;
    assert_eq!(
        (status, &again["erased"]["events"]),
        (200, &json!(0)),
        "{again}"
    );

    // Opt-out: olga's events stop until she is resumed.
    let olga = "/api/v1/projects/default/users/olga/suppression";
    assert_eq!(call(&p, reqwest::Method::PUT, olga, ADMIN).await.0, 200);
    ingest(&p, &visit("olga", 3, "c")).await;
    eventually(
        Duration::from_secs(30),
        "olga's 3 events suppressed",
        || {
            let address = address.clone();
            async move {
                (metric(&address, "worker_suppressed_events_total").await == Some(7.0))
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        rows_naming(&p, "olga").await,
        5 + 1 + 2,
        "nothing new for olga"
    );
    assert_eq!(call(&p, reqwest::Method::DELETE, olga, ADMIN).await.0, 200);
    assert_eq!(call(&p, reqwest::Method::DELETE, olga, ADMIN).await.0, 404);
    ingest(&p, &visit("olga", 2, "d")).await;
    wait_redis_applied(&p, 14).await;
    assert_eq!(
        rows_naming(&p, "olga").await,
        7 + 1 + 3,
        "olga collected again"
    );
    p.stop().await;
}
