//! Abuse tests (issue 14): slow bodies, thousands of idle connections, a connection cap,
//! many live streams and a storm of expensive funnel requests, against the real gateway and
//! worker on real Kafka, MariaDB and Redis. Each test proves a cap answers as documented and
//! that, while the abuse runs, `/health` answers and a batch sent through the gateway is
//! acknowledged and stored.
//!
//! The tests take turns with the other heavy suites (`support::HEAVY`): each one loads the
//! machine on purpose, and the bounds it checks are functional (an answer comes, a connection
//! is closed), which a neighbour's load must not turn into a failure.

use crate::support;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{eventually, WorkerTarget};
use insightflow_worker::{Application as WorkerApp, Role};
use serde_json::{json, Value};
use sqlx::MySqlPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The project of every event the gateway accepts (no write keys configured).
const PROJECT: &str = "default";
const ADMIN_KEY: &str = "sk_abuse_admin_key_0001";

// ---------------------------------------------------------------------------------------
// Starting the services

/// A running gateway or worker. Its `/metrics` is served on a listener of its own
/// (`http.metrics_listen`), so it can be read while the main port is saturated.
struct Service {
    address: String,
    socket: SocketAddr,
    metrics: String,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Service {
    fn running(
        socket: SocketAddr,
        metrics_port: Option<u16>,
        shutdown: CancellationToken,
        run: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> Self {
        let metrics_port = metrics_port.expect("a metrics listener (http.metrics_listen)");
        Self {
            address: format!("http://{socket}"),
            socket,
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
            shutdown,
            handle: tokio::spawn(run),
        }
    }

    async fn stop(self, name: &str) {
        self.shutdown.cancel();
        self.handle
            .await
            .unwrap_or_else(|e| panic!("the {name} task panicked: {e}"))
            .unwrap_or_else(|e| panic!("the {name} stopped with an error: {e:#}"));
    }
}

async fn spawn_gateway(
    topic: &str,
    adjust: impl FnOnce(&mut insightflow_ingest::Settings),
) -> Service {
    let mut settings = support::ingest_settings(topic, &support::kafka_brokers());
    settings.http.metrics_listen = "127.0.0.1:0".to_owned();
    adjust(&mut settings);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let socket = listener.local_addr().expect("local address");
    let shutdown = CancellationToken::new();
    let app = insightflow_ingest::Application::build_with_listener(
        settings,
        listener,
        prometheus::Registry::new(),
        shutdown.clone(),
    )
    .await
    .expect("ingest failed to start");
    Service::running(
        socket,
        app.metrics_port(),
        shutdown,
        app.run_until_stopped(),
    )
}

/// A worker that consumes and serves the stats API.
async fn spawn_worker(
    target: &WorkerTarget,
    adjust: impl FnOnce(&mut insightflow_worker::Settings),
) -> Service {
    let mut settings = support::worker_settings(target);
    settings.http.metrics_listen = "127.0.0.1:0".to_owned();
    adjust(&mut settings);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let socket = listener.local_addr().expect("local address");
    let shutdown = CancellationToken::new();
    let app = WorkerApp::build_with_listener(
        settings,
        Role::All,
        listener,
        prometheus::Registry::new(),
        shutdown.clone(),
    )
    .await
    .expect("worker failed to start");
    Service::running(
        socket,
        app.metrics_port(),
        shutdown,
        app.run_until_stopped(),
    )
}

/// Gateway and worker on one topic, with a fresh database and key prefix.
struct Pipeline {
    gateway: Service,
    worker: Service,
    target: WorkerTarget,
    db: MySqlPool,
    http: reqwest::Client,
}

impl Pipeline {
    async fn start(
        adjust_gateway: impl FnOnce(&mut insightflow_ingest::Settings),
        adjust_worker: impl FnOnce(&mut insightflow_worker::Settings),
    ) -> Self {
        support::require_services();
        let target = WorkerTarget::create().await;
        let worker = spawn_worker(&target, adjust_worker).await;
        let gateway = spawn_gateway(&target.topic, adjust_gateway).await;
        let db = target.pool().await;
        Self {
            gateway,
            worker,
            target,
            db,
            http: client(),
        }
    }

    async fn stop(self) {
        drop(self.http);
        self.gateway.stop("gateway").await;
        self.worker.stop("worker").await;
        self.db.close().await;
        self.target.cleanup().await;
    }

    /// `/health` of both services answers 200.
    async fn assert_healthy(&self, during: &str) {
        for address in [&self.gateway.address, &self.worker.address] {
            let response = self
                .http
                .get(format!("{address}/health"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{address}/health did not answer {during}: {e}"));
            assert_eq!(response.status().as_u16(), 200, "{address}/health {during}");
        }
    }

    /// Sends a batch of `n` events named `{label}-{i}` through the gateway and asserts it is
    /// acknowledged at once: 200, every event accepted.
    async fn send_batch(&self, label: &str, n: usize) {
        let events: Vec<Value> = (0..n)
            .map(|i| {
                json!({
                    "event_id": format!("{label}-{i}"),
                    "event_type": "page_view",
                    "user_id": format!("{label}-user-{}", i % 3),
                    "page": {"url": format!("https://shop.example/abuse/{i}")},
                })
            })
            .collect();
        let response = self
            .http
            .post(format!("{}/api/v1/events", self.gateway.address))
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the gateway did not answer batch {label}: {e}"));
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "batch {label} acknowledged: {body}");
        assert_eq!(body["accepted"].as_u64(), Some(n as u64), "{body}");
    }

    /// Waits until MySQL holds the `n` events of batch `label` (counted by their ids, apart
    /// from anything else in the project).
    async fn assert_stored(&self, label: &str, n: usize) {
        let pattern = format!("{label}-%");
        eventually(
            Duration::from_secs(60),
            &format!("the {n} events of batch {label} in MySQL"),
            || {
                let (db, pattern) = (&self.db, &pattern);
                async move {
                    let stored: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM user_events WHERE project = ? AND event_id LIKE ?",
                    )
                    .bind(PROJECT)
                    .bind(pattern)
                    .fetch_one(db)
                    .await
                    .ok()?;
                    (stored == n as i64).then_some(())
                }
            },
        )
        .await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

// ---------------------------------------------------------------------------------------
// Reading metrics

/// The value of one series (`name` or `name{label="value"}`) on a `/metrics` page; `None`
/// when the page does not list it (a labelled counter never incremented).
async fn metric(http: &reqwest::Client, url: &str, series: &str) -> Option<f64> {
    let page = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url} did not answer: {e}"))
        .text()
        .await
        .expect("a metrics page");
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

/// A gauge or unlabelled counter, which a registered service always lists.
async fn gauge(http: &reqwest::Client, url: &str, series: &str) -> f64 {
    metric(http, url, series)
        .await
        .unwrap_or_else(|| panic!("{url} does not list {series}"))
}

/// `worker_stats_refused_total{limit}`: 0 until the first refusal.
async fn refused(http: &reqwest::Client, worker: &Service, limit: &str) -> f64 {
    metric(
        http,
        &worker.metrics,
        &format!("worker_stats_refused_total{{limit=\"{limit}\"}}"),
    )
    .await
    .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------
// Raw HTTP

/// One HTTP/1.1 answer read from a raw socket.
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawAnswer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not a JSON body ({e}): {} {}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Reads one answer: its head, then `Content-Length` bytes of body. `None` when the server
/// closed the connection first.
async fn read_answer(reader: &mut (impl AsyncReadExt + Unpin)) -> Option<RawAnswer> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let body = bytes[end + 4..end + 4 + length].to_vec();
                return Some(RawAnswer { status, head, body });
            }
        }
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until the server closes the connection (end of stream or reset) and returns what
/// it sent; `None` when it is still open after `within`.
async fn read_until_closed(
    reader: &mut (impl AsyncReadExt + Unpin),
    within: Duration,
) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| bytes)
}

/// What a slow client saw: the answer, how long after its head it came, and whether the
/// server then closed the connection.
struct SlowOutcome {
    answer: RawAnswer,
    after: Duration,
    closed: bool,
}

/// Sends `head` (which declares a `Content-Length` of `length`), then trickles the body
/// one space every 200 ms (it would take `length` / 5 seconds to arrive), and reads the
/// answer, for at most `within`.
async fn trickle_body(
    address: SocketAddr,
    head: String,
    length: usize,
    within: Duration,
) -> SlowOutcome {
    let stream = TcpStream::connect(address).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    writer
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
    let stop = CancellationToken::new();
    let trickle = tokio::spawn({
        let stop = stop.clone();
        async move {
            for _ in 0..length {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                // The server may have answered and closed: stop quietly.
                if writer.write_all(b" ").await.is_err() {
                    return;
                }
            }
        }
    });
    let answer = tokio::time::timeout(within, read_answer(&mut reader))
        .await
        .unwrap_or_else(|_| {
            panic!("no answer within {within:?} to a request whose body trickles: no deadline?")
        })
        .expect("an answer before the connection closed");
    let after = started.elapsed();
    let closed = read_until_closed(&mut reader, Duration::from_secs(15))
        .await
        .is_some();
    stop.cancel();
    let _ = trickle.await;
    SlowOutcome {
        answer,
        after,
        closed,
    }
}

/// The start of a request head that never ends (no blank line).
const PARTIAL_HEAD: &[u8] = b"POST /api/v1/events HTTP/1.1\r\nHost: abuse\r\nContent-Type: appl";

/// Opens `n` connections that send nothing, except every `partial_every`th, which sends the
/// start of a request head and stops.
async fn open_idle(address: SocketAddr, n: usize, partial_every: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    let indices: Vec<usize> = (0..n).collect();
    for chunk in indices.chunks(200) {
        let opened = futures::future::join_all(chunk.iter().map(|&i| async move {
            let mut stream = TcpStream::connect(address)
                .await
                .unwrap_or_else(|e| panic!("idle connection {i} to {address}: {e}"));
            if i % partial_every == 0 {
                stream
                    .write_all(PARTIAL_HEAD)
                    .await
                    .expect("send a partial head");
            }
            stream
        }))
        .await;
        streams.extend(opened);
    }
    streams
}

/// Fails, saying how to raise it, when this process may not open `needed` files (Linux;
/// elsewhere the connections themselves fail).
fn require_open_files(needed: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok());
    if let Some(soft) = soft {
        assert!(
            soft >= needed,
            "this test opens {needed} sockets; the open files limit is {soft}: \
             raise it with `ulimit -n {needed}` before `make test`"
        );
    }
}

