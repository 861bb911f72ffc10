//! Every acknowledged event ends up in MySQL and in every Redis aggregate exactly once,
//! whatever happens to the worker: replays, crashes, two instances, failing stores, poison.
//! The replay, crash and two-instance tests run against one Redis and against the local
//! Redis Cluster (`cluster::`, `scripts/redis-cluster.sh`).

// A test panics to fail: unwrapping in its helpers is how it reports.
#![allow(clippy::unwrap_used)]

use crate::support;

use crate::support::counts::{
    assert_exactly_once, assignments, events, metric, mysql_count, redis_total, send,
    wait_for_both, wait_for_partitions, wait_until_both_hold_partitions, WAIT,
};
use crate::support::kafka::{self, header};
use crate::support::process::WorkerProcess;
use crate::support::proxy::TcpProxy;
use crate::support::state::{assert_same, snapshot};
use crate::support::{
    eventually, spawn_ingest, spawn_worker, spawn_worker_with, worker_settings, RedisKind,
    WorkerTarget,
};
use insightflow_worker::Role;
use serde_json::{json, Value};

/// The suites' tests on the local Redis Cluster.
mod cluster {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replaying_the_topic_from_the_beginning_changes_nothing() {
        replaying_changes_nothing(RedisKind::Cluster).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_killed_between_writes_and_commit_converges_to_the_uninterrupted_state() {
        killed_worker_converges(RedisKind::Cluster).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_workers_in_one_group_share_the_partitions_and_process_each_event_once() {
        two_workers_process_each_event_once(RedisKind::Cluster).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_of_several_projects_stopped_halfway_is_completed_once() {
        several_projects_stopped_halfway(RedisKind::Cluster).await;
    }

    /// A measurement, not a test (`scripts/bench-redis-cluster.sh` runs it): how many events
    /// of one project the node holding its slot applies per second of its own time (the
    /// aggregate script's `usec` in `INFO commandstats`), and per second of wall time through
    /// one `RedisStore` (the client's share included). Checks only that each counted once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: scripts/bench-redis-cluster.sh"]
    async fn one_project_on_one_node_events_per_second() {
        use insightflow_store::keys::{self, Keys};
        use insightflow_worker::store::mysql::Source;
        use insightflow_worker::store::redis::{AggregateInput, Applicable, RedisStore};

        let n: usize = std::env::var("BENCH_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        let target = WorkerTarget::create_on(RedisKind::Cluster).await;
        let settings = worker_settings(&target);
        let store = RedisStore::connect(&settings.redis, &settings.aggregates)
            .await
            .unwrap();
        let mut conn = target.redis().await;
        let _: () = redis::cmd("SET")
            .arg(keys::generation(&target.redis_prefix))
            .arg(keys::marker::READY)
            .query_async(&mut conn)
            .await
            .unwrap();
        // The node holding the project's slot.
        let keys = Keys::new(&target.redis_prefix, "shop");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(keys.events_total())
            .query_async(&mut conn)
            .await
            .unwrap();
        let shards: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await
            .unwrap();
        // `CLUSTER NODES`: `<id> <ip:port@cport> <flags> ... <slot or first-last>...`.
        let serves = |range: &str| {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            match (first.parse::<u16>(), last.parse::<u16>()) {
                (Ok(first), Ok(last)) => first <= slot && slot <= last,
                _ => false,
            }
        };
        let node = shards
            .lines()
            .find(|line| line.contains("master") && line.split_whitespace().skip(8).any(serves))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|a| a.split('@').next())
            .unwrap()
            .to_owned();
        let node_usec = |node: String| async move {
            let mut direct = redis::Client::open(format!("redis://{node}"))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let stats: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut direct)
                .await
                .unwrap();
            stats
                .lines()
                .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
                .filter_map(|l| {
                    l.split("usec=")
                        .nth(1)?
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum::<u64>()
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let ids: Vec<(String, String, String, String)> = (0..n)
            .map(|i| {
                (
                    format!("e{i}"),
                    format!("u{}", i % 5000),
                    format!("/p{}", i % 200),
                    format!("s{}", i % 2000),
                )
            })
            .collect();
        const TYPES: [&str; 4] = ["page_view", "click", "product_view", "purchase"];
        let events: Vec<Applicable<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, (event_id, user, path, session))| Applicable {
                input: AggregateInput::new(
                    "shop",
                    event_id,
                    user,
                    TYPES[i % TYPES.len()],
                    now_ms - i64::try_from(i % 600_000).unwrap(),
                    Some(path),
                    Some(session),
                ),
                source: Source {
                    topic: "bench",
                    partition: 0,
                    offset: i64::try_from(i).unwrap(),
                },
                needs_mark_check: false,
            })
            .collect();
        let before = node_usec(node.clone()).await;
        let started = std::time::Instant::now();
        let mut applied = 0;
        // Batches of 1000 events: one script call each, as the consumer's chunks.
        for batch in events.chunks(1000) {
            applied += store.apply(batch, &[]).await.unwrap();
        }
        let wall = started.elapsed();
        let server_usec = node_usec(node.clone()).await - before;
        assert_eq!(applied, n);
        let total: Option<i64> = redis::cmd("HGET")
            .arg(keys.meta())
            .arg("applied_events")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(total, Some(i64::try_from(n).unwrap()));
        println!(
            "one project on node {node}: {n} events; node script time {:.2} s = {:.0} events/s \
             of the node's time; wall {:.2} s = {:.0} events/s through one RedisStore",
            server_usec as f64 / 1e6,
            n as f64 / (server_usec as f64 / 1e6),
            wall.as_secs_f64(),
            n as f64 / wall.as_secs_f64()
        );
        target.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_several_projects_stopped_halfway_is_completed_once() {
    several_projects_stopped_halfway(RedisKind::Single).await;
}

/// A batch holds events of several projects, which Redis applies project by project (one
/// slot per script call): a worker that stopped after some projects' calls leaves those
/// applied, and the redelivered batch applies the others only, each event once.
async fn several_projects_stopped_halfway(redis: RedisKind) {
    use insightflow_store::keys::{self, Keys};
    use insightflow_worker::store::mysql::Source;
    use insightflow_worker::store::redis::{AggregateInput, Applicable, Position, RedisStore};

    const PROJECTS: [&str; 3] = ["shop", "blog", "docs"];
    let target = WorkerTarget::create_on(redis).await;
    let settings = worker_settings(&target);
    let store = RedisStore::connect(&settings.redis, &settings.aggregates)
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
    let now_ms = chrono::Utc::now().timestamp_millis();
    let ids: Vec<(String, String)> = (0..300)
        .map(|i| (format!("e{i}"), format!("u{}", i % 7)))
        .collect();
    // Message i: project i % 3, partition i % 2, offsets in order within each partition.
    let batch: Vec<Applicable<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, (event_id, user))| Applicable {
            input: AggregateInput::new(
                PROJECTS[i % 3],
                event_id,
                user,
                "click",
                now_ms - i64::try_from(i).unwrap() * 1000,
                None,
                None,
            ),
            source: Source {
                topic: "several",
                partition: i32::try_from(i % 2).unwrap(),
                offset: i64::try_from(i / 2).unwrap(),
            },
            needs_mark_check: false,
        })
        .collect();
    let positions = [
        Position {
            topic: "several".into(),
            partition: 0,
            next_offset: 150,
        },
        Position {
            topic: "several".into(),
            partition: 1,
            next_offset: 150,
        },
    ];
    let clicks = |project: &'static str| {
        let keys = Keys::new(&target.redis_prefix, project);
        let target = target.clone();
        async move {
            let mut conn = target.redis().await;
            let n: Option<i64> = redis::cmd("HGET")
                .arg(keys.events_total())
                .arg("click")
                .query_async(&mut conn)
                .await
                .unwrap();
            n.unwrap_or(0)
        }
    };

    // The first worker stopped after the script calls of "shop".
    let shop: Vec<Applicable<'_>> = batch
        .iter()
        .filter(|e| e.input.project == "shop")
        .copied()
        .collect();
    assert_eq!(store.apply(&shop, &positions).await.unwrap(), 100);
    assert_eq!(
        (
            clicks("shop").await,
            clicks("blog").await,
            clicks("docs").await
        ),
        (100, 0, 0)
    );
    // Redelivered whole: the other projects only.
    assert_eq!(store.apply(&batch, &positions).await.unwrap(), 200);
    // And again: nothing.
    assert_eq!(store.apply(&batch, &positions).await.unwrap(), 0);
    for project in PROJECTS {
        let sent = batch.iter().filter(|e| e.input.project == project).count();
        assert_eq!(
            clicks(project).await,
            i64::try_from(sent).unwrap(),
            "{project}"
        );
        let marker: Option<String> = redis::cmd("GET")
            .arg(Keys::new(&target.redis_prefix, project).generation())
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(marker.as_deref(), Some("ready"), "{project}'s marker");
        let at: std::collections::BTreeMap<String, i64> = redis::cmd("HGETALL")
            .arg(Keys::new(&target.redis_prefix, project).positions())
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            at,
            [("several/0".to_owned(), 150), ("several/1".to_owned(), 150)].into(),
            "{project}'s positions"
        );
    }
    let registered: Vec<String> = redis::cmd("HKEYS")
        .arg(keys::projects(&target.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut registered = registered;
    registered.sort();
    assert_eq!(registered, ["blog", "docs", "shop"]);
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_topic_from_the_beginning_changes_nothing() {
    replaying_changes_nothing(RedisKind::Single).await;
}

async fn replaying_changes_nothing(redis: RedisKind) {
    let _serial = support::HEAVY.lock().await;
    let target = WorkerTarget::create_on(redis).await;
    let ingest = spawn_ingest(&target.topic).await;
    send(&ingest, events(0, 600, 40)).await;
    let worker = spawn_worker(&target).await;
    wait_for_both(&target, 600).await;
    worker.stop().await;
    let before = snapshot(&target).await;

    kafka::reset_group_to_beginning(&target.group_id, &target.topic, 8);
    let worker = spawn_worker(&target).await;
    eventually(WAIT, "the worker to re-read all 600 messages", || async {
        let skipped = metric(
            &worker.address,
            r#"worker_duplicates_skipped_total{store="redis"}"#,
        )
        .await?;
        (skipped >= 600.0).then_some(())
    })
    .await;
    assert_eq!(
        metric(
            &worker.address,
            r#"worker_events_written_total{store="mysql"}"#
        )
        .await
        .unwrap_or(0.0),
        0.0,
        "a replay writes nothing new"
    );
    worker.stop().await;
    assert_same(&before, &snapshot(&target).await, "after replay");
    assert_exactly_once(&target, 600).await;
    ingest.stop().await;
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_writes_and_commit_converges_to_the_uninterrupted_state() {
    killed_worker_converges(RedisKind::Single).await;
}

async fn killed_worker_converges(redis: RedisKind) {
    let _serial = support::HEAVY.lock().await;
    let target = WorkerTarget::create_on(redis).await;
    let ingest = spawn_ingest(&target.topic).await;
    send(&ingest, events(0, 2000, 120)).await;

    // Reference: an uninterrupted worker over the same topic, in its own database and prefix.
    let mut reference = WorkerTarget::create_on(redis).await;
    reference.topic = target.topic.clone();
    let worker = spawn_worker(&reference).await;
    wait_for_both(&reference, 2000).await;
    worker.stop().await;
    let expected = snapshot(&reference).await;

    // The crashing run never commits (hour-long commit interval): whatever it writes before
    // SIGKILL is written again after the restart.
    let mut doomed = WorkerProcess::spawn(&target, 3_600_000, &[]);
    eventually(WAIT, "the first worker to write some events", || async {
        (mysql_count(&target).await > 0).then_some(())
    })
    .await;
    doomed.sigkill();
    let written_before_kill = mysql_count(&target).await;
    eprintln!("killed the worker after it wrote {written_before_kill} of 2000 events");

    // Restarted in the same consumer group: the killed member's session expires and the
    // group hands its partitions to the new one, which re-reads from offset 0 (nothing was
    // committed) over rows and aggregates that are partly written already.
    let mut restarted = WorkerProcess::spawn(&target, 1000, &[]);
    wait_for_both(&target, 2000).await;
    restarted.terminate();

    assert_same(
        &expected,
        &snapshot(&target).await,
        "crashed and restarted vs uninterrupted",
    );
    assert_exactly_once(&target, 2000).await;
    ingest.stop().await;
    target.cleanup().await;
    reference.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_in_one_group_share_the_partitions_and_process_each_event_once() {
    two_workers_process_each_event_once(RedisKind::Single).await;
}

async fn two_workers_process_each_event_once(redis: RedisKind) {
    let _serial = support::HEAVY.lock().await;
    let target = WorkerTarget::create_on(redis).await;
    let first = spawn_worker(&target).await;
    wait_for_partitions(&first.address).await;
    let second = spawn_worker(&target).await;
    // The second member's join makes the group rebalance: both end up with partitions.
    wait_until_both_hold_partitions(&first.address, &second.address).await;
    let ingest = spawn_ingest(&target.topic).await;
    send(&ingest, events(0, 3000, 400)).await;
    wait_for_both(&target, 3000).await;

    let written = |address: String| async move {
        metric(&address, r#"worker_events_written_total{store="mysql"}"#)
            .await
            .unwrap_or(0.0)
    };
    let (a, b) = (
        written(first.address.clone()).await,
        written(second.address.clone()).await,
    );
    assert!(a > 0.0 && b > 0.0, "both instances did work: {a} and {b}");
    assert_eq!(
        a + b,
        3000.0,
        "each event was written by exactly one instance"
    );
    assert_exactly_once(&target, 3000).await;
    first.stop().await;
    second.stop().await;
    ingest.stop().await;
    target.cleanup().await;
}

/// Cuts the worker's connection to one store mid-stream, restores it, and checks that nothing
/// was lost or doubled and that the worker reported not-ready meanwhile and resumed by itself.
async fn survive_outage(store: &str) {
    let target = WorkerTarget::create().await;
    let upstream = match store {
        "mysql" => "127.0.0.1:3306",
        _ => "127.0.0.1:6379",
    };
    let proxy = TcpProxy::start(upstream).await;
    let mut settings = worker_settings(&target);
    match store {
        "mysql" => {
            let database = target.database_url.rsplit('/').next().unwrap();
            settings.mysql.url = format!("mysql://root@127.0.0.1:{}/{database}", proxy.port);
            settings.mysql.acquire_timeout_ms = 1000;
        }
        _ => settings.redis.url = format!("redis://127.0.0.1:{}/0", proxy.port),
    }
    let worker = spawn_worker_with(settings, Role::All).await;
    let ingest = spawn_ingest(&target.topic).await;
    send(&ingest, events(0, 300, 30)).await;
    wait_for_both(&target, 300).await;

    proxy.cut();
    send(&ingest, events(300, 300, 30)).await;
    let http = reqwest::Client::new();
    // Keep the store cut until the consumer itself hit it and paused (not merely the ready
    // check's ping): then the outage provably interrupted a write.
    eventually(
        WAIT,
        "the consumer to pause and report not-ready",
        || async {
            let response = http
                .get(format!("{}/ready", worker.address))
                .send()
                .await
                .ok()?;
            let status = response.status();
            let body: Value = response.json().await.ok()?;
            let paused = body["consumer"]
                .as_str()
                .is_some_and(|c| c.starts_with("paused"));
            (status == 503 && paused).then_some(())
        },
    )
    .await;
    assert!(mysql_count(&target).await < 600 || redis_total(&target).await < 600);

    proxy.restore();
    wait_for_both(&target, 600).await;
    eventually(WAIT, "the worker to be ready again", || async {
        let status = http
            .get(format!("{}/ready", worker.address))
            .send()
            .await
            .ok()?
            .status();
        (status == 200).then_some(())
    })
    .await;
    assert_exactly_once(&target, 600).await;
    let errors = metric(
        &worker.address,
        &format!(r#"worker_dependency_errors_total{{dependency="{store}"}}"#),
    )
    .await;
    let dependency_lines = reqwest::get(format!("{}/metrics", worker.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .filter(|l| l.contains("dependency"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        errors.unwrap_or(0.0) >= 1.0,
        "the outage was seen and counted:\n{dependency_lines}"
    );
    worker.stop().await;
    ingest.stop().await;
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_unavailable_for_a_while_loses_and_doubles_nothing() {
    let _serial = support::HEAVY.lock().await;
    survive_outage("mysql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unavailable_for_a_while_loses_and_doubles_nothing() {
    let _serial = support::HEAVY.lock().await;
    survive_outage("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_topic_and_the_partition_keeps_flowing() {
    let _serial = support::HEAVY.lock().await;
    let target = WorkerTarget::create().await;
    let worker = spawn_worker(&target).await;
    // Same key as the valid event below, so all three share one partition.
    kafka::produce(&target.topic, "default:u1", b"this is not json").await;
    let future_schema = json!({"schema_version": 99, "event_id": "x", "project": "default",
        "event_type": "click", "user_id": "u1", "timestamp": "2026-01-01T00:00:00Z",
        "timestamp_source": "server", "received_at": "2026-01-01T00:00:00Z"});
    kafka::produce(
        &target.topic,
        "default:u1",
        future_schema.to_string().as_bytes(),
    )
    .await;
    let ingest = spawn_ingest(&target.topic).await;
    send(
        &ingest,
        vec![json!({"event_id": "good", "event_type": "click", "user_id": "u1"})],
    )
    .await;

    wait_for_both(&target, 1).await;
    let dead = kafka::read(&format!("{}.dlq", target.topic), 2);
    assert_eq!(dead.len(), 2, "both poison messages are dead-lettered");
    let reasons: Vec<Option<String>> = dead.iter().map(|m| header(m, "dlq-reason")).collect();
    assert_eq!(
        reasons,
        vec![Some("undecodable".into()), Some("unknown_schema".into())]
    );
    for m in &dead {
        assert_eq!(
            header(m, "dlq-original-topic").as_deref(),
            Some(target.topic.as_str())
        );
        assert!(header(m, "dlq-original-partition").is_some());
        assert!(header(m, "dlq-original-offset").is_some());
        assert!(header(m, "dlq-error").is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(
        rdkafka::Message::payload(&dead[0]),
        Some(&b"this is not json"[..]),
        "the original payload is kept"
    );
    let dead_lettered = metric(
        &worker.address,
        r#"worker_dead_lettered_total{reason="undecodable"}"#,
    )
    .await;
    assert_eq!(dead_lettered, Some(1.0));
    worker.stop().await;
    ingest.stop().await;
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_mysql_refuses_are_isolated_and_dead_lettered_and_the_rest_of_the_batch_applied() {
    let _serial = support::HEAVY.lock().await;
    let target = WorkerTarget::create().await;
    // MySQL refuses two chosen events as data (SQLSTATE class 22), as it would a value it
    // cannot store: the gateway now refuses every such value it knows of at the door.
    sqlx::query(
        "CREATE TRIGGER refuse_chosen BEFORE INSERT ON user_events FOR EACH ROW \
         BEGIN IF NEW.event_id IN ('ev-97', 'ev-211') THEN \
         SIGNAL SQLSTATE '22000' SET MESSAGE_TEXT = 'refused by the test trigger'; END IF; END",
    )
    .execute(&target.pool().await)
    .await
    .unwrap();
    let worker = spawn_worker(&target).await;
    let ingest = spawn_ingest(&target.topic).await;
    // One request, so the refused events share their consumer batch with 298 good ones.
    send(&ingest, events(0, 300, 30)).await;

    wait_for_both(&target, 298).await;
    let dead = kafka::read(&format!("{}.dlq", target.topic), 2);
    assert_eq!(dead.len(), 2, "both refused events are dead-lettered");
    let mut ids: Vec<String> = dead
        .iter()
        .map(|m| {
            let event: Value =
                serde_json::from_slice(rdkafka::Message::payload(m).unwrap()).unwrap();
            assert_eq!(header(m, "dlq-reason").as_deref(), Some("refused"));
            assert!(
                header(m, "dlq-error").is_some_and(|e| e.contains("refused by the test trigger")),
                "the store's reason travels with the message"
            );
            event["event_id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["ev-211", "ev-97"]);
    assert_eq!(
        metric(
            &worker.address,
            r#"worker_dead_lettered_total{reason="refused"}"#
        )
        .await,
        Some(2.0)
    );
    let splits = metric(&worker.address, "worker_mysql_refused_splits_total")
        .await
        .unwrap();
    assert!(
        (1.0..300.0).contains(&splits),
        "isolated by splitting, not one transaction per event: {splits} splits"
    );
    assert_exactly_once(&target, 298).await;
    worker.stop().await;
    ingest.stop().await;
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_during_a_store_outage_keeps_the_partitions_paused() {
    let _serial = support::HEAVY.lock().await;
    let target = WorkerTarget::create().await;
    let proxy = TcpProxy::start("127.0.0.1:6379").await;
    let consumed = |address: String| async move {
        metric(&address, "worker_messages_consumed_total")
            .await
            .unwrap_or(0.0)
    };
    // The first member reaches Redis through a proxy the test cuts; the second directly.
    let mut settings = worker_settings(&target);
    settings.redis.url = format!("redis://127.0.0.1:{}/0", proxy.port);
    settings.kafka.session_timeout_ms = 6000;
    let first = spawn_worker_with(settings, Role::All).await;
    wait_for_partitions(&first.address).await;
    let mut settings = worker_settings(&target);
    settings.kafka.session_timeout_ms = 6000;
    let second = spawn_worker_with(settings, Role::All).await;
    wait_until_both_hold_partitions(&first.address, &second.address).await;
    let ingest = spawn_ingest(&target.topic).await;
    send(&ingest, events(0, 100, 20)).await;
    wait_for_both(&target, 100).await;

    proxy.cut();
    send(&ingest, events(100, 100, 20)).await;
    let http = reqwest::Client::new();
    eventually(WAIT, "the first worker to pause on Redis", || async {
        let body: Value = http
            .get(format!("{}/ready", first.address))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        body["consumer"]
            .as_str()
            .is_some_and(|c| c.starts_with("paused"))
            .then_some(())
    })
    .await;
    // The second member leaves while the first one's Redis is down: the group rebalances and
    // the first member is assigned partitions it did not hold. They must start paused, or it
    // would fetch into memory what it cannot write.
    second.stop().await;
    eventually(WAIT, "the rebalance to reach the first worker", || async {
        (assignments(&first.address).await >= 3.0).then_some(())
    })
    .await;
    let before = consumed(first.address.clone()).await;
    send(&ingest, events(200, 400, 20)).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let fetched_while_paused = consumed(first.address.clone()).await - before;
    assert_eq!(
        fetched_while_paused, 0.0,
        "the newly assigned partitions stayed paused during the outage"
    );

    proxy.restore();
    wait_for_both(&target, 600).await;
    assert_exactly_once(&target, 600).await;
    first.stop().await;
    ingest.stop().await;
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_outlives_the_dedupe_window_stops_the_worker_at_start_up() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let target = WorkerTarget::create().await;
    let settings = worker_settings(&target);
    // Ten days of messages, one day of dedupe marks: a replay could count days 2..10 twice.
    let mut settings_short_window = settings.clone();
    settings_short_window.aggregates.dedupe_ttl_seconds = 86_400;
    let admin: AdminClient<_> = settings
        .kafka
        .connection()
        .client_config()
        .create()
        .unwrap();
    let ten_days = (10 * 86_400_000u64).to_string();
    let topic =
        NewTopic::new(&target.topic, 2, TopicReplication::Fixed(1)).set("retention.ms", &ten_days);
    admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap()
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = insightflow_worker::Application::build_with_listener(
        settings_short_window,
        Role::Consume,
        listener,
        prometheus::Registry::new(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    let error = format!("{:#}", refused.err().expect("the worker refuses to start"));
    assert!(error.contains("dedupe window"), "{error}");
    assert!(
        error.contains("DEDUPE_TTL_SECONDS to at least 864000"),
        "{error}"
    );
    // A window that covers the topic's retention starts.
    let mut settings_long_window = settings;
    settings_long_window.aggregates.dedupe_ttl_seconds = 10 * 86_400;
    let worker = spawn_worker_with(settings_long_window, Role::Consume).await;
    worker.stop().await;
    target.cleanup().await;
}
