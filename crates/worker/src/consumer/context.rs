//! librdkafka callbacks: rebalances (logged, counted, and numbered so the loop can drop
//! messages received before a revocation) and statistics (consumer lag per partition).

use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Statistics};

use crate::metrics::WorkerMetrics;

pub struct WorkerContext {
    metrics: WorkerMetrics,
    revocations: AtomicU64,
}

impl WorkerContext {
    pub fn new(metrics: WorkerMetrics) -> Self {
        Self {
            metrics,
            revocations: AtomicU64::new(0),
        }
    }

    /// How many revocations this consumer has seen. A message received when this was `n` is
    /// stale once it is larger: with eager rebalancing every partition is revoked, and the
    /// next owner (maybe this consumer again) re-fetches it from the committed offset.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::SeqCst)
    }
}

impl ClientContext for WorkerContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // librdkafka reports -1 for partitions this member does not consume.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                let list: Vec<(String, i32)> = partitions
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?list, "partitions revoked");
                self.metrics.rebalances.with_label_values(&["revoke"]).inc();
                self.revocations.fetch_add(1, Ordering::SeqCst);
            }
            Rebalance::Assign(partitions) => {
                let list: Vec<(String, i32)> = partitions
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?list, "partitions assigned");
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
            }
            Rebalance::Error(e) => {
                tracing::error!(error = %e, "rebalance error");
                self.metrics.rebalances.with_label_values(&["error"]).inc();
            }
        }
    }
}
