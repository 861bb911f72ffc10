//! The consume loop: read a batch, dead-letter what cannot be used, write MySQL then Redis,
//! and only then store the batch's offsets. Consecutive batches overlap: while Redis applies
//! batch n (a task of its own), batch n+1 is read and written to MySQL; Redis takes batch n+1
//! only once it took batch n, so each partition reaches Redis in offset order, and offsets
//! are stored in that order too. A failing store pauses the assigned partitions and retries
//! with capped exponential backoff, polling all the while so the group keeps us.

mod context;
pub mod dead_letter;
mod health;
pub mod lag;
pub mod replay_window;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use insightflow_model::Event;
use rand::Rng;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::context::WorkerContext;
use self::dead_letter::{DeadLetters, Reason};
pub use self::health::{ConsumerHealth, ConsumerReadiness, ConsumerState};
use crate::metrics::WorkerMetrics;
use crate::settings::{BackoffSettings, KafkaSettings};
use crate::store::mysql::{MysqlStore, Source, Sourced, Verdict, STEPS};
use crate::store::redis::{AggregateInput, Applicable, Position, RedisStore};
use crate::store::StoreError;

/// The loop stopped because shutdown was requested while a batch could not be finished.
struct Stopped;

pub struct EventConsumer {
    consumer: StreamConsumer<WorkerContext>,
    dead_letters: DeadLetters,
    mysql: MysqlStore,
    redis: RedisStore,
    metrics: WorkerMetrics,
    health: ConsumerHealth,
    topic: String,
    batch_max_events: usize,
    batch_max_wait: Duration,
    backoff: BackoffSettings,
    /// Messages that arrived while a batch was being retried; they start the next batch.
    carried_over: Vec<OwnedMessage>,
    /// Messages of the batches being written (with `carried_over`: worker_buffered_messages).
    in_hand: usize,
    /// Messages of the batch being applied to Redis while the next one is written to MySQL.
    in_flight: usize,
    /// The last offset read per partition, to notice offsets the broker never delivered.
    last_offsets: HashMap<i32, i64>,
}

