//! The real gateway in process on port 0 against the real Kafka, each test with its
//! own topic, and a reader that takes the topic back to check what the gateway wrote.
//!
//! A test that cannot reach Kafka fails and says how to start it; it never skips.

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use insightflow_ingest::{Application, Settings};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const PARTITIONS: i32 = 2;

pub fn kafka_brokers() -> String {
    std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// Panics with instructions when Kafka does not accept connections.
pub fn require_kafka() {
    let brokers = kafka_brokers();
    let address = brokers.split(',').next().unwrap_or_default().to_owned();
    let reachable = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "Kafka is not reachable at {address}. Start the local services with `make deps` \
         (scripts/deps.sh), or point TEST_KAFKA_BROKERS at a running broker."
    );
}

pub fn unique(label: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{label}_{}", &id[..12])
}

/// Default settings aimed at a fresh topic of this test.
pub fn settings(topic: &str) -> Settings {
    let mut settings = Settings::load().expect("ingest default settings");
    settings.kafka.brokers = kafka_brokers();
    settings.kafka.topic.name = topic.to_owned();
    settings.kafka.topic.partitions = PARTITIONS;
    settings.http.workers = 1;
    // Most tests send without a key; those about keys configure them.
    settings.auth.allow_open = true;
    settings
}

pub struct TestGateway {
    pub address: String,
    /// The main port, for tests that speak raw TCP.
    pub port: u16,
    /// `http://127.0.0.1:{port}` of the `/metrics` listener when `http.metrics_listen` is set.
    pub metrics_address: Option<String>,
    pub topic: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestGateway {
    /// A gateway on its own topic, with settings adjusted by `tweak`.
    pub async fn spawn(tweak: impl FnOnce(&mut Settings)) -> Self {
        require_kafka();
        let topic = unique("ingest_it");
        let mut settings = settings(&topic);
        tweak(&mut settings);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let port = listener.local_addr().expect("local address").port();
        let shutdown = CancellationToken::new();
        let app = Application::build_with_listener(
            settings,
            listener,
            prometheus::Registry::new(),
            shutdown.clone(),
        )
        .await
        .expect("the gateway starts");
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            metrics_address: app
                .metrics_port()
                .map(|port| format!("http://127.0.0.1:{port}")),
            topic,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http client"),
            shutdown,
            handle: Some(tokio::spawn(app.run_until_stopped())),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("gateway task panicked")
                .expect("gateway stopped with an error");
        }
    }
}

/// One message read back from the topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub payload: serde_json::Value,
    pub headers: HashMap<String, String>,
}

/// Reads `topic` from the beginning until `count` messages arrived; panics naming what is
/// missing if they do not within 30 s (a bound against hanging, not a timing assertion).
pub async fn read_topic(topic: &str, count: usize) -> Vec<Record> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_topic_blocking(&topic, count))
        .await
        .expect("topic reader panicked")
}

fn read_topic_blocking(topic: &str, count: usize) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("ingest_it_reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("create the test consumer");
    let mut partitions = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        partitions
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&partitions).expect("assign partitions");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut records = Vec::with_capacity(count);
    while records.len() < count {
        assert!(
            Instant::now() < deadline,
            "read {} of {count} messages from {topic} within 30 s",
            records.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("Kafka error while reading the test topic");
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(Record {
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            payload: serde_json::from_slice(message.payload().unwrap_or_default())
                .expect("payload is JSON"),
            headers,
        });
    }
    records
}
