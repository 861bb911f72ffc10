//! Deletes raw events past their retention, once per interval across every worker: the instance
//! that takes the Redis lock runs the job and leaves the lock to expire at the end of the
//! interval, so the others skip that interval. The expiry also frees it if the holder crashes.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use crate::keys;
use crate::metrics::WorkerMetrics;
use crate::settings::RetentionSettings;
use crate::store::lock::RedisLock;
use crate::store::mysql::{delete_older_than, MysqlStore};
use crate::store::redis::RedisStore;

pub async fn run(
    settings: RetentionSettings,
    mysql: MysqlStore,
    redis: RedisStore,
    metrics: WorkerMetrics,
    shutdown: CancellationToken,
) {
    if settings.raw_event_days == 0 {
        return;
    }
    let interval = Duration::from_secs(settings.interval_seconds.max(1));
    loop {
        if let Err(e) = run_once(&settings, &mysql, &redis, &metrics, interval).await {
            tracing::warn!(error = %format!("{e:#}"), "retention run failed; will try again");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One pass: take the lock or let the holder work. Returns whether this instance ran the job.
pub async fn run_once(
    settings: &RetentionSettings,
    mysql: &MysqlStore,
    redis: &RedisStore,
    metrics: &WorkerMetrics,
    lock_for: Duration,
) -> anyhow::Result<bool> {
    let Some(lock) =
        RedisLock::acquire(redis, keys::retention_lock(redis.prefix()), lock_for).await?
    else {
        tracing::debug!("retention: another instance holds the lock");
        return Ok(false);
    };
    let days = i64::try_from(settings.raw_event_days).unwrap_or(i64::MAX / 86_400);
    let cutoff = Utc::now() - TimeDelta::days(days);
    let deleted = match delete_older_than(mysql.pool(), cutoff, settings.chunk_rows.max(1)).await {
        Ok(n) => n,
        Err(e) => {
            // Let another instance try before the interval is over.
            lock.release().await;
            return Err(e.into());
        }
    };
    metrics.retention_deleted.inc_by(deleted);
    tracing::info!(deleted, %cutoff, "retention: deleted raw events");
    Ok(true)
}
