//! Crash recovery against the real broker: `kill -9` of a worker (restarted in the same
//! consumer group, or not restarted while another member survives), `kill -9` of the broker
//! under gateway load, and `/ready` telling the truth while a member is starved of partitions.
//! Session timeouts are shortened by configuration only (6 s, the broker's minimum).

// A test panics to fail: unwrapping in its helpers is how it reports.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::counts::{
    assert_exactly_once, events, metric, mysql_count, send_to, wait_for_both, wait_for_partitions,
    wait_until_both_hold_partitions, WAIT,
};
use crate::support::kafka::committed_total;
use crate::support::process::WorkerProcess;
use crate::support::{
    eventually, ingest_settings, spawn_ingest, spawn_ingest_with, spawn_worker_with,
    worker_settings, WorkerTarget,
};
use insightflow_runtime::kafka::{ensure_topics, TopicSpec};
use insightflow_runtime::testing::PrivateKafka;
use insightflow_worker::Role;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const SESSION_TIMEOUT_MS: u32 = 6000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_resumes_in_its_group_from_the_committed_offsets() {
    let _serial = support::HEAVY.lock().await;
    let target = WorkerTarget::create().await;
    let ingest = spawn_ingest(&target.topic).await;
    let mut first = WorkerProcess::spawn(&target, 100, &[]);
    let address = ingest.address.clone();
    let sender = tokio::spawn(async move { send_to(&address, events(0, 4000, 200), 100).await });
    eventually(WAIT, "the first worker to write 1000 events", || async {
        (mysql_count(&target).await >= 1000).then_some(())
    })
    .await;
    first.sigkill();
    let committed = committed_total(&target.group_id, &target.topic);
    eprintln!(
        "killed the worker: MySQL held {}, the group had committed {committed}",
        mysql_count(&target).await
    );
    assert!(committed > 0, "the killed worker had committed offsets");
    sender.await.unwrap();

    // Same group: the dead member's session expires, the new one gets every partition and
    // starts at the group's committed offsets, not at the beginning.
    let mut second = WorkerProcess::spawn(&target, 100, &[]);
    wait_for_both(&target, 4000).await;
    let consumed = metric(&second.address, "worker_messages_consumed_total")
        .await
        .unwrap();
    assert_eq!(
        consumed as i64,
        4000 - committed,
        "the restarted worker read exactly what the group had not committed"
    );
    second.terminate();
    assert_exactly_once(&target, 4000).await;
    ingest.stop().await;
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_one_killed_the_survivor_takes_over_its_partitions() {
    let _serial = support::HEAVY.lock().await;
    let target = WorkerTarget::create().await;
    let ingest = spawn_ingest(&target.topic).await;
    let mut doomed = WorkerProcess::spawn(&target, 100, &[]);
    wait_for_partitions(&doomed.address).await;
    let mut survivor = WorkerProcess::spawn(&target, 100, &[]);
    // The second member's join makes the group rebalance: both end up with partitions.
    wait_until_both_hold_partitions(&doomed.address, &survivor.address).await;
    send_to(&ingest.address, events(0, 2000, 300), 100).await;
    wait_for_both(&target, 2000).await;
    let written = |address: String| async move {
        metric(&address, r#"worker_events_written_total{store="mysql"}"#)
            .await
            .unwrap_or(0.0)
    };
    let (a, b) = (
        written(doomed.address.clone()).await,
        written(survivor.address.clone()).await,
    );
    assert!(
        a > 0.0 && b > 0.0,
        "both members held partitions: {a} and {b}"
    );

    doomed.sigkill();
    // Half of these land on the dead member's partitions: all of them arrive only if the
    // survivor takes those partitions over once the dead member's session expires.
    send_to(&ingest.address, events(2000, 2000, 300), 100).await;
    wait_for_both(&target, 4000).await;
    let after = written(survivor.address.clone()).await;
    assert!(
        after - b >= 2000.0,
        "the survivor wrote every event sent after the kill ({} of 2000)",
        after - b
    );
    survivor.terminate();
    assert_exactly_once(&target, 4000).await;
    ingest.stop().await;
    target.cleanup().await;
}

/// What an SDK-like client saw: the ids the gateway acknowledged, and its 503s.
#[derive(Default)]
struct ClientLog {
    acknowledged: Mutex<Vec<String>>,
    acknowledged_count: AtomicUsize,
    unavailable: AtomicUsize,
    unavailable_without_retry_after: AtomicUsize,
    transport_errors: AtomicUsize,
}

/// Sends 25-event batches, each event with its own id, about 20 batches a second, and retries
/// a batch with the same ids until the gateway acknowledges it, as the browser SDK does.
async fn sdk_client(address: String, log: Arc<ClientLog>, stop: CancellationToken) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut next = 0usize;
    while !stop.is_cancelled() {
        let batch: Vec<Value> = (next..next + 25)
            .map(|i| {
                json!({"event_id": format!("sdk-{i}"), "event_type": "page_view",
                       "user_id": format!("u{}", i % 40), "session_id": format!("s{}", i % 40),
                       "page": {"url": format!("https://shop.example/p/{}", i % 7)}})
            })
            .collect();
        loop {
            let answer = http
                .post(format!("{address}/api/v1/events"))
                .json(&json!({ "events": batch }))
                .send()
                .await;
            match answer {
                Ok(response) if response.status() == 200 => {
                    let body: Value = response.json().await.unwrap();
                    assert_eq!(body["accepted"], 25, "{body}");
                    log.acknowledged.lock().unwrap().extend(
                        batch
                            .iter()
                            .map(|e| e["event_id"].as_str().unwrap().to_owned()),
                    );
                    log.acknowledged_count.fetch_add(25, Ordering::Relaxed);
                    break;
                }
                Ok(response) if response.status() == 503 => {
                    log.unavailable.fetch_add(1, Ordering::Relaxed);
                    if !response.headers().contains_key("retry-after") {
                        log.unavailable_without_retry_after
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(response) => panic!(
                    "unexpected answer {}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                ),
                Err(_) => {
                    log.transport_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        next += 25;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_killed_under_load_and_restarted_loses_and_doubles_nothing() {
    let _serial = support::HEAVY.lock().await;
    let broker = Arc::new(PrivateKafka::start());
    let target = WorkerTarget::create().await;
    let mut settings = worker_settings(&target);
    settings.kafka.brokers = broker.brokers();
    settings.kafka.session_timeout_ms = SESSION_TIMEOUT_MS;
    let worker = spawn_worker_with(settings, Role::All).await;
    let mut settings = ingest_settings(&target.topic, &broker.brokers());
    settings.kafka.delivery_timeout_ms = 3000;
    settings.http.retry_after_seconds = 1;
    let ingest = spawn_ingest_with(settings).await;

    let log = Arc::new(ClientLog::default());
    let stop = CancellationToken::new();
    let client = tokio::spawn(sdk_client(
        ingest.address.clone(),
        log.clone(),
        stop.clone(),
    ));
    let acknowledged = || log.acknowledged_count.load(Ordering::Relaxed);
    eventually(WAIT, "500 events acknowledged before the crash", || async {
        (acknowledged() >= 500).then_some(())
    })
    .await;

    broker.kill();
    let at_kill = acknowledged();
    eventually(
        WAIT,
        "the gateway to answer 503 while the broker is down",
        || async { (log.unavailable.load(Ordering::Relaxed) >= 3).then_some(()) },
    )
    .await;
    eprintln!(
        "broker killed with {at_kill} events acknowledged; {} acknowledged while it was down",
        acknowledged() - at_kill
    );
    let restarting = broker.clone();
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .unwrap();
    let at_restart = acknowledged();
    eventually(
        WAIT,
        "500 more events acknowledged after the restart",
        || async { (acknowledged() >= at_restart + 500).then_some(()) },
    )
    .await;
    stop.cancel();
    client.await.unwrap();

    let ids: Vec<String> = log.acknowledged.lock().unwrap().clone();
    let n = i64::try_from(ids.len()).unwrap();
    eprintln!(
        "acknowledged {n}; 503 answers {}; transport errors {}",
        log.unavailable.load(Ordering::Relaxed),
        log.transport_errors.load(Ordering::Relaxed)
    );
    assert_eq!(
        log.unavailable_without_retry_after.load(Ordering::Relaxed),
        0,
        "every 503 says when to retry"
    );
    wait_for_both(&target, n).await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT CAST(event_id AS CHAR) FROM user_events")
        .fetch_all(&target.pool().await)
        .await
        .unwrap();
    let stored: BTreeSet<String> = stored.into_iter().collect();
    let expected: BTreeSet<String> = ids.into_iter().collect();
    assert_eq!(
        stored, expected,
        "MySQL holds exactly the acknowledged events"
    );
    assert_exactly_once(&target, n).await;
    worker.stop().await;
    ingest.stop().await;
    target.cleanup().await;
}

/// A member of the worker's group that takes partitions and never consumes them: what a
/// member that died without being evicted looks like to the rest of the group. Its client id
/// sorts before the worker's, so the range assignor gives it the topic's only partition.
struct Squatter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Squatter {
    fn join(group: &str, topic: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", support::kafka_brokers())
            .set("group.id", group)
            .set("client.id", "aaa-squatter")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (held, holds) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut told = false;
            while !flag.load(Ordering::Relaxed) {
                // Polls (so the group keeps it) but never commits what it reads.
                let _ = consumer.poll(Duration::from_millis(100));
                if !told && consumer.assignment().is_ok_and(|a| a.count() > 0) {
                    let _ = held.send(());
                    told = true;
                }
            }
            drop(consumer); // leaves the group
        });
        holds
            .recv_timeout(Duration::from_secs(60))
            .expect("the squatter to be assigned the partition");
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn leave(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn ready(address: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{address}/ready")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_false_while_the_worker_holds_no_partitions_of_a_stalled_topic() {
    let _serial = support::HEAVY.lock().await;
    let target = WorkerTarget::create().await;
    let mut settings = worker_settings(&target);
    settings.kafka.topic.partitions = 1;
    settings.kafka.session_timeout_ms = SESSION_TIMEOUT_MS;
    settings.kafka.lag_probe_interval_ms = 300;
    ensure_topics(
        &settings.kafka.connection(),
        &[TopicSpec {
            name: target.topic.clone(),
            partitions: 1,
            replication_factor: 1,
        }],
    )
    .await
    .unwrap();
    let squatter = Squatter::join(&target.group_id, &target.topic);
    let worker = spawn_worker_with(settings, Role::All).await;
    let ingest = spawn_ingest(&target.topic).await;
    send_to(&ingest.address, events(0, 50, 10), 50).await;

    let (status, body) = eventually(WAIT, "/ready to report the starved consumer", || async {
        let (status, body) = ready(&worker.address).await;
        let starved = body["consumer"]
            .as_str()
            .is_some_and(|c| c.starts_with("starved"));
        starved.then_some((status, body))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(
        mysql_count(&target).await,
        0,
        "nothing was consumed meanwhile"
    );
    let lag = metric(
        &worker.address,
        &format!(
            r#"worker_group_lag_messages{{partition="0",topic="{}"}}"#,
            target.topic
        ),
    )
    .await;
    assert_eq!(lag, Some(50.0), "the group's lag as the broker sees it");

    squatter.leave();
    wait_for_both(&target, 50).await;
    eventually(WAIT, "the worker to be ready again", || async {
        (ready(&worker.address).await.0 == 200).then_some(())
    })
    .await;
    assert_exactly_once(&target, 50).await;
    worker.stop().await;
    ingest.stop().await;
    target.cleanup().await;
}
