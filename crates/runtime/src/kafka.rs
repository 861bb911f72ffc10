//! Kafka connection settings and topic creation, shared by producer and consumer.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use serde::Deserialize;

/// How to reach the cluster. Anything librdkafka understands can be added under `extra`
/// (e.g. `security.protocol`, `sasl.username`).
#[derive(Debug, Clone, Deserialize)]
pub struct KafkaConnection {
    pub brokers: String,
    #[serde(default)]
    pub extra: HashMap<String, String>,
}

impl KafkaConnection {
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.extra {
            config.set(k, v);
        }
        config
    }
}

/// A topic the service owns and creates when missing (many clusters, ours included, do not
/// auto-create topics).
#[derive(Debug, Clone, Deserialize)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
}

/// Creates every topic that does not exist yet; an existing topic is left as it is.
/// Fails with the broker address when the cluster cannot be reached, so a misconfigured
/// service stops at boot rather than at its first request.
pub async fn ensure_topics(
    connection: &KafkaConnection,
    topics: &[TopicSpec],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = connection
        .client_config()
        .create()
        .context("cannot create Kafka admin client")?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(t.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = tokio::time::timeout(
        Duration::from_secs(15),
        admin.create_topics(&new_topics, &options),
    )
    .await
    .with_context(|| format!("Kafka at {} did not answer within 15 s", connection.brokers))?
    .with_context(|| format!("cannot reach Kafka at {}", connection.brokers))?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created Kafka topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "Kafka topic exists");
            }
            Err((name, code)) => bail!(
                "cannot create Kafka topic {name} at {}: {code}",
                connection.brokers
            ),
        }
    }
    Ok(())
}

/// How long the cluster keeps `topic`'s messages (`retention.ms`); `None` when it keeps them
/// forever (-1).
pub async fn topic_retention(
    connection: &KafkaConnection,
    topic: &str,
) -> anyhow::Result<Option<Duration>> {
    let admin: AdminClient<DefaultClientContext> = connection
        .client_config()
        .create()
        .context("cannot create Kafka admin client")?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = tokio::time::timeout(
        Duration::from_secs(15),
        admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &options),
    )
    .await
    .with_context(|| format!("Kafka at {} did not answer within 15 s", connection.brokers))?
    .with_context(|| format!("cannot describe topic {topic} at {}", connection.brokers))?;
    let resource = results
        .into_iter()
        .next()
        .context("no answer for the topic's configuration")?
        .map_err(|code| anyhow::anyhow!("cannot describe topic {topic}: {code}"))?;
    let value = resource
        .get("retention.ms")
        .and_then(|entry| entry.value.clone())
        .with_context(|| format!("topic {topic} reports no retention.ms"))?;
    let millis: i64 = value
        .parse()
        .with_context(|| format!("topic {topic}: retention.ms {value:?} is not a number"))?;
    Ok(u64::try_from(millis).ok().map(Duration::from_millis))
}

/// Whether the cluster answers metadata requests for a topic; refreshed in the background, so
/// `/ready` and load shedding read it without waiting on the network. One slow answer from a
/// loaded broker does not count as an outage: the probe declares the cluster unreachable after
/// `FAILURES_BEFORE_DOWN` failed probes in a row, and reachable again at the first success.
#[derive(Clone)]
pub struct BrokerProbe {
    reachable: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

const FAILURES_BEFORE_DOWN: u32 = 2;
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

impl BrokerProbe {
    /// Probes every `interval` until `shutdown`. Starts optimistic: services only get here
    /// after reaching the cluster at boot.
    pub fn spawn(
        connection: &KafkaConnection,
        topic: &str,
        interval: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<(Self, tokio::task::JoinHandle<()>)> {
        let client: rdkafka::consumer::BaseConsumer = connection
            .client_config()
            .create()
            .context("cannot create the Kafka metadata client")?;
        let client = std::sync::Arc::new(client);
        let probe = Self {
            reachable: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        };
        let flag = probe.reachable.clone();
        let topic = topic.to_owned();
        let task = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let (client, name) = (client.clone(), topic.clone());
                let timeout = PROBE_TIMEOUT;
                let answered = tokio::task::spawn_blocking(move || {
                    use rdkafka::consumer::Consumer;
                    client
                        .fetch_metadata(Some(&name), timeout)
                        .map(|m| {
                            m.topics()
                                .iter()
                                .any(|t| t.error().is_none() && !t.partitions().is_empty())
                        })
                        .unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                failures = if answered { 0 } else { failures + 1 };
                let reachable = failures < FAILURES_BEFORE_DOWN;
                let was = flag.swap(reachable, std::sync::atomic::Ordering::Relaxed);
                if was != reachable {
                    if reachable {
                        tracing::info!(%topic, "Kafka reachable again");
                    } else {
                        tracing::error!(%topic, "Kafka unreachable");
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
        Ok((probe, task))
    }

    pub fn is_reachable(&self) -> bool {
        self.reachable.load(std::sync::atomic::Ordering::Relaxed)
    }
}