impl EventConsumer {
    pub fn new(
        settings: &KafkaSettings,
        backoff: BackoffSettings,
        mysql: MysqlStore,
        redis: RedisStore,
        metrics: WorkerMetrics,
        health: ConsumerHealth,
    ) -> anyhow::Result<Self> {
        let consumer: StreamConsumer<WorkerContext> = settings
            .connection()
            .client_config()
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "true")
            .set(
                "auto.commit.interval.ms",
                settings.auto_commit_interval_ms.to_string(),
            )
            // Offsets are stored by hand, after the writes: auto-commit only ever commits those.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("partition.assignment.strategy", "range,roundrobin")
            .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
            // What librdkafka may fetch ahead of the loop: with the batch in hand and what a
            // pause carries over, the bound on memory held for unapplied messages.
            .set(
                "queued.max.messages.kbytes",
                settings.max_prefetch_kbytes.to_string(),
            )
            .set(
                "session.timeout.ms",
                settings.session_timeout_ms.to_string(),
            )
            .set(
                "statistics.interval.ms",
                settings.statistics_interval_ms.to_string(),
            )
            .create_with_context(WorkerContext::new(metrics.clone(), health.clone()))
            .context("cannot create the Kafka consumer")?;
        consumer
            .subscribe(&[&settings.topic.name])
            .context("cannot subscribe to the events topic")?;
        Ok(Self {
            consumer,
            dead_letters: DeadLetters::new(&settings.connection(), &settings.dead_letter_topic)?,
            mysql,
            redis,
            metrics,
            health,
            topic: settings.topic.name.clone(),
            batch_max_events: settings.batch_max_events.max(1),
            batch_max_wait: Duration::from_millis(settings.batch_max_wait_ms),
            backoff,
            carried_over: Vec::new(),
            in_hand: 0,
            in_flight: 0,
            last_offsets: HashMap::new(),
        })
    }

    /// Consumes until `shutdown`, then finishes the batch in hand if its stores answer, and
    /// commits the stored offsets synchronously.
    ///
    /// A rebalance never discards messages already read: the batch in hand is finished (the
    /// writes are idempotent, so a message whose partition moved to another member costs one
    /// deduplicated write), and offsets of partitions no longer assigned are simply not stored.
    /// Dropping them instead would rely on the new assignment re-fetching from the committed
    /// offset, which is not what happens when the partition comes back to this member.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let _running = self.health.running();
        tracing::info!(topic = %self.topic, "consumer started");
        let mut batch: Vec<OwnedMessage> = Vec::with_capacity(self.batch_max_events);
        let mut deadline: Option<tokio::time::Instant> = None;
        // The batch MySQL holds and Redis is being given, while the next one is read and
        // written to MySQL.
        let mut in_flight: Option<JoinHandle<RedisAttempt>> = None;
        loop {
            batch.append(&mut self.carried_over);
            self.metrics
                .buffered_messages
                .set((batch.len() + self.in_flight) as i64);
            if batch.is_empty() {
                deadline = None;
            } else if deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + self.batch_max_wait);
            }
            let due = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
            if !batch.is_empty() && (batch.len() >= self.batch_max_events || due) {
                deadline = None;
                let full = std::mem::replace(&mut batch, Vec::with_capacity(self.batch_max_events));
                let Ok(written) = self.write_mysql_stage(full, &shutdown).await else {
                    break;
                };
                // Redis applies batches one after the other, in the order MySQL took them.
                if let Some(previous) = in_flight.take() {
                    let attempt = previous.await.context("the Redis write task failed")?;
                    if self.finish(attempt, &shutdown).await.is_err() {
                        break;
                    }
                }
                in_flight = Some(self.start_redis(written));
                continue;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                attempt = async { in_flight.as_mut().expect("checked by the guard").await },
                    if in_flight.is_some() =>
                {
                    in_flight = None;
                    let attempt = attempt.context("the Redis write task failed")?;
                    if self.finish(attempt, &shutdown).await.is_err() {
                        break;
                    }
                }
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        batch.push(message.detach());
                        // And what librdkafka already holds, without a turn of this loop
                        // (clock reads, a timer) per message.
                        let mut taken = 1;
                        while batch.len() < self.batch_max_events {
                            match ready_now(self.consumer.recv()) {
                                Some(Ok(message)) => {
                                    batch.push(message.detach());
                                    taken += 1;
                                }
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "Kafka consumer error");
                                    self.metrics
                                        .dependency_errors
                                        .with_label_values(&["kafka"])
                                        .inc();
                                    break;
                                }
                                None => break,
                            }
                        }
                        self.metrics.messages_consumed.inc_by(taken);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka consumer error");
                        self.metrics.dependency_errors.with_label_values(&["kafka"]).inc();
                    }
                },
                () = sleep_until(deadline) => {}
            }
        }
        // The batch on its way to Redis first, then the one in hand, if their stores answer.
        let mut finished = true;
        if let Some(previous) = in_flight.take() {
            let attempt = previous.await.context("the Redis write task failed")?;
            finished = self.finish(attempt, &shutdown).await.is_ok();
        }
        batch.append(&mut self.carried_over);
        if !batch.is_empty() {
            let messages = batch.len();
            let written = if finished {
                self.write_mysql_stage(batch, &shutdown).await.ok()
            } else {
                None
            };
            let done = match written {
                Some(written) => {
                    let attempt = self
                        .start_redis(written)
                        .await
                        .context("the Redis write task failed")?;
                    self.finish(attempt, &shutdown).await.is_ok()
                }
                None => false,
            };
            if !done {
                tracing::warn!(
                    messages,
                    "stopped with an unwritten batch; it will be redelivered"
                );
            }
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("final offsets committed"),
            // Nothing stored since the last commit, or no assignment: nothing to lose.
            Err(e) => tracing::info!(error = %e, "final commit skipped"),
        }
        tracing::info!("consumer stopped");
        Ok(())
    }

    /// Starts applying a batch MySQL holds to Redis (its first attempt), in a task of its own
    /// so that the next batch is read and written to MySQL meanwhile.
    fn start_redis(&mut self, written: Written) -> JoinHandle<RedisAttempt> {
        self.in_flight = written.batch.len();
        let redis = self.redis.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = redis.apply(&written.counted(), &written.positions).await;
            RedisAttempt {
                written,
                outcome,
                started,
            }
        })
    }

    /// Ends a batch: retries Redis until it took the batch (a failed first attempt pauses
    /// consumption like any failing store), then stores the batch's offsets.
    async fn finish(
        &mut self,
        attempt: RedisAttempt,
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        let RedisAttempt {
            written,
            outcome,
            started,
        } = attempt;
        let counted = written.counted();
        let applied = match outcome {
            Ok(applied) => applied,
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "Redis refused a batch; retrying");
                let redis = self.redis.clone();
                self.with_retry("redis", shutdown, || {
                    redis.apply(&counted, &written.positions)
                })
                .await?
            }
        };
        self.in_flight = 0;
        self.metrics
            .write_duration
            .with_label_values(&["redis"])
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .events_written
            .with_label_values(&["redis"])
            .inc_by(applied as u64);
        self.metrics
            .duplicates_skipped
            .with_label_values(&["redis"])
            .inc_by((counted.len() - applied.min(counted.len())) as u64);
        let now = chrono::Utc::now();
        for (event, _) in &written.events {
            let age = now.signed_duration_since(event.received_at());
            self.metrics
                .event_age
                .observe(age.num_milliseconds().max(0) as f64 / 1000.0);
        }
        self.store_offsets(&written.positions);
        Ok(())
    }

    /// Decodes a batch (dead-lettering what cannot be used) and writes it to MySQL.
    async fn write_mysql_stage(
        &mut self,
        batch: Vec<OwnedMessage>,
        shutdown: &CancellationToken,
    ) -> Result<Written, Stopped> {
        self.metrics.batch_size.observe(batch.len() as f64);
        self.in_hand = batch.len() + self.in_flight;
        if let Some(kept) = self.consumer.context().take_kept() {
            self.last_offsets
                .retain(|partition, _| kept.contains(partition));
        }
        for gap in offset_gaps(
            &mut self.last_offsets,
            batch.iter().map(|m| (m.partition(), m.offset())),
        ) {
            // Our topic is neither compacted nor transactional: its offsets are contiguous, so
            // a jump past the next offset means the broker never delivered those messages.
            // Their events are lost unless replayed (reset the group's offset to gap.from).
            tracing::error!(
                partition = gap.partition,
                from = gap.from,
                to = gap.to,
                "offset gap: the broker skipped messages of this partition"
            );
            self.metrics
                .offset_gaps
                .with_label_values(&[&gap.partition.to_string()])
                .inc_by((gap.to - gap.from + 1).unsigned_abs());
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let mut ranges: BTreeMap<i32, (i64, i64, usize)> = BTreeMap::new();
            for m in &batch {
                let r = ranges
                    .entry(m.partition())
                    .or_insert((m.offset(), m.offset(), 0));
                r.0 = r.0.min(m.offset());
                r.1 = r.1.max(m.offset());
                r.2 += 1;
            }
            tracing::debug!(
                ?ranges,
                "processing a batch (partition: first, last offset, count)"
            );
        }
        let mut events: Vec<(Event, usize)> = Vec::with_capacity(batch.len());
        for (at, message) in batch.iter().enumerate() {
            match decode(message) {
                Ok(event) => events.push((event, at)),
                Err((reason, error)) => self.dead_letter(message, reason, &error, shutdown).await?,
            }
        }
        let sourced: Vec<Sourced<'_>> = events
            .iter()
            .map(|(event, at)| Sourced {
                event,
                source: source_of(&batch[*at]),
            })
            .collect();
        let messages: Vec<&OwnedMessage> = events.iter().map(|(_, at)| &batch[*at]).collect();
        let (verdicts, session_ids) = self.write_mysql(&sourced, &messages, shutdown).await?;
        let positions = next_offsets(&batch);
        Ok(Written {
            batch,
            events,
            verdicts,
            session_ids,
            positions,
        })
    }

    /// Writes the batch to MySQL. Returns each event's verdict (`None`: MySQL refused it as
    /// data, and it was dead-lettered with MySQL's reason) and server session; events of suppressed people
    /// (erased or opted out) are counted and dropped. Only the verdicts that count an event
    /// reach Redis.
    ///
    /// A refused write is split in halves until the refused events stand alone: k bad events
    /// in n cost about 2k log2(n) transactions, and every other event of the batch is applied.
    async fn write_mysql(
        &mut self,
        events: &[Sourced<'_>],
        messages: &[&OwnedMessage],
        shutdown: &CancellationToken,
    ) -> Result<(Vec<Option<Verdict>>, Vec<Option<String>>), Stopped> {
        let started = Instant::now();
        let mysql = self.mysql.clone();
        let mut verdicts = vec![None; events.len()];
        let mut session_ids = vec![None; events.len()];
        // Ranges still to write, the next one last (a stack, so the batch keeps its order).
        let mut pending: Vec<std::ops::Range<usize>> = Vec::with_capacity(1);
        pending.push(0..events.len());
        while let Some(range) = pending.pop() {
            let slice = &events[range.clone()];
            match self
                .with_retry("mysql", shutdown, || mysql.write(slice))
                .await
            {
                Ok(outcome) => {
                    self.count_mysql(outcome.inserted, outcome.duplicates);
                    for (step, took) in STEPS.iter().zip(outcome.steps) {
                        self.metrics
                            .mysql_step_duration
                            .with_label_values(&[step])
                            .observe(took.as_secs_f64());
                    }
                    self.metrics
                        .suppressed_events
                        .inc_by(outcome.suppressed.len() as u64);
                    self.metrics.bot_events.inc_by(outcome.bots as u64);
                    for (reason, n) in &outcome.links_refused {
                        self.metrics
                            .identity_links_refused
                            .with_label_values(&[reason])
                            .inc_by(*n);
                    }
                    // Every written partition gets its series (at 0 most of the time), so the
                    // alert sees the first increment.
                    let partitions: BTreeSet<i32> =
                        slice.iter().map(|s| s.source.partition).collect();
                    for partition in partitions {
                        let events = outcome.below_position.get(&partition).copied().unwrap_or(0);
                        if events > 0 {
                            // Redis would take these messages for ones it applied: say so.
                            tracing::error!(
                                topic = %self.topic,
                                partition,
                                events,
                                "events stored from messages below the partition's stored \
                                 position: was the topic re-created or its log truncated? Redis \
                                 will not count them (OPERATIONS.md, InsightflowEventsBelowPosition)"
                            );
                        }
                        self.metrics
                            .below_position
                            .with_label_values(&[&partition.to_string()])
                            .inc_by(events as u64);
                    }
                    for (at, verdict) in range.clone().zip(outcome.verdicts) {
                        verdicts[at] = Some(verdict);
                    }
                    for (at, session_id) in range.zip(outcome.session_ids) {
                        session_ids[at] = session_id;
                    }
                }
                Err(RetryError::Stopped) => return Err(Stopped),
                Err(RetryError::Data(e)) if range.len() == 1 => {
                    let message = messages[range.start];
                    self.dead_letter(message, Reason::Refused, &format!("{e:#}"), shutdown)
                        .await?;
                }
                Err(RetryError::Data(e)) => {
                    tracing::warn!(
                        events = slice.len(),
                        error = %format!("{e:#}"),
                        "MySQL refused a write; splitting it to isolate the refused events"
                    );
                    self.metrics.refused_splits.inc();
                    let middle = range.start + range.len() / 2;
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
            }
        }
        self.metrics
            .write_duration
            .with_label_values(&["mysql"])
            .observe(started.elapsed().as_secs_f64());
        Ok((verdicts, session_ids))
    }

    fn count_mysql(&self, inserted: usize, duplicates: usize) {
        self.metrics
            .events_written
            .with_label_values(&["mysql"])
            .inc_by(inserted as u64);
        self.metrics
            .duplicates_skipped
            .with_label_values(&["mysql"])
            .inc_by(duplicates as u64);
    }

    async fn dead_letter(
        &mut self,
        message: &OwnedMessage,
        reason: Reason,
        error: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        tracing::warn!(
            partition = message.partition(),
            offset = message.offset(),
            reason = reason.as_str(),
            error,
            "dead-lettering a message"
        );
        let result = {
            let send = || async {
                self.dead_letters
                    .send(message, reason, error)
                    .await
                    .map_err(StoreError::Transient)
            };
            retry_loop(
                &self.consumer,
                &self.metrics,
                &self.health,
                &self.backoff,
                &mut self.carried_over,
                self.in_hand,
                "kafka_dead_letter",
                shutdown,
                send,
            )
            .await
        };
        match result {
            Ok(()) => {
                self.metrics
                    .dead_lettered
                    .with_label_values(&[reason.as_str()])
                    .inc();
                Ok(())
            }
            Err(_) => Err(Stopped),
        }
    }

    async fn with_retry<T, F, Fut>(
        &mut self,
        dependency: &'static str,
        shutdown: &CancellationToken,
        op: F,
    ) -> Result<T, RetryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        retry_loop(
            &self.consumer,
            &self.metrics,
            &self.health,
            &self.backoff,
            &mut self.carried_over,
            self.in_hand,
            dependency,
            shutdown,
            op,
        )
        .await
    }

    /// Stores (for the next auto-commit) the offset after each partition's last message.
    fn store_offsets(&self, positions: &[Position]) {
        tracing::debug!(?positions, "storing offsets");
        let mut list = TopicPartitionList::new();
        for p in positions {
            if let Err(e) =
                list.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next_offset))
            {
                tracing::error!(error = %e, "cannot build the offset list");
                return;
            }
        }
        if let Err(e) = self.consumer.store_offsets(&list) {
            // The partitions were revoked while the batch was written: the writes are
            // idempotent and the new owner re-reads from the last commit.
            tracing::info!(error = %e, "offsets not stored (partitions revoked mid-batch)");
        }
    }
}

