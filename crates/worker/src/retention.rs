//! Raw events past their retention go, and the days ahead get their partitions, once per
//! interval across every worker: the instance that takes the Redis lock runs the job and
//! leaves the lock to expire at the end of the interval, so the others skip that interval.
//! The expiry also frees it if the holder crashes.
//!
//! `user_events` has one partition per day of event time (`p<YYYYMMDD>`, UTC) and `pmax`
//! (MAXVALUE) after the last day, which takes any later event, so an insert never lacks a
//! partition (migration `20261129150000_partitioned_events.sql`). One pass:
//! 1. keeps partitions for every day through today + `DAYS_AHEAD` by splitting `pmax`
//!    (`REORGANIZE PARTITION pmax INTO (...)`, which moves nothing while `pmax` is empty);
//! 2. with retention on, takes the cutoff's day (`raw_event_days` before now, at midnight):
//!    deletes the dedupe rows (`event_ids`) of events before it in chunks, drops every
//!    partition wholly before it (`DROP PARTITION`: no row-by-row delete), then deletes by row
//!    what is still before it: late events, which landed in the oldest partition left (it
//!    takes every event time below its day). The dedupe rows go first, so none goes after
//!    its raw event (a replay in between stores a copy the next steps delete).
//!
//! Raw events are kept `raw_event_days` days and at most one more (the cutoff's day goes
//! whole, the next day). Rollups, users and sessions are not partitioned and keep history.
//! The partition changes go through two procedures the migration defines
//! (`user_events_add_day`, `user_events_drop_day`): the worker's MySQL user runs no DDL.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;

use crate::keys;
use crate::metrics::WorkerMetrics;
use crate::settings::RetentionSettings;
use crate::store::dedupe;
use crate::store::lock::RedisLock;
use crate::store::mysql::{delete_older_than, MysqlStore};
use crate::store::redis::RedisStore;

/// Days after today that always have their own partition.
pub const DAYS_AHEAD: u64 = 7;
/// How long a partition change waits for running statements on `user_events` (inserts wait
/// behind it meanwhile); past it the pass fails and the next one tries again.
const DDL_LOCK_WAIT_SECONDS: u32 = 10;
/// `TO_DAYS('0001-01-01')`: MariaDB's day numbers are chrono's days from the common era + 365.
const TO_DAYS_OFFSET: i32 = 365;

pub async fn run(
    settings: RetentionSettings,
    mysql: MysqlStore,
    redis: RedisStore,
    metrics: WorkerMetrics,
    shutdown: CancellationToken,
) {
    // With retention off (raw_event_days = 0) the job still creates the partitions ahead.
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
    match run_locked(settings, mysql.pool(), metrics, Utc::now()).await {
        Ok(()) => Ok(true),
        Err(e) => {
            // Let another instance try before the interval is over.
            lock.release().await;
            Err(e)
        }
    }
}

async fn run_locked(
    settings: &RetentionSettings,
    pool: &MySqlPool,
    metrics: &WorkerMetrics,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let partitions = partitions(pool).await?;
    let created = create_ahead(pool, &partitions, now.date_naive() + days(DAYS_AHEAD)).await?;
    if !created.is_empty() {
        tracing::info!(?created, "retention: created partitions ahead");
    }
    if settings.raw_event_days == 0 {
        return Ok(());
    }
    let chunk = settings.chunk_rows.max(1);
    let cutoff = now - days(settings.raw_event_days);
    if partitions.is_empty() {
        // Not partitioned (a schema before 20261129150000): delete rows, as before.
        let deleted = delete_older_than(pool, cutoff, chunk).await?;
        metrics.retention_deleted.inc_by(deleted);
        tracing::info!(deleted, %cutoff, "retention: deleted raw events");
        return Ok(());
    }
    let keep_from = cutoff.date_naive();
    let keep_from_time = keep_from.and_time(chrono::NaiveTime::MIN).and_utc();
    let started = std::time::Instant::now();
    let expired_ids = dedupe::expire_older_than(pool, keep_from_time, chunk)
        .await
        .context("expire event_ids")?;
    let expired_at = started.elapsed();
    let dropped = drop_before(pool, keep_from).await?;
    let dropped_at = started.elapsed();
    let late = delete_older_than(pool, keep_from_time, chunk)
        .await
        .context("delete late events")?;
    let done_at = started.elapsed();
    metrics.retention_deleted.inc_by(dropped.rows + late);
    tracing::info!(
        dropped = ?dropped.names,
        dropped_rows = dropped.rows,
        late_rows = late,
        expired_ids,
        expire_ms = millis(expired_at),
        drop_ms = millis(dropped_at - expired_at),
        late_ms = millis(done_at - dropped_at),
        %keep_from,
        "retention: dropped raw events"
    );
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn days(n: u64) -> TimeDelta {
    TimeDelta::days(i64::try_from(n).unwrap_or(i64::MAX).min(1_000_000))
}

/// One partition of `user_events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    /// Its rows' event times are before this day's midnight; `None` for `pmax` (MAXVALUE).
    pub before: Option<NaiveDate>,
}

