//! Redis loss is detected and repaired from MySQL, never served as truth: a Redis that
//! restarts empty makes the stats API say `"exact": false` until the worker has rebuilt it,
//! and `worker rebuild-redis` rebuilds the aggregates from MySQL, idempotently. On the local
//! Redis Cluster too (`cluster::`): the rebuild walks every node, and a project whose node
//! lost its keys is found by the guard and rebuilt.

// A test panics to fail: unwrapping in its helpers is how it reports.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::counts::{events, metric, mysql_count, send, wait_for_both, WAIT};
use crate::support::state::{assert_same, snapshot};
use crate::support::{
    eventually, keys_with_prefix, spawn_ingest, spawn_worker_with, stores, worker_settings,
    RedisKind, WorkerTarget,
};
use insightflow_store::keys::{self, Keys};
use insightflow_worker::rebuild;
use insightflow_worker::{Role, Settings as WorkerSettings};
use serde_json::Value;

const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A Redis of the test's own that keeps nothing on disk, as a child process: killing it
/// loses every key, like a restart of a Redis without persistence.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self { port, child: None };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server on the same port, empty, and waits until it answers PING.
    async fn restart(&mut self) {
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {REDIS_SERVER}: {e}"));
        self.child = Some(child);
        let url = self.url();
        eventually(
            Duration::from_secs(10),
            "the private Redis to answer",
            || {
                let url = url.clone();
                async move {
                    let mut conn = redis::Client::open(url)
                        .ok()?
                        .get_multiplexed_async_connection()
                        .await
                        .ok()?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .ok()
                }
            },
        )
        .await;
    }

    /// `kill -9`: nothing is saved, every key is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The all-time counters by type of the default project in one Redis.
async fn redis_counts(
    conn: &mut impl redis::aio::ConnectionLike,
    prefix: &str,
) -> BTreeMap<String, i64> {
    redis::cmd("HGETALL")
        .arg(Keys::new(prefix, "default").events_total())
        .query_async(conn)
        .await
        .unwrap()
}

