//! Every metric the worker exports, on a registry the caller owns.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct WorkerMetrics {
    pub messages_consumed: IntCounter,
    pub events_written: IntCounterVec,
    pub duplicates_skipped: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub batch_size: Histogram,
    pub write_duration: HistogramVec,
    pub mysql_step_duration: HistogramVec,
    pub consumer_lag: IntGaugeVec,
    pub group_lag: IntGaugeVec,
    pub rebalances: IntCounterVec,
    pub dependency_errors: IntCounterVec,
    pub paused_seconds: IntCounter,
    pub retention_deleted: IntCounter,
    pub offset_gaps: IntCounterVec,
    pub below_position: IntCounterVec,
    pub refused_splits: IntCounter,
    pub suppressed_events: IntCounter,
    pub bot_events: IntCounter,
    pub identity_links_refused: IntCounterVec,
    pub buffered_messages: IntGauge,
    pub redis_rebuilds: IntCounter,
    pub redis_rebuilt_events: IntCounter,
    pub event_age: Histogram,
}

impl WorkerMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            messages_consumed: IntCounter::new(
                "worker_messages_consumed_total",
                "Kafka messages read",
            )?,
            events_written: IntCounterVec::new(
                Opts::new(
                    "worker_events_written_total",
                    "Events newly applied, per store",
                ),
                &["store"],
            )?,
            duplicates_skipped: IntCounterVec::new(
                Opts::new(
                    "worker_duplicates_skipped_total",
                    "Events already applied before (redeliveries, client retries), per store",
                ),
                &["store"],
            )?,
            dead_lettered: IntCounterVec::new(
                Opts::new(
                    "worker_dead_lettered_total",
                    "Messages sent to the dead-letter topic, by reason",
                ),
                &["reason"],
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new("worker_batch_size_messages", "Messages per processed batch")
                    .buckets(vec![
                        1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                    ]),
            )?,
            write_duration: HistogramVec::new(
                HistogramOpts::new(
                    "worker_write_duration_seconds",
                    "Time to write one batch, per store",
                )
                .buckets(exponential_buckets(0.0005, 2.0, 16)?),
                &["store"],
            )?,
            mysql_step_duration: HistogramVec::new(
                HistogramOpts::new(
                    "worker_mysql_step_duration_seconds",
                    "Time of one step of a batch's MySQL transaction (lookup, insert, sessions, \
                     users, rollups, commit)",
                )
                .buckets(exponential_buckets(0.0005, 2.0, 16)?),
                &["step"],
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "worker_consumer_lag_messages",
                    "Messages behind the partition's end (librdkafka statistics)",
                ),
                &["topic", "partition"],
            )?,
            group_lag: IntGaugeVec::new(
                Opts::new(
                    "worker_group_lag_messages",
                    "Messages between the group's committed offset and the partition's end, \
                     as the broker sees it (moves even when no member consumes)",
                ),
                &["topic", "partition"],
            )?,
            rebalances: IntCounterVec::new(
                Opts::new(
                    "worker_rebalances_total",
                    "Consumer group rebalances, by kind",
                ),
                &["kind"],
            )?,
            dependency_errors: IntCounterVec::new(
                Opts::new(
                    "worker_dependency_errors_total",
                    "Failed writes or calls, per dependency",
                ),
                &["dependency"],
            )?,
            paused_seconds: IntCounter::new(
                "worker_paused_seconds_total",
                "Seconds consumption was paused waiting for a dependency",
            )?,
            retention_deleted: IntCounter::new(
                "worker_retention_deleted_events_total",
                "Raw events deleted by the retention job",
            )?,
            offset_gaps: IntCounterVec::new(
                Opts::new(
                    "worker_offset_gaps_total",
                    "Offsets the broker skipped within a partition (messages never delivered)",
                ),
                &["partition"],
            )?,
            below_position: IntCounterVec::new(
                Opts::new(
                    "worker_events_below_position_total",
                    "Events stored from messages below their partition's stored position (the \
                     topic re-created or truncated, or a late event's row deleted): Redis does \
                     not count them",
                ),
                &["partition"],
            )?,
            suppressed_events: IntCounter::new(
                "worker_suppressed_events_total",
                "Events of erased or opted-out people, dropped before either store",
            )?,
            bot_events: IntCounter::new(
                "worker_bot_events_total",
                "Bots' events stored (flagged is_bot) and left out of every aggregate",
            )?,
            identity_links_refused: IntCounterVec::new(
                Opts::new(
                    "worker_identity_links_refused_total",
                    "Identity links (identify, alias) refused: the id was already linked to \
                     another person, or is a known user id (two users are never merged)",
                ),
                &["reason"],
            )?,
            refused_splits: IntCounter::new(
                "worker_mysql_refused_splits_total",
                "Writes MySQL refused as data that were split in halves to isolate the refused events",
            )?,
            buffered_messages: IntGauge::new(
                "worker_buffered_messages",
                "Messages read from Kafka and not yet applied (the batch in hand and what a pause carried over)",
            )?,
            redis_rebuilds: IntCounter::new(
                "worker_redis_rebuilds_total",
                "Rebuilds of the Redis aggregates from MySQL completed by this process \
                 (after Redis lost its data, or on demand)",
            )?,
            redis_rebuilt_events: IntCounter::new(
                "worker_redis_rebuilt_events_total",
                "Events a rebuild read from MySQL and applied to Redis",
            )?,
            event_age: Histogram::with_opts(
                HistogramOpts::new(
                    "worker_event_age_seconds",
                    "Age of an event when its batch was applied to MySQL and Redis: apply time \
                     minus the gateway's receive time (lag, outages and replays show here)",
                )
                // 10 ms to ~2.6 h.
                .buckets(exponential_buckets(0.01, 2.5, 16)?),
            )?,
        };
        registry.register(Box::new(m.event_age.clone()))?;
        registry.register(Box::new(m.redis_rebuilds.clone()))?;
        registry.register(Box::new(m.redis_rebuilt_events.clone()))?;
        registry.register(Box::new(m.refused_splits.clone()))?;
        registry.register(Box::new(m.suppressed_events.clone()))?;
        registry.register(Box::new(m.bot_events.clone()))?;
        registry.register(Box::new(m.identity_links_refused.clone()))?;
        for reason in crate::store::identity::REFUSAL_REASONS {
            m.identity_links_refused.with_label_values(&[reason]);
        }
        registry.register(Box::new(m.buffered_messages.clone()))?;
        registry.register(Box::new(m.offset_gaps.clone()))?;
        registry.register(Box::new(m.below_position.clone()))?;
        registry.register(Box::new(m.messages_consumed.clone()))?;
        registry.register(Box::new(m.events_written.clone()))?;
        registry.register(Box::new(m.duplicates_skipped.clone()))?;
        registry.register(Box::new(m.dead_lettered.clone()))?;
        registry.register(Box::new(m.batch_size.clone()))?;
        registry.register(Box::new(m.write_duration.clone()))?;
        registry.register(Box::new(m.mysql_step_duration.clone()))?;
        registry.register(Box::new(m.consumer_lag.clone()))?;
        registry.register(Box::new(m.group_lag.clone()))?;
        registry.register(Box::new(m.rebalances.clone()))?;
        registry.register(Box::new(m.dependency_errors.clone()))?;
        registry.register(Box::new(m.paused_seconds.clone()))?;
        registry.register(Box::new(m.retention_deleted.clone()))?;
        Ok(m)
    }
}
