//! Test harness: the real gateway and worker, in process on port 0, against the real Kafka,
//! MariaDB and Redis. Every pipeline gets its own topic, consumer group, database and
//! Redis key prefix, so tests run in parallel without seeing each other's data.
//!
//! A test that cannot reach a service fails and says how to start it; it never skips.

pub mod counts;
pub mod direct;
pub mod kafka;
pub mod process;
pub mod proxy;
pub mod state;

use std::future::Future;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use insightflow_worker::store::mysql::MysqlStore;
use insightflow_worker::{Application as WorkerApp, Role, Settings as WorkerSettings};
use sqlx::MySqlPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Tests that load the machine or kill processes on purpose (the abuse suite, crash recovery,
/// exactly-once under faults) take turns on this lock: the bounds they check are functional
/// (an answer comes, a connection is closed, a count converges), and another such test's load
/// must not turn them into failures. Other tests run beside them.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const KAFKA: &str = "127.0.0.1:9092";
pub const MYSQL_SERVER: &str = "mysql://root@127.0.0.1:3306";
pub const REDIS: &str = "redis://127.0.0.1:6379/0";
/// The local Redis Cluster of `scripts/redis-cluster.sh` (three masters).
pub const REDIS_CLUSTER: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn kafka_brokers() -> String {
    env_or("TEST_KAFKA_BROKERS", KAFKA)
}
pub fn mysql_server() -> String {
    env_or("TEST_MYSQL_URL", MYSQL_SERVER)
}
pub fn redis_url() -> String {
    env_or("TEST_REDIS_URL", REDIS)
}
/// The cluster's nodes, `host:port` comma separated (`TEST_REDIS_CLUSTER`).
pub fn redis_cluster_nodes() -> String {
    env_or("TEST_REDIS_CLUSTER", REDIS_CLUSTER)
}

/// Which Redis a test's worker writes to: tests of the exactly-once and correctness suites run
/// against both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisKind {
    Single,
    Cluster,
}

