//! Identity stitching against the real pipeline: one visitor walks anonymous -> login ->
//! purchase, with events arriving before and after the link and out of order, and is one
//! person in their path, the funnel, the unique counts and the retention cohort (each figure
//! against an expectation computed here from the events sent); a replay changes nothing; two
//! known users are never merged; requests by a linked id (export, opt-out, resume) act on the
//! person; erasing the person leaves no row or key naming either id, and their later events
//! are dropped; an identify and the anonymous events it links, written at the same time from
//! two partitions, leave one person.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{json, Value};
use sqlx::Row;

use crate::stats_support::{get_with, pipeline_with_keys, query_time, query_value};
use crate::support::counts::metric;
use crate::support::{eventually, keys_with_prefix, TestPipeline};

const ADMIN: &str = "sk_identity_admin_key_1";
const PROJECT: &str = "/api/v1/projects/default";
const WALKER: &str = "u-walker";
const WALKER_ANON: &str = "anon-walk-1";

/// One event as sent.
#[derive(Debug, Clone)]
struct Sent {
    id: &'static str,
    kind: &'static str,
    user: Option<&'static str>,
    anon: Option<&'static str>,
    session: Option<&'static str>,
    at: DateTime<Utc>,
}

impl Sent {
    /// Who the event belongs to, by the rule the test expects: the user id, else the
    /// anonymous id, and the walker's anonymous id is the walker (they identified).
    fn person(&self) -> &'static str {
        match (self.user, self.anon) {
            (Some(user), _) => user,
            (None, Some(WALKER_ANON)) => WALKER,
            (None, Some(anon)) => anon,
            (None, None) => unreachable!("every event has an id"),
        }
    }

    fn canonical(&self) -> Value {
        let mut e = json!({"event_id": self.id, "event_type": self.kind,
            "timestamp": self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "page": {"url": format!("https://shop.example/{}", self.kind)}});
        for (field, value) in [
            ("user_id", self.user),
            ("anonymous_id", self.anon),
            ("session_id", self.session),
        ] {
            if let Some(v) = value {
                e[field] = json!(v);
            }
        }
        e
    }
}

fn event(
    id: &'static str,
    kind: &'static str,
    user: Option<&'static str>,
    anon: Option<&'static str>,
    session: Option<&'static str>,
    at: DateTime<Utc>,
) -> Sent {
    Sent {
        id,
        kind,
        user,
        anon,
        session,
        at,
    }
}

/// Midnight UTC three days ago: the walk's first day.
fn first_day() -> DateTime<Utc> {
    (Utc::now() - TimeDelta::days(3))
        .duration_trunc(TimeDelta::days(1))
        .expect("midnight")
}

/// Posts canonical events and waits until MySQL holds `total` events.
async fn send(p: &TestPipeline, events: &[Sent], total: i64) {
    let body: Vec<Value> = events.iter().map(Sent::canonical).collect();
    let (status, answer) = p.post("/api/v1/events", &json!({ "events": body })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["accepted"].as_u64(),
        Some(events.len() as u64),
        "{answer}"
    );
    p.wait_for_events("default", total).await;
}

/// Posts Segment messages (`/v1/batch`) and waits until MySQL holds `total` events.
async fn send_segment(p: &TestPipeline, messages: &[Value], total: i64) {
    let (status, answer) = p.post("/v1/batch", &json!({ "batch": messages })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["accepted"].as_u64(),
        Some(messages.len() as u64),
        "{answer}"
    );
    p.wait_for_events("default", total).await;
}

fn segment_identify(id: &str, user: &str, anon: &str, at: DateTime<Utc>) -> Value {
    json!({"type": "identify", "messageId": id, "userId": user, "anonymousId": anon,
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "traits": {"plan": "pro"}})
}

async fn get(p: &TestPipeline, path: &str) -> Value {
    let answer = get_with(p, path, Some(ADMIN), &[]).await;
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
    answer.body
}

