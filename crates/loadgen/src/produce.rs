//! The raw producer baseline: librdkafka with exactly the gateway's producer settings
//! (crates/ingest/src/producer.rs), sending the serialized events the gateway would send, with
//! the same key and headers: per request (each lane sends one batch and waits for its
//! acknowledgements, as one gateway request does) or pipelined (the producer's queue kept full:
//! the limit of the client and the broker). Also fills a topic for the worker drain phase.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use insightflow_model::{headers, Event, ProjectId};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryFuture, DeliveryResult, FutureProducer, FutureRecord, Producer,
    ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use serde_json::json;

use crate::events::{kafka_payload, validated_events, EventGenerator};
use crate::http_load::{drive, LoadArgs, OpResult};
use crate::measure::{own_cpu_seconds, OutputArgs};

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
    pub fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
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
            );
        config
    }

    pub fn create(&self) -> anyhow::Result<FutureProducer> {
        Ok(self.config().create()?)
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
    /// Pipelined: --concurrency threads (at most 16) enqueue the batches back to back into one
    /// producer and keep its queue full, counting acknowledgements in the delivery callback;
    /// nothing waits for a batch. The most this producer configuration and the broker take
    /// (--rate does not apply).
    #[arg(long, conflicts_with = "fill")]
    pub pipelined: bool,
    /// Clock ticks per second of /proc/PID/stat (getconf CLK_TCK), for the client's CPU.
    #[arg(long, default_value_t = 100)]
    pub clk_tck: u64,
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
        let record = FutureRecord::to(topic)
            .key(&self.key)
            .payload(&self.payload)
            .headers(self.headers());
        producer
            .send_result(record)
            .map_err(|(e, _)| anyhow::anyhow!("cannot enqueue: {e}"))
    }

    /// The gateway's headers (crates/ingest/src/producer.rs).
    fn headers(&self) -> OwnedHeaders {
        OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: headers::SCHEMA_VERSION,
                value: Some(insightflow_model::SCHEMA_VERSION_TEXT),
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
            })
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
        None if args.pipelined => {
            let cpu_before = own_cpu_seconds(args.clk_tck);
            let prepared = prepare_batches(&args, &project)?;
            let mut fields = tokio::task::spawn_blocking({
                let (settings, load) = (args.producer.clone(), args.load.clone());
                move || pipelined(&settings, &load, &prepared)
            })
            .await??;
            add_client_cpu(&mut fields, cpu_before, args.clk_tck);
            fields["batch"] = json!(args.batch);
            args.output.emit(fields)
        }
        None => timed(&args, &project, args.producer.create()?).await,
    }
}

/// The client's own CPU over the run (start-up and warm-up included), per acknowledged event:
/// what producing alone costs, beside the gateway's CPU per event.
fn add_client_cpu(fields: &mut serde_json::Value, before: Option<f64>, clk_tck: u64) {
    if let (Some(before), Some(after)) = (before, own_cpu_seconds(clk_tck)) {
        let cpu = after - before;
        fields["client_cpu_s"] = json!(cpu);
        if let Some(events) = fields["acknowledged_events"].as_u64().filter(|n| *n > 0) {
            fields["client_cpu_us_per_event"] = json!(cpu * 1e6 / events as f64);
        }
    }
}

