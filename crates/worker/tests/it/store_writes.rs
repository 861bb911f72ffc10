//! The two stores' exactly-once mechanics, against real MySQL and Redis: MySQL's verdict per
//! message (the message that stored an event counts it, no other), Redis's positions per
//! partition instead of a dedupe mark per event, and the aggregation of a chunk's events into
//! one command per key.

// A test panics to fail: unwrapping in its helpers is how it reports.
#![allow(clippy::unwrap_used)]

use crate::support::direct::{sourced, validated};
use crate::support::state::{assert_same, snapshot};
use crate::support::{worker_settings, WorkerTarget};
use chrono::{DateTime, TimeDelta, Utc};
use insightflow_model::Event;
use insightflow_store::keys::{self, Keys};
use insightflow_worker::store::mysql::{MysqlStore, Source, Sourced, Verdict};
use insightflow_worker::store::redis::{AggregateInput, Applicable, Position, RedisStore};
use serde_json::{json, Value};

const TOPIC: &str = "store-writes";

/// `n` events of 4 users in 3 sessions, page views of 5 paths among clicks, times spread over
/// the last three hours and out of order (so buckets, first-wins and greatest-time fields
/// all see more than one event per key), and a few of two days ago.
fn varied(n: usize, now: DateTime<Utc>) -> Vec<Value> {
    (0..n)
        .map(|i| {
            // Ages stay clear of the 30-minute windows (online users, live sessions), so
            // both ways of applying see the same events inside them.
            let seconds = match (i * 7919) % 10_800 {
                s @ 1500..2100 => s + 600,
                s => s,
            };
            let age = if i % 17 == 0 {
                TimeDelta::days(2)
            } else {
                TimeDelta::seconds(i64::try_from(seconds).unwrap())
            };
            let page_view = i % 3 != 0;
            json!({
                "event_id": format!("e{i}"),
                "event_type": if page_view { "page_view" } else { "click" },
                "user_id": format!("u{}", i % 4),
                "session_id": format!("s{}", i % 3),
                "timestamp": (now - age).to_rfc3339(),
                "page": {"path": format!("/p{}", i % 5)},
            })
        })
        .collect()
}

fn at(partition: i32, offset: i64) -> Source<'static> {
    Source {
        topic: TOPIC,
        partition,
        offset,
    }
}

fn applicable<'a>(event: &'a Event, source: Source<'a>) -> Applicable<'a> {
    Applicable {
        input: AggregateInput::of_event(event),
        source,
        needs_mark_check: false,
    }
}

async fn stores(target: &WorkerTarget) -> (MysqlStore, RedisStore) {
    let settings = worker_settings(target);
    let mysql = MysqlStore::connect(&settings.mysql).await.unwrap();
    let redis = RedisStore::connect(&settings.redis, &settings.aggregates)
        .await
        .unwrap();
    // What the guard sets once Redis is known to be whole.
    let mut conn = target.redis().await;
    let _: () = redis::cmd("SET")
        .arg(keys::generation(&target.redis_prefix))
        .arg(keys::marker::READY)
        .query_async(&mut conn)
        .await
        .unwrap();
    (mysql, redis)
}