/// Waits until Redis has applied `n` events (MySQL is written first).
async fn wait_applied(p: &TestPipeline, n: u64) {
    eventually(
        Duration::from_secs(30),
        &format!("{n} events applied in Redis"),
        || async {
            let answer = get_with(p, &format!("{PROJECT}/stats/events"), Some(ADMIN), &[]).await;
            (answer.body["as_of"]["applied_events"].as_u64() >= Some(n)).then_some(())
        },
    )
    .await;
}

async fn wait_metric(p: &TestPipeline, line: &str, value: f64) {
    let address = p.worker.address.clone();
    eventually(Duration::from_secs(30), line, || {
        let address = address.clone();
        async move { (metric(&address, line).await >= Some(value)).then_some(()) }
    })
    .await;
}

/// Users per step of the stored `purchase` funnel (page_view, product_view, cart_add,
/// purchase, in order) over the events in `[from, to)`, computed from the events sent by the
/// documented rule: a person's earliest page view in the range is their entry, and each later
/// step must follow it, in order, within 24 hours of the entry.
fn funnel(events: &[Sent], from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<u64> {
    const STEPS: [&str; 4] = ["page_view", "product_view", "cart_add", "purchase"];
    let mut by_person: BTreeMap<&str, Vec<&Sent>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.at >= from && e.at < to) {
        by_person.entry(e.person()).or_default().push(e);
    }
    let mut reached = vec![0_u64; STEPS.len()];
    for mine in by_person.values_mut() {
        mine.sort_by_key(|e| e.at);
        let Some(entry) = mine.iter().position(|e| e.kind == STEPS[0]) else {
            continue;
        };
        let mut step = 1;
        for e in &mine[entry + 1..] {
            if step < STEPS.len()
                && e.kind == STEPS[step]
                && e.at - mine[entry].at <= TimeDelta::days(1)
            {
                step += 1;
            }
        }
        for n in reached.iter_mut().take(step) {
            *n += 1;
        }
    }
    reached
}

/// Day cohorts by first day seen (UTC), with how many came back on each day since, up to
/// today: `[{"start", "users", "returned"}]`.
fn retention(events: &[Sent]) -> Value {
    let today = Utc::now().date_naive();
    let mut days: BTreeMap<&str, BTreeSet<chrono::NaiveDate>> = BTreeMap::new();
    for e in events {
        days.entry(e.person())
            .or_default()
            .insert(e.at.date_naive());
    }
    let mut cohorts: BTreeMap<chrono::NaiveDate, Vec<&BTreeSet<chrono::NaiveDate>>> =
        BTreeMap::new();
    for active in days.values() {
        let first = *active.iter().next().expect("a day");
        cohorts.entry(first).or_default().push(active);
    }
    let cohorts: Vec<Value> = cohorts
        .into_iter()
        .map(|(start, members)| {
            let returned: Vec<usize> = (0..=(today - start).num_days())
                .map(|k| {
                    let day = start + TimeDelta::days(k);
                    members.iter().filter(|m| m.contains(&day)).count()
                })
                .collect();
            json!({"start": start.to_string(), "users": members.len(), "returned": returned})
        })
        .collect();
    json!(cohorts)
}

