//! Publishing validated events to Kafka: idempotent producer, `acks=all`, a bounded wait for
//! acknowledgement, and load shedding instead of unbounded queueing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use insightflow_model::{headers, Event, PayloadWriter, SCHEMA_VERSION_TEXT};
use insightflow_runtime::kafka::BrokerProbe;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use tokio::sync::Notify;

use crate::metrics::IngestMetrics;
use crate::settings::KafkaSettings;

/// Why a request's events are not (all) in Kafka. Each maps to 503 with Retry-After.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the Kafka cluster is unreachable")]
    BrokerUnavailable,
    #[error("the producer queue is nearly full")]
    QueueFull,
    #[error("Kafka did not acknowledge every event in time")]
    DeliveryFailed,
}

impl PublishError {
    /// The `cause` label of `ingest_unavailable_total`.
    pub fn cause(self) -> &'static str {
        match self {
            Self::BrokerUnavailable => "broker_unavailable",
            Self::QueueFull => "queue_full",
            Self::DeliveryFailed => "delivery_failed",
        }
    }
}

pub struct EventProducer {
    producer: ThreadedProducer<DeliveryContext>,
    topic: String,
    /// Longest a request waits for its acknowledgements, a little over librdkafka's own timeout.
    request_deadline: Duration,
    shed_at_depth: usize,
    broker: BrokerProbe,
    metrics: IngestMetrics,
}

/// One request's messages that Kafka has not answered for yet. Every message of the request
/// carries the same `Arc` as its delivery opaque (a reference count, no allocation per
/// message); librdkafka's polling thread counts the answers down and wakes the request at
/// the last one.
struct RequestDeliveries {
    pending: AtomicUsize,
    /// The first refusal, reported by the request (once, not once per message).
    refused: OnceLock<KafkaError>,
    answered: Notify,
}

impl RequestDeliveries {
    fn new(messages: usize) -> Self {
        Self {
            pending: AtomicUsize::new(messages),
            refused: OnceLock::new(),
            answered: Notify::new(),
        }
    }
}

/// Counts delivery reports into their request's [`RequestDeliveries`].
struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<RequestDeliveries>;

    fn delivery(&self, result: &DeliveryResult<'_>, request: Arc<RequestDeliveries>) {
        if let Err((e, _)) = result {
            let _ = request.refused.set(e.clone());
        }
        if request.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Stores a permit when the request is not waiting yet: it will not miss it.
            request.answered.notify_one();
        }
    }
}

impl EventProducer {
    pub fn new(
        settings: &KafkaSettings,
        broker: BrokerProbe,
        metrics: IngestMetrics,
    ) -> anyhow::Result<Self> {
        let producer: ThreadedProducer<DeliveryContext> = settings
            .connection()
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &settings.compression)
            .set("linger.ms", settings.linger_ms.to_string())
            .set(
                "message.timeout.ms",
                settings.delivery_timeout_ms.to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                settings.queue_max_messages.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                settings.queue_max_kbytes.to_string(),
            )
            .create_with_context(DeliveryContext)
            .context("cannot create the Kafka producer")?;
        Ok(Self {
            producer,
            topic: settings.topic.name.clone(),
            request_deadline: Duration::from_millis(settings.delivery_timeout_ms)
                + Duration::from_secs(1),
            shed_at_depth: (f64::from(settings.queue_max_messages) * settings.shed_at_queue_fill)
                as usize,
            broker,
            metrics,
        })
    }

    /// Enqueues every event and waits until Kafka acknowledged all of them. Any failure fails
    /// the whole call: the client retries the batch and event ids make the retry harmless.
    pub async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        if !self.broker.is_reachable() {
            return Err(PublishError::BrokerUnavailable);
        }
        if events.is_empty() {
            return Ok(());
        }
        let depth = self.queue_depth();
        if depth + events.len() > self.shed_at_depth {
            return Err(PublishError::QueueFull);
        }
        let started = Instant::now();
        let deliveries = Arc::new(RequestDeliveries::new(events.len()));
        // librdkafka copies key and payload: one buffer of each serves every event.
        let mut writer = PayloadWriter::new();
        let mut payload = Vec::with_capacity(1024);
        let mut key = String::with_capacity(128);
        for event in events {
            payload.clear();
            writer.write(event, &mut payload);
            key.clear();
            key.push_str(event.project().as_str());
            key.push(':');
            key.push_str(event.distinct_id());
            let headers = OwnedHeaders::new_with_capacity(4)
                .insert(Header {
                    key: headers::SCHEMA_VERSION,
                    value: Some(SCHEMA_VERSION_TEXT),
                })
                .insert(Header {
                    key: headers::EVENT_ID,
                    value: Some(event.event_id().as_str()),
                })
                .insert(Header {
                    key: headers::EVENT_TYPE,
                    value: Some(event.event_type().as_str()),
                })
                .insert(Header {
                    key: headers::PROJECT,
                    value: Some(event.project().as_str()),
                });
            let record = BaseRecord::with_opaque_to(&self.topic, Arc::clone(&deliveries))
                .key(key.as_str())
                .payload(payload.as_slice())
                .headers(headers);
            if let Err((e, _)) = self.producer.send(record) {
                // The messages already enqueued are answered later, into a count nobody
                // waits for.
                tracing::warn!(error = %e, "cannot enqueue an event");
                return Err(PublishError::QueueFull);
            }
        }
        let answered = tokio::time::timeout(self.request_deadline, deliveries.answered.notified())
            .await
            .is_ok();
        self.metrics
            .producer_queue_depth
            .set(self.queue_depth() as i64);
        if !answered {
            return Err(PublishError::DeliveryFailed);
        }
        if let Some(e) = deliveries.refused.get() {
            tracing::warn!(error = %e, "Kafka refused an event");
            return Err(PublishError::DeliveryFailed);
        }
        self.metrics
            .produce_latency
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    pub fn queue_depth(&self) -> usize {
        usize::try_from(self.producer.in_flight_count()).unwrap_or(0)
    }

    /// Ready when the cluster answered the last probe and the queue has room.
    pub fn is_ready(&self) -> bool {
        self.broker.is_reachable() && self.queue_depth() < self.shed_at_depth
    }

    /// Waits (blocking) for queued events to be acknowledged; used on shutdown.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(Timeout::After(timeout)) {
            tracing::error!(error = %e, pending = self.queue_depth(), "producer flush did not complete");
        }
    }
}
