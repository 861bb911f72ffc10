//! Hostile input through the real gateway and worker: 10,000 generated events with random and
//! boundary values in every field, then a marker. Passes when the marker is counted, the
//! worker never stopped, and every event the gateway accepted is in MySQL or in the
//! dead-letter topic, once, with Redis agreeing with MySQL.

// A test panics to fail: unwrapping in its helpers is how it reports.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::{BTreeSet, HashSet};

use crate::support::counts::{mysql_count, redis_total, WAIT};
use crate::support::{eventually, spawn_ingest, spawn_worker, WorkerTarget};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const EVENTS: usize = 10_000;
const PER_REQUEST: usize = 20;

/// Raw JSON a `serde_json::Value` cannot hold, put in place of a placeholder string after
/// serialising: a lone surrogate escape and a number beyond a double.
const RAW: [(&str, &str); 3] = [
    ("\"__LONE_SURROGATE__\"", "\"\\ud800x\""),
    ("\"__HUGE_NUMBER__\"", "1e400"),
    ("\"__PAIRED_SURROGATE__\"", "\"\\ud83d\\ude00\""),
];

fn text(rng: &mut StdRng) -> Value {
    let pieces = [
        "",
        " ",
        "plain",
        "ünïcødé",
        "😀😀😀",
        "\u{0000}nul",
        "\u{202e}rtl",
        "line\nbreak",
        "<script>alert(1)</script>",
        "' OR 1=1 --",
        "\\",
        "\u{fffd}",
    ];
    match rng.random_range(0..8) {
        0 => Value::String("x".repeat(rng.random_range(60..70))),
        1 => Value::String("é".repeat(rng.random_range(250..260))),
        2 => Value::String("a".repeat(rng.random_range(1020..1030))),
        3 => Value::String("u".repeat(rng.random_range(4090..4100))),
        4 => json!(rng.random::<i64>()),
        5 => Value::Null,
        _ => Value::String(pieces[rng.random_range(0..pieces.len())].to_owned()),
    }
}

fn timestamp(rng: &mut StdRng) -> Value {
    match rng.random_range(0..14) {
        0 => json!(-100_000_000_000_000_i64),
        1 => json!(946_684_799_999_i64), // the last millisecond of 1999
        2 => json!(946_684_800_000_i64), // 2000-01-01
        3 => json!(253_402_300_799_999_i64), // the end of 9999
        4 => json!(253_402_300_800_000_i64), // one past
        5 => json!(1e300),
        6 => json!("1969-12-31T23:59:59Z"),
        7 => json!("not a time"),
        8 => json!("2026-02-30T00:00:00Z"),
        9 => json!("2026-11-29T12:00:60Z"),
        10 => json!(true),
        _ => json!(1_795_900_000_000_i64 + rng.random_range(-86_400_000..86_400_000)),
    }
}

fn properties(rng: &mut StdRng, depth: usize) -> Value {
    match rng.random_range(0..10) {
        0 => json!("__LONE_SURROGATE__"),
        1 => json!("__HUGE_NUMBER__"),
        2 => json!("__PAIRED_SURROGATE__"),
        3 if depth < 10 => json!({ "nested": properties(rng, depth + 1) }),
        4 => json!([1, "two", null, {"three": 3.0}]),
        5 => json!(f64::MAX),
        _ => text(rng),
    }
}

fn event(rng: &mut StdRng, i: usize) -> Value {
    let types = [
        "page_view",
        "click",
        "purchase",
        "custom_thing",
        "Page View",
        "",
        "X".repeat(70).leak(),
    ];
    let mut event = json!({
        "event_id": format!("fz-{i}"),
        "event_type": types[rng.random_range(0..types.len())],
        "user_id": format!("u{}", i % 97),
    });
    let object = event.as_object_mut().unwrap();
    for _ in 0..rng.random_range(1..6) {
        match rng.random_range(0..12) {
            0 => {
                object.insert("timestamp".into(), timestamp(rng));
            }
            1 => {
                object.insert(
                    "event_id".into(),
                    json!(format!("fz-{i}-{}", "i".repeat(rng.random_range(110..125)))),
                );
            }
            2 => {
                object.insert("user_id".into(), text(rng));
            }
            3 => {
                object.insert("anonymous_id".into(), text(rng));
            }
            4 => {
                object.insert("session_id".into(), text(rng));
            }
            5 => {
                object.insert("page".into(), json!({"url": text(rng), "path": text(rng), "title": text(rng), "referrer": text(rng)}));
            }
            6 => {
                object.insert("element".into(), json!({"tag": text(rng), "id": text(rng), "text": text(rng), "x": rng.random::<i64>(), "y": -1}));
            }
            7 => {
                object.insert(
                    "properties".into(),
                    json!({"p": properties(rng, 0), "q": properties(rng, 0)}),
                );
            }
            8 => {
                object.insert("user_properties".into(), properties(rng, 0));
            }
            9 => {
                object.insert("event_name".into(), text(rng));
            }
            10 => {
                object.insert(
                    "context".into(),
                    json!({"user_agent": text(rng), "ip": text(rng)}),
                );
            }
            _ => {
                object.insert(
                    format!("loose_{}", rng.random_range(0..3)),
                    properties(rng, 0),
                );
            }
        }
    }
    event
}