/// Checks every figure that counts people against the expectation computed from `events`.
async fn figures_count_one_walker(p: &TestPipeline, events: &[Sent]) {
    let (from, to) = (first_day(), Utc::now() + TimeDelta::minutes(1));
    let range = format!("from={}&to={}", query_time(from), query_time(to));
    let mine: Vec<&Sent> = events.iter().filter(|e| e.person() == WALKER).collect();

    // The profile: one person from the first anonymous page view to the last event.
    let profile = get(p, &format!("{PROJECT}/users/{WALKER}")).await;
    let first = mine.iter().map(|e| e.at).min().expect("walker events");
    let last = mine.iter().map(|e| e.at).max().expect("walker events");
    let sessions: BTreeSet<&str> = mine.iter().filter_map(|e| e.session).collect();
    assert_eq!(profile["total_events"], mine.len(), "{profile}");
    assert_eq!(profile["total_sessions"], sessions.len(), "{profile}");
    assert_eq!(
        profile["first_seen"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().ok()),
        Some(Some(first)),
        "{profile}"
    );
    assert_eq!(
        profile["last_seen"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().ok()),
        Some(Some(last)),
        "{profile}"
    );
    assert_eq!(
        (
            &profile["user_id"],
            &profile["anonymous_id"],
            &profile["properties"]["plan"]
        ),
        (&json!(WALKER), &json!(WALKER_ANON), &json!("pro")),
        "{profile}"
    );
    let anonymous = get_with(
        p,
        &format!("{PROJECT}/users/{WALKER_ANON}"),
        Some(ADMIN),
        &[],
    )
    .await;
    assert_eq!(
        anonymous.status, 404,
        "the anonymous id is no person of its own: {}",
        anonymous.body
    );

    // The path: every event of the walk, newest first.
    let path = get(
        p,
        &format!("{PROJECT}/users/{WALKER}/events?limit=100&{range}"),
    )
    .await;
    let got: Vec<&str> = path["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    let mut want = mine.clone();
    want.sort_by_key(|e| std::cmp::Reverse(e.at));
    let want: Vec<&str> = want.iter().map(|e| e.id).collect();
    assert_eq!(got, want, "{path}");
    let none = get(
        p,
        &format!("{PROJECT}/users/{WALKER_ANON}/events?limit=100&{range}"),
    )
    .await;
    assert_eq!(none["events"], json!([]), "{none}");

    // Unique counts (exact, MySQL): over the whole walk, and on the day of the login alone,
    // where the anonymous browsing and the purchase are one person.
    let people: BTreeSet<&str> = events.iter().map(Sent::person).collect();
    let summary = get(p, &format!("{PROJECT}/summary?{range}")).await;
    assert_eq!(
        summary["figures"]["unique_users"],
        people.len(),
        "{summary}"
    );
    let login_day = first_day() + TimeDelta::days(2);
    let that_day: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.at.date_naive() == login_day.date_naive())
        .map(Sent::person)
        .collect();
    assert_eq!(
        that_day.len(),
        1,
        "the test's own data: only the walker on day 2"
    );
    let day = format!(
        "from={}&to={}",
        query_time(login_day),
        query_time(login_day + TimeDelta::days(1))
    );
    let summary = get(p, &format!("{PROJECT}/summary?{day}")).await;
    assert_eq!(
        summary["figures"]["unique_users"],
        that_day.len(),
        "{summary}"
    );

    // The funnel on the day of the login: the walker goes through all four steps.
    let analysis = get(p, &format!("{PROJECT}/funnels/purchase/analysis?{day}")).await;
    let users: Vec<u64> = analysis["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["users"].as_u64())
        .collect();
    let expected = funnel(events, login_day, login_day + TimeDelta::days(1));
    assert_eq!(expected.last(), Some(&1), "the test's own data: one buyer");
    assert_eq!(users, expected, "{analysis}");

    // The retention cohort: the walker joins on day 0 and comes back on day 2.
    let cohorts = get(
        p,
        &format!(
            "{PROJECT}/retention?period=day&tz=UTC&from={}&to={}",
            first_day().date_naive(),
            query_time(to)
        ),
    )
    .await;
    let got: Vec<Value> = cohorts["cohorts"]
        .as_array()
        .unwrap_or_else(|| panic!("cohorts: {cohorts}"))
        .iter()
        .map(|c| json!({"start": c["start"], "users": c["users"], "returned": c["returned"]}))
        .collect();
    assert_eq!(json!(got), retention(events), "{cohorts}");

    // Nothing is stored under the anonymous id any more; one link says why.
    let pool = p.target.pool().await;
    for table in ["user_events", "users", "sessions"] {
        let n: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) FROM {table} WHERE distinct_id = ?"
        ))
        .bind(WALKER_ANON)
        .fetch_one(&pool)
        .await
        .expect("count")
        .get(0);
        assert_eq!(n, 0, "{table} rows under the anonymous id");
    }
    let links: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(distinct_id AS CHAR), CAST(person_id AS CHAR) FROM person_links",
    )
    .fetch_all(&pool)
    .await
    .expect("links");
    assert_eq!(links, vec![(WALKER_ANON.to_owned(), WALKER.to_owned())]);
}

