//! `user_events` partitioned by day of event time (migration 20261129150000), against real
//! MariaDB and Redis: a client's retry whose event time moved to another day is stored once;
//! the migration over a populated table keeps every row and its dedupe; retention drops
//! exactly the days past the cutoff; the job creates the days ahead and an event beyond them
//! still inserts (pmax).

// A test panics to fail: unwrapping in its helpers is how it reports.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use insightflow_model::{parse_batch, ClientInfo, Event, Limits, ProjectId, RawBody, RequestClock};
use insightflow_worker::metrics::WorkerMetrics;
use insightflow_worker::retention::{self, partition_name};
use insightflow_worker::store::mysql::{MysqlStore, Source, Sourced, Verdict, MIGRATOR};
use insightflow_worker::store::redis::RedisStore;
use serde_json::{json, Value};
use sqlx::MySqlPool;

use crate::support::{
    direct, mysql_server, require_services, unique, worker_settings, WorkerTarget,
};

/// The migration under test.
const PARTITIONED: i64 = 20261129150000;

/// `raw` as the gateway validates a request received at `received_at` that says it was sent
/// at `sent_at` (the skew correction moves every event time by `received_at - sent_at`).
fn validated_sent(raw: &[Value], received_at: DateTime<Utc>, sent_at: DateTime<Utc>) -> Vec<Event> {
    let body = json!({ "events": raw }).to_string();
    let limits = Limits::default();
    let parsed = RawBody::parse(&body, &limits).expect("a valid body");
    let clock = RequestClock::new(received_at, Some(sent_at), limits.max_future_seconds);
    let outcome = parse_batch(
        &parsed,
        &ProjectId::parse("default").unwrap(),
        &clock,
        &limits,
        |_| Arc::new(ClientInfo::default()),
    );
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    outcome.accepted
}

fn at<'a>(
    events: &'a [Event],
    topic: &'static str,
    partition: i32,
    offset: i64,
) -> Vec<Sourced<'a>> {
    events
        .iter()
        .zip(offset..)
        .map(|(event, offset)| Sourced {
            event,
            source: Source {
                topic,
                partition,
                offset,
            },
        })
        .collect()
}

async fn partition_rows(pool: &MySqlPool) -> BTreeMap<String, i64> {
    let mut rows = BTreeMap::new();
    for p in retention::partitions(pool).await.unwrap() {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM user_events PARTITION ({})",
            p.name
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        rows.insert(p.name, n);
    }
    rows
}

async fn partition_of(pool: &MySqlPool, event_id: &str) -> String {
    for p in retention::partitions(pool).await.unwrap() {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM user_events PARTITION ({}) WHERE event_id = ?",
            p.name
        ))
        .bind(event_id)
        .fetch_one(pool)
        .await
        .unwrap();
        if n > 0 {
            return p.name;
        }
    }
    panic!("{event_id} is in no partition");
}

