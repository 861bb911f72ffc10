//! The raw producer baseline: librdkafka with exactly the gateway's producer settings
//! (crates/ingest/src/producer.rs), sending the serialized events the gateway would send, with
//! the same key and headers. Also fills a topic for the worker drain phase.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use clap::Args;
use insightflow_model::{headers, Event, ProjectId};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::json;

use crate::events::{kafka_payload, validated_events, EventGenerator};
use crate::http_load::{drive, LoadArgs, OpResult};
use crate::measure::OutputArgs;

#[derive(Args, Debug, Clone)]
pub struct ProducerSettings {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long)]
    pub topic: String,
    /// The gateway's defaults (crates/ingest/config/default.toml).
    #[arg(long, default_value = "lz4")]
    pub compression: String,
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    #[arg(long, default_value_t = 5000)]
    pub delivery_timeout_ms: u64,
    #[arg(long, default_value_t = 100_000)]
    pub queue_max_messages: u64,
    #[arg(long, default_value_t = 262_144)]
    pub queue_max_kbytes: u64,
}

impl ProducerSettings {
    /// The same configuration as `EventProducer::new`.
    pub fn create(&self) -> anyhow::Result<FutureProducer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &self.compression)
            .set("linger.ms", self.linger_ms.to_string())
            .set("message.timeout.ms", self.delivery_timeout_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                self.queue_max_messages.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                self.queue_max_kbytes.to_string(),
            )
            .create()?)
    }
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub producer: ProducerSettings,
    /// Events per acknowledged unit (the gateway's request batch).
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Fill mode: send exactly this many events as fast as possible (deterministic for the
    /// seed, with event ids) instead of a timed run.
    #[arg(long)]
    pub fill: Option<u64>,
    #[command(flatten)]
    pub load: LoadArgs,
    #[arg(long, default_value = "default")]
    pub project: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 20_000)]
    pub users: u64,
    /// Distinct serialized batches prepared before a timed run.
    #[arg(long, default_value_t = 256)]
    pub bodies: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A message ready to send: payload, key and the header values.
struct Prepared {
    payload: Vec<u8>,
    key: String,
    event_id: String,
    event_type: String,
    project: String,
}

impl Prepared {
    fn new(event: &Event) -> Self {
        Self {
            payload: kafka_payload(event),
            key: event.kafka_key(),
            event_id: event.event_id().as_str().to_owned(),
            event_type: event.event_type().as_str().to_owned(),
            project: event.project().as_str().to_owned(),
        }
    }

    fn send(&self, producer: &FutureProducer, topic: &str) -> anyhow::Result<DeliveryFuture> {
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: headers::SCHEMA_VERSION,
                value: Some("1"),
            })
            .insert(Header {
                key: headers::EVENT_ID,
                value: Some(self.event_id.as_str()),
            })
            .insert(Header {
                key: headers::EVENT_TYPE,
                value: Some(self.event_type.as_str()),
            })
            .insert(Header {
                key: headers::PROJECT,
                value: Some(self.project.as_str()),
            });
        let record = FutureRecord::to(topic)
            .key(&self.key)
            .payload(&self.payload)
            .headers(headers);
        producer
            .send_result(record)
            .map_err(|(e, _)| anyhow::anyhow!("cannot enqueue: {e}"))
    }
}

async fn acknowledged(deliveries: Vec<DeliveryFuture>) -> u64 {
    futures::future::join_all(deliveries)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(_))))
        .count() as u64
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let project = ProjectId::parse(args.project.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    match args.fill {
        Some(total) => {
            // Filling is not timed against anything: give a busy broker time rather than fail.
            let mut settings = args.producer.clone();
            settings.delivery_timeout_ms = settings.delivery_timeout_ms.max(300_000);
            fill(&args, &project, settings.create()?, total).await
        }
        None => timed(&args, &project, args.producer.create()?).await,
    }
}

/// Sends `total` events, generated with event ids for the seed, keeping a window in flight.
async fn fill(
    args: &ProduceArgs,
    project: &ProjectId,
    producer: FutureProducer,
    total: u64,
) -> anyhow::Result<()> {
    let mut generator = EventGenerator::new(args.seed, args.users, true);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut acked = 0u64;
    let mut window: Vec<DeliveryFuture> = Vec::new();
    while sent < total {
        let n = (total - sent).min(500) as usize;
        let now = Utc::now();
        let body = generator.batch_body(n, now);
        for event in validated_events(&body, project, now)? {
            let prepared = Prepared::new(&event);
            window.push(prepared.send(&producer, &args.producer.topic)?);
        }
        sent += n as u64;
        if window.len() >= 20_000 {
            acked += acknowledged(std::mem::take(&mut window)).await;
        }
    }
    acked += acknowledged(window).await;
    let seconds = started.elapsed().as_secs_f64();
    args.output.emit(json!({
        "mode": "fill",
        "sent": sent,
        "acknowledged_events": acked,
        "seconds": seconds,
        "events_per_s": acked as f64 / seconds,
    }))?;
    anyhow::ensure!(
        acked == total,
        "only {acked} of {total} events acknowledged"
    );
    Ok(())
}

/// Saturation or fixed rate: each operation sends one batch and waits for all its acks, as one
/// gateway request does.
async fn timed(
    args: &ProduceArgs,
    project: &ProjectId,
    producer: FutureProducer,
) -> anyhow::Result<()> {
    let mut generator = EventGenerator::new(args.seed, args.users, false);
    let now = Utc::now();
    let mut batches = Vec::with_capacity(args.bodies);
    let mut payload_bytes = 0usize;
    for _ in 0..args.bodies.max(1) {
        let body = generator.batch_body(args.batch, now);
        let prepared: Vec<Prepared> = validated_events(&body, project, now)?
            .iter()
            .map(Prepared::new)
            .collect();
        payload_bytes += prepared.iter().map(|p| p.payload.len()).sum::<usize>();
        batches.push(prepared);
    }
    let batches = Arc::new(batches);
    let producer = Arc::new(producer);
    let topic = Arc::new(args.producer.topic.clone());
    let p = producer.clone();
    let outcome = drive(&args.load, move |seq| {
        let (producer, topic, batches) = (p.clone(), topic.clone(), batches.clone());
        async move {
            let batch = &batches[(seq as usize) % batches.len()];
            let mut deliveries = Vec::with_capacity(batch.len());
            for message in batch {
                match message.send(&producer, &topic) {
                    Ok(d) => deliveries.push(d),
                    Err(_) => {
                        return OpResult {
                            status: 503,
                            events: 0,
                        }
                    }
                }
            }
            let n = deliveries.len() as u64;
            let acked = acknowledged(deliveries).await;
            OpResult {
                status: if acked == n { 200 } else { 503 },
                events: acked,
            }
        }
    })
    .await;
    let _ = producer.flush(std::time::Duration::from_secs(10));
    let mut fields = outcome.fields();
    fields["mode"] = json!("timed");
    fields["batch"] = json!(args.batch);
    fields["rate"] = json!(args.load.rate);
    fields["concurrency"] = json!(args.load.concurrency);
    fields["payload_bytes_avg"] =
        json!(payload_bytes as f64 / (args.bodies.max(1) * args.batch) as f64);
    args.output.emit(fields)
}