impl RedisKind {
    /// `redis.url` and `redis.cluster` for the worker's settings.
    pub fn url(self) -> String {
        match self {
            Self::Single => redis_url(),
            Self::Cluster => redis_cluster_nodes()
                .split(',')
                .map(|node| format!("redis://{}", node.trim()))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Panics with instructions when the cluster is not there.
    fn require(self) {
        if self == Self::Cluster {
            let nodes = redis_cluster_nodes();
            for node in nodes.split(',') {
                assert!(
                    reachable(node.trim()),
                    "the Redis Cluster is not reachable at {node} (TEST_REDIS_CLUSTER={nodes}). \
                     Start the local cluster with `scripts/redis-cluster.sh start` (make deps \
                     does), or point TEST_REDIS_CLUSTER at a running one."
                );
            }
        }
    }
}

/// Logs of the apps under test, shown for failing tests; filtered with RUST_LOG.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// `host:port` of the MySQL server the tests use (from `TEST_MYSQL_URL`).
pub fn mysql_host() -> String {
    mysql_server()
        .trim_start_matches("mysql://")
        .rsplit('@')
        .next()
        .unwrap_or("127.0.0.1:3306")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:3306")
        .to_owned()
}

/// Panics with instructions when a service does not accept connections.
pub fn require_services() {
    init_logs();
    let mysql_host = mysql_host();
    let redis = redis_url();
    let redis_host = redis
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    let kafka = kafka_brokers();
    let any_broker = kafka.split(',').any(|broker| reachable(broker.trim()));
    assert!(
        any_broker,
        "Kafka is not reachable at {kafka}. Start a private test broker with \
         `scripts/test-broker.sh` and run with \
         TEST_KAFKA_BROKERS=127.0.0.1:$(cat .data/kafka-test/port) (or `make test`)"
    );
    for (name, address) in [("MySQL", mysql_host), ("Redis", redis_host)] {
        assert!(
            reachable(&address),
            "{name} is not reachable at {address}. Start the local services with `make deps` \
             (scripts/deps.sh), or point TEST_MYSQL_URL / TEST_REDIS_URL at running ones."
        );
    }
}

/// Whether a TCP connection to `address` (`host:port`) opens within 2 s.
fn reachable(address: &str) -> bool {
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// One text column read through `DbText` (identifier columns are binary-collated).
pub type DbTextRow = insightflow_worker::store::DbText;

pub fn unique(label: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{label}_{}", &id[..12])
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `within` naming `what`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running gateway.
pub struct TestIngest {
    pub address: String,
    pub shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestIngest {
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("ingest task panicked")
                .expect("ingest stopped with an error");
        }
    }
}

pub fn ingest_settings(topic: &str, brokers: &str) -> insightflow_ingest::Settings {
    let mut settings = insightflow_ingest::Settings::load().expect("ingest default settings");
    settings.kafka.brokers = brokers.to_owned();
    settings.kafka.topic.name = topic.to_owned();
    // A shared 2-core machine running every test binary at once can take seconds to
    // acknowledge a large batch; production keeps the 5 s default.
    settings.kafka.delivery_timeout_ms = 15_000;
    // A request waits for Kafka's acknowledgement within its own deadline.
    settings.connections.request_timeout_ms = 30_000;
    settings.http.workers = 1;
    // The pipeline tests send without a write key.
    settings.auth.allow_open = true;
    settings
}

pub async fn spawn_ingest_with(settings: insightflow_ingest::Settings) -> TestIngest {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let port = listener.local_addr().expect("local address").port();
    let shutdown = CancellationToken::new();
    let app = insightflow_ingest::Application::build_with_listener(
        settings,
        listener,
        prometheus::Registry::new(),
        shutdown.clone(),
    )
    .await
    .expect("ingest failed to start");
    TestIngest {
        address: format!("http://127.0.0.1:{port}"),
        shutdown,
        handle: Some(tokio::spawn(app.run_until_stopped())),
    }
}

pub async fn spawn_ingest(topic: &str) -> TestIngest {
    require_services();
    spawn_ingest_with(ingest_settings(topic, &kafka_brokers())).await
}

/// Every key under `prefix:`, with SCAN: KEYS would block a Redis holding millions of keys
/// (a benchmark's, say) for longer than the client waits. On a cluster, of every master.
pub async fn keys_with_prefix(redis: &mut RedisConn, prefix: &str) -> Vec<String> {
    let nodes: Vec<Option<(String, u16)>> = match redis.masters().await.expect("CLUSTER NODES") {
        Some(masters) => masters.into_iter().map(Some).collect(),
        None => vec![None],
    };
    let mut keys = Vec::new();
    for node in &nodes {
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(10_000);
            let (next, batch): (u64, Vec<String>) = redis
                .on_node(node.as_ref(), scan)
                .await
                .expect("SCAN the test keys");
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    keys
}

/// A connection to the test's Redis (one Redis or the cluster): commands, pipelines and
/// scripts as on a `MultiplexedConnection`.
pub type RedisConn = insightflow_store::redis::Pooled;

/// What a test worker writes to: its own database, key prefix, topic and group.
#[derive(Clone, Debug)]
pub struct WorkerTarget {
    pub topic: String,
    pub group_id: String,
    pub database_url: String,
    pub redis_prefix: String,
    pub redis: RedisKind,
}

impl WorkerTarget {
    /// A fresh database (migrated) and unique names, on the single Redis.
    pub async fn create() -> Self {
        Self::create_on(RedisKind::Single).await
    }

    /// A fresh database (migrated) and unique names, on `redis`.
    pub async fn create_on(redis: RedisKind) -> Self {
        require_services();
        redis.require();
        let database = unique("if_test");
        let target = Self {
            topic: unique("it_events"),
            group_id: unique("it_group"),
            database_url: format!("{}/{database}", mysql_server()),
            redis_prefix: unique("it"),
            redis,
        };
        MysqlStore::migrate(&worker_settings(&target).mysql)
            .await
            .expect("cannot create and migrate the test database");
        target
    }

    pub async fn pool(&self) -> MySqlPool {
        MySqlPool::connect(&self.database_url)
            .await
            .expect("connect to the test database")
    }

    pub async fn redis(&self) -> RedisConn {
        let settings = worker_settings(self).redis;
        insightflow_store::redis::RedisPool::connect(&settings, 1)
            .await
            .expect("connect to Redis")
            .pool()
            .get()
            .await
            .expect("a Redis connection")
    }

    /// Drops the database and the Redis keys.
    pub async fn cleanup(&self) {
        let pool = self.pool().await;
        let name = self
            .database_url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
            .execute(&pool)
            .await
            .expect("drop the test database");
        let mut redis = self.redis().await;
        let keys = keys_with_prefix(&mut redis, &self.redis_prefix).await;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut redis)
                .await
                .expect("delete test keys");
        }
    }
}

pub fn worker_settings(target: &WorkerTarget) -> WorkerSettings {
    let mut settings = WorkerSettings::load().expect("worker default settings");
    settings.kafka.brokers = kafka_brokers();
    settings.kafka.topic.name = target.topic.clone();
    settings.kafka.dead_letter_topic = format!("{}.dlq", target.topic);
    settings.kafka.group_id = target.group_id.clone();
    settings.kafka.batch_max_wait_ms = 50;
    settings.kafka.session_timeout_ms = 15_000;
    settings.mysql.url = target.database_url.clone();
    settings.mysql.max_connections = 4;
    settings.redis.url = target.redis.url();
    settings.redis.cluster = target.redis == RedisKind::Cluster;
    settings.redis.key_prefix = target.redis_prefix.clone();
    settings.redis.pool_size = 4;
    settings.backoff.initial_ms = 100;
    settings.backoff.max_ms = 1000;
    settings.http.workers = 1;
    // The tests call the stats API without keys; stats_api.rs sets keys where it tests them.
    settings.stats.allow_open = true;
    settings
}

/// A running worker.
pub struct TestWorker {
    pub address: String,
    pub shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestWorker {
    /// Graceful stop: finish the batch, commit offsets.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("worker task panicked")
                .expect("worker stopped with an error");
        }
    }
}

pub async fn spawn_worker_with(settings: WorkerSettings, role: Role) -> TestWorker {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let port = listener.local_addr().expect("local address").port();
    let shutdown = CancellationToken::new();
    let app = WorkerApp::build_with_listener(
        settings,
        role,
        listener,
        prometheus::Registry::new(),
        shutdown.clone(),
    )
    .await
    .expect("worker failed to start");
    TestWorker {
        address: format!("http://127.0.0.1:{port}"),
        shutdown,
        handle: Some(tokio::spawn(app.run_until_stopped())),
    }
}

/// The worker's stores as `settings` connect them, outside a running worker (a rebuild run
/// by hand, a batch written directly).
pub async fn stores(
    settings: &WorkerSettings,
) -> (
    MysqlStore,
    insightflow_worker::store::redis::RedisStore,
    insightflow_worker::metrics::WorkerMetrics,
) {
    let mysql = MysqlStore::connect(&settings.mysql)
        .await
        .expect("MySQL store");
    let redis = insightflow_worker::store::redis::RedisStore::connect(
        &settings.redis,
        &settings.aggregates,
    )
    .await
    .expect("Redis store");
    let metrics =
        insightflow_worker::metrics::WorkerMetrics::register(&prometheus::Registry::new())
            .expect("worker metrics");
    (mysql, redis, metrics)
}

pub async fn spawn_worker(target: &WorkerTarget) -> TestWorker {
    spawn_worker_with(worker_settings(target), Role::All).await
}

/// Gateway and worker on one topic.
pub struct TestPipeline {
    pub ingest: TestIngest,
    pub worker: TestWorker,
    pub target: WorkerTarget,
    pub http: reqwest::Client,
}

impl TestPipeline {
    pub async fn start() -> Self {
        let target = WorkerTarget::create().await;
        let settings = worker_settings(&target);
        Self::start_with(target, settings).await
    }