fn settings_with(
    days: u64,
    target: &WorkerTarget,
) -> insightflow_worker::settings::RetentionSettings {
    let mut s = worker_settings(target).retention;
    s.raw_event_days = days;
    s.chunk_rows = 3; // several chunks
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_whose_event_time_moved_to_another_day_is_stored_once() {
    let target = WorkerTarget::create().await;
    let settings = worker_settings(&target);
    let mysql = MysqlStore::connect(&settings.mysql).await.unwrap();
    let pool = mysql.pool();

    // The two days before today get their own partitions (a fresh database starts at today's).
    let today = Utc::now().date_naive();
    let days: Vec<NaiveDate> = (0..=2).rev().map(|d| today - TimeDelta::days(d)).collect();
    sqlx::query(&format!(
        "ALTER TABLE user_events REORGANIZE PARTITION {} INTO ({})",
        partition_name(today),
        days.iter()
            .map(|d| format!(
                "PARTITION {} VALUES LESS THAN (TO_DAYS('{}'))",
                partition_name(*d),
                *d + TimeDelta::days(1)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .execute(pool)
    .await
    .unwrap();

    // The event happened at 10:00 two days ago by the client's clock, which was right: the
    // request says it was sent when we received it. The retry 20 s later says it was sent a
    // day earlier (the client's clock was put back meanwhile), so the gateway's correction
    // moves its event time a day later, into the next day's partition.
    let client_time = days[0].and_hms_opt(10, 0, 0).unwrap().and_utc();
    let raw = [
        json!({"event_id": "retried", "event_type": "page_view", "user_id": "u1",
        "timestamp": client_time.to_rfc3339()}),
    ];
    let first_received = Utc::now();
    let first = validated_sent(&raw, first_received, first_received);
    let retry_received = first_received + TimeDelta::seconds(20);
    let retry = validated_sent(&raw, retry_received, retry_received - TimeDelta::hours(24));
    let (t1, t2) = (first[0].timestamp(), retry[0].timestamp());
    assert_ne!(t1, t2, "the retry's event time moved");
    assert_ne!(
        t1.date_naive(),
        t2.date_naive(),
        "to another day's partition"
    );

    let stored = mysql.write(&at(&first, "t", 0, 0)).await.unwrap();
    assert_eq!(stored.verdicts, [Verdict::Inserted]);
    let again = mysql.write(&at(&retry, "t", 1, 0)).await.unwrap();
    assert_eq!(
        again.verdicts,
        [Verdict::Duplicate],
        "another message stored it"
    );
    assert_eq!(again.inserted, 0);
    // The first message redelivered is the one that counts it.
    let redelivered = mysql.write(&at(&first, "t", 0, 0)).await.unwrap();
    assert_eq!(redelivered.verdicts, [Verdict::StoredByThisMessage]);

    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM user_events), (SELECT COUNT(*) FROM event_ids), \
         (SELECT COUNT(*) FROM users)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rows, [(1, 1, 1)]);
    let (time, origin): (chrono::NaiveDateTime, (Option<i32>, Option<i64>)) = {
        let (t, p, o) = sqlx::query_as::<_, (chrono::NaiveDateTime, Option<i32>, Option<i64>)>(
            "SELECT e.event_time, i.kafka_partition, i.kafka_offset FROM user_events e \
             JOIN event_ids i ON i.project = e.project AND i.event_id = e.event_id",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        (t, (p, o))
    };
    assert_eq!(time, t1.naive_utc(), "the first copy's time");
    assert_eq!(origin, (Some(0), Some(0)));
    assert_eq!(
        partition_of(pool, "retried").await,
        partition_name(t1.date_naive())
    );

    // Both copies written at the same time, from two partitions: one is stored.
    let raced = validated_sent(
        &[
            json!({"event_id": "raced", "event_type": "click", "user_id": "u2",
            "timestamp": client_time.to_rfc3339()}),
        ],
        first_received,
        first_received,
    );
    let raced_retry = validated_sent(
        &[
            json!({"event_id": "raced", "event_type": "click", "user_id": "u2",
            "timestamp": client_time.to_rfc3339()}),
        ],
        retry_received,
        retry_received - TimeDelta::hours(24),
    );
    let (a, b) = (at(&raced, "t", 0, 1), at(&raced_retry, "t", 1, 1));
    let (a, b) = tokio::join!(mysql.write(&a), mysql.write(&b));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.inserted + b.inserted, 1, "{a:?} {b:?}");
    let copies: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM user_events WHERE event_id = 'raced'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(copies, 1);
    target.cleanup().await;
}

/// A database at the schema before the partitioning migration, holding `events` as that
/// schema's worker stored them (each with its origin: topic `t`, partition 0, offset = index;
/// the first two without one, as rows stored before origins were recorded).
async fn populated_before_partitioning(events: &[Event]) -> (String, MySqlPool) {
    require_services();
    let database = unique("if_test");
    let server = MySqlPool::connect(&mysql_server()).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE `{database}`"))
        .execute(&server)
        .await
        .unwrap();
    let url = format!("{}/{database}", mysql_server());
    let pool = MySqlPool::connect(&url).await.unwrap();
    for m in MIGRATOR.iter().filter(|m| m.version < PARTITIONED) {
        sqlx::raw_sql(&m.sql).execute(&pool).await.unwrap();
    }
    for (offset, e) in events.iter().enumerate() {
        let offset = i64::try_from(offset).unwrap();
        let origin = (offset >= 2).then_some((0_i32, offset));
        sqlx::query(
            "INSERT INTO user_events (project, event_id, event_type, user_id, distinct_id, \
             event_time, timestamp_source, received_at, kafka_partition, kafka_offset) \
             VALUES (?, ?, ?, ?, ?, ?, 'client', ?, ?, ?)",
        )
        .bind(e.project().as_str())
        .bind(e.event_id().as_str())
        .bind(e.event_type().as_str())
        .bind(e.user_id().map(|u| u.as_str()))
        .bind(e.distinct_id())
        .bind(e.timestamp().naive_utc())
        .bind(e.received_at().naive_utc())
        .bind(origin.map(|o| o.0))
        .bind(origin.map(|o| o.1))
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO kafka_positions VALUES ('t', 0, ?)")
        .bind(i64::try_from(events.len()).unwrap())
        .execute(&pool)
        .await
        .unwrap();
    (url, pool)
}

async fn apply_partitioning(pool: &MySqlPool) {
    let m = MIGRATOR.iter().find(|m| m.version == PARTITIONED).unwrap();
    sqlx::raw_sql(&m.sql).execute(pool).await.unwrap();
}

/// 4 events a day from 12 days ago through today, and one 30 days ahead (past the days the
/// migration creates: it goes to pmax).
fn history(now: DateTime<Utc>) -> Vec<Event> {
    let today = now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let mut raw = Vec::new();
    for day in (0..=12).rev() {
        for hour in [0, 7, 13, 23] {
            let t = today - TimeDelta::days(day) + TimeDelta::hours(hour) + TimeDelta::minutes(59);
            if t <= now {
                raw.push(
                    json!({"event_id": format!("h{day}-{hour}"), "event_type": "page_view",
                    "user_id": format!("u{}", hour % 3), "timestamp": t.to_rfc3339()}),
                );
            }
        }
    }
    let far = today + TimeDelta::days(30);
    let mut events = direct::validated(&raw, now);
    events.extend(direct::validated(
        &[
            json!({"event_id": "ahead", "event_type": "click", "user_id": "u1",
            "timestamp": far.to_rfc3339()}),
        ],
        far,
    ));
    events
}

type Row = (u64, String, chrono::NaiveDateTime, Option<i32>, Option<i64>);

async fn all_rows(pool: &MySqlPool) -> BTreeSet<Row> {
    sqlx::query_as::<_, (u64, String, chrono::NaiveDateTime, Option<i32>, Option<i64>)>(
        "SELECT id, CAST(event_id AS CHAR), event_time, kafka_partition, kafka_offset \
         FROM user_events",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_keeps_every_row_and_a_replay_after_it_stores_nothing() {
    let now = Utc::now();
    let events = history(now);
    let (url, pool) = populated_before_partitioning(&events).await;
    let before = all_rows(&pool).await;
    assert_eq!(before.len(), events.len());

    apply_partitioning(&pool).await;

    assert_eq!(
        all_rows(&pool).await,
        before,
        "every row, id and origin kept"
    );
    // The dedupe holds every stored event, with its origin and time.
    let ids: BTreeSet<(String, chrono::NaiveDateTime, Option<i32>, Option<i64>)> = sqlx::query_as(
        "SELECT CAST(event_id AS CHAR), event_time, kafka_partition, kafka_offset FROM event_ids",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let expected: BTreeSet<_> = before
        .iter()
        .map(|(_, id, t, p, o)| (id.clone(), *t, *p, *o))
        .collect();
    assert_eq!(ids, expected);

    // A day partition per day from the oldest event's through today + 7, then pmax.
    let today = now.date_naive();
    let oldest = events
        .iter()
        .map(|e| e.timestamp().date_naive())
        .min()
        .unwrap();
    let mut expected_names: Vec<String> = oldest
        .iter_days()
        .take_while(|d| *d <= today + TimeDelta::days(7))
        .map(partition_name)
        .collect();
    expected_names.push("pmax".to_owned());
    let names: Vec<String> = retention::partitions(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, expected_names);
    for e in &events {
        let day = e.timestamp().date_naive();
        let expected = if day > today + TimeDelta::days(7) {
            "pmax".to_owned()
        } else {
            partition_name(day)
        };
        assert_eq!(partition_of(&pool, e.event_id().as_str()).await, expected);
    }

    // The worker replays every message: nothing is stored again, and the verdicts follow the
    // origins the migration kept.
    let mysql = MysqlStore::connect(&worker_settings(&target_for(&url)).mysql)
        .await
        .unwrap();
    let replay = at(&events, "t", 0, 0);
    let outcome = mysql.write(&replay).await.unwrap();
    assert_eq!(outcome.inserted, 0);
    let expected_verdicts: Vec<Verdict> = (0..events.len())
        .map(|i| {
            if i < 2 {
                Verdict::StoredWithoutOrigin
            } else {
                Verdict::StoredByThisMessage
            }
        })
        .collect();
    assert_eq!(outcome.verdicts, expected_verdicts);
    // A client's retry of one of them, as a new message, is a duplicate.
    let retried = at(&events[5..6], "t", 0, 1_000);
    let outcome = mysql.write(&retried).await.unwrap();
    assert_eq!(outcome.verdicts, [Verdict::Duplicate]);
    assert_eq!(all_rows(&pool).await, before);

    // New events still insert, past the days ahead too.
    let far = now + TimeDelta::days(400);
    let later = direct::validated(
        &[
            json!({"event_id": "new", "event_type": "click", "user_id": "u9",
            "timestamp": now.to_rfc3339()}),
            json!({"event_id": "far", "event_type": "click", "user_id": "u9",
            "timestamp": far.to_rfc3339()}),
        ],
        far,
    );
    assert_eq!(
        mysql
            .write(&at(&later, "t", 0, 2_000))
            .await
            .unwrap()
            .inserted,
        2
    );
    assert_eq!(partition_of(&pool, "far").await, "pmax");
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_exactly_the_days_past_the_cutoff_and_keeps_the_rest() {
    let now = Utc::now();
    let events = history(now);
    let (url, pool) = populated_before_partitioning(&events).await;
    apply_partitioning(&pool).await;
    let before = partition_rows(&pool).await;

    let target = target_for(&url);
    let settings = worker_settings(&target);
    let mysql = MysqlStore::connect(&settings.mysql).await.unwrap();
    let redis = RedisStore::connect(&settings.redis, &settings.aggregates)
        .await
        .unwrap();
    let metrics = WorkerMetrics::register(&prometheus::Registry::new()).unwrap();
    let days = 5;
    let ran = retention::run_once(
        &settings_with(days, &target),
        &mysql,
        &redis,
        &metrics,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(ran);

    // Independently: the cutoff's day, and every event before it goes.
    let keep_from: NaiveDate = (now - TimeDelta::days(5)).date_naive();
    let kept: BTreeSet<String> = events
        .iter()
        .filter(|e| e.timestamp().date_naive() >= keep_from)
        .map(|e| e.event_id().as_str().to_owned())
        .collect();
    let gone = events.len() - kept.len();
    assert!(gone >= 4 * 6, "the fixture has days to drop");
    let after = partition_rows(&pool).await;
    let expected: BTreeMap<String, i64> = before
        .iter()
        .filter(|(name, _)| {
            name.as_str() == "pmax"
                || NaiveDate::parse_from_str(&name[1..], "%Y%m%d").unwrap() >= keep_from
        })
        .map(|(name, n)| (name.clone(), *n))
        .collect();
    assert_eq!(
        after, expected,
        "the days before {keep_from} dropped, the rest as they were"
    );
    let stored: BTreeSet<String> =
        sqlx::query_scalar::<_, String>("SELECT CAST(event_id AS CHAR) FROM user_events")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(stored, kept);
    let deduped: BTreeSet<String> =
        sqlx::query_scalar::<_, String>("SELECT CAST(event_id AS CHAR) FROM event_ids")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(deduped, kept, "the dedupe rows go with their events");
    assert_eq!(
        metrics.retention_deleted.get(),
        u64::try_from(gone).unwrap()
    );

    // A late event older than the cutoff lands in the oldest day left; the next pass deletes
    // it by row and leaves that day's own events.
    let late_time = now - TimeDelta::days(40);
    let late = direct::validated(
        &[
            json!({"event_id": "late", "event_type": "click", "user_id": "u1",
            "timestamp": late_time.to_rfc3339()}),
        ],
        now,
    );
    assert_eq!(
        mysql
            .write(&at(&late, "t", 0, 5_000))
            .await
            .unwrap()
            .inserted,
        1
    );
    assert_eq!(partition_of(&pool, "late").await, partition_name(keep_from));
    redis_release(&target).await;
    assert!(retention::run_once(
        &settings_with(days, &target),
        &mysql,
        &redis,
        &metrics,
        Duration::from_secs(60),
    )
    .await
    .unwrap());
    assert_eq!(partition_rows(&pool).await, expected);
    assert_eq!(
        metrics.retention_deleted.get(),
        u64::try_from(gone + 1).unwrap()
    );
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_creates_the_days_ahead_and_an_event_beyond_them_still_inserts() {
    let target = WorkerTarget::create().await;
    let settings = worker_settings(&target);
    let mysql = MysqlStore::connect(&settings.mysql).await.unwrap();
    let redis = RedisStore::connect(&settings.redis, &settings.aggregates)
        .await
        .unwrap();
    let pool = mysql.pool();
    let now = Utc::now();
    let today = now.date_naive();

    // As if the job had not run for a week: the days after today folded back into pmax.
    let ahead: Vec<String> = (1..=7)
        .map(|d| partition_name(today + TimeDelta::days(d)))
        .collect();
    sqlx::query(&format!(
        "ALTER TABLE user_events REORGANIZE PARTITION {}, pmax INTO \
         (PARTITION pmax VALUES LESS THAN MAXVALUE)",
        ahead.join(", ")
    ))
    .execute(pool)
    .await
    .unwrap();

    // Events in 3 days and in 400 days: both in pmax for now, and stored.
    let in_3 = now + TimeDelta::days(3);
    let in_400 = now + TimeDelta::days(400);
    let mut events = direct::validated(
        &[
            json!({"event_id": "soon", "event_type": "click", "user_id": "u1",
            "timestamp": in_3.to_rfc3339()}),
        ],
        in_3,
    );
    events.extend(direct::validated(
        &[
            json!({"event_id": "far", "event_type": "click", "user_id": "u1",
            "timestamp": in_400.to_rfc3339()}),
        ],
        in_400,
    ));
    assert_eq!(
        mysql.write(&at(&events, "t", 0, 0)).await.unwrap().inserted,
        2
    );
    assert_eq!(partition_of(pool, "soon").await, "pmax");

    // Retention off: the job still keeps the days ahead.
    let metrics = WorkerMetrics::register(&prometheus::Registry::new()).unwrap();
    assert!(retention::run_once(
        &settings_with(0, &target),
        &mysql,
        &redis,
        &metrics,
        Duration::from_secs(60),
    )
    .await
    .unwrap());
    let names: Vec<String> = retention::partitions(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    let mut expected = vec![partition_name(today)];
    expected.extend(ahead.iter().cloned());
    expected.push("pmax".to_owned());
    assert_eq!(names, expected);
    assert_eq!(
        partition_of(pool, "soon").await,
        partition_name(in_3.date_naive())
    );
    assert_eq!(partition_of(pool, "far").await, "pmax");
    assert_eq!(metrics.retention_deleted.get(), 0);

    // Another pass the same day creates nothing more.
    redis_release(&target).await;
    assert!(retention::run_once(
        &settings_with(0, &target),
        &mysql,
        &redis,
        &metrics,
        Duration::from_secs(60),
    )
    .await
    .unwrap());
    assert_eq!(
        retention::partitions(pool).await.unwrap().len(),
        expected.len()
    );
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(total, 2);
    target.cleanup().await;
}

/// A target on an existing database (its Redis prefix and names fresh).
fn target_for(url: &str) -> WorkerTarget {
    WorkerTarget {
        topic: unique("it_events"),
        group_id: unique("it_group"),
        database_url: url.to_owned(),
        redis_prefix: unique("it"),
        redis: crate::support::RedisKind::Single,
    }
}

/// Frees the retention lock, as its expiry at the end of the interval would.
async fn redis_release(target: &WorkerTarget) {
    let mut redis = target.redis().await;
    let _: i64 = redis::cmd("DEL")
        .arg(insightflow_worker::keys::retention_lock(
            &target.redis_prefix,
        ))
        .query_async(&mut redis)
        .await
        .unwrap();
}

async fn drop_database(url: &str) {
    let name = url.rsplit('/').next().unwrap();
    let server = MySqlPool::connect(&mysql_server()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
        .execute(&server)
        .await
        .unwrap();
}