/// How the server ended idle connections.
#[derive(Debug, Default)]
struct Closures {
    closed: usize,
    still_open: usize,
    /// Closed after answering 408.
    answered_408: usize,
    /// Closed after answering something else (always a failure).
    other_answers: Vec<String>,
}

/// Waits (each at most `within`) until the server closes every stream.
async fn await_closures(streams: Vec<TcpStream>, within: Duration) -> Closures {
    let reads: Vec<_> = streams
        .into_iter()
        .map(|mut stream| tokio::spawn(async move { read_until_closed(&mut stream, within).await }))
        .collect();
    let mut closures = Closures::default();
    for read in reads {
        match read.await.expect("reader task") {
            None => closures.still_open += 1,
            Some(bytes) => {
                closures.closed += 1;
                if bytes.is_empty() {
                    continue;
                }
                let text = String::from_utf8_lossy(&bytes).into_owned();
                if text.starts_with("HTTP/1.1 408") {
                    closures.answered_408 += 1;
                } else {
                    closures.other_answers.push(text);
                }
            }
        }
    }
    closures
}

/// Polls `series` on `url` until it is at least `at_least`; panics after `within`.
async fn wait_for_gauge(
    http: &reqwest::Client,
    url: &str,
    series: &str,
    at_least: f64,
    within: Duration,
) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let value = gauge(http, url, series).await;
        if value >= at_least {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{series} reached only {value} (wanted {at_least}) within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `series` on `url` until it is at most `at_most`; panics after `within`.
async fn wait_for_gauge_below(
    http: &reqwest::Client,
    url: &str,
    series: &str,
    at_most: f64,
    within: Duration,
) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let value = gauge(http, url, series).await;
        if value <= at_most {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{series} still {value} (wanted at most {at_most}) after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Seeding volume for the heavy queries

/// Events seeded straight into MySQL for the funnel tests: enough that a strict funnel
/// analysis scans for far longer than the caps under test allow.
const SEEDED_EVENTS: u32 = 200_000;

/// Inserts `SEEDED_EVENTS` events of 25,000 users over the last ~2.5 days into the project:
/// page views, product views, cart adds and purchases in turn. Written with SQL (100,000
/// rows a statement) rather than through the pipeline, which would take minutes; the
/// funnels read `user_events` only.
async fn seed_events(db: &MySqlPool) {
    const DIGIT: &str = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
        UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
        UNION ALL SELECT 8 UNION ALL SELECT 9)";
    for offset in (0..SEEDED_EVENTS).step_by(100_000) {
        let sql = format!(
            "INSERT INTO user_events (project, event_id, event_type, user_id, distinct_id, \
             session_id, event_time, timestamp_source, received_at) \
             SELECT ?, CONCAT('seed-', n), \
             ELT(1 + n % 4, 'page_view', 'product_view', 'cart_add', 'purchase'), \
             CONCAT('seed-user-', n DIV 8), CONCAT('seed-user-', n DIV 8), \
             CONCAT('seed-session-', n DIV 8), \
             UTC_TIMESTAMP(3) - INTERVAL (n + 60) SECOND, 'client', UTC_TIMESTAMP(3) \
             FROM (SELECT ? + a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d AS n \
             FROM {DIGIT} a, {DIGIT} b, {DIGIT} c, {DIGIT} e, {DIGIT} f) numbers"
        );
        sqlx::query(&sql)
            .bind(PROJECT)
            .bind(offset)
            .execute(db)
            .await
            .expect("seed events");
    }
    let seeded: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM user_events WHERE event_id LIKE 'seed-%'")
            .fetch_one(db)
            .await
            .expect("count the seeded events");
    assert_eq!(seeded, i64::from(SEEDED_EVENTS));
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .filter(|seconds| *seconds > 0)
        .unwrap_or_else(|| panic!("a positive Retry-After header: {headers:?}"))
}

// ---------------------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_is_answered_408_and_the_services_stay_up() {
    let _turn = support::HEAVY.lock().await;
    // The gateway's deadline must exceed Kafka's delivery timeout (it would otherwise cut
    // off a batch waiting for its acknowledgement): 5 s and 6 s.
    const GATEWAY_DEADLINE_MS: u64 = 6_000;
    const WORKER_DEADLINE_MS: u64 = 1_500;
    let p = Pipeline::start(
        |ingest| {
            ingest.kafka.delivery_timeout_ms = 5_000;
            ingest.connections.request_timeout_ms = GATEWAY_DEADLINE_MS;
        },
        |worker| {
            worker.connections.request_timeout_ms = WORKER_DEADLINE_MS;
            worker.stats.api_keys = vec![format!("{ADMIN_KEY}={PROJECT}:admin")];
        },
    )
    .await;
    // Bodies of 500 bytes at 5 bytes a second: 100 s to arrive, far past either deadline.
    let length = 500;
    let gateway_head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: abuse\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    );
    let worker_head = format!(
        "POST /api/v1/projects/{PROJECT}/funnels HTTP/1.1\r\nHost: abuse\r\n\
         Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    );
    let gateway_slow = tokio::spawn(trickle_body(
        p.gateway.socket,
        gateway_head,
        length,
        Duration::from_millis(4 * GATEWAY_DEADLINE_MS),
    ));
    let worker_slow = tokio::spawn(trickle_body(
        p.worker.socket,
        worker_head,
        length,
        Duration::from_millis(4 * WORKER_DEADLINE_MS + 4_000),
    ));

    // While both trickle: the services answer and a batch is acknowledged.
    p.assert_healthy("while bodies trickle").await;
    p.send_batch("slow-body", 20).await;

    for (service, slow, deadline_ms, metrics) in [
        (
            "ingest",
            gateway_slow,
            GATEWAY_DEADLINE_MS,
            &p.gateway.metrics,
        ),
        ("worker", worker_slow, WORKER_DEADLINE_MS, &p.worker.metrics),
    ] {
        let outcome = slow.await.expect("slow client task");
        let body = outcome.answer.json();
        assert_eq!(
            outcome.answer.status, 408,
            "{service}: {}",
            outcome.answer.head
        );
        assert_eq!(body["error"], "request_timeout", "{service}: {body}");
        assert_eq!(body["field"], "body", "{service}: {body}");
        // It is the deadline that answered, not an early refusal of the request.
        assert!(
            outcome.after >= Duration::from_millis(deadline_ms * 9 / 10),
            "{service} answered after {:?}, before its deadline of {deadline_ms} ms",
            outcome.after
        );
        assert!(
            outcome.closed,
            "{service} kept the slow client's connection open after its 408"
        );
        let timed_out = gauge(
            &p.http,
            metrics,
            &format!("{service}_http_requests_timed_out_total"),
        )
        .await;
        assert!(
            timed_out >= 1.0,
            "{service}_http_requests_timed_out_total = {timed_out}"
        );
    }
    // After the abuse too.
    p.assert_healthy("after the slow bodies").await;
    p.send_batch("slow-body-after", 20).await;
    p.assert_stored("slow-body", 20).await;
    p.assert_stored("slow-body-after", 20).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_are_closed_by_the_header_timeout() {
    let _turn = support::HEAVY.lock().await;
    const IDLE_AT_GATEWAY: usize = 2_000;
    const IDLE_AT_WORKER: usize = 200;
    // The production default: the time to open 2,200 connections, see them counted and send
    // a batch, on a busy 2-core machine, with room to spare.
    const HEADER_TIMEOUT_MS: u64 = 5_000;
    let mut p = Pipeline::start(
        |ingest| {
            ingest.connections.header_timeout_ms = HEADER_TIMEOUT_MS;
            ingest.connections.max_connections = 4_096;
        },
        |worker| {
            worker.connections.header_timeout_ms = HEADER_TIMEOUT_MS;
            worker.connections.max_connections = 1_024;
        },
    )
    .await;
    // Both ends of every connection live in this process.
    require_open_files(2 * (IDLE_AT_GATEWAY + IDLE_AT_WORKER) + 1_000);
    let opened_at = Instant::now();
    let (gateway_idle, worker_idle) = tokio::join!(
        open_idle(p.gateway.socket, IDLE_AT_GATEWAY, 10),
        open_idle(p.worker.socket, IDLE_AT_WORKER, 10),
    );
    let opening = opened_at.elapsed();

    // Every one is counted open...
    let at_gateway = wait_for_gauge(
        &p.http,
        &p.gateway.metrics,
        "ingest_http_connections_open",
        IDLE_AT_GATEWAY as f64,
        Duration::from_millis(HEADER_TIMEOUT_MS),
    )
    .await;
    let at_worker = wait_for_gauge(
        &p.http,
        &p.worker.metrics,
        "worker_http_connections_open",
        IDLE_AT_WORKER as f64,
        Duration::from_millis(HEADER_TIMEOUT_MS),
    )
    .await;
    // ...and while they are, both services answer and a batch is acknowledged.
    p.assert_healthy("with 2,200 idle connections open").await;
    p.send_batch("idle", 20).await;
    let served_at = opened_at.elapsed();
    let still_open = gauge(&p.http, &p.gateway.metrics, "ingest_http_connections_open").await;
    eprintln!(
        "opened in {opening:?}; counted {at_gateway} at the gateway, {at_worker} at the \
         worker; /health and a batch served by {served_at:?}, {still_open} then open"
    );
    assert!(
        still_open >= IDLE_AT_GATEWAY as f64,
        "the idle connections were closed (after {served_at:?}) before the batch was \
         acknowledged: the check did not run while they were open"
    );

    // Within a few header timeouts, the servers closed every one, with a 408 or without a
    // word, never another answer.
    let within = Duration::from_millis(4 * HEADER_TIMEOUT_MS);
    let (gateway_closures, worker_closures) = tokio::join!(
        await_closures(gateway_idle, within),
        await_closures(worker_idle, within),
    );
    eprintln!("gateway: {gateway_closures:?}\nworker: {worker_closures:?}");
    for (service, closures, n) in [
        ("gateway", &gateway_closures, IDLE_AT_GATEWAY),
        ("worker", &worker_closures, IDLE_AT_WORKER),
    ] {
        assert_eq!(
            closures.still_open, 0,
            "{service}: idle connections still open after {within:?}"
        );
        assert_eq!(closures.closed, n, "{service}");
        assert!(
            closures.other_answers.is_empty(),
            "{service}: {:?}",
            closures.other_answers
        );
        // The partial heads at least were told why.
        assert!(
            closures.answered_408 >= n / 10,
            "{service}: only {} of the {} partial heads got 408",
            closures.answered_408,
            n / 10
        );
    }
    // The gauges fall back (the test's own client has closed its connections).
    p.http = client();
    wait_for_gauge_below(
        &p.http,
        &p.gateway.metrics,
        "ingest_http_connections_open",
        0.0,
        Duration::from_secs(30),
    )
    .await;
    wait_for_gauge_below(
        &p.http,
        &p.worker.metrics,
        "worker_http_connections_open",
        0.0,
        Duration::from_secs(30),
    )
    .await;
    p.assert_healthy("after the idle connections").await;
    p.assert_stored("idle", 20).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_clients_wait_until_a_place_frees() {
    let _turn = support::HEAVY.lock().await;
    const CAP: usize = 50;
    const IDLE: usize = 80;
    const HEADER_TIMEOUT_MS: u64 = 3_000;
    let p = Pipeline::start(
        |ingest| {
            ingest.connections.max_connections = CAP;
            ingest.connections.header_timeout_ms = HEADER_TIMEOUT_MS;
        },
        |_| {},
    )
    .await;
    // 80 connections are made (the kernel queues what the server does not accept)...
    let idle = open_idle(p.gateway.socket, IDLE, 10).await;
    // ...but the server holds at most its cap, and a client past it waits.
    let mut highest = 0.0_f64;
    let held = Instant::now();
    let health = tokio::spawn({
        let (http, address) = (p.http.clone(), p.gateway.address.clone());
        async move {
            let asked = Instant::now();
            let status = http
                .get(format!("{address}/health"))
                .send()
                .await
                .map(|r| r.status().as_u16());
            (status, asked.elapsed())
        }
    });
    while held.elapsed() < Duration::from_millis(HEADER_TIMEOUT_MS / 2) {
        let open = gauge(&p.http, &p.gateway.metrics, "ingest_http_connections_open").await;
        highest = highest.max(open);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        highest, CAP as f64,
        "ingest_http_connections_open with {IDLE} clients and connections.max_connections = {CAP}"
    );
    assert_eq!(
        gauge(&p.http, &p.gateway.metrics, "ingest_http_connections_max").await,
        CAP as f64
    );
    assert!(
        !health.is_finished(),
        "/health was answered while {CAP} idle connections held every place"
    );
    // Once the header timeout closes the first idle ones, the waiting clients are served:
    // /health, then a batch.
    let (status, waited) =
        tokio::time::timeout(Duration::from_millis(6 * HEADER_TIMEOUT_MS), health)
            .await
            .expect("/health answered once the idle connections were closed")
            .expect("health task");
    assert_eq!(status.expect("/health answered"), 200);
    eprintln!("/health waited {waited:?} for a place");
    p.send_batch("capped", 20).await;
    let closures = await_closures(idle, Duration::from_millis(6 * HEADER_TIMEOUT_MS)).await;
    assert_eq!(closures.still_open, 0, "{closures:?}");
    assert!(closures.other_answers.is_empty(), "{closures:?}");
    p.assert_stored("capped", 20).await;
    p.stop().await;
}

/// Opens `/live` with `key`; the answer (a stream when 200).
async fn open_live(p: &Pipeline, key: &str) -> reqwest::Response {
    p.http
        .get(format!(
            "{}/api/v1/projects/{PROJECT}/live",
            p.worker.address
        ))
        .bearer_auth(key)
        .send()
        .await
        .expect("the worker answered /live")
}

/// A refusal: status, Retry-After, JSON body.
async fn refusal(response: reqwest::Response) -> (u16, u64, Value) {
    let status = response.status().as_u16();
    assert_ne!(status, 200, "a stream opened where a cap should refuse it");
    let retry = retry_after(response.headers());
    (
        status,
        retry,
        response.json().await.expect("a JSON refusal"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_are_capped_per_key_and_in_total() {
    let _turn = support::HEAVY.lock().await;
    const PER_KEY: usize = 3;
    const TOTAL: usize = 5;
    let keys = [
        "sk_abuse_live_key_a01",
        "sk_abuse_live_key_b01",
        "sk_abuse_live_key_c01",
    ];
    let [a, b, c] = keys;
    let p = Pipeline::start(
        |_| {},
        |worker| {
            worker.stats.live_streams_per_key = PER_KEY;
            worker.stats.live_streams_max = TOTAL;
            worker.stats.api_keys = keys.iter().map(|k| format!("{k}={PROJECT}")).collect();
        },
    )
    .await;
    let open_streams = "worker_stats_live_streams_open";
    let mut streams = Vec::new();
    for _ in 0..PER_KEY {
        let stream = open_live(&p, a).await;
        assert_eq!(stream.status().as_u16(), 200);
        streams.push(stream);
    }
    // Key A holds its share: 429, naming the key as the problem.
    let (status, retry, body) = refusal(open_live(&p, a).await).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["field"], "authorization", "{body}");
    assert_eq!(body["error"], "limit_reached", "{body}");
    eprintln!("per key: Retry-After {retry}: {body}");
    // Key B fills the server: then B and C are refused with 503.
    for _ in 0..TOTAL - PER_KEY {
        let stream = open_live(&p, b).await;
        assert_eq!(stream.status().as_u16(), 200);
        streams.push(stream);
    }
    for key in [b, c] {
        let (status, retry, body) = refusal(open_live(&p, key).await).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "busy", "{body}");
        eprintln!("in total: Retry-After {retry}: {body}");
    }
    assert_eq!(
        gauge(&p.http, &p.worker.metrics, open_streams).await,
        TOTAL as f64
    );
    assert!(refused(&p.http, &p.worker, "live_per_key").await >= 1.0);
    assert!(refused(&p.http, &p.worker, "live_total").await >= 2.0);

    // With every stream taken: the services answer and a batch goes through.
    p.assert_healthy("with every live stream taken").await;
    p.send_batch("live", 20).await;

    // A stream that ends frees its place: C gets one once the server saw A's leave.
    drop(streams.remove(0));
    let replacement = eventually(Duration::from_secs(20), "a place for key C", || async {
        let stream = open_live(&p, c).await;
        (stream.status().as_u16() == 200).then_some(stream)
    })
    .await;
    streams.push(replacement);
    assert_eq!(
        gauge(&p.http, &p.worker.metrics, open_streams).await,
        TOTAL as f64
    );
    // And every place comes back when the clients leave.
    drop(streams);
    wait_for_gauge_below(
        &p.http,
        &p.worker.metrics,
        open_streams,
        0.0,
        Duration::from_secs(20),
    )
    .await;
    let stream = open_live(&p, a).await;
    assert_eq!(stream.status().as_u16(), 200);
    drop(stream);
    p.assert_stored("live", 20).await;
    p.stop().await;
}

/// Creates a strict funnel over the seeded event types with the admin key.
async fn create_storm_funnel(p: &Pipeline) {
    let response = p
        .http
        .post(format!(
            "{}/api/v1/projects/{PROJECT}/funnels",
            p.worker.address
        ))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({
            "name": "storm", "order_mode": "strict", "window_seconds": 86_400,
            "steps": [{"event_type": "page_view"}, {"event_type": "product_view"},
                      {"event_type": "cart_add"}, {"event_type": "purchase"}],
        }))
        .send()
        .await
        .expect("the worker answered");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "{body}");
}

/// One funnel analysis: status, Retry-After (if any), body.
async fn analyse(p: &Pipeline, funnel: &str, key: &str) -> (u16, Option<u64>, Value) {
    let response = p
        .http
        .get(format!(
            "{}/api/v1/projects/{PROJECT}/funnels/{funnel}/analysis?mode=strict",
            p.worker.address
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("a funnel analysis got no answer (a hang?): {e}"));
    let status = response.status().as_u16();
    let retry = (status != 200).then(|| retry_after(response.headers()));
    (status, retry, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_funnel_analyses_is_refused_past_the_heavy_query_cap() {
    let _turn = support::HEAVY.lock().await;
    const HEAVY_MAX: usize = 2;
    const STORM: usize = 40;
    let p = Pipeline::start(
        |_| {},
        |worker| {
            worker.stats.heavy_queries_max = HEAVY_MAX;
            worker.stats.heavy_query_wait_ms = 200;
            worker.stats.api_keys = vec![format!("{ADMIN_KEY}={PROJECT}:admin")];
        },
    )
    .await;
    seed_events(&p.db).await;
    create_storm_funnel(&p).await;
    // Alone, an analysis answers (the data are there, the query works).
    let (status, _, alone) = analyse(&p, "storm", ADMIN_KEY).await;
    assert_eq!(status, 200, "{alone}");
    assert!(alone["steps"][0]["users"].as_u64() > Some(0), "{alone}");

    let storm_over = CancellationToken::new();
    // While it rages: /health answers every time, at most HEAVY_MAX analyses run at once.
    let watch = tokio::spawn({
        let (http, address, metrics, over) = (
            p.http.clone(),
            p.worker.address.clone(),
            p.worker.metrics.clone(),
            storm_over.clone(),
        );
        async move {
            let (mut answered, mut highest) = (0, 0.0_f64);
            while !over.is_cancelled() {
                let health = http.get(format!("{address}/health")).send().await;
                let status = health.map(|r| r.status().as_u16());
                assert_eq!(status.ok(), Some(200), "/health during the storm");
                answered += 1;
                let running = gauge(&http, &metrics, "worker_stats_heavy_queries_running").await;
                highest = highest.max(running);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (answered, highest)
        }
    });
    let storm = futures::future::join_all((0..STORM).map(|_| {
        let p = &p;
        async move {
            tokio::time::timeout(Duration::from_secs(90), analyse(p, "storm", ADMIN_KEY))
                .await
                .expect("every analysis is answered: none hangs")
        }
    }));
    let (answers, ()) = tokio::join!(storm, async {
        p.send_batch("storm", 20).await;
    });
    storm_over.cancel();
    let (health_answers, highest_running) = watch.await.expect("watch task");

    let ok = answers
        .iter()
        .filter(|(status, _, _)| *status == 200)
        .count();
    let busy: Vec<_> = answers
        .iter()
        .filter(|(status, _, _)| *status == 503)
        .collect();
    eprintln!(
        "storm of {STORM}: {ok} answered, {} refused; /health answered {health_answers} times; \
         at most {highest_running} heavy queries ran at once",
        busy.len()
    );
    assert_eq!(ok + busy.len(), STORM, "only 200 or 503: {answers:?}");
    assert!(ok >= 1, "some analyses are answered");
    assert!(
        !busy.is_empty(),
        "{STORM} analyses at once, {HEAVY_MAX} allowed: some refused"
    );
    for (_, retry, body) in &busy {
        assert_eq!(body["error"], "busy", "{body}");
        assert!(retry.is_some(), "{body}");
    }
    assert!(health_answers >= 1, "/health was asked during the storm");
    assert!(
        highest_running <= HEAVY_MAX as f64,
        "worker_stats_heavy_queries_running reached {highest_running}"
    );
    assert_eq!(
        refused(&p.http, &p.worker, "heavy_busy").await,
        busy.len() as f64,
        "worker_stats_refused_total{{limit=\"heavy_busy\"}} counts every refusal"
    );
    // The storm over, analyses answer again.
    let (status, _, after) = analyse(&p, "storm", ADMIN_KEY).await;
    assert_eq!(status, 200, "{after}");
    p.assert_stored("storm", 20).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_statement_time_limit_is_stopped_with_503() {
    let _turn = support::HEAVY.lock().await;
    const READER: &str = "sk_abuse_reader_key_01";
    let p = Pipeline::start(
        |_| {},
        |worker| {
            // MariaDB stops the API's statements after 5 ms; scanning 200,000 events takes
            // far longer. The consumer's pool has no such limit.
            worker.stats.query_timeout_ms = 5;
            worker.stats.api_keys = vec![format!("{READER}={PROJECT}")];
        },
    )
    .await;
    seed_events(&p.db).await;
    // The funnel every database starts with (page view, product view, cart add, purchase).
    let (status, retry, body) = analyse(&p, "purchase", READER).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "busy", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("stats.query_timeout_ms")),
        "{body}"
    );
    eprintln!("query timeout: Retry-After {retry:?}: {body}");
    assert!(refused(&p.http, &p.worker, "query_timeout").await >= 1.0);
    assert_eq!(refused(&p.http, &p.worker, "heavy_busy").await, 0.0);
    // The consumer writes on: a batch lands, and /health answers.
    p.assert_healthy("after a stopped query").await;
    p.send_batch("query-timeout", 20).await;
    p.assert_stored("query-timeout", 20).await;
    p.stop().await;
}