    /// A gateway and a worker (`Role::All`, with `settings`) on `target`.
    pub async fn start_with(target: WorkerTarget, settings: WorkerSettings) -> Self {
        let worker = spawn_worker_with(settings, Role::All).await;
        let ingest = spawn_ingest(&target.topic).await;
        Self::of(ingest, worker, target)
    }

    /// A gateway and a worker already started on `target` (each with its own settings).
    pub fn of(ingest: TestIngest, worker: TestWorker, target: WorkerTarget) -> Self {
        Self {
            ingest,
            worker,
            target,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http client"),
        }
    }

    /// Posts a JSON body to the gateway and returns status and JSON answer.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.ingest.address))
            .json(body)
            .send()
            .await
            .expect("gateway answered");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// GETs a stats API path and returns status and JSON answer.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.worker.address))
            .send()
            .await
            .expect("worker answered");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Waits until MySQL holds `n` events for the project.
    pub async fn wait_for_events(&self, project: &str, n: i64) {
        let pool = self.target.pool().await;
        eventually(
            Duration::from_secs(30),
            &format!("{n} events in MySQL"),
            || {
                let pool = pool.clone();
                async move {
                    let count = insightflow_worker::store::mysql::count_events(&pool, project)
                        .await
                        .ok()?;
                    (count >= n).then_some(())
                }
            },
        )
        .await;
    }

    pub async fn stop(self) {
        self.ingest.stop().await;
        self.worker.stop().await;
        self.target.cleanup().await;
    }
}