/// Rows of the worker's tables with either id of the walker in any id column.
async fn rows_naming_walker(p: &TestPipeline) -> BTreeMap<&'static str, i64> {
    let pool = p.target.pool().await;
    let mut found = BTreeMap::new();
    for (table, columns) in [
        ("user_events", "distinct_id, user_id, anonymous_id"),
        ("users", "distinct_id, user_id, anonymous_id"),
        ("sessions", "distinct_id"),
        ("person_links", "distinct_id, person_id"),
    ] {
        let n: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) FROM {table} WHERE ? IN ({columns}) OR ? IN ({columns})"
        ))
        .bind(WALKER)
        .bind(WALKER_ANON)
        .fetch_one(&pool)
        .await
        .expect("count")
        .get(0);
        if n > 0 {
            found.insert(table, n);
        }
    }
    found
}

/// Redis keys, and members of the online set, naming either id of the walker.
async fn redis_naming_walker(p: &TestPipeline) -> Vec<String> {
    let mut redis = p.target.redis().await;
    let names = |s: &str| s.contains(WALKER) || s.contains(WALKER_ANON);
    let mut found: Vec<String> = keys_with_prefix(&mut redis, &p.target.redis_prefix)
        .await
        .into_iter()
        .filter(|k| names(k))
        .collect();
    let online: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{}:default:online", p.target.redis_prefix))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .expect("ZRANGE");
    found.extend(online.into_iter().filter(|m| names(m)));
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_visitor_anonymous_then_logged_in_then_buying_is_one_person_until_erased() {
    let keys = [format!("{ADMIN}=default:admin")];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let p = pipeline_with_keys(&keys, 1000, 1000).await;
    let d0 = first_day();
    let at = |day: i64, hour: i64, minute: i64| {
        d0 + TimeDelta::days(day) + TimeDelta::hours(hour) + TimeDelta::minutes(minute)
    };
    let anon = Some(WALKER_ANON);
    let walker = Some(WALKER);

    // Day 0: the visitor browses anonymously; two other people visit.
    let browsing = vec![
        event("w-1", "page_view", None, anon, Some("s-w1"), at(0, 10, 0)),
        event(
            "w-2",
            "product_view",
            None,
            anon,
            Some("s-w1"),
            at(0, 10, 5),
        ),
        event(
            "b-1",
            "page_view",
            Some("bob"),
            None,
            Some("s-b1"),
            at(0, 11, 0),
        ),
        event(
            "o-1",
            "page_view",
            None,
            Some("anon-other"),
            Some("s-o1"),
            at(0, 12, 0),
        ),
        event(
            "o-2",
            "product_view",
            None,
            Some("anon-other"),
            Some("s-o1"),
            at(0, 12, 1),
        ),
    ];
    // Day 2: back, still anonymous, up to the cart.
    let returning = vec![
        event("w-3", "page_view", None, anon, Some("s-w2"), at(2, 9, 0)),
        event("w-4", "product_view", None, anon, Some("s-w2"), at(2, 9, 5)),
        event("w-5", "cart_add", None, anon, Some("s-w2"), at(2, 9, 10)),
    ];
    // The login (a Segment identify) happened before the cart add, and arrives after it.
    let login = event("w-6", "identify", walker, anon, None, at(2, 9, 8));
    // Then the purchase as the user, and a page view that carries only the anonymous id.
    let after = vec![
        event("w-7", "purchase", walker, anon, Some("s-w2"), at(2, 9, 15)),
        event("w-8", "page_view", None, anon, Some("s-w2"), at(2, 9, 20)),
    ];
    send(&p, &browsing, 5).await;
    send(&p, &returning, 8).await;
    let identify = segment_identify(login.id, WALKER, WALKER_ANON, login.at);
    send_segment(&p, std::slice::from_ref(&identify), 9).await;
    send(&p, &after, 11).await;
    let mut all: Vec<Sent> = browsing.clone();
    all.extend(returning.iter().cloned());
    all.push(login);
    all.extend(after.iter().cloned());
    wait_applied(&p, all.len() as u64).await;
    figures_count_one_walker(&p, &all).await;

    // A replay of every message (the same event ids) changes nothing.
    send(&p, &browsing, 11).await;
    send(&p, &returning, 11).await;
    send_segment(&p, std::slice::from_ref(&identify), 11).await;
    send(&p, &after, 11).await;
    wait_metric(
        &p,
        r#"worker_duplicates_skipped_total{store="mysql"}"#,
        11.0,
    )
    .await;
    figures_count_one_walker(&p, &all).await;

    // An access request by the anonymous id is served the person's export.
    let response = p
        .http
        .get(format!(
            "{}{PROJECT}/users/{WALKER_ANON}/export",
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
    let mine = all.iter().filter(|e| e.person() == WALKER).count();
    assert_eq!(lines.len(), mine + 2, "{text}");
    assert_eq!(
        (&lines[0]["record"], &lines[0]["distinct_id"]),
        (&json!("profile"), &json!(WALKER)),
        "{text}"
    );
    let exported: BTreeSet<&str> = lines[1..=mine]
        .iter()
        .filter_map(|l| l["event_id"].as_str())
        .collect();
    let sent: BTreeSet<&str> = all
        .iter()
        .filter(|e| e.person() == WALKER)
        .map(|e| e.id)
        .collect();
    assert_eq!(exported, sent, "{text}");
    assert_eq!(lines[mine + 1], json!({"record": "end", "events": mine}));

    // Erasing the person by their user id erases the anonymous id's traces too.
    let before = rows_naming_walker(&p).await;
    assert!(
        !redis_naming_walker(&p).await.is_empty(),
        "Redis names the walker before"
    );
    let response = p
        .http
        .delete(format!("{}{PROJECT}/users/{WALKER}", p.worker.address))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("erase");
    assert_eq!(response.status().as_u16(), 200);
    let erased: Value = response.json().await.expect("json");
    assert_eq!(erased["erased"]["events"], mine, "{erased}");
    assert_eq!(erased["erased"]["links"], 1, "{erased}");
    assert_eq!(erased["linked_ids"], json!([WALKER_ANON]), "{erased}");
    assert_eq!(
        before.get("user_events"),
        Some(&(mine as i64)),
        "{before:?}"
    );
    assert_eq!(rows_naming_walker(&p).await, BTreeMap::new());
    assert_eq!(redis_naming_walker(&p).await, Vec::<String>::new());

    // Later events under either id are dropped at ingest; bob's are stored.
    let later = vec![
        event("w-9", "page_view", None, anon, Some("s-w3"), Utc::now()),
        event("w-10", "page_view", walker, None, Some("s-w3"), Utc::now()),
        event(
            "b-2",
            "page_view",
            Some("bob"),
            None,
            Some("s-b2"),
            Utc::now(),
        ),
    ];
    send(&p, &later, (all.len() - mine + 1) as i64).await;
    wait_metric(&p, "worker_suppressed_events_total", 2.0).await;
    assert_eq!(rows_naming_walker(&p).await, BTreeMap::new());
    assert_eq!(redis_naming_walker(&p).await, Vec::<String>::new());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_known_users_are_never_merged_and_a_first_link_is_kept() {
    let keys = [format!("{ADMIN}=default:admin")];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let p = pipeline_with_keys(&keys, 1000, 1000).await;
    let t = first_day() + TimeDelta::days(1);
    let minute = |m: i64| t + TimeDelta::minutes(m);
    let visits = vec![
        event(
            "k-1",
            "page_view",
            Some("bob"),
            None,
            Some("s-1"),
            minute(0),
        ),
        event(
            "k-2",
            "page_view",
            None,
            Some("anon-x"),
            Some("s-2"),
            minute(1),
        ),
        event(
            "k-3",
            "page_view",
            None,
            Some("anon-y"),
            Some("s-3"),
            minute(2),
        ),
    ];
    send(&p, &visits, 3).await;
    let stamp = |m: i64| minute(m).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // amy logs in on anon-x, then an alias links anon-y to her (Segment's previousId).
    send_segment(
        &p,
        &[
            segment_identify("k-4", "amy", "anon-x", minute(3)),
            json!({"type": "alias", "messageId": "k-5", "previousId": "anon-y",
                "userId": "amy", "timestamp": stamp(4)}),
        ],
        5,
    )
    .await;
    // Refused: an alias of bob (a known user) to amy; anon-x, already amy's, to zed. The
    // same link again is no refusal and no change.
    send_segment(
        &p,
        &[
            json!({"type": "alias", "messageId": "k-6", "previousId": "bob",
                "userId": "amy", "timestamp": stamp(5)}),
            segment_identify("k-7", "zed", "anon-x", minute(6)),
            segment_identify("k-8", "amy", "anon-x", minute(7)),
        ],
        8,
    )
    .await;
    wait_metric(
        &p,
        r#"worker_identity_links_refused_total{reason="known_user"}"#,
        1.0,
    )
    .await;
    let address = p.worker.address.clone();
    for (reason, n) in [("known_user", 1.0), ("already_linked", 1.0)] {
        let line = format!(r#"worker_identity_links_refused_total{{reason="{reason}"}}"#);
        assert_eq!(metric(&address, &line).await, Some(n), "{line}");
    }

    let pool = p.target.pool().await;
    let links: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(distinct_id AS CHAR), CAST(person_id AS CHAR) FROM person_links \
         ORDER BY distinct_id",
    )
    .fetch_all(&pool)
    .await
    .expect("links");
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(links, vec![pair("anon-x", "amy"), pair("anon-y", "amy")]);
    let people: Vec<(String, u64)> = sqlx::query_as(
        "SELECT CAST(distinct_id AS CHAR), total_events FROM users ORDER BY distinct_id",
    )
    .fetch_all(&pool)
    .await
    .expect("users");
    // amy: anon-x's and anon-y's page views, her identify, two aliases (one refused, stored
    // as her event all the same) and the repeated identify; bob and zed stay themselves.
    assert_eq!(
        people,
        vec![
            (("amy".to_owned()), 6),
            ("bob".to_owned(), 1),
            ("zed".to_owned(), 1)
        ]
    );
    let range = format!(
        "from={}&to={}",
        query_value(&t.date_naive().to_string()),
        query_time(Utc::now() + TimeDelta::minutes(1))
    );
    let summary = get(&p, &format!("{PROJECT}/summary?{range}")).await;
    assert_eq!(summary["figures"]["unique_users"], 3, "{summary}");

    // An opt-out asked by one anonymous id stops the person: both linked ids and the user id.
    let call = |method: reqwest::Method, who: &str| {
        p.http
            .request(
                method,
                format!("{}{PROJECT}/users/{who}/suppression", p.worker.address),
            )
            .bearer_auth(ADMIN)
            .send()
    };
    let response = call(reqwest::Method::PUT, "anon-x").await.expect("opt-out");
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(
        (&answer["person"], &answer["linked_ids"]),
        (&json!("amy"), &json!(["anon-x", "anon-y"])),
        "{answer}"
    );
    let later = vec![
        event(
            "k-9",
            "page_view",
            None,
            Some("anon-y"),
            Some("s-3"),
            minute(8),
        ),
        event(
            "k-10",
            "page_view",
            Some("amy"),
            None,
            Some("s-2"),
            minute(9),
        ),
        event(
            "k-11",
            "page_view",
            Some("bob"),
            None,
            Some("s-1"),
            minute(10),
        ),
    ];
    send(&p, &later, 9).await;
    wait_metric(&p, "worker_suppressed_events_total", 2.0).await;
    // Resumed by the other anonymous id: the person's events are collected again.
    let response = call(reqwest::Method::DELETE, "anon-y")
        .await
        .expect("resume");
    assert_eq!(response.status().as_u16(), 200);
    send(
        &p,
        &[event(
            "k-12",
            "page_view",
            None,
            Some("anon-y"),
            Some("s-3"),
            minute(11),
        )],
        10,
    )
    .await;
    let amy: u64 = sqlx::query_scalar(
        "SELECT total_events FROM users WHERE project = 'default' AND distinct_id = 'amy'",
    )
    .fetch_one(&pool)
    .await
    .expect("amy");
    assert_eq!(amy, 7, "amy's 6, none while opted out, one after");
    p.stop().await;
}

/// `events` as messages of `partition` from `offset` on.
fn messages<'a>(
    events: &'a [insightflow_model::Event],
    partition: i32,
    offset: i64,
) -> Vec<insightflow_worker::store::mysql::Sourced<'a>> {
    use insightflow_worker::store::mysql::{Source, Sourced};
    events
        .iter()
        .zip(offset..)
        .map(|(event, offset)| Sourced {
            event,
            source: Source {
                topic: "written-directly",
                partition,
                offset,
            },
        })
        .collect()
}

/// Writes a batch as the consumer does: a transaction that lost a race is tried again.
async fn write(
    mysql: &insightflow_worker::store::mysql::MysqlStore,
    batch: &[insightflow_worker::store::mysql::Sourced<'_>],
) -> insightflow_worker::store::mysql::MysqlOutcome {
    for _ in 0..20 {
        match mysql.write(batch).await {
            Ok(outcome) => return outcome,
            Err(insightflow_worker::store::StoreError::Transient(e)) => {
                tracing::info!(error = %e, "retrying a batch");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("refused: {e}"),
        }
    }
    panic!("a batch failed 20 times");
}

/// What the tables say about people: events per distinct id, profiles, sessions per
/// distinct id, links.
async fn people_rows(pool: &sqlx::MySqlPool) -> Vec<String> {
    let mut rows = Vec::new();
    for (what, sql) in [
        (
            "events",
            "SELECT CONCAT(distinct_id, ' ', COUNT(*)) AS x FROM user_events GROUP BY distinct_id",
        ),
        (
            "users",
            "SELECT CONCAT_WS(' ', distinct_id, user_id, anonymous_id, total_events, \
             total_sessions, first_seen, last_seen) AS x FROM users",
        ),
        (
            "sessions",
            "SELECT CONCAT(session_id, ' ', distinct_id, ' ', events) AS x FROM sessions",
        ),
        (
            "links",
            "SELECT CONCAT(distinct_id, ' ', person_id) AS x FROM person_links",
        ),
    ] {
        let found: Vec<String> =
            sqlx::query_scalar(&format!("SELECT CAST(x AS CHAR) FROM ({sql}) AS t"))
                .fetch_all(pool)
                .await
                .expect(what);
        rows.extend(found.into_iter().map(|r| format!("{what}: {r}")));
    }
    rows.sort();
    rows
}

/// The identify and the anonymous events come in different partitions (keyed by user), so
/// their batches can be written at the same time: whichever commits first, the anonymous
/// events end up under the person. Redelivered batches (the same messages) change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_batches_and_redeliveries_leave_one_person() {
    use crate::support::{direct, worker_settings, WorkerTarget};
    use insightflow_worker::store::mysql::MysqlStore;

    const ROUNDS: i64 = 12;
    let target = WorkerTarget::create().await;
    let mysql = MysqlStore::connect(&worker_settings(&target).mysql)
        .await
        .expect("MySQL");
    let now = Utc::now();
    let t = |round: i64, minute: i64| {
        (now - TimeDelta::hours(2) + TimeDelta::minutes(round * 5 + minute))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let mut anonymous = Vec::new();
    let mut logins = Vec::new();
    for round in 0..ROUNDS {
        let (anon, user) = (format!("anon-r{round}"), format!("user-r{round}"));
        let browsing: Vec<Value> = (0..5)
            .map(|i| {
                json!({"event_id": format!("a-{round}-{i}"), "event_type": "page_view",
                    "anonymous_id": anon, "session_id": format!("s-{round}"),
                    "timestamp": t(round, i)})
            })
            .collect();
        let login = vec![
            json!({"event_id": format!("i-{round}"), "event_type": "identify", "user_id": user,
                "anonymous_id": anon, "session_id": format!("s-{round}"), "timestamp": t(round, 2)}),
            json!({"event_id": format!("p-{round}"), "event_type": "purchase", "user_id": user,
                "session_id": format!("s-{round}"), "timestamp": t(round, 4)}),
        ];
        anonymous.push(direct::validated(&browsing, now));
        logins.push(direct::validated(&login, now));
    }
    let mut offsets = (0_i64, 0_i64);
    let mut batches = Vec::new();
    for round in 0..ROUNDS as usize {
        batches.push((
            messages(&anonymous[round], 0, offsets.0),
            messages(&logins[round], 1, offsets.1),
        ));
        offsets.0 += anonymous[round].len() as i64;
        offsets.1 += logins[round].len() as i64;
    }
    // Each round writes its two batches at once; half the rounds start with the identify.
    for (round, (browsing, login)) in batches.iter().enumerate() {
        if round % 2 == 0 {
            tokio::join!(write(&mysql, browsing), write(&mysql, login));
        } else {
            tokio::join!(write(&mysql, login), write(&mysql, browsing));
        }
    }
    let pool = mysql.pool().clone();
    let stored = people_rows(&pool).await;
    let mut expected = Vec::new();
    for round in 0..ROUNDS {
        let (anon, user) = (format!("anon-r{round}"), format!("user-r{round}"));
        expected.push(format!("events: {user} 7"));
        expected.push(format!("links: {anon} {user}"));
        expected.push(format!("sessions: s-{round} {user} 7"));
    }
    let mut without_profiles: Vec<String> = stored
        .iter()
        .filter(|r| !r.starts_with("users: "))
        .cloned()
        .collect();
    without_profiles.sort();
    expected.sort();
    assert_eq!(without_profiles, expected);
    let profiles: Vec<(String, u64, u64)> = sqlx::query_as(
        "SELECT CAST(distinct_id AS CHAR), total_events, total_sessions FROM users \
         ORDER BY distinct_id",
    )
    .fetch_all(&pool)
    .await
    .expect("users");
    let mut want: Vec<(String, u64, u64)> = (0..ROUNDS)
        .map(|round| (format!("user-r{round}"), 7, 1))
        .collect();
    want.sort();
    assert_eq!(profiles, want);

    // Redelivered, the same messages in the same batches: nothing new, nothing moves.
    for (browsing, login) in &batches {
        let (a, b) = tokio::join!(write(&mysql, browsing), write(&mysql, login));
        assert_eq!((a.inserted, b.inserted), (0, 0));
        assert!(a.links_refused.is_empty() && b.links_refused.is_empty());
    }
    assert_eq!(people_rows(&pool).await, stored);
    target.cleanup().await;
}