/// A batch MySQL holds, on its way to Redis.
struct Written {
    batch: Vec<OwnedMessage>,
    /// The decoded events and their message's place in `batch`.
    events: Vec<(Event, usize)>,
    /// Per event, MySQL's verdict (`None`: refused and dead-lettered).
    verdicts: Vec<Option<Verdict>>,
    /// Per event, the server session MySQL assigned it (`None`: the client's session, or none).
    session_ids: Vec<Option<String>>,
    /// Where the batch leaves each partition.
    positions: Vec<Position>,
}

impl Written {
    /// The events this batch's messages count in Redis (never a bot's).
    fn counted(&self) -> Vec<Applicable<'_>> {
        self.events
            .iter()
            .zip(&self.verdicts)
            .zip(&self.session_ids)
            .filter_map(|(((event, at), verdict), session_id)| {
                let verdict = (*verdict).filter(|_| !event.is_bot())?;
                let mut input = AggregateInput::of_event(event);
                if let Some(session_id) = session_id {
                    input.session_id = session_id;
                }
                verdict.counts_in_redis().then(|| Applicable {
                    input,
                    source: source_of(&self.batch[*at]),
                    needs_mark_check: verdict == Verdict::StoredWithoutOrigin,
                })
            })
            .collect()
    }
}

