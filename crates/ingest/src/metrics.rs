//! Every metric the gateway exports, registered on a registry the caller owns (so each test
//! gets its own). Labels are route templates and fixed reasons, never raw paths or ids.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

#[derive(Clone)]
pub struct IngestMetrics {
    pub events_accepted: IntCounter,
    pub events_rejected: IntCounterVec,
    pub batch_size: Histogram,
    pub bytes_received: IntCounter,
    pub produce_latency: Histogram,
    pub producer_queue_depth: IntGauge,
    pub unavailable: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub not_collected: IntCounterVec,
}

impl IngestMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            events_accepted: IntCounter::new(
                "ingest_events_accepted_total",
                "Events acknowledged by Kafka and reported accepted to the client",
            )?,
            events_rejected: IntCounterVec::new(
                Opts::new(
                    "ingest_events_rejected_total",
                    "Events refused, by the field at fault",
                ),
                &["field"],
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new("ingest_batch_size_events", "Events per request").buckets(vec![
                    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
                ]),
            )?,
            bytes_received: IntCounter::new(
                "ingest_bytes_received_total",
                "Request body bytes received, before decompression",
            )?,
            produce_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "ingest_kafka_produce_latency_seconds",
                    "Time from enqueueing a request's events to Kafka acknowledging all of them",
                )
                .buckets(exponential_buckets(0.0005, 2.0, 16)?),
            )?,
            producer_queue_depth: IntGauge::new(
                "ingest_kafka_producer_queue_depth",
                "Messages in librdkafka's queue not yet acknowledged",
            )?,
            unavailable: IntCounterVec::new(
                Opts::new("ingest_unavailable_total", "503 answers by cause"),
                &["cause"],
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new("ingest_rate_limited_total", "429 answers by limiter"),
                &["limiter"],
            )?,
            not_collected: IntCounterVec::new(
                Opts::new(
                    "ingest_events_not_collected_total",
                    "Events answered but not collected, by the privacy signal honoured (gpc, dnt)",
                ),
                &["signal"],
            )?,
        };
        registry.register(Box::new(m.events_accepted.clone()))?;
        registry.register(Box::new(m.events_rejected.clone()))?;
        registry.register(Box::new(m.batch_size.clone()))?;
        registry.register(Box::new(m.bytes_received.clone()))?;
        registry.register(Box::new(m.produce_latency.clone()))?;
        registry.register(Box::new(m.producer_queue_depth.clone()))?;
        registry.register(Box::new(m.unavailable.clone()))?;
        registry.register(Box::new(m.rate_limited.clone()))?;
        registry.register(Box::new(m.not_collected.clone()))?;
        Ok(m)
    }
}
