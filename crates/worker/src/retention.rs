//! Deletes raw events past their retention, once per interval across every worker: the instance
//! that takes the Redis lock runs the job and leaves the lock to expire at the end of the
//! interval, so the others skip that interval. The expiry also frees it if the holder crashes.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use deadpool_redis::redis;
use tokio_util::sync::CancellationToken;

use crate::keys;
use crate::metrics::WorkerMetrics;
use crate::settings::RetentionSettings;
use crate::store::mysql::{delete_older_than, MysqlStore};
use crate::store::redis::RedisStore;

const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

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
    let lock = keys::retention_lock(redis.prefix());
    let token = format!("{}-{}", std::process::id(), rand::random::<u64>());
    let mut conn = redis.pool().get().await?;
    let acquired: Option<String> = redis::cmd("SET")
        .arg(&lock)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(lock_for.as_millis() as u64)
        .query_async(&mut *conn)
        .await?;
    if acquired.is_none() {
        tracing::debug!("retention: another instance holds the lock");
        return Ok(false);
    }
    let days = i64::try_from(settings.raw_event_days).unwrap_or(i64::MAX / 86_400);
    let cutoff = Utc::now() - TimeDelta::days(days);
    let deleted = match delete_older_than(mysql.pool(), cutoff, settings.chunk_rows.max(1)).await {
        Ok(n) => n,
        Err(e) => {
            // Let another instance try before the interval is over.
            let released: redis::RedisResult<i64> = redis::Script::new(RELEASE)
                .key(&lock)
                .arg(&token)
                .invoke_async(&mut *conn)
                .await;
            if let Err(release_error) = released {
                tracing::warn!(error = %release_error, "retention: cannot release the lock; it expires by itself");
            }
            return Err(e.into());
        }
    };
    metrics.retention_deleted.inc_by(deleted);
    tracing::info!(deleted, %cutoff, "retention: deleted raw events");
    Ok(true)
}