/// The first attempt at applying a batch to Redis.
struct RedisAttempt {
    written: Written,
    outcome: Result<usize, StoreError>,
    started: Instant,
}

fn source_of(message: &OwnedMessage) -> Source<'_> {
    Source {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
    }
}

enum RetryError {
    Stopped,
    Data(anyhow::Error),
}

impl From<RetryError> for Stopped {
    fn from(_: RetryError) -> Self {
        Stopped
    }
}

/// Runs `op` until it succeeds. On a transient error: pause the assigned partitions, report
/// not-ready, wait with capped exponential backoff (polling the consumer meanwhile so the group
/// does not evict us), then retry. A rebalance meanwhile keeps the partitions paused (the
/// context pauses a new assignment while the stores fail); what librdkafka had fetched before
/// a pause, at most `kafka.max_prefetch_kbytes`, is carried over to the next batch.
#[allow(clippy::too_many_arguments)]
async fn retry_loop<T, F, Fut>(
    consumer: &StreamConsumer<WorkerContext>,
    metrics: &WorkerMetrics,
    health: &ConsumerHealth,
    backoff: &BackoffSettings,
    carried_over: &mut Vec<OwnedMessage>,
    in_hand: usize,
    dependency: &'static str,
    shutdown: &CancellationToken,
    mut op: F,
) -> Result<T, RetryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(backoff.initial_ms);
    let mut paused_at: Option<Instant> = None;
    loop {
        match op().await {
            Ok(value) => {
                if let Some(since) = paused_at {
                    // Flag first: a rebalance callback that reads it then pauses nothing new.
                    health.set_stores_ok(true);
                    resume(consumer);
                    metrics.paused_seconds.inc_by(since.elapsed().as_secs());
                    tracing::info!(dependency, paused_for = ?since.elapsed(), "dependency back; consuming again");
                }
                return Ok(value);
            }
            Err(StoreError::Data(e)) => {
                if paused_at.is_some() {
                    health.set_stores_ok(true);
                    resume(consumer);
                }
                return Err(RetryError::Data(e));
            }
            Err(StoreError::Transient(e)) => {
                metrics
                    .dependency_errors
                    .with_label_values(&[dependency])
                    .inc();
                if paused_at.is_none() {
                    tracing::error!(dependency, error = %format!("{e:#}"), "write failed; pausing consumption");
                    health.set_stores_ok(false);
                    pause(consumer);
                    paused_at = Some(Instant::now());
                } else {
                    tracing::warn!(dependency, error = %format!("{e:#}"), retry_in = ?delay, "still failing");
                }
                if shutdown.is_cancelled() {
                    return Err(RetryError::Stopped);
                }
                let jittered = delay.mul_f64(rand::rng().random_range(0.8..1.2));
                let wake = tokio::time::Instant::now() + jittered;
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(RetryError::Stopped),
                        () = tokio::time::sleep_until(wake) => break,
                        received = consumer.recv() => {
                            if let Ok(message) = received {
                                metrics.messages_consumed.inc();
                                carried_over.push(message.detach());
                                metrics
                                    .buffered_messages
                                    .set((in_hand + carried_over.len()) as i64);
                            }
                        }
                    }
                }
                delay = (delay * 2).min(Duration::from_millis(backoff.max_ms));
            }
        }
    }
}