async fn events_total(target: &WorkerTarget) -> i64 {
    let mut conn = target.redis().await;
    let counts: std::collections::BTreeMap<String, i64> = redis::cmd("HGETALL")
        .arg(Keys::new(&target.redis_prefix, "default").events_total())
        .query_async(&mut conn)
        .await
        .unwrap();
    counts.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_aggregated_leaves_redis_as_its_events_applied_one_by_one() {
    let now = Utc::now();
    let events = validated(&varied(300, now), now);
    let whole = WorkerTarget::create().await;
    let one_by_one = WorkerTarget::create().await;
    let (_, whole_store) = stores(&whole).await;
    let (_, single_store) = stores(&one_by_one).await;

    let all: Vec<Applicable<'_>> = events
        .iter()
        .zip(0..)
        .map(|(e, offset)| applicable(e, at(0, offset)))
        .collect();
    let end = [Position {
        topic: TOPIC.to_owned(),
        partition: 0,
        next_offset: 300,
    }];
    assert_eq!(whole_store.apply(&all, &end).await.unwrap(), 300);
    for (i, one) in all.iter().enumerate() {
        let next = [Position {
            next_offset: i64::try_from(i).unwrap() + 1,
            ..end[0].clone()
        }];
        assert_eq!(
            single_store
                .apply(std::slice::from_ref(one), &next)
                .await
                .unwrap(),
            1
        );
    }
    let expected = snapshot(&one_by_one).await;
    assert!(
        expected.keys().any(|k| k.contains(":session:")) && expected.len() > 20,
        "the events reach every kind of aggregate: {:?}",
        expected.keys().collect::<Vec<_>>()
    );
    assert_same(
        &expected,
        &snapshot(&whole).await,
        "one chunk vs one by one",
    );
    whole.cleanup().await;
    one_by_one.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_batch_is_applied_from_each_partitions_position_on() {
    let now = Utc::now();
    let target = WorkerTarget::create().await;
    let (_, redis) = stores(&target).await;
    let events = validated(&varied(200, now), now);
    // Partition 0 carries events 0..100 at offsets 0..100, partition 1 events 100..200.
    let source = |i: usize| {
        let (partition, offset) = if i < 100 { (0, i) } else { (1, i - 100) };
        at(partition, i64::try_from(offset).unwrap())
    };
    let first: Vec<Applicable<'_>> = (0..60)
        .chain(100..130)
        .map(|i| applicable(&events[i], source(i)))
        .collect();
    assert_eq!(redis.apply(&first, &[]).await.unwrap(), 90);
    assert_eq!(events_total(&target).await, 90);

    // After a crash: a new member reads both partitions again from older offsets, in one
    // chunk whose messages start below the positions.
    let again: Vec<Applicable<'_>> = (40..100)
        .chain(110..200)
        .map(|i| applicable(&events[i], source(i)))
        .collect();
    assert_eq!(
        redis.apply(&again, &[]).await.unwrap(),
        40 + 70,
        "only the messages past each partition's position"
    );
    assert_eq!(events_total(&target).await, 200);
    // Nothing is applied twice, however often it comes again.
    let everything: Vec<Applicable<'_>> = (0..200)
        .map(|i| applicable(&events[i], source(i)))
        .collect();
    assert_eq!(redis.apply(&everything, &[]).await.unwrap(), 0);
    assert_eq!(events_total(&target).await, 200);
    let mut conn = target.redis().await;
    let positions: std::collections::BTreeMap<String, i64> = redis::cmd("HGETALL")
        .arg(Keys::new(&target.redis_prefix, "default").positions())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        positions,
        [(format!("{TOPIC}/0"), 100), (format!("{TOPIC}/1"), 100)].into()
    );
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stored_without_origin_counts_only_without_its_legacy_mark() {
    let now = Utc::now();
    let target = WorkerTarget::create().await;
    let (_, redis) = stores(&target).await;
    let events = validated(&varied(2, now), now);
    // The version before origins marked the first event applied, not the second.
    let mut conn = target.redis().await;
    let _: () = redis::cmd("SET")
        .arg(Keys::new(&target.redis_prefix, "default").applied_mark("e0"))
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let legacy: Vec<Applicable<'_>> = events
        .iter()
        .zip(0..)
        .map(|(e, offset)| Applicable {
            needs_mark_check: true,
            ..applicable(e, at(0, offset))
        })
        .collect();
    assert_eq!(redis.apply(&legacy, &[]).await.unwrap(), 1);
    assert_eq!(events_total(&target).await, 1);
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_says_which_message_counts_each_event() {
    let now = Utc::now();
    let target = WorkerTarget::create().await;
    let (mysql, _) = stores(&target).await;
    let raw = varied(4, now);
    // A client's retry of e0 (another request) in the same Kafka batch.
    let mut events = validated(&raw, now);
    events.extend(validated(&raw[..1], now));
    let batch = sourced(&events, TOPIC, 3);
    let first = mysql.write(&batch).await.unwrap();
    use Verdict::{Duplicate, Inserted, StoredByThisMessage, StoredWithoutOrigin};
    assert_eq!(
        first.verdicts,
        [Inserted, Inserted, Inserted, Inserted, Duplicate]
    );
    assert_eq!((first.inserted, first.duplicates), (4, 1));

    // Redelivered: the same messages stored their events; a retry elsewhere did not.
    let mut again = batch.clone();
    again[1].source = at(3, 99);
    let second = mysql.write(&again).await.unwrap();
    assert_eq!(
        second.verdicts,
        [
            StoredByThisMessage,
            Duplicate,
            StoredByThisMessage,
            StoredByThisMessage,
            Duplicate
        ]
    );
    assert_eq!((second.inserted, second.duplicates), (0, 5));

    // A client's retry in a message MySQL has not seen: the insert finds it stored.
    let retried = [Sourced {
        event: &events[1],
        source: at(3, 200),
    }];
    let retry = mysql.write(&retried).await.unwrap();
    assert_eq!(retry.verdicts, [Duplicate]);
    assert_eq!((retry.inserted, retry.duplicates), (0, 1));

    // A row stored by a version that recorded no origin (migration 20261129150000 copies the
    // origin, or its absence, into event_ids).
    let pool = target.pool().await;
    for table in ["user_events", "event_ids"] {
        sqlx::query(&format!(
            "UPDATE {table} SET kafka_partition = NULL, kafka_offset = NULL WHERE event_id = 'e2'"
        ))
        .execute(&pool)
        .await
        .unwrap();
    }
    let third = mysql.write(&batch[2..3]).await.unwrap();
    assert_eq!(third.verdicts, [StoredWithoutOrigin]);

    // MySQL's position is the message after the last one of each partition it wrote.
    let next: i64 = sqlx::query_scalar(
        "SELECT next_offset FROM kafka_positions WHERE topic = ? AND kafka_partition = 3",
    )
    .bind(TOPIC)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(next, 201);
    target.cleanup().await;
}

/// Offsets that restart below a partition's stored position (the topic re-created under the
/// same name): MySQL stores the new events and says they came from below the position, which
/// the consumer reports as an error and a metric. A redelivery below it is not reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_below_the_stored_position_are_reported() {
    let now = Utc::now();
    let target = WorkerTarget::create().await;
    let (mysql, _) = stores(&target).await;
    let raw = varied(10, now);
    let events = validated(&raw, now);
    let batch = sourced(&events, TOPIC, 1);
    let first = mysql.write(&batch).await.unwrap();
    assert_eq!(first.inserted, 10);
    assert!(
        first.below_position.is_empty(),
        "{:?}",
        first.below_position
    );

    let redelivered = mysql.write(&batch[..4]).await.unwrap();
    assert!(
        redelivered.below_position.is_empty(),
        "a redelivery is not news"
    );

    // The same offsets again, carrying new events: offsets restarted.
    let restarted_raw: Vec<Value> = (0..3)
        .map(|i| json!({"event_id": format!("after-{i}"), "event_type": "click", "user_id": "u9"}))
        .collect();
    let restarted = validated(&restarted_raw, now);
    let batch = sourced(&restarted, TOPIC, 1);
    let after = mysql.write(&batch).await.unwrap();
    assert_eq!(after.inserted, 3);
    assert_eq!(after.below_position.get(&1), Some(&3));
    assert_eq!(after.below_position.len(), 1);
}
