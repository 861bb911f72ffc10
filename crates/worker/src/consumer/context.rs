//! librdkafka callbacks: rebalances (logged and counted) and statistics (consumer lag per
//! partition).

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Statistics};

use crate::metrics::WorkerMetrics;

pub struct WorkerContext {
    metrics: WorkerMetrics,
}

impl WorkerContext {
    pub fn new(metrics: WorkerMetrics) -> Self {
        Self { metrics }
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