fn pause(consumer: &StreamConsumer<WorkerContext>) {
    if let Err(e) = consumer.assignment().and_then(|a| consumer.pause(&a)) {
        tracing::warn!(error = %e, "cannot pause partitions");
    }
}

fn resume(consumer: &StreamConsumer<WorkerContext>) {
    if let Err(e) = consumer.assignment().and_then(|a| consumer.resume(&a)) {
        tracing::warn!(error = %e, "cannot resume partitions");
    }
}

/// The future's output if it is ready at once (a message librdkafka already fetched).
fn ready_now<F: Future>(future: F) -> Option<F::Output> {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut context) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A message's event, or why it is poison.
fn decode(message: &OwnedMessage) -> Result<Event, (Reason, String)> {
    let payload = message
        .payload()
        .ok_or((Reason::Undecodable, "message has no payload".to_owned()))?;
    serde_json::from_slice::<Event>(payload).map_err(|e| {
        let text = e.to_string();
        let reason = if text.contains("unknown schema version") {
            Reason::UnknownSchema
        } else {
            Reason::Undecodable
        };
        (reason, text)
    })
}

/// Offsets `from..=to` of `partition` were skipped: read up to `from - 1`, next read `to + 1`.
#[derive(Debug, PartialEq, Eq)]
struct Gap {
    partition: i32,
    from: i64,
    to: i64,
}

