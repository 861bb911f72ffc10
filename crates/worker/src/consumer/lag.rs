//! The group's lag as the broker sees it: committed offsets against the partitions' ends,
//! read with the admin calls of a client that is not a member of the group. Unlike the
//! consumer's own statistics, it keeps moving when no member consumes (all crashed, or the
//! partitions held by a member that does not consume them), which is when it matters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::health::{ConsumerHealth, GroupProgress};
use crate::metrics::WorkerMetrics;
use crate::settings::KafkaSettings;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartitionLag {
    partition: i32,
    /// The group's committed offset, or the partition's start when the group has none.
    committed: i64,
    lag: i64,
}

/// Samples the lag every `interval` until `shutdown`: exports it per partition and tells
/// `health` how the group progresses. A failed sample is logged and skipped (the broker
/// probe reports an unreachable cluster).
pub async fn run(
    settings: KafkaSettings,
    interval: Duration,
    metrics: WorkerMetrics,
    health: ConsumerHealth,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client: BaseConsumer = settings
        .connection()
        .client_config()
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create the Kafka lag client")?;
    let client = Arc::new(client);
    let topic = settings.topic.name;
    loop {
        let (sampler, name) = (client.clone(), topic.clone());
        match tokio::task::spawn_blocking(move || sample(&sampler, &name)).await? {
            Ok(partitions) => {
                for p in &partitions {
                    metrics
                        .group_lag
                        .with_label_values(&[topic.as_str(), &p.partition.to_string()])
                        .set(p.lag);
                }
                health.record_progress(total(&partitions), Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, %topic, "cannot read the group's lag"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
    }
}

fn sample(client: &BaseConsumer, topic: &str) -> KafkaResult<Vec<PartitionLag>> {
    // Not subscribed, so nothing to consume; polling drains the client's error events (a
    // broker going away) so they cannot pile up.
    let _ = client.poll(Duration::ZERO);
    let metadata = client.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
    let ids: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut wanted = TopicPartitionList::new();
    for id in &ids {
        wanted.add_partition(topic, *id);
    }
    let committed = client.committed_offsets(wanted, CALL_TIMEOUT)?;
    let mut partitions = Vec::with_capacity(ids.len());
    for id in ids {
        let (low, high) = client.fetch_watermarks(topic, id, CALL_TIMEOUT)?;
        let committed = match committed.find_partition(topic, id).map(|e| e.offset()) {
            Some(Offset::Offset(offset)) => offset,
            _ => low,
        };
        partitions.push(PartitionLag {
            partition: id,
            committed,
            lag: lag(committed, low, high),
        });
    }
    Ok(partitions)
}

/// Messages still to consume: from the committed offset (never before the partition's start,
/// which retention moves) to the end.
fn lag(committed: i64, low: i64, high: i64) -> i64 {
    (high - committed.max(low)).max(0)
}

fn total(partitions: &[PartitionLag]) -> GroupProgress {
    GroupProgress {
        lag: partitions.iter().map(|p| p.lag).sum(),
        committed: partitions.iter().map(|p| p.committed).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_committed_offset_to_the_end() {
        assert_eq!(lag(40, 0, 100), 60);
        assert_eq!(lag(100, 0, 100), 0);
        // Retention deleted what the group never read: those are gone, not lag.
        assert_eq!(lag(10, 50, 100), 50);
        // A committed offset past the end (a truncated partition) is not negative lag.
        assert_eq!(lag(120, 0, 100), 0);
    }

    #[test]
    fn the_total_adds_partitions() {
        let partitions = [
            PartitionLag {
                partition: 0,
                committed: 10,
                lag: 5,
            },
            PartitionLag {
                partition: 1,
                committed: 30,
                lag: 0,
            },
        ];
        assert_eq!(
            total(&partitions),
            GroupProgress {
                lag: 5,
                committed: 40
            }
        );
    }
}
