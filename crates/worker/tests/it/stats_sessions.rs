//! Session figures (`/sessions`, and inside `/summary` and `/dashboard`) against the same
//! figures computed here from the events sent: client sessions (the SDK's `session_id`) and
//! server sessions (Segment traffic, which carries none).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, DurationRound, Utc};
use insightflow_store::keys::Keys;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::stats_support::{ingest, ok, query_time, query_value, wait_applied};
use crate::support::{worker_settings, TestPipeline, WorkerTarget};

/// One event: its session, type, page (page views only) and time from the base.
type Step = (&'static str, &'static str, Option<&'static str>, i64);

const STEPS: &[Step] = &[
    ("s1", "page_view", Some("/home"), 0),
    ("s1", "click", None, 10),
    ("s1", "page_view", Some("/pricing"), 30),
    ("s1", "purchase", None, 60),
    ("s2", "page_view", Some("/home"), 120),
    ("s3", "page_view", Some("/blog"), 200),
    ("s3", "page_view", Some("/home"), 205),
    ("s3", "page_view", Some("/blog"), 300),
    ("s4", "click", None, 400),
    ("s6", "page_view", Some("/pricing"), 500),
    ("s6", "click", None, 530),
    // Started 20 minutes before the range: not one of its sessions, though it goes on in it.
    ("s5", "page_view", Some("/old"), -1200),
    ("s5", "page_view", Some("/home"), 20),
];

/// The figures of the sessions that start at or after `from`, computed from the steps.
fn expected(from_offset: i64) -> Value {
    let mut sessions: BTreeMap<&str, Vec<&Step>> = BTreeMap::new();
    for step in STEPS {
        sessions.entry(step.0).or_default().push(step);
    }
    sessions.retain(|_, steps| steps.iter().map(|s| s.3).min() >= Some(from_offset));
    figures(
        sessions
            .into_values()
            .map(|steps| steps.iter().map(|s| (s.2, s.3 * 1000)).collect())
            .collect(),
    )
}

/// The figures of `sessions`, each its events' pages (page views only) and times in ms.
fn figures(mut sessions: Vec<Vec<(Option<&str>, i64)>>) -> Value {
    let n = sessions.len() as i64;
    let mut durations: Vec<i64> = Vec::new();
    let (mut bounces, mut views) = (0, 0);
    let (mut entries, mut exits): (BTreeMap<&str, i64>, BTreeMap<&str, i64>) = Default::default();
    for steps in &mut sessions {
        steps.sort_by_key(|s| s.1);
        durations.push(steps.last().expect("events").1 - steps.first().expect("events").1);
        bounces += i64::from(steps.len() == 1);
        let pages: Vec<&str> = steps.iter().filter_map(|s| s.0).collect();
        views += pages.len() as i64;
        if let (Some(first), Some(last)) = (pages.first(), pages.last()) {
            *entries.entry(first).or_default() += 1;
            *exits.entry(last).or_default() += 1;
        }
    }
    durations.sort_unstable();
    let listed = |counts: BTreeMap<&str, i64>| {
        let mut pages: Vec<(&str, i64)> = counts.into_iter().collect();
        pages.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        pages
            .into_iter()
            .map(|(path, sessions)| json!({"path": path, "sessions": sessions}))
            .collect::<Vec<_>>()
    };
    json!({
        "sessions": n,
        "bounces": bounces,
        "bounce_rate": (bounces as f64 / n as f64 * 10_000.0).round() / 10_000.0,
        // The API's: the mean in whole milliseconds.
        "average_duration_seconds": (durations.iter().sum::<i64>() / n) as f64 / 1000.0,
        "median_duration_seconds": durations[(durations.len() - 1) / 2] as f64 / 1000.0,
        "page_views": views,
        "pages_per_session": (views as f64 / n as f64 * 100.0).round() / 100.0,
        "entry_pages": listed(entries),
        "exit_pages": listed(exits),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_figures_agree_with_the_sessions_sent() {
    let p = TestPipeline::start().await;
    let base = Utc::now() - Duration::minutes(30);
    let events: Vec<Value> = STEPS
        .iter()
        .enumerate()
        .map(|(n, (session, event_type, page, offset))| {
            let mut e = json!({"event_id": format!("ses-{n}"), "event_type": event_type,
                "user_id": format!("user-{session}"), "session_id": session,
                "timestamp": (base + Duration::seconds(*offset)).to_rfc3339()});
            if let Some(path) = page {
                e["page"] = json!({"url": format!("https://shop.example{path}")});
            }
            e
        })
        .collect();
    ingest(&p, &events).await;
    wait_applied(&p, events.len() as u64).await;

    let from = base - Duration::minutes(1);
    let range = format!("from={}&to={}", query_time(from), query_time(Utc::now()));
    let want = expected(-60);
    assert_eq!(want["sessions"], 5, "the data set: s1, s2, s3, s4, s6");
    let sessions = ok(&p, &format!("/api/v1/projects/default/sessions?{range}")).await;
    for field in want.as_object().unwrap().keys() {
        assert_eq!(sessions[field], want[field], "{field}: {sessions}");
    }
    let summary = ok(&p, &format!("/api/v1/projects/default/summary?{range}")).await;
    assert_eq!(summary["sessions"], want, "{summary}");
    assert_eq!(summary["figures"]["sessions"], 5, "{summary}");
    let dashboard = ok(&p, &format!("/api/v1/projects/default/dashboard?{range}")).await;
    assert_eq!(dashboard["sessions"], want, "{dashboard}");
    let filtered = ok(
        &p,
        &format!(
            "/api/v1/projects/default/summary?{range}&filter={}",
            query_value("$event_type==click")
        ),
    )
    .await;
    assert_eq!(filtered["sessions"], Value::Null, "{filtered}");

    let empty = ok(
        &p,
        &format!(
            "/api/v1/projects/default/sessions?from={}&to={}",
            query_time(base - Duration::days(3)),
            query_time(base - Duration::days(2))
        ),
    )
    .await;
    assert_eq!(empty["sessions"], 0, "{empty}");
    assert_eq!(empty["average_duration_seconds"], Value::Null, "{empty}");
    assert_eq!(empty["bounce_rate"], 0.0, "{empty}");
}

/// One Segment call of the server-session test: user (`a*` user ids, the others anonymous
/// ids), page path (a page call) or none (a track call), seconds from the base.
type Call = (&'static str, Option<&'static str>, i64);

/// With a 5-minute inactivity rule: a: 0, 60, 200 | 560 (a gap of 360 s); b: 100, 400 (300 s,
/// the limit: the same session) | 1000; c: one page view (a bounce); d: 30, 330 | 700.
const SEGMENT_CALLS: &[Call] = &[
    ("a", Some("/home"), 0),
    ("d", None, 30),
    ("c", Some("/docs"), 50),
    ("a", None, 60),
    ("b", Some("/home"), 100),
    ("a", Some("/pricing"), 200),
    ("d", Some("/pricing"), 330),
    ("b", Some("/home"), 400),
    ("a", Some("/blog"), 560),
    ("d", Some("/home"), 700),
    ("b", None, 1000),
];
/// Sent after the others: within 5 minutes of a's 200 and 560, it merges a's two sessions.
const LATE_CALL: Call = ("a", Some("/late"), 380);
const SEGMENT_GAP_MS: i64 = 5 * 60_000;
/// A session's events: page (page views only) and time in ms from the base.
type SessionEvents = Vec<(Option<&'static str>, i64)>;

/// The sessions of `calls` by the inactivity rule, in order, with their server ids (the
/// documented `srv:` hash of project, person, first event's ms and id).
fn server_sessions(calls: &[(usize, Call)], base_ms: i64) -> Vec<(String, SessionEvents)> {
    let mut by_user: BTreeMap<&str, Vec<(usize, Call)>> = BTreeMap::new();
    for (n, call) in calls {
        by_user.entry(call.0).or_default().push((*n, *call));
    }
    let mut out = Vec::new();
    for (user, mut list) in by_user {
        list.sort_by_key(|(n, c)| (c.2, format!("seg-{n}")));
        let mut groups: Vec<Vec<(usize, Call)>> = Vec::new();
        for item in list {
            match groups.last_mut() {
                Some(g)
                    if (item.1 .2 - g.last().expect("an event").1 .2) * 1000 <= SEGMENT_GAP_MS =>
                {
                    g.push(item)
                }
                _ => groups.push(vec![item]),
            }
        }
        for g in groups {
            let (n, first) = g[0];
            let key = format!("default\n{user}\n{}\nseg-{n}", base_ms + first.2 * 1000);
            let digest = format!("{:x}", Sha256::digest(key.as_bytes()));
            out.push((
                format!("srv:{}", &digest[..32]),
                g.iter().map(|(_, c)| (c.1, c.2 * 1000)).collect(),
            ));
        }
    }
    out
}

fn segment_message(n: usize, (user, page, offset): Call, base: DateTime<Utc>) -> Value {
    let time = (base + Duration::seconds(offset)).to_rfc3339();
    let mut m = match page {
        Some(path) => json!({"type": "page", "name": "Page",
            "properties": {"path": path, "url": format!("https://shop.example{path}")}}),
        None => json!({"type": "track", "event": "Product Viewed"}),
    };
    m["messageId"] = json!(format!("seg-{n}"));
    m["timestamp"] = json!(time);
    if user.starts_with('a') {
        m["userId"] = json!(user);
    } else {
        m["anonymousId"] = json!(user);
    }
    m
}

async fn active_sessions(p: &TestPipeline) -> BTreeSet<String> {
    let mut redis = p.target.redis().await;
    redis::cmd("ZRANGE")
        .arg(Keys::new(&p.target.redis_prefix, "default").sessions_active())
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .expect("the live sessions")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_traffic_without_session_ids_gets_server_sessions_in_the_figures() {
    let target = WorkerTarget::create().await;
    let mut settings = worker_settings(&target);
    settings.sessions.inactivity_minutes = std::num::NonZeroU32::new(5).expect("not zero");
    let p = TestPipeline::start_with(target, settings).await;
    let base = (Utc::now() - Duration::minutes(25))
        .duration_trunc(Duration::seconds(1))
        .expect("a whole second");
    let base_ms = base.timestamp_millis();
    let calls: Vec<(usize, Call)> = SEGMENT_CALLS.iter().copied().enumerate().collect();
    let batch: Vec<Value> = calls
        .iter()
        .map(|(n, c)| segment_message(*n, *c, base))
        .collect();
    let (status, body) = p.post("/v1/batch", &json!({ "batch": batch })).await;
    assert_eq!(status, 200, "{body}");
    wait_applied(&p, calls.len() as u64).await;

    let range = format!(
        "from={}&to={}",
        query_time(base - Duration::minutes(1)),
        query_time(Utc::now() + Duration::minutes(1))
    );
    let sessions = server_sessions(&calls, base_ms);
    assert_eq!(sessions.len(), 7, "the data set: a 2, b 2, c 1, d 2");
    let want = figures(sessions.iter().map(|(_, s)| s.clone()).collect());
    let got = ok(&p, &format!("/api/v1/projects/default/sessions?{range}")).await;
    for field in want.as_object().expect("an object").keys() {
        assert_eq!(got[field], want[field], "{field}: {got}");
    }
    let summary = ok(&p, &format!("/api/v1/projects/default/summary?{range}")).await;
    assert_eq!(summary["sessions"], want, "{summary}");
    let dashboard = ok(&p, &format!("/api/v1/projects/default/dashboard?{range}")).await;
    assert_eq!(dashboard["sessions"], want, "{dashboard}");
    // Redis counts the live sessions by the ids MySQL assigned.
    let ids: BTreeSet<String> = sessions.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(active_sessions(&p).await, ids);

    // A late call bridges a's two sessions: MySQL's figures become those of the merged
    // sessions; Redis's live set keeps the id that is gone (corrected in MySQL only).
    let late = (calls.len(), LATE_CALL);
    let (status, body) = p
        .post(
            "/v1/batch",
            &json!({ "batch": [segment_message(late.0, late.1, base)] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_applied(&p, calls.len() as u64 + 1).await;
    let mut all = calls.clone();
    all.push(late);
    let merged = server_sessions(&all, base_ms);
    assert_eq!(merged.len(), 6, "a's sessions merged");
    let want = figures(merged.iter().map(|(_, s)| s.clone()).collect());
    let got = ok(&p, &format!("/api/v1/projects/default/sessions?{range}")).await;
    for field in want.as_object().expect("an object").keys() {
        assert_eq!(got[field], want[field], "{field} after the merge: {got}");
    }
    let merged_ids: BTreeSet<String> = merged.iter().map(|(id, _)| id.clone()).collect();
    assert!(
        merged_ids.is_subset(&ids),
        "the merged session keeps its first event's id"
    );
    assert_eq!(active_sessions(&p).await, ids, "live ids are not corrected");
    let pool = p.target.pool().await;
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT CAST(session_id AS CHAR) FROM sessions ORDER BY 1")
            .fetch_all(&pool)
            .await
            .expect("the sessions");
    assert_eq!(stored, merged_ids.into_iter().collect::<Vec<_>>());
    let total: i64 = sqlx::query_scalar(
        "SELECT CAST(total_sessions AS SIGNED) FROM users WHERE distinct_id = 'a'",
    )
    .fetch_one(&pool)
    .await
    .expect("a's profile");
    assert_eq!(total, 1, "a's total counted down on the merge");
    p.stop().await;
}
