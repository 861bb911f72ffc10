//! librdkafka callbacks: rebalances (logged, counted, and the assignment's size told to the
//! consumer's health) and statistics (consumer lag per partition).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Instant;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Statistics};

use super::health::ConsumerHealth;
use crate::metrics::WorkerMetrics;

pub struct WorkerContext {
    metrics: WorkerMetrics,
    /// Told how many partitions this member holds (`/ready`'s starvation check).
    health: ConsumerHealth,
    /// Partitions of the current assignment.
    owned: Mutex<HashSet<i32>>,
    /// Set by a rebalance: the partitions this member kept through it (owned before and
    /// after, so nobody else read them meanwhile). The consume loop takes it and forgets the
    /// last offsets of every other partition: those may legitimately resume further on.
    kept: Mutex<Option<HashSet<i32>>>,
}

impl WorkerContext {
    pub fn new(metrics: WorkerMetrics, health: ConsumerHealth) -> Self {
        Self {
            metrics,
            health,
            owned: Mutex::default(),
            kept: Mutex::default(),
        }
    }

    /// The partitions kept through the rebalances since the last call, if any happened.
    pub fn take_kept(&self) -> Option<HashSet<i32>> {
        self.kept.lock().ok().and_then(|mut kept| kept.take())
    }

    fn assigned(&self, partitions: &[i32]) {
        let new: HashSet<i32> = partitions.iter().copied().collect();
        let (Ok(mut owned), Ok(mut kept)) = (self.owned.lock(), self.kept.lock()) else {
            return;
        };
        let through: HashSet<i32> = owned.intersection(&new).copied().collect();
        *kept = Some(match kept.take() {
            Some(earlier) => earlier.intersection(&through).copied().collect(),
            None => through,
        });
        *owned = new;
    }
}

impl ClientContext for WorkerContext {
    /// librdkafka's own log lines (set `kafka.extra.debug` for its debug contexts) go to
    /// tracing under the `librdkafka` target.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

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
                // Eager rebalancing: the whole assignment goes, the next Assign brings the new one.
                self.health.set_assigned(0, Instant::now());
                self.metrics.rebalances.with_label_values(&["revoke"]).inc();
            }
            Rebalance::Assign(partitions) => {
                let list: Vec<(String, i32)> = partitions
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?list, "partitions assigned");
                self.health.set_assigned(list.len(), Instant::now());
                self.assigned(&list.iter().map(|(_, p)| *p).collect::<Vec<_>>());
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
            }
            Rebalance::Error(e) => {
                tracing::error!(error = %e, "rebalance error");
                self.metrics.rebalances.with_label_values(&["error"]).inc();
            }
        }
    }

    /// A partition assigned while the loop is paused on a failing store starts paused too:
    /// otherwise a rebalance during an outage would fetch into memory what cannot be written.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            if !self.health.stores_ok() && partitions.count() > 0 {
                match consumer.pause(partitions) {
                    Ok(()) => tracing::info!("new assignment paused: a store is failing"),
                    Err(e) => tracing::warn!(error = %e, "cannot pause the new assignment"),
                }
            }
        }
    }
}
