//! Session figures (`/sessions`, and inside `/summary` and `/dashboard`) against the same
//! figures computed here from the events sent.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::stats_support::{ingest, ok, query_time, query_value, wait_applied};
use crate::support::TestPipeline;

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
    let n = sessions.len() as i64;
    let mut durations: Vec<i64> = Vec::new();
    let (mut bounces, mut views) = (0, 0);
    let (mut entries, mut exits): (BTreeMap<&str, i64>, BTreeMap<&str, i64>) = Default::default();
    for steps in sessions.values_mut() {
        steps.sort_by_key(|s| s.3);
        durations.push(steps.last().expect("events").3 - steps.first().expect("events").3);
        bounces += i64::from(steps.len() == 1);
        let pages: Vec<&str> = steps.iter().filter_map(|s| s.2).collect();
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
        "average_duration_seconds": durations.iter().sum::<i64>() as f64 / n as f64,
        "median_duration_seconds": durations[(durations.len() - 1) / 2] as f64,
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