/// `user_events`' partitions in order; empty when the table is not partitioned.
pub async fn partitions(pool: &MySqlPool) -> anyhow::Result<Vec<Partition>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        name: Option<String>,
        description: Option<String>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT CAST(PARTITION_NAME AS CHAR) AS name, \
         CAST(PARTITION_DESCRIPTION AS CHAR) AS description \
         FROM information_schema.PARTITIONS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'user_events' \
         ORDER BY PARTITION_ORDINAL_POSITION",
    )
    .fetch_all(pool)
    .await
    .context("read user_events' partitions")?;
    rows.into_iter()
        .filter_map(|row| Some((row.name?, row.description.unwrap_or_default())))
        .map(|(name, description)| {
            let before = if description.eq_ignore_ascii_case("MAXVALUE") {
                None
            } else {
                let n: i32 = description
                    .parse()
                    .with_context(|| format!("partition {name} ends at {description:?}"))?;
                Some(day_of(n).with_context(|| format!("partition {name} ends at day {n}"))?)
            };
            Ok(Partition { name, before })
        })
        .collect()
}

/// The date of MariaDB's `TO_DAYS` number `n`.
pub fn day_of(n: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(n - TO_DAYS_OFFSET)
}

/// Partition name of the day `day` (`p20261129`).
pub fn partition_name(day: NaiveDate) -> String {
    format!("p{}", day.format("%Y%m%d"))
}

/// Gives every day after the last day partition through `through` its partition, split off
/// `pmax`. Returns the names created.
async fn create_ahead(
    pool: &MySqlPool,
    partitions: &[Partition],
    through: NaiveDate,
) -> anyhow::Result<Vec<String>> {
    let Some(next_day) = partitions.iter().filter_map(|p| p.before).max() else {
        return Ok(Vec::new());
    };
    let new_days: Vec<NaiveDate> = next_day.iter_days().take_while(|d| *d <= through).collect();
    if new_days.is_empty() {
        return Ok(Vec::new());
    }
    anyhow::ensure!(
        partitions.iter().any(|p| p.before.is_none()),
        "user_events has no pmax partition to split days off"
    );
    for day in &new_days {
        // One day at a time: the split moves pmax's rows of that day, normally none.
        ddl(pool, "CALL user_events_add_day(?)", &day.to_string()).await?;
    }
    Ok(new_days.into_iter().map(partition_name).collect())
}

/// What `drop_before` dropped.
#[derive(Debug, Default)]
struct Dropped {
    names: Vec<String>,
    rows: u64,
}

/// Drops every day partition whose rows are all before `day`, after counting their rows.
async fn drop_before(pool: &MySqlPool, day: NaiveDate) -> anyhow::Result<Dropped> {
    let names: Vec<String> = partitions(pool)
        .await?
        .into_iter()
        .filter(|p| p.before.is_some_and(|before| before <= day))
        .map(|p| p.name)
        .collect();
    if names.is_empty() {
        return Ok(Dropped::default());
    }
    let mut rows = 0;
    for name in &names {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM user_events PARTITION ({name})"
        ))
        .fetch_one(pool)
        .await
        .with_context(|| format!("count the rows of {name}"))?;
        ddl(pool, "CALL user_events_drop_day(?)", name).await?;
        rows += u64::try_from(n).unwrap_or(0);
    }
    Ok(Dropped { names, rows })
}

/// A partition change through its procedure (migration 20261129150000): the worker's MySQL
/// user runs no DDL itself; the procedure runs with its definer's rights and checks `arg`.
async fn ddl(pool: &MySqlPool, call: &str, arg: &str) -> anyhow::Result<()> {
    sqlx::query(&format!(
        "SET STATEMENT lock_wait_timeout = {DDL_LOCK_WAIT_SECONDS} FOR {call}"
    ))
    .bind(arg)
    .execute(pool)
    .await
    .with_context(|| format!("{call} with {arg}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_day_numbers_map_to_dates() {
        // Values MariaDB 10.11 gave for TO_DAYS of these dates.
        assert_eq!(day_of(740_315), NaiveDate::from_ymd_opt(2026, 11, 30));
        assert_eq!(day_of(740_256), NaiveDate::from_ymd_opt(2026, 10, 2));
        assert_eq!(day_of(719_528), NaiveDate::from_ymd_opt(1970, 1, 1));
    }

    #[test]
    fn partitions_are_named_by_their_day() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 7).map(partition_name);
        assert_eq!(day.as_deref(), Some("p20260307"));
    }
}
