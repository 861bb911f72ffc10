//! Redis aggregates, applied exactly once per event by `aggregate.lua`.

use anyhow::Context;
use deadpool_redis::redis::{self, Script};
use deadpool_redis::{Pool, Runtime};
use insightflow_model::{Event, EventType};

use super::{stored_path, StoreError};
use crate::settings::{AggregateSettings, RedisSettings};

/// Events per script call: each call blocks Redis while it runs, so keep them short.
const EVENTS_PER_SCRIPT: usize = 250;

#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    script: Script,
    prefix: String,
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
    /// Builds the pool and checks that Redis answers, naming the address if not.
    pub async fn connect(
        settings: &RedisSettings,
        aggregates: &AggregateSettings,
    ) -> anyhow::Result<Self> {
        let mut config = deadpool_redis::Config::from_url(settings.url.clone());
        config.pool = Some(deadpool_redis::PoolConfig::new(settings.pool_size));
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .context("invalid redis settings")?;
        let store = Self {
            pool,
            script: Script::new(include_str!("aggregate.lua")),
            prefix: settings.key_prefix.clone(),
            aggregates: aggregates.clone(),
        };
        let mut conn = store
            .pool
            .get()
            .await
            .with_context(|| format!("cannot connect to Redis at {}", settings.url))?;
        redis::cmd("PING")
            .query_async::<String>(&mut *conn)
            .await
            .with_context(|| format!("Redis at {} does not answer PING", settings.url))?;
        Ok(store)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub async fn ping(&self) -> bool {
        match self.pool.get().await {
            Ok(mut conn) => redis::cmd("PING")
                .query_async::<String>(&mut *conn)
                .await
                .is_ok(),
            Err(_) => false,
        }
    }

    /// Applies the events not applied before and records the partitions' positions. Returns
    /// how many events were new to Redis.
    pub async fn apply(
        &self,
        events: &[&Event],
        positions: &[Position],
    ) -> Result<usize, StoreError> {
        let mut conn = self.pool.get().await.map_err(|e| {
            StoreError::Transient(anyhow::Error::new(e).context("no Redis connection"))
        })?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let a = &self.aggregates;
        let mut applied = 0;
        let chunks: Vec<&[&Event]> = if events.is_empty() {
            vec![&[]]
        } else {
            events.chunks(EVENTS_PER_SCRIPT).collect()
        };
        let last = chunks.len() - 1;
        for (n, chunk) in chunks.into_iter().enumerate() {
            let mut invocation = self.script.prepare_invoke();
            invocation
                .arg(&self.prefix)
                .arg(now_ms)
                .arg(a.dedupe_ttl_seconds)
                .arg(a.online_keep_seconds * 1000)
                .arg(a.session_ttl_seconds)
                .arg(a.minute_retention_hours * 3600)
                .arg(a.hour_retention_days * 86_400)
                .arg(a.day_retention_days * 86_400)
                .arg(a.recent_path_length)
                .arg(a.recent_path_ttl_days * 86_400)
                .arg(a.hot_pages_total_max);
            // Positions go with the last chunk: they are only true once every event is in.
            let positions = if n == last { positions } else { &[] };
            invocation.arg(positions.len());
            for p in positions {
                invocation
                    .arg(format!("{}/{}", p.topic, p.partition))
                    .arg(p.next_offset);
            }
            for e in chunk {
                let path = if e.event_type().is(EventType::PAGE_VIEW) {
                    e.page()
                        .and_then(|p| p.path.as_deref())
                        .map(stored_path)
                        .unwrap_or("")
                } else {
                    ""
                };
                invocation
                    .arg(e.project().as_str())
                    .arg(e.event_id().as_str())
                    .arg(e.distinct_id())
                    .arg(e.event_type().as_str())
                    .arg(e.timestamp().timestamp_millis())
                    .arg(path)
                    .arg(e.session_id().map_or("", |s| s.as_str()));
            }
            applied += invocation
                .invoke_async::<usize>(&mut *conn)
                .await
                .map_err(|e| {
                    StoreError::Transient(anyhow::Error::new(e).context("aggregate script failed"))
                })?;
        }
        Ok(applied)
    }
}
