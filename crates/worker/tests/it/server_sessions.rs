//! Server sessions (`store/sessions.rs`): events without a `session_id` get one by the
//! inactivity rule, and the sessions MySQL ends with are those of an in-order computation
//! here, whatever the arrival order, the batching, redeliveries, client retries, and a
//! `kill -9` of the worker mid-stream.

// A test panics to fail: unwrapping in its helpers is how it reports.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, DurationRound, NaiveDateTime, TimeDelta, Utc};
use insightflow_worker::store::mysql::{MysqlStore, Source, Sourced, Verdict};
use insightflow_worker::store::sessions::SessionRule;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::counts::{mysql_count, send_to, WAIT};
use crate::support::direct::validated;
use crate::support::process::WorkerProcess;
use crate::support::{eventually, worker_settings, WorkerTarget};

const TOPIC: &str = "server-sessions";

/// One generated event: who, when (ms since the epoch), and the client's session if any.
#[derive(Debug, Clone)]
struct Input {
    event_id: String,
    user: String,
    ms: i64,
    client_session: Option<String>,
    page: Option<String>,
}

impl Input {
    fn raw(&self) -> Value {
        let time = DateTime::from_timestamp_millis(self.ms).unwrap();
        let mut e = json!({
            "event_id": self.event_id,
            "event_type": if self.page.is_some() { "page_view" } else { "click" },
            "user_id": self.user,
            "timestamp": time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        if let Some(path) = &self.page {
            e["page"] = json!({ "path": path });
        }
        if let Some(s) = &self.client_session {
            e["session_id"] = json!(s);
        }
        e
    }
}

/// A small deterministic generator (the test must not depend on a seed's library version).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// `users` people with `per_user` events each, gaps drawn so that about a third exceed 30
/// minutes; every fifth user also sends a few events with a client session; a few events
/// share a time (ties are broken by event id).
fn generate(users: usize, per_user: usize, base_ms: i64, rng: &mut Lcg) -> Vec<Input> {
    let mut out = Vec::new();
    for u in 0..users {
        let mut ms = base_ms + rng.next(3_600_000) as i64;
        for n in 0..per_user {
            ms += match rng.next(10) {
                // within a session
                0..=5 => rng.next(20) as i64 * 60_000 + rng.next(1000) as i64,
                // exactly the limit: the same session
                6 => 30 * 60_000,
                // the same millisecond as the previous event
                7 => 0,
                // a new session
                _ => (31 + rng.next(120) as i64) * 60_000 + rng.next(1000) as i64,
            };
            let client_session = (u % 5 == 0 && n % 4 == 0).then(|| format!("c{u}-{}", n / 8));
            out.push(Input {
                event_id: format!("ev-{u}-{n}"),
                user: format!("user-{u}"),
                ms,
                client_session,
                page: (rng.next(3) > 0).then(|| format!("/p{}", rng.next(6))),
            });
        }
    }
    out
}

/// One session's row: person, started and last seen (ms), events, page views, and the entry
/// and exit page views (event id, path).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    person: String,
    started: i64,
    last: i64,
    events: i64,
    page_views: i64,
    entry: Option<(String, String)>,
    exit: Option<(String, String)>,
}

impl Row {
    /// The row of a session of `events`: its page views' first and last by (time, event id).
    fn of(person: &str, events: &[&Input]) -> Self {
        let mut sorted = events.to_vec();
        sorted.sort_by(|a, b| (a.ms, &a.event_id).cmp(&(b.ms, &b.event_id)));
        let views: Vec<(String, String)> = sorted
            .iter()
            .filter_map(|i| i.page.clone().map(|p| (i.event_id.clone(), p)))
            .collect();
        Self {
            person: person.to_owned(),
            started: sorted[0].ms,
            last: sorted[sorted.len() - 1].ms,
            events: sorted.len() as i64,
            page_views: views.len() as i64,
            entry: views.first().cloned(),
            exit: views.last().cloned(),
        }
    }
}

/// What MySQL should hold: every session, each event's session, each person's total.
#[derive(Debug, PartialEq, Eq)]
struct Sessions {
    /// id -> its row
    sessions: BTreeMap<String, Row>,
    /// event id -> session id (client or server)
    events: BTreeMap<String, Option<String>>,
    /// person -> total_sessions
    totals: BTreeMap<String, i64>,
}

/// The documented id: `srv:` and the first 32 hex digits of the SHA-256 of
/// `{project}\n{distinct_id}\n{first event's ms}\n{first event's id}`.
fn server_id(project: &str, person: &str, ms: i64, event_id: &str) -> String {
    let digest = Sha256::digest(format!("{project}\n{person}\n{ms}\n{event_id}").as_bytes());
    format!("srv:{}", &format!("{digest:x}")[..32])
}

/// The sessions of `inputs` computed in order, here, by the documented rule.
fn in_order(inputs: &[Input], gap_minutes: i64) -> Sessions {
    let mut by_person: BTreeMap<&str, Vec<&Input>> = BTreeMap::new();
    let mut events = BTreeMap::new();
    let mut client: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut client_events: BTreeMap<&str, Vec<&Input>> = BTreeMap::new();
    for i in inputs {
        match &i.client_session {
            Some(s) => {
                events.insert(i.event_id.clone(), Some(s.clone()));
                client.entry(&i.user).or_default().insert(s);
                client_events.entry(s).or_default().push(i);
            }
            None => by_person.entry(&i.user).or_default().push(i),
        }
    }
    let mut sessions: BTreeMap<String, Row> = client_events
        .into_iter()
        .map(|(id, list)| (id.to_owned(), Row::of(&list[0].user, &list)))
        .collect();
    let mut totals: BTreeMap<String, i64> = client
        .iter()
        .map(|(p, s)| ((*p).to_owned(), s.len() as i64))
        .collect();
    for (person, mut list) in by_person {
        list.sort_by(|a, b| (a.ms, &a.event_id).cmp(&(b.ms, &b.event_id)));
        let mut groups: Vec<Vec<&Input>> = Vec::new();
        for i in list {
            match groups.last_mut() {
                Some(g) if i.ms - g.last().unwrap().ms <= gap_minutes * 60_000 => g.push(i),
                _ => groups.push(vec![i]),
            }
        }
        *totals.entry(person.to_owned()).or_default() += groups.len() as i64;
        for g in groups {
            let id = server_id("default", person, g[0].ms, &g[0].event_id);
            for i in &g {
                events.insert(i.event_id.clone(), Some(id.clone()));
            }
            sessions.insert(id, Row::of(person, &g));
        }
    }
    Sessions {
        sessions,
        events,
        totals,
    }
}

fn ms(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp_millis()
}

/// What MySQL holds.
async fn stored(target: &WorkerTarget) -> Sessions {
    let pool = target.pool().await;
    type Stored = (
        String,
        String,
        NaiveDateTime,
        NaiveDateTime,
        u64,
        u64,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Stored> = sqlx::query_as(
        "SELECT CAST(session_id AS CHAR), CAST(distinct_id AS CHAR), started_at, last_seen, \
         events, page_views, CAST(entry_event_id AS CHAR), CAST(entry_path AS CHAR), \
         CAST(exit_event_id AS CHAR), CAST(exit_path AS CHAR) \
         FROM sessions WHERE project = 'default'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let events: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT CAST(event_id AS CHAR), CAST(session_id AS CHAR) FROM user_events \
         WHERE project = 'default'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let totals: Vec<(String, u64)> = sqlx::query_as(
        "SELECT CAST(distinct_id AS CHAR), total_sessions FROM users WHERE project = 'default'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    Sessions {
        sessions: rows
            .into_iter()
            .map(
                |(id, person, s, l, n, views, entry_id, entry, exit_id, exit)| {
                    let row = Row {
                        person,
                        started: ms(s),
                        last: ms(l),
                        events: n as i64,
                        page_views: views as i64,
                        entry: entry_id.zip(entry),
                        exit: exit_id.zip(exit),
                    };
                    (id, row)
                },
            )
            .collect(),
        events: events.into_iter().collect(),
        totals: totals
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(p, n)| (p, n as i64))
            .collect(),
    }
}

async fn store(target: &WorkerTarget, gap_minutes: i64) -> MysqlStore {
    MysqlStore::connect(&worker_settings(target).mysql)
        .await
        .unwrap()
        .with_sessions(SessionRule {
            inactivity: TimeDelta::minutes(gap_minutes),
        })
}

/// The generator's base time: three days ago, whole seconds (every time is then a whole
/// millisecond, as MySQL keeps it).
fn base_ms(now: DateTime<Utc>) -> i64 {
    (now - TimeDelta::days(3))
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap()
        .timestamp_millis()
}

fn assert_same_sessions(want: &Sessions, got: &Sessions, context: &str) {
    assert_eq!(
        want.sessions.len(),
        got.sessions.len(),
        "{context}: session count"
    );
    for (id, s) in &want.sessions {
        assert_eq!(got.sessions.get(id), Some(s), "{context}: session {id}");
    }
    assert_eq!(want.events, got.events, "{context}: events' sessions");
    assert_eq!(want.totals, got.totals, "{context}: users.total_sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_batched_and_redelivered_input_ends_as_the_in_order_sessions() {
    let now = Utc::now();
    let mut rng = Lcg(19);
    let inputs = generate(12, 40, base_ms(now), &mut rng);
    let want = in_order(&inputs, 30);
    assert!(
        want.sessions.len() > 60 && want.sessions.values().any(|s| s.events == 1),
        "the data set has many sessions, bounces among them: {}",
        want.sessions.len()
    );
    let events = validated(&inputs.iter().map(Input::raw).collect::<Vec<_>>(), now);

    // In order, one batch.
    let in_order_target = WorkerTarget::create().await;
    let mysql = store(&in_order_target, 30).await;
    let sources: Vec<Sourced<'_>> = events
        .iter()
        .zip(0..)
        .map(|(event, offset)| Sourced {
            event,
            source: Source {
                topic: TOPIC,
                partition: 0,
                offset,
            },
        })
        .collect();
    mysql.write(&sources).await.unwrap();
    assert_same_sessions(&want, &stored(&in_order_target).await, "in order");

    // Shuffled, in batches of 1..40 messages, each batch redelivered now and then, and a
    // client's retry of an earlier event (another message, the same event id) now and then.
    let shuffled_target = WorkerTarget::create().await;
    let mysql = store(&shuffled_target, 30).await;
    let mut order: Vec<usize> = (0..events.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.next(i as u64 + 1) as usize);
    }
    let mut offset = 0;
    let mut at = 0;
    let (mut redelivered, mut retried) = (0, 0);
    while at < order.len() {
        let size = (1 + rng.next(40) as usize).min(order.len() - at);
        let mut batch: Vec<Sourced<'_>> = Vec::with_capacity(size + 1);
        for &i in &order[at..at + size] {
            batch.push(Sourced {
                event: &events[i],
                source: Source {
                    topic: TOPIC,
                    partition: 0,
                    offset,
                },
            });
            offset += 1;
        }
        if at > 0 && rng.next(4) == 0 {
            let earlier = order[rng.next(at as u64) as usize];
            batch.push(Sourced {
                event: &events[earlier],
                source: Source {
                    topic: TOPIC,
                    partition: 0,
                    offset,
                },
            });
            offset += 1;
            retried += 1;
        }
        let first = mysql.write(&batch).await.unwrap();
        if rng.next(3) == 0 {
            // Redelivered (the consumer died before storing its offsets): nothing changes,
            // and every event that counts in Redis is given its stored session.
            let again = mysql.write(&batch).await.unwrap();
            assert_eq!(again.inserted, 0);
            let now_stored = stored(&shuffled_target).await;
            for ((s, verdict), session) in batch.iter().zip(&again.verdicts).zip(&again.session_ids)
            {
                let expected = match verdict {
                    Verdict::StoredByThisMessage if s.event.session_id().is_none() => {
                        now_stored.events[s.event.event_id().as_str()].clone()
                    }
                    _ => None,
                };
                assert_eq!(session, &expected, "redelivered {}", s.event.event_id());
            }
            redelivered += 1;
        }
        assert_eq!(first.session_ids.len(), batch.len());
        at += size;
    }
    assert!(redelivered > 3 && retried > 3, "{redelivered} {retried}");
    assert_same_sessions(&want, &stored(&shuffled_target).await, "shuffled");

    // The migration's back-fill of the page figures, on rows that had none, gives the same.
    let pool = shuffled_target.pool().await;
    sqlx::query(
        "UPDATE sessions SET page_views = 0, entry_path = NULL, entry_at = NULL, \
         entry_event_id = NULL, exit_path = NULL, exit_at = NULL, exit_event_id = NULL",
    )
    .execute(&pool)
    .await
    .unwrap();
    let migration = include_str!("../../../../migrations/20261129130000_server_sessions.sql");
    let backfill = &migration[migration.find("CREATE TEMPORARY TABLE").unwrap()..];
    // One connection: the back-fill gathers in a temporary table.
    let mut conn = pool.acquire().await.unwrap();
    for statement in backfill.split(';').filter(|s| !s.trim().is_empty()) {
        sqlx::query(statement).execute(&mut *conn).await.unwrap();
    }
    drop(conn);
    pool.close().await;
    assert_same_sessions(&want, &stored(&shuffled_target).await, "back-filled");

    in_order_target.cleanup().await;
    shuffled_target.cleanup().await;
}

fn input(user: &str, id: &str, minutes: i64, base: i64) -> Input {
    Input {
        event_id: id.to_owned(),
        user: user.to_owned(),
        ms: base + minutes * 60_000,
        client_session: None,
        page: Some(format!("/{id}")),
    }
}

/// Writes `inputs` as the next messages of the partition (after those in `sent`).
async fn write_inputs(
    mysql: &MysqlStore,
    sent: &mut Vec<Input>,
    inputs: Vec<Input>,
    now: DateTime<Utc>,
) {
    let events = validated(&inputs.iter().map(Input::raw).collect::<Vec<_>>(), now);
    let sources: Vec<Sourced<'_>> = events
        .iter()
        .zip(sent.len() as i64..)
        .map(|(event, offset)| Sourced {
            event,
            source: Source {
                topic: TOPIC,
                partition: 0,
                offset,
            },
        })
        .collect();
    mysql.write(&sources).await.unwrap();
    sent.extend(inputs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_event_merges_the_sessions_it_bridges_and_moves_a_start() {
    let now = Utc::now();
    let base = base_ms(now);
    let target = WorkerTarget::create().await;
    let mysql = store(&target, 30).await;
    let mut sent: Vec<Input> = Vec::new();
    // Two sessions 40 minutes apart; another user alone in between is not touched.
    let first = vec![
        input("u", "a", 0, base),
        input("u", "b", 10, base),
        input("u", "c", 50, base),
        input("u", "d", 60, base),
        input("v", "x", 30, base),
    ];
    write_inputs(&mysql, &mut sent, first, now).await;
    let two = stored(&target).await;
    assert_same_sessions(&in_order(&sent, 30), &two, "two sessions");
    assert_eq!(two.totals["u"], 2);

    // A late event at minute 30 is within 30 minutes of both: one session of five events.
    write_inputs(&mysql, &mut sent, vec![input("u", "late", 30, base)], now).await;
    let merged = stored(&target).await;
    assert_same_sessions(&in_order(&sent, 30), &merged, "merged");
    let u: Vec<_> = merged
        .sessions
        .values()
        .filter(|s| s.person == "u")
        .map(|s| (s.started, s.last, s.events))
        .collect();
    assert_eq!(u, [(base, base + 60 * 60_000, 5)]);
    assert_eq!(
        merged.totals["u"], 1,
        "total_sessions counted down on the merge"
    );

    // An earlier event within the gap moves the start, hence the id, of the whole session.
    write_inputs(&mysql, &mut sent, vec![input("u", "early", -20, base)], now).await;
    let moved = stored(&target).await;
    assert_same_sessions(&in_order(&sent, 30), &moved, "moved start");
    assert!(moved
        .sessions
        .contains_key(&server_id("default", "u", base - 20 * 60_000, "early")));
    assert_eq!(moved.events["a"], moved.events["early"]);
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inactivity_is_configurable_and_a_client_srv_id_is_not_a_session() {
    let now = Utc::now();
    let mut rng = Lcg(7);
    let mut inputs = generate(4, 30, base_ms(now), &mut rng);
    // A client id in the server's namespace is ignored: the event is sessionless.
    inputs[3].client_session = Some("srv:0123456789abcdef0123456789abcdef".to_owned());
    let target = WorkerTarget::create().await;
    let mysql = store(&target, 10).await;
    let mut raw: Vec<Value> = inputs.iter().map(Input::raw).collect();
    // An identify call is no activity: no server session, not even one of its own.
    let identify_at = DateTime::from_timestamp_millis(base_ms(now)).unwrap() - TimeDelta::days(1);
    raw.push(
        json!({"event_id": "identify-1", "event_type": "identify", "user_id": "user-1",
        "timestamp": identify_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
    );
    let events = validated(&raw, now);
    let sources: Vec<Sourced<'_>> = events
        .iter()
        .zip(0..)
        .map(|(event, offset)| Sourced {
            event,
            source: Source {
                topic: TOPIC,
                partition: 0,
                offset,
            },
        })
        .collect();
    mysql.write(&sources).await.unwrap();
    inputs[3].client_session = None;
    let mut want = in_order(&inputs, 10);
    want.events.insert("identify-1".to_owned(), None);
    assert_ne!(want.sessions.len(), in_order(&inputs, 30).sessions.len());
    assert_same_sessions(&want, &stored(&target).await, "10-minute rule");
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_leaves_the_in_order_sessions() {
    let _serial = crate::support::HEAVY.lock().await;
    let now = Utc::now();
    let mut rng = Lcg(2026);
    let inputs = generate(50, 40, base_ms(now), &mut rng);
    let want = in_order(&inputs, 30);
    let mut raw: Vec<Value> = inputs.iter().map(Input::raw).collect();
    for i in (1..raw.len()).rev() {
        raw.swap(i, rng.next(i as u64 + 1) as usize);
    }
    let target = WorkerTarget::create().await;
    let ingest = crate::support::spawn_ingest(&target.topic).await;
    let mut first = WorkerProcess::spawn(&target, 100, &[]);
    let address = ingest.address.clone();
    let total = raw.len() as i64;
    let sender = tokio::spawn(async move { send_to(&address, raw, 100).await });
    eventually(WAIT, "the first worker to write 600 events", || async {
        (mysql_count(&target).await >= 600).then_some(())
    })
    .await;
    first.sigkill();
    eprintln!(
        "killed the worker with {} of {total} events in MySQL",
        mysql_count(&target).await
    );
    sender.await.unwrap();
    let mut second = WorkerProcess::spawn(&target, 100, &[]);
    eventually(WAIT, "every event in MySQL", || async {
        (mysql_count(&target).await >= total).then_some(())
    })
    .await;
    // The last batch's transaction has committed once its events are counted.
    second.terminate();
    assert_same_sessions(&want, &stored(&target).await, "after kill -9");
    ingest.stop().await;
    target.cleanup().await;
}
