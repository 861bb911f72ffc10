//! Every acknowledged event ends up in MySQL and in every Redis aggregate exactly once,
//! whatever happens to the worker: replays, crashes, two instances, failing stores, poison.

// A test panics to fail: unwrapping in its helpers is how it reports.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use insightflow_worker::Role;
use serde_json::{json, Value};
use support::kafka::{self, header};
use support::proxy::TcpProxy;
use support::state::{assert_same, snapshot};
use support::{
    eventually, spawn_ingest, spawn_worker, spawn_worker_with, worker_settings, TestIngest,
    WorkerTarget,
};

const WAIT: Duration = Duration::from_secs(90);

/// These tests each run consumers over 8-partition topics; run one at a time so they do not
/// starve the shared broker's group coordinator for each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `n` events starting at `first`, spread over `users` users and several sessions, pages and
/// types, with properties: what a day of a small shop looks like.
fn events(first: usize, n: usize, users: usize) -> Vec<Value> {
    const TYPES: [&str; 5] = ["page_view", "click", "product_view", "cart_add", "purchase"];
    (first..first + n)
        .map(|i| {
            let user = i % users;
            json!({
                "event_id": format!("ev-{i}"),
                "event_type": TYPES[i % TYPES.len()],
                "user_id": format!("user-{user}"),
                "session_id": format!("sess-{user}-{}", i / 97),
                "page": {"url": format!("https://shop.example/p/{}", i % 13)},
                "properties": {"n": i},
                "user_properties": {"plan": if i % 2 == 0 { "free" } else { "pro" }},
            })
        })
        .collect()
}

/// Posts the events in batches of 500 as an SDK does: a 503 means "retry the whole batch",
/// which may resend events Kafka already holds (event ids make that harmless downstream).
async fn send(ingest: &TestIngest, events: Vec<Value>) {
    let http = reqwest::Client::new();
    for chunk in events.chunks(500) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let response = http
                .post(format!("{}/api/v1/events", ingest.address))
                .json(&json!({ "events": chunk }))
                .send()
                .await
                .expect("gateway answered");
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            if status == 503 && attempt < 5 {
                eprintln!("gateway answered 503 ({body}); retrying the batch as an SDK would");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            assert_eq!(status, 200, "the gateway acknowledged the batch: {body}");
            assert_eq!(
                body["accepted"].as_u64(),
                Some(chunk.len() as u64),
                "{body}"
            );
            break;
        }
    }
}

async fn mysql_count(target: &WorkerTarget) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM user_events")
        .fetch_one(&target.pool().await)
        .await
        .unwrap()
}