/// Counts by type computed from what was sent: independent of both stores.
fn sent_counts(sent: &[Value]) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for e in sent {
        *counts
            .entry(e["event_type"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    counts
}

async fn mysql_counts(target: &WorkerTarget) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (Vec<u8>, i64)>(
        "SELECT event_type, COUNT(*) FROM user_events WHERE project = 'default' GROUP BY event_type",
    )
    .fetch_all(&target.pool().await)
    .await
    .unwrap()
    .into_iter()
    .map(|(t, n)| (String::from_utf8(t).unwrap(), n))
    .collect()
}

async fn stats_events(address: &str) -> Option<Value> {
    let response = reqwest::get(format!("{address}/api/v1/stats/events?project=default"))
        .await
        .ok()?;
    if !response.status().is_success() {
        return None; // 503 while Redis is down: honest, and not a figure.
    }
    response.json().await.ok()
}

/// Polls the stats answer until it is exact with `n` events; every answer on the way that
/// says `"exact": true` must hold exactly `n`. Returns how many inexact answers were seen.
async fn poll_until_exact(address: &str, n: u64) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut inexact = 0;
    loop {
        if let Some(body) = stats_events(address).await {
            let total = body["total"].as_u64().unwrap();
            if body["exact"] == true {
                assert_eq!(
                    total, n,
                    "an answer claimed exactness it does not have: {body}"
                );
                assert!(body.get("redis").is_none(), "{body}");
                return inexact;
            }
            let state = body["redis"].as_str().unwrap();
            assert!(state == "lost" || state == "rebuilding", "{body}");
            inexact += 1;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no exact answer within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_restarts_empty_is_rebuilt_and_never_served_as_truth() {
    let mut private = PrivateRedis::start().await;
    let target = WorkerTarget::create().await;
    let mut settings = worker_settings(&target);
    settings.redis.url = private.url();
    let prefix = target.redis_prefix.clone();
    let ingest = spawn_ingest(&target.topic).await;
    let worker = spawn_worker_with(settings, Role::All).await;

    let mut sent = events(0, 190, 17);
    send(&ingest, sent.clone()).await;
    eventually(
        WAIT,
        "190 events in MySQL and the private Redis",
        || async {
            let mut conn = private.conn().await;
            let redis: i64 = redis_counts(&mut conn, &prefix).await.values().sum();
            (mysql_count(&target).await == 190 && redis == 190).then_some(())
        },
    )
    .await;
    assert_eq!(poll_until_exact(&worker.address, 190).await, 0);
    // A new installation is rebuilt too (from an empty MySQL) when the worker starts.
    let rebuilds_before = metric(&worker.address, "worker_redis_rebuilds_total").await;
    let replayed_before = metric(&worker.address, "worker_redis_rebuilt_events_total").await;

    private.kill();
    private.restart().await;

    // (a) Until rebuilt, no answer says exact with a partial total.
    let inexact = poll_until_exact(&worker.address, 190).await;
    eprintln!("{inexact} answers said \"exact\": false while Redis was lost or rebuilding");

    // (b) The rebuilt counters are MySQL's, type by type, and what was sent.
    let mut conn = private.conn().await;
    let rebuilt = redis_counts(&mut conn, &prefix).await;
    assert_eq!(rebuilt, sent_counts(&sent));
    assert_eq!(rebuilt, mysql_counts(&target).await);
    let marker: Option<String> = redis::cmd("GET")
        .arg(keys::generation(&prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(marker.as_deref(), Some("ready"));
    assert_eq!(
        metric(&worker.address, "worker_redis_rebuilds_total").await,
        rebuilds_before.map(|n| n + 1.0)
    );
    assert_eq!(
        metric(&worker.address, "worker_redis_rebuilt_events_total").await,
        replayed_before.map(|n| n + 190.0)
    );

    // (c) Consumption goes on, on top of the rebuilt counters.
    let more = events(190, 10, 17);
    sent.extend(more.iter().cloned());
    send(&ingest, more).await;
    eventually(WAIT, "200 events in the private Redis", || async {
        let mut conn = private.conn().await;
        let redis: i64 = redis_counts(&mut conn, &prefix).await.values().sum();
        assert!(redis <= 200, "counted twice: {redis}");
        (redis == 200).then_some(())
    })
    .await;
    assert_eq!(poll_until_exact(&worker.address, 200).await, 0);
    assert_eq!(mysql_count(&target).await, 200);
    assert_eq!(
        redis_counts(&mut private.conn().await, &prefix).await,
        sent_counts(&sent)
    );

    worker.stop().await;
    ingest.stop().await;
    // The keys were in the private Redis; cleanup drops the database.
    target.cleanup().await;
}

/// `n` events sent through a gateway and a worker, both stopped once MySQL and Redis hold them.
async fn stored_through_the_pipeline(n: usize) -> (WorkerTarget, WorkerSettings, Vec<Value>) {
    stored_through_the_pipeline_on(RedisKind::Single, n).await
}

async fn stored_through_the_pipeline_on(
    redis: RedisKind,
    n: usize,
) -> (WorkerTarget, WorkerSettings, Vec<Value>) {
    let target = WorkerTarget::create_on(redis).await;
    let settings = worker_settings(&target);
    let ingest = spawn_ingest(&target.topic).await;
    let worker = spawn_worker_with(settings.clone(), Role::All).await;
    let sent = events(0, n, 11);
    send(&ingest, sent.clone()).await;
    wait_for_both(&target, i64::try_from(n).unwrap()).await;
    worker.stop().await;
    ingest.stop().await;
    (target, settings, sent)
}

/// The rebuild and the guard on the local Redis Cluster.
mod cluster {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rebuild_redis_restores_mysql_counts_and_is_idempotent() {
        rebuild_restores_mysql_counts(RedisKind::Cluster).await;
    }

    /// A node that restarts empty loses the keys of the projects in its slots, marker and
    /// positions with them; the deployment's marker (on another node, or not) says nothing.
    /// The guard finds the registered project without a marker and rebuilds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_project_whose_node_lost_its_keys_is_rebuilt_and_never_served_as_truth() {
        let (target, settings, mut sent) =
            stored_through_the_pipeline_on(RedisKind::Cluster, 150).await;
        let prefix = target.redis_prefix.clone();
        let ingest = spawn_ingest(&target.topic).await;
        let worker = spawn_worker_with(settings, Role::All).await;
        assert_eq!(poll_until_exact(&worker.address, 150).await, 0);

        // What the node's restart does to the project's slot: every key of it is gone.
        let mut conn = target.redis().await;
        let project_keys: Vec<String> = keys_with_prefix(&mut conn, &prefix)
            .await
            .into_iter()
            .filter(|k| k.starts_with(&format!("{prefix}:{{default}}:")))
            .collect();
        assert!(!project_keys.is_empty());
        let _: () = redis::cmd("DEL")
            .arg(&project_keys)
            .query_async(&mut conn)
            .await
            .unwrap();

        // Until rebuilt, no answer says exact with a partial total; then MySQL's counts.
        let inexact = poll_until_exact(&worker.address, 150).await;
        eprintln!("{inexact} answers said \"exact\": false while the project was lost");
        let rebuilt = redis_counts(&mut conn, &prefix).await;
        assert_eq!(rebuilt, sent_counts(&sent));
        assert_eq!(rebuilt, mysql_counts(&target).await);

        // Consumption goes on, on top of the rebuilt counters, once each.
        let more = events(150, 10, 11);
        sent.extend(more.iter().cloned());
        send(&ingest, more).await;
        eventually(WAIT, "160 events in the cluster", || async {
            let mut conn = target.redis().await;
            let redis: i64 = redis_counts(&mut conn, &prefix).await.values().sum();
            assert!(redis <= 160, "counted twice: {redis}");
            (redis == 160).then_some(())
        })
        .await;
        assert_eq!(redis_counts(&mut conn, &prefix).await, sent_counts(&sent));
        worker.stop().await;
        ingest.stop().await;
        target.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_redis_restores_mysql_counts_and_is_idempotent() {
    rebuild_restores_mysql_counts(RedisKind::Single).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_under_the_key_names_of_an_earlier_version_are_deleted_and_rebuilt() {
    upgraded_from_untagged_keys(RedisKind::Single).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_under_the_key_names_of_an_earlier_version_are_deleted_and_rebuilt_on_a_cluster()
{
    upgraded_from_untagged_keys(RedisKind::Cluster).await;
}

/// What an upgrade from a version before hash-tagged keys finds: aggregates, positions and the
/// marker under `{prefix}:{project}:...` and `{prefix}:generation`, nothing under the new
/// names. The guard deletes the old keys and rebuilds the new ones from MySQL.
async fn upgraded_from_untagged_keys(redis: RedisKind) {
    let (target, settings, sent) = stored_through_the_pipeline_on(redis, 90).await;
    let prefix = target.redis_prefix.clone();
    let mut conn = target.redis().await;
    let new_keys = keys_with_prefix(&mut conn, &prefix).await;
    let _: () = redis::cmd("DEL")
        .arg(&new_keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    let old_keys = [
        format!("{prefix}:generation"),
        format!("{prefix}:positions"),
        format!("{prefix}:default:events:total"),
        format!("{prefix}:default:meta"),
    ];
    // One command each: untagged, they are in different slots of a cluster.
    for cmd in [
        redis::cmd("SET").arg(&old_keys[0]).arg("ready").clone(),
        redis::cmd("HSET")
            .arg(&old_keys[1])
            .arg("insightflow.events/0")
            .arg(5)
            .clone(),
        redis::cmd("HINCRBY")
            .arg(&old_keys[2])
            .arg("click")
            .arg(90)
            .clone(),
        redis::cmd("HSET")
            .arg(&old_keys[3])
            .arg("applied_events")
            .arg(90)
            .clone(),
    ] {
        let _: () = cmd.query_async(&mut conn).await.unwrap();
    }

    let (mysql, store, metrics) = stores(&settings).await;
    let check = rebuild::check_once(
        &mysql,
        &store,
        &metrics,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let rebuild::Check::Rebuilt(rebuilt) = check else {
        panic!("expected a rebuild, got {check:?}");
    };
    assert_eq!(rebuilt.events_replayed, 90);
    // The old marker is deleted first, apart; then the other old keys.
    assert_eq!(
        rebuilt.deleted_keys,
        old_keys.len() as u64 - 1,
        "{rebuilt:?}"
    );
    let left: Vec<String> = keys_with_prefix(&mut conn, &prefix).await;
    for old in &old_keys {
        assert!(!left.contains(old), "{old} is still there");
    }
    assert_eq!(redis_counts(&mut conn, &prefix).await, sent_counts(&sent));
    assert_eq!(
        redis_counts(&mut conn, &prefix).await,
        mysql_counts(&target).await
    );
    let marker: Option<String> = redis::cmd("GET")
        .arg(keys::generation(&prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(marker.as_deref(), Some("ready"));
    target.cleanup().await;
}

async fn rebuild_restores_mysql_counts(redis: RedisKind) {
    let (target, settings, sent) = stored_through_the_pipeline_on(redis, 120).await;

    // Aggregates that disagree with MySQL, and a stray key: a rebuild starts from nothing.
    let prefix = &target.redis_prefix;
    let default = Keys::new(prefix, "default");
    let stray_key = format!("{prefix}:{{default}}:stray");
    let mut conn = target.redis().await;
    let _: () = redis::pipe()
        .hincr(default.events_total(), "click", 1000)
        .set(&stray_key, "x")
        .query_async(&mut conn)
        .await
        .unwrap();

    // Every key under the prefix goes but the deployment's marker and registry (and a lock
    // the retention job holds).
    let present: Vec<String> = keys_with_prefix(&mut conn, prefix).await;
    let kept = [
        keys::generation(prefix),
        keys::projects(prefix),
        keys::retention_lock(prefix),
    ];
    let doomed = present.iter().filter(|k| !kept.contains(k)).count();

    let (mysql, redis, metrics) = stores(&settings).await;
    let first = rebuild::rebuild_now(&mysql, &redis, &metrics)
        .await
        .unwrap();
    assert_eq!(first.events_replayed, 120);
    assert_eq!(first.events_applied, 120, "a rebuild applies every row");
    assert_eq!(first.deleted_keys, doomed as u64, "{first:?}");
    assert_eq!(redis_counts(&mut conn, prefix).await, sent_counts(&sent));
    assert_eq!(
        redis_counts(&mut conn, prefix).await,
        mysql_counts(&target).await
    );
    let stray: bool = redis::cmd("EXISTS")
        .arg(&stray_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!stray, "the rebuild deletes what MySQL does not explain");
    let after_first = snapshot(&target).await;
    for marker in [":{.all}:generation", ":{default}:generation"] {
        assert_eq!(
            after_first.get(&format!("redis{marker}")),
            Some(&"ready".to_owned()),
            "{marker}"
        );
    }

    let second = rebuild::rebuild_now(&mysql, &redis, &metrics)
        .await
        .unwrap();
    assert_eq!((second.events_replayed, second.events_applied), (120, 120));
    assert_same(
        &after_first,
        &snapshot(&target).await,
        "after a second rebuild",
    );
    assert_eq!(metrics.redis_rebuilds.get(), 2);
    assert_eq!(metrics.redis_rebuilt_events.get(), 240);

    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_time_totals_come_back_from_the_rollups_after_retention_deleted_raw_events() {
    let (target, settings, sent) = stored_through_the_pipeline(120).await;
    // What the retention job does to old raw events; the rollups keep counting them.
    sqlx::query("DELETE FROM user_events ORDER BY id LIMIT 50")
        .execute(&target.pool().await)
        .await
        .unwrap();

    let (mysql, redis, metrics) = stores(&settings).await;
    let rebuilt = rebuild::rebuild_now(&mysql, &redis, &metrics)
        .await
        .unwrap();
    assert_eq!(
        rebuilt.events_replayed, 70,
        "only the raw events still kept"
    );
    let mut conn = target.redis().await;
    assert_eq!(
        redis_counts(&mut conn, &target.redis_prefix).await,
        sent_counts(&sent),
        "the all-time totals count every event ever stored, from the rollups"
    );
    target.cleanup().await;
}
