//! Redis aggregates, applied exactly once per event by `aggregate.lua`.

use deadpool_redis::redis::Script;
use deadpool_redis::Pool;
use insightflow_model::{Event, EventType};
use insightflow_store::redis::{RedisPool, RedisSettings};

use super::{stored_path, StoreError};
use crate::settings::AggregateSettings;

/// Events per script call: each call blocks Redis while it runs, so keep them short.
const EVENTS_PER_SCRIPT: usize = 250;

#[derive(Clone)]
pub struct RedisStore {
    redis: RedisPool,
    script: Script,
    aggregates: AggregateSettings,
}

/// The next offset to read of one partition, recorded with the batch that reached it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

impl RedisStore {
    /// Builds the consumer's pool (`redis.pool_size`) and checks that Redis answers, naming
    /// the address if not.
    pub async fn connect(
        settings: &RedisSettings,
        aggregates: &AggregateSettings,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            redis: RedisPool::connect(settings, settings.pool_size).await?,
            script: Script::new(include_str!("aggregate.lua")),
            aggregates: aggregates.clone(),
        })
    }

    /// The pool and key prefix, to share with the stats API (in the `consume` role, `/ready`).
    pub fn shared(&self) -> &RedisPool {
        &self.redis
    }

    pub fn pool(&self) -> &Pool {
        self.redis.pool()
    }

    pub fn prefix(&self) -> &str {
        self.redis.prefix()
    }

    /// How many all-time hot pages are kept per project (`aggregates.hot_pages_total_max`).
    pub fn hot_pages_total_max(&self) -> u64 {
        self.aggregates.hot_pages_total_max
    }

    pub async fn ping(&self) -> bool {
        self.redis.ping().await
    }

    /// Applies the events not applied before and records the partitions' positions. Returns
    /// how many events were new to Redis.
    pub async fn apply(
        &self,
        events: &[&Event],
        positions: &[Position],
    ) -> Result<usize, StoreError> {
        let inputs: Vec<AggregateInput<'_>> =
            events.iter().map(|e| AggregateInput::of_event(e)).collect();
        self.apply_inputs(&inputs, positions).await
    }

    /// What `apply` does, for events however they were read (from Kafka, or from MySQL by
    /// a rebuild): one argument layout for `aggregate.lua`, built in one place.
    pub async fn apply_inputs(
        &self,
        events: &[AggregateInput<'_>],
        positions: &[Position],
    ) -> Result<usize, StoreError> {
        self.invoke(events, positions, "consumer").await
    }

    /// `apply_inputs` for the rebuild, which writes while the consumer is held (rebuild.rs).
    pub async fn apply_inputs_during_rebuild(
        &self,
        events: &[AggregateInput<'_>],
    ) -> Result<usize, StoreError> {
        self.invoke(events, &[], "rebuild").await
    }

    async fn invoke(
        &self,
        events: &[AggregateInput<'_>],
        positions: &[Position],
        writer: &str,
    ) -> Result<usize, StoreError> {
        let mut conn = self.pool().get().await.map_err(|e| {
            StoreError::Transient(anyhow::Error::new(e).context("no Redis connection"))
        })?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let a = &self.aggregates;
        let mut applied = 0;
        let chunks: Vec<&[AggregateInput<'_>]> = if events.is_empty() {
            vec![&[]]
        } else {
            events.chunks(EVENTS_PER_SCRIPT).collect()
        };
        let last = chunks.len() - 1;
        for (n, chunk) in chunks.into_iter().enumerate() {
            let mut invocation = self.script.prepare_invoke();
            invocation
                .arg(self.prefix())
                .arg(now_ms)
                .arg(a.dedupe_ttl_seconds)
                .arg(a.online_keep_seconds * 1000)
                .arg(a.session_ttl_seconds)
                .arg(a.minute_retention_hours * 3600)
                .arg(a.hour_retention_days * 86_400)
                .arg(a.day_retention_days * 86_400)
                .arg(a.recent_path_length)
                .arg(a.recent_path_ttl_days * 86_400)
                .arg(a.hot_pages_total_max)
                .arg(writer);
            // Positions go with the last chunk: they are only true once every event is in.
            let positions = if n == last { positions } else { &[] };
            invocation.arg(positions.len());
            for p in positions {
                invocation
                    .arg(format!("{}/{}", p.topic, p.partition))
                    .arg(p.next_offset);
            }
            for e in chunk {
                invocation
                    .arg(e.project)
                    .arg(e.event_id)
                    .arg(e.distinct_id)
                    .arg(e.event_type)
                    .arg(e.ts_ms)
                    .arg(e.path)
                    .arg(e.session_id);
            }
            let outcome = invocation
                .invoke_async::<i64>(&mut *conn)
                .await
                .map_err(|e| {
                    StoreError::Transient(anyhow::Error::new(e).context("aggregate script failed"))
                })?;
            // The script wrote nothing: the generation marker is gone (Redis restarted empty)
            // or Redis is being cleared or rebuilt. Retrying with backoff waits for the rebuild.
            let Ok(new) = usize::try_from(outcome) else {
                return Err(StoreError::Transient(anyhow::anyhow!(
                    "Redis lost its aggregates; waiting for the rebuild"
                )));
            };
            applied += new;
        }
        Ok(applied)
    }
}

/// One event as `aggregate.lua` applies it: the consumer builds it from a Kafka event, a
/// rebuild from a `user_events` row, so both count the same thing the same way.
#[derive(Debug, Clone, Copy)]
pub struct AggregateInput<'a> {
    pub project: &'a str,
    pub event_id: &'a str,
    pub distinct_id: &'a str,
    pub event_type: &'a str,
    pub ts_ms: i64,
    /// The stored path of a page view, "" for every other event.
    pub path: &'a str,
    /// "" when the event has no session.
    pub session_id: &'a str,
}

impl<'a> AggregateInput<'a> {
    pub fn new(
        project: &'a str,
        event_id: &'a str,
        distinct_id: &'a str,
        event_type: &'a str,
        ts_ms: i64,
        page_path: Option<&'a str>,
        session_id: Option<&'a str>,
    ) -> Self {
        let path = if event_type == EventType::PAGE_VIEW {
            page_path.map(stored_path).unwrap_or("")
        } else {
            ""
        };
        Self {
            project,
            event_id,
            distinct_id,
            event_type,
            ts_ms,
            path,
            session_id: session_id.unwrap_or(""),
        }
    }

    pub fn of_event(e: &'a Event) -> Self {
        Self::new(
            e.project().as_str(),
            e.event_id().as_str(),
            e.distinct_id(),
            e.event_type().as_str(),
            e.timestamp().timestamp_millis(),
            e.page().and_then(|p| p.path.as_deref()),
            e.session_id().map(|s| s.as_str()),
        )
    }
}