/// Counts deliveries in librdkafka's delivery callback (no future, no channel per message).
#[derive(Default)]
struct DeliveryCounter {
    acknowledged: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.acknowledged
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The pipelined producer: enqueues the prepared batches in turn for warm-up plus duration
/// seconds, waiting only when the queue is full, then flushes. Throughput is the events
/// acknowledged within the measured window over its length.
fn pipelined(
    settings: &ProducerSettings,
    load: &LoadArgs,
    batches: &[Vec<Prepared>],
) -> anyhow::Result<serde_json::Value> {
    let producer: ThreadedProducer<DeliveryCounter> = settings
        .config()
        .create_with_context(DeliveryCounter::default())?;
    let counter = producer.context().clone();
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(load.warmup);
    let end = measure_from + Duration::from_secs_f64(load.duration);
    let stop = AtomicBool::new(false);
    let (sent, queue_full_waits) = (AtomicU64::new(0), AtomicU64::new(0));
    // One enqueuing thread per --concurrency (at least one), each sending every n-th batch:
    // on a shared machine a single thread gets a single thread's share of the cores, and the
    // baseline would measure the scheduler rather than the producer.
    let threads = load.concurrency.clamp(1, 16);
    let (window_start, window_end) = std::thread::scope(|scope| {
        let mut senders = Vec::new();
        for first in 0..threads {
            let (producer, stop, sent, waits) = (&producer, &stop, &sent, &queue_full_waits);
            senders.push(scope.spawn(move || -> anyhow::Result<()> {
                let mut next = first;
                while !stop.load(Ordering::Relaxed) {
                    for message in &batches[next % batches.len()] {
                        let mut record = BaseRecord::to(&settings.topic)
                            .key(&message.key)
                            .payload(&message.payload)
                            .headers(message.headers());
                        loop {
                            match producer.send(record) {
                                Ok(()) => break,
                                Err((
                                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                    back,
                                )) => {
                                    // The queue is full: exactly the state this baseline
                                    // keeps. Wait for deliveries to make room (the polling
                                    // thread serves the callbacks).
                                    record = back;
                                    waits.fetch_add(1, Ordering::Relaxed);
                                    std::thread::sleep(Duration::from_micros(200));
                                }
                                Err((e, _)) => anyhow::bail!("cannot enqueue: {e}"),
                            }
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    next += threads;
                }
                Ok(())
            }));
        }
        let mark = |at: Instant| {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            (Instant::now(), counter.acknowledged.load(Ordering::Relaxed))
        };
        let window = (mark(measure_from), mark(end));
        stop.store(true, Ordering::Relaxed);
        let results: Vec<anyhow::Result<()>> = senders
            .into_iter()
            .map(|s| {
                s.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a sender panicked")))
            })
            .collect();
        results
            .into_iter()
            .collect::<anyhow::Result<()>>()
            .map(|()| window)
    })?;
    let (sent, queue_full_waits) = (sent.into_inner(), queue_full_waits.into_inner());
    producer.flush(Duration::from_secs(60))?;
    let acknowledged = counter.acknowledged.load(Ordering::Relaxed);
    let failed = counter.failed.load(Ordering::Relaxed);
    let ((t0, n0), (t1, n1)) = (window_start, window_end);
    let seconds = (t1 - t0).as_secs_f64();
    let payload_bytes: usize = batches.iter().flatten().map(|p| p.payload.len()).sum();
    let payloads = batches.iter().map(Vec::len).sum::<usize>().max(1);
    Ok(json!({
        "mode": "pipelined",
        "sent": sent,
        "acknowledged_events": acknowledged,
        "failed_events": failed,
        "queue_full_waits": queue_full_waits,
        "threads": threads,
        "measured_seconds": seconds,
        "events_per_s": (n1 - n0) as f64 / seconds.max(1e-9),
        "payload_bytes_avg": payload_bytes as f64 / payloads as f64,
    }))
}

/// The batches a timed run sends in turn: the gateway's validated events, serialized once.
fn prepare_batches(args: &ProduceArgs, project: &ProjectId) -> anyhow::Result<Vec<Vec<Prepared>>> {
    let mut generator = EventGenerator::new(args.seed, args.users, false);
    let now = Utc::now();
    (0..args.bodies.max(1))
        .map(|_| {
            let body = generator.batch_body(args.batch, now);
            Ok(validated_events(&body, project, now)?
                .iter()
                .map(Prepared::new)
                .collect())
        })
        .collect()
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
    let cpu_before = own_cpu_seconds(args.clk_tck);
    let batches = prepare_batches(args, project)?;
    let payload_bytes: usize = batches.iter().flatten().map(|p| p.payload.len()).sum();
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
    add_client_cpu(&mut fields, cpu_before, args.clk_tck);
    args.output.emit(fields)
}