/// The sum of the all-time Redis counters of the default project.
async fn redis_total(target: &WorkerTarget) -> i64 {
    let mut redis = target.redis().await;
    let counts: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(format!("{}:default:events:total", target.redis_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    counts.values().sum()
}

/// Waits until MySQL and Redis both hold exactly `n` events.
async fn wait_for_both(target: &WorkerTarget, n: i64) {
    let mut last = (0, 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (mysql, redis) = (mysql_count(target).await, redis_total(target).await);
        assert!(
            mysql <= n && redis <= n,
            "more than {n} events counted: mysql {mysql}, redis {redis}"
        );
        if (mysql, redis) == (n, n) {
            return;
        }
        if (mysql, redis) != last {
            eprintln!("waiting for {n} events: MySQL has {mysql}, Redis {redis}");
            last = (mysql, redis);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {n} events: MySQL has {mysql}, Redis {redis}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Totals that must equal the number of events in every derived table and aggregate.
async fn assert_exactly_once(target: &WorkerTarget, n: i64) {
    let pool = target.pool().await;
    for (what, query) in [
        (
            "users.total_events",
            "SELECT CAST(SUM(total_events) AS SIGNED) FROM users",
        ),
        (
            "rollup_events_minute",
            "SELECT CAST(SUM(events) AS SIGNED) FROM rollup_events_minute",
        ),
        (
            "rollup_events_hour",
            "SELECT CAST(SUM(events) AS SIGNED) FROM rollup_events_hour",
        ),
        (
            "sessions.events",
            "SELECT CAST(SUM(events) AS SIGNED) FROM sessions WHERE 1",
        ),
    ] {
        let sum: Option<i64> = sqlx::query_scalar(query).fetch_one(&pool).await.unwrap();
        assert_eq!(sum, Some(n), "{what}");
    }
    assert_eq!(redis_total(target).await, n, "Redis events:total");
    let sessions_total: Option<i64> =
        sqlx::query_scalar("SELECT CAST(SUM(total_sessions) AS SIGNED) FROM users")
            .fetch_one(&pool)
            .await
            .unwrap();
    let sessions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        sessions_total,
        Some(sessions),
        "every session counted once for its user"
    );
}

async fn metric(address: &str, line_prefix: &str) -> Option<f64> {
    let text = reqwest::get(format!("{address}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_topic_from_the_beginning_changes_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let target = WorkerTarget::create().await;
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

fn worker_env(target: &WorkerTarget, commit_interval_ms: u64) -> Vec<(String, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    [
        ("WORKER__KAFKA__BROKERS", support::kafka_brokers()),
        ("WORKER__KAFKA__TOPIC__NAME", target.topic.clone()),
        (
            "WORKER__KAFKA__DEAD_LETTER_TOPIC",
            format!("{}.dlq", target.topic),
        ),
        ("WORKER__KAFKA__GROUP_ID", target.group_id.clone()),
        ("WORKER__KAFKA__BATCH_MAX_EVENTS", "100".to_owned()),
        (
            "WORKER__KAFKA__AUTO_COMMIT_INTERVAL_MS",
            commit_interval_ms.to_string(),
        ),
        ("WORKER__MYSQL__URL", target.database_url.clone()),
        ("WORKER__REDIS__URL", support::redis_url()),
        ("WORKER__REDIS__KEY_PREFIX", target.redis_prefix.clone()),
        ("WORKER__HTTP__PORT", port.to_string()),
        ("WORKER__LOG__LEVEL", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A worker process, killed if the test ends (or fails) while it runs: no orphan keeps
/// consuming after its test.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn sigkill(&mut self) {
        self.0.kill().expect("SIGKILL the worker");
        self.0.wait().expect("reap the worker");
    }

    /// SIGTERM: the worker finishes its batch, commits and exits.
    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let exit = self.0.wait().expect("reap the worker");
        assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn_worker_process(target: &WorkerTarget, commit_interval_ms: u64) -> WorkerProcess {
    WorkerProcess(
        Command::new(env!("CARGO_BIN_EXE_worker"))
            .envs(worker_env(target, commit_interval_ms))
            .stdout(if std::env::var_os("TEST_CHILD_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the worker binary"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_writes_and_commit_converges_to_the_uninterrupted_state() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let target = WorkerTarget::create().await;
    let ingest = spawn_ingest(&target.topic).await;
    send(&ingest, events(0, 2000, 120)).await;

    // Reference: an uninterrupted worker over the same topic, in its own database and prefix.
    let mut reference = WorkerTarget::create().await;
    reference.topic = target.topic.clone();
    let worker = spawn_worker(&reference).await;
    wait_for_both(&reference, 2000).await;
    worker.stop().await;
    let expected = snapshot(&reference).await;

    // The crashing run never commits (hour-long commit interval): whatever it writes before
    // SIGKILL is written again after the restart.
    let mut doomed = spawn_worker_process(&target, 3_600_000);
    eventually(WAIT, "the first worker to write some events", || async {
        (mysql_count(&target).await > 0).then_some(())
    })
    .await;
    doomed.sigkill();
    let written_before_kill = mysql_count(&target).await;
    eprintln!("killed the worker after it wrote {written_before_kill} of 2000 events");

    // The restarted worker joins a fresh consumer group. The killed one never committed, so its
    // group would also re-read from offset 0: the restart sees exactly what a same-group restart
    // on Kafka sees. (Tansu 0.6 does not reliably evict a SIGKILLed member, and hands a member
    // that joins meanwhile an empty assignment; on Kafka the dead member's session expires.)
    // Re-reading from committed offsets in the same group is the replay test's subject.
    let mut restarted_target = target.clone();
    restarted_target.group_id = support::unique("it_group_restarted");
    let mut restarted = spawn_worker_process(&restarted_target, 1000);
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
    let _serial = ONE_AT_A_TIME.lock().await;
    let target = WorkerTarget::create().await;
    let first = spawn_worker(&target).await;
    eventually(WAIT, "the first worker to get partitions", || async {
        (metric(&first.address, r#"worker_rebalances_total{kind="assign"}"#).await? >= 1.0)
            .then_some(())
    })
    .await;
    let second = spawn_worker(&target).await;
    // The second member's join makes the group rebalance: both end up with partitions.
    eventually(WAIT, "both workers to be assigned partitions", || async {
        let a = metric(&first.address, r#"worker_rebalances_total{kind="assign"}"#).await?;
        let b = metric(&second.address, r#"worker_rebalances_total{kind="assign"}"#).await?;
        (a >= 2.0 && b >= 1.0).then_some(())
    })
    .await;
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
    let _serial = ONE_AT_A_TIME.lock().await;
    survive_outage("mysql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unavailable_for_a_while_loses_and_doubles_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    survive_outage("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_topic_and_the_partition_keeps_flowing() {
    let _serial = ONE_AT_A_TIME.lock().await;
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