/// The request body as text, with the raw JSON placeholders replaced.
fn body(events: &[Value]) -> String {
    let mut text = json!({ "events": events }).to_string();
    for (placeholder, raw) in RAW {
        text = text.replace(placeholder, raw);
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hostile_events_stop_nothing_and_every_accepted_one_is_stored_or_dead_lettered(
) {
    let target = WorkerTarget::create().await;
    let worker = spawn_worker(&target).await;
    let ingest = spawn_ingest(&target.topic).await;
    let http = reqwest::Client::new();
    let mut rng = StdRng::seed_from_u64(13);
    let mut accepted: BTreeSet<String> = BTreeSet::new();
    let (mut rejected, mut refused_requests) = (0usize, 0usize);
    let events: Vec<Value> = (0..EVENTS).map(|i| event(&mut rng, i)).collect();
    for chunk in events.chunks(PER_REQUEST) {
        let response = http
            .post(format!("{}/api/v1/events", ingest.address))
            .header("content-type", "application/json")
            .body(body(chunk))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["error"].is_string() || answer["accepted"].is_u64(),
            "every answer is JSON saying what happened: {status} {answer}"
        );
        let refused_here: HashSet<u64> = answer["rejected"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x["index"].as_u64()).collect())
            .unwrap_or_default();
        for r in answer["rejected"].as_array().into_iter().flatten() {
            assert!(
                r["field"].is_string() && r["reason"].is_string(),
                "each rejection names its field and reason: {r}"
            );
        }
        match status {
            200 => {
                for (index, e) in chunk.iter().enumerate() {
                    if !refused_here.contains(&(index as u64)) {
                        accepted.insert(e["event_id"].as_str().unwrap().to_owned());
                    }
                }
                rejected += refused_here.len();
            }
            400 | 413 => {
                refused_requests += 1;
                rejected += chunk.len();
            }
            other => panic!("unexpected status {other}: {answer}"),
        }
    }
    eprintln!(
        "{} accepted, {rejected} rejected ({refused_requests} whole requests)",
        accepted.len()
    );
    assert!(
        accepted.len() > EVENTS / 10 && rejected > EVENTS / 10,
        "the generator exercises both sides"
    );

    // The marker goes last: once it is counted, everything before it on its partition was
    // handled; then wait for every partition.
    let marker = json!({"events": [{"event_id": "fz-marker", "event_type": "page_view", "user_id": "marker"}]});
    let answer = http
        .post(format!("{}/api/v1/events", ingest.address))
        .json(&marker)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    accepted.insert("fz-marker".to_owned());
    let pool = target.pool().await;
    let dlq = format!("{}.dlq", target.topic);
    let (stored, dead) = eventually(WAIT, "every accepted event stored or dead-lettered", || {
        let pool = pool.clone();
        let dlq = dlq.clone();
        let expected = accepted.len();
        async move {
            let stored: Vec<String> =
                sqlx::query_scalar("SELECT CAST(event_id AS CHAR) FROM user_events")
                    .fetch_all(&pool)
                    .await
                    .ok()?;
            if !stored.iter().any(|id| id == "fz-marker") {
                return None;
            }
            let missing = expected.saturating_sub(stored.len());
            let dead = if missing > 0 {
                support::kafka::read(&dlq, missing)
            } else {
                Vec::new()
            };
            (stored.len() + dead.len() >= expected).then_some((stored, dead))
        }
    })
    .await;
    let mut seen: BTreeSet<String> = stored.iter().cloned().collect();
    assert_eq!(seen.len(), stored.len(), "no event stored twice");
    for message in &dead {
        let reason = support::kafka::header(message, "dlq-reason");
        assert!(reason.is_some(), "a dead letter says why");
        let payload: Value =
            serde_json::from_slice(rdkafka::Message::payload(message).unwrap()).unwrap();
        let id = payload["event_id"].as_str().unwrap().to_owned();
        assert!(
            seen.insert(id),
            "an event is stored or dead-lettered, not both"
        );
    }
    assert_eq!(
        seen, accepted,
        "every accepted event, and nothing else, is stored or dead-lettered"
    );
    eprintln!("{} stored, {} dead-lettered", stored.len(), dead.len());

    assert!(
        !worker.shutdown.is_cancelled(),
        "the worker never stopped (a task that ends stops the process)"
    );
    let ready: Value = reqwest::get(format!("{}/ready", worker.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["consumer"], "ok", "{ready}");
    let n = mysql_count(&target).await;
    eventually(WAIT, "Redis to agree with MySQL", || async {
        (redis_total(&target).await == n).then_some(())
    })
    .await;
    // Every derived total against the raw rows (only events with a session id make sessions).
    for (what, query, expected) in [
        (
            "users.total_events",
            "SELECT CAST(SUM(total_events) AS SIGNED) FROM users",
            n,
        ),
        (
            "rollup_events_minute",
            "SELECT CAST(SUM(events) AS SIGNED) FROM rollup_events_minute",
            n,
        ),
        (
            "sessions.events",
            "SELECT CAST(IFNULL(SUM(events), 0) AS SIGNED) FROM sessions",
            sqlx::query_scalar("SELECT COUNT(*) FROM user_events WHERE session_id IS NOT NULL")
                .fetch_one(&pool)
                .await
                .unwrap(),
        ),
    ] {
        let sum: Option<i64> = sqlx::query_scalar(query).fetch_one(&pool).await.unwrap();
        assert_eq!(sum, Some(expected), "{what}");
    }
    worker.stop().await;
    ingest.stop().await;
    target.cleanup().await;
}