/// Gaps in the messages read, in reading order, given the last offset read per partition
/// (updated). Reading an earlier offset again (a redelivery after a rebalance) is not a gap.
fn offset_gaps(last: &mut HashMap<i32, i64>, read: impl Iterator<Item = (i32, i64)>) -> Vec<Gap> {
    let mut gaps = Vec::new();
    for (partition, offset) in read {
        if let Some(previous) = last.insert(partition, offset) {
            if offset > previous + 1 {
                gaps.push(Gap {
                    partition,
                    from: previous + 1,
                    to: offset - 1,
                });
            }
        }
    }
    gaps
}

/// The offset after the last message of each partition in the batch.
fn next_offsets(batch: &[OwnedMessage]) -> Vec<Position> {
    let mut last: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in batch {
        let entry = last.entry((m.topic(), m.partition())).or_insert(m.offset());
        *entry = (*entry).max(m.offset());
    }
    last.into_iter()
        .map(|((topic, partition), offset)| Position {
            topic: topic.to_owned(),
            partition,
            next_offset: offset + 1,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_offsets_and_redeliveries_are_not_gaps() {
        let mut last = HashMap::new();
        let read = [(0, 5), (1, 0), (0, 6), (1, 1), (0, 7), (0, 3), (0, 4)];
        assert!(offset_gaps(&mut last, read.into_iter()).is_empty());
        assert_eq!(last.get(&0), Some(&4));
    }

    #[test]
    fn a_skipped_range_is_reported_once_per_jump() {
        let mut last = HashMap::new();
        // A fetch that resumed at 3446 but was answered from 3467.
        let gaps = offset_gaps(
            &mut last,
            [(1, 3444), (1, 3445), (1, 3467), (1, 3468)].into_iter(),
        );
        assert_eq!(
            gaps,
            vec![Gap {
                partition: 1,
                from: 3446,
                to: 3466
            }]
        );
        // Across batches too: the state carries over.
        let gaps = offset_gaps(&mut last, [(1, 3470), (2, 9)].into_iter());
        assert_eq!(
            gaps,
            vec![Gap {
                partition: 1,
                from: 3469,
                to: 3469
            }]
        );
    }
}
