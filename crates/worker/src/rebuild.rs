//! Detects that Redis lost its aggregates and rebuilds them from MySQL, which holds every
//! stored event (`user_events`): Redis is derived data, and a Redis that keeps nothing on disk
//! comes back empty after a restart.
//!
//! The generation marker (`keys::generation`, no TTL) says whether Redis is whole. Losing
//! Redis loses the marker, so `aggregate.lua` then writes nothing (the consumer pauses and
//! retries with backoff) and the stats API answers `"exact": false`. The guard in every
//! consuming worker checks the marker every second; the worker that takes the rebuild lock
//! replays `user_events` in id order, from one MySQL snapshot, through the same aggregation as
//! the consumer, which waits meanwhile (after deleting what a rebuild that stopped halfway
//! left under the prefix); the all-time totals come from the rollups, which keep what
//! retention deleted from `user_events`, and the partitions' positions from `kafka_positions`
//! in the same snapshot.
//! `worker rebuild-redis` (`rebuild_now`) does the same on demand.
//!
//! Marker values: `ready`; `clearing` (old aggregates are being deleted or the snapshot is
//! being replayed; the consumer waits); `rebuilding` (left by an earlier version: cleared and
//! replayed again). A rebuilder that dies leaves `clearing` and lets its lock expire: the next
//! guard to take the lock clears and replays again.
//!
//! Each project has its own marker too, in its hash slot (`keys::Keys::generation`), because
//! on Redis Cluster the script can read no other: a node that lost its data lost the markers
//! of its projects, and the guard finds a registered project (`keys::projects`) without one.
//! The rebuild is then the same: every project's marker says `clearing:<lock token>` before
//! its keys are deleted, each replayed project is marked `ready` by the holder of that token,
//! the deployment's marker last.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::NaiveDateTime;
use deadpool_redis::redis;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::metrics::WorkerMetrics;
use crate::store::lock::RedisLock;
use crate::store::mysql::{stored_positions, MysqlStore};
use crate::store::redis::{AggregateInput, Position, RedisStore};
use insightflow_store::keys;
use insightflow_store::redis::Pooled;
use insightflow_store::DbText;

/// Marker values (see the module comment), shared with the stats API.
pub use insightflow_store::keys::marker::{CLEARING, READY};

const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The lock's lifetime; the holder renews it after every chunk, so only a dead holder loses it.
const LOCK_TTL: Duration = Duration::from_secs(60);
const ROWS_PER_READ: u32 = 5000;
const KEYS_PER_SCAN: usize = 10_000;
/// Markers read per MGET by the guard's check of the registered projects.
const MARKERS_PER_READ: usize = 1000;
/// A registered project's marker is created by the chunk that registered it, right after; one
/// still missing after this long was lost (or its registering worker died in between).
const REGISTRATION_GRACE_MS: i64 = 10_000;

/// Marks a project `ready` if this rebuild (its lock token) replayed it, or nobody wrote it.
const MARK_PROJECT: &str = "local g = redis.call('GET', KEYS[1]) \
     if g and g ~= ARGV[1] then return 0 end redis.call('SET', KEYS[1], ARGV[2]) return 1";

/// Sets the marker only while the caller still holds the lock: a rebuild that outlived its
/// lock (or its Redis) must not declare the new Redis ready.
const MARK: &str = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end \
     redis.call('EXPIRE', KEYS[1], ARGV[3]) redis.call('SET', KEYS[2], ARGV[2]) return 1";

/// What one rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Keys deleted before replaying (only when asked for, or when resuming a clear).
    pub deleted_keys: u64,
    /// Events read from MySQL and passed to the aggregate script.
    pub events_replayed: u64,
    /// Of those, the events applied to Redis (all of them: Redis was emptied first).
    pub events_applied: u64,
    pub duration: Duration,
}

/// What one check of the guard found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The marker says `ready`.
    Whole,
    /// Another worker holds the rebuild lock.
    Busy,
    Rebuilt(Rebuilt),
}

/// The guard: checks the marker every second and repairs Redis when it is not `ready`. Ends
/// only on shutdown; a failed check (Redis or MySQL down) is logged and tried again.
pub async fn guard(
    mysql: MysqlStore,
    redis: RedisStore,
    metrics: WorkerMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        if let Err(e) = check_once(&mysql, &redis, &metrics, &shutdown).await {
            tracing::warn!(error = %format!("{e:#}"), "Redis guard: check or rebuild failed; will try again");
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

/// One check: nothing to do when the marker says `ready` or another worker holds the lock;
/// otherwise, under the lock, mark pre-marker aggregates ready or rebuild.
pub async fn check_once(
    mysql: &MysqlStore,
    redis: &RedisStore,
    metrics: &WorkerMetrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<Check> {
    let mut conn = redis.pool().get().await?;
    let marker: Option<String> = redis::cmd("GET")
        .arg(keys::generation(redis.prefix()))
        .query_async(&mut *conn)
        .await?;
    if marker.as_deref() == Some(READY) && lost_projects(&mut conn, redis).await?.is_empty() {
        return Ok(Check::Whole);
    }
    drop(conn);
    let Some(lock) = RebuildLock::acquire(redis).await? else {
        return Ok(Check::Busy);
    };
    let outcome = repair(&lock, mysql, redis, metrics, shutdown).await;
    lock.release().await;
    outcome
}

async fn repair(
    lock: &RebuildLock<'_>,
    mysql: &MysqlStore,
    redis: &RedisStore,
    metrics: &WorkerMetrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<Check> {
    let started = Instant::now();
    // Read again under the lock: another worker may have finished in between.
    let mut conn = redis.pool().get().await?;
    let prefix = redis.prefix();
    let (marker, has_registry): (Option<String>, bool) = redis::pipe()
        .get(keys::generation(prefix))
        .exists(keys::projects(prefix))
        .query_async(&mut *conn)
        .await?;
    // The old layout's marker is in another slot: read apart.
    let has_legacy: bool = redis::cmd("EXISTS")
        .arg(keys::legacy_generation(prefix))
        .query_async(&mut *conn)
        .await?;
    let lost = lost_projects(&mut conn, redis).await?;
    drop(conn);
    let deleted_keys = match marker.as_deref() {
        Some(READY) if lost.is_empty() => return Ok(Check::Whole),
        Some(READY) => {
            tracing::warn!(
                projects = ?lost,
                "Redis lost the aggregates of some projects (a node restarted empty?): \
                 clearing and rebuilding"
            );
            lock.mark(CLEARING).await?;
            clear(lock, redis).await?
        }
        // Aggregates under the key names of versions before hash tags: an upgrade. They are
        // deleted and rebuilt under the new names.
        None if has_legacy => {
            tracing::warn!(
                "Redis holds aggregates under the key names of an earlier version: clearing \
                 and rebuilding them"
            );
            lock.mark(CLEARING).await?;
            clear(lock, redis).await?
        }
        // On a cluster the other nodes may still hold aggregates (only the marker's node lost
        // its data), and so may one Redis whose registry survived: clear them.
        None if redis.pool().is_cluster() || has_registry => {
            tracing::warn!(
                "the Redis generation marker is missing (its node lost its data): clearing \
                 and rebuilding the aggregates from MySQL"
            );
            lock.mark(CLEARING).await?;
            clear(lock, redis).await?
        }
        None => {
            tracing::warn!(
                "the Redis generation marker is missing (Redis lost its data, or this is a \
                 new installation): rebuilding the aggregates from MySQL"
            );
            // Nothing to clear: every chunk the consumer applies moves the positions, and a
            // rebuild that stopped halfway leaves `clearing`; with neither there, nothing was
            // written under the prefix since Redis lost its data (scanning a big shared
            // keyspace to make sure would hold every new consumer for as long).
            0
        }
        Some(other) => {
            tracing::warn!(
                marker = other,
                "a clear of Redis stopped before its end; clearing and rebuilding"
            );
            lock.mark(CLEARING).await?;
            clear(lock, redis).await?
        }
    };
    let rebuilt = replay(lock, mysql, redis, metrics, shutdown, started, deleted_keys).await?;
    Ok(Check::Rebuilt(rebuilt))
}

/// `worker rebuild-redis`: deletes every aggregate under the prefix and rebuilds them all from
/// MySQL. Fails when another worker holds the rebuild lock.
pub async fn rebuild_now(
    mysql: &MysqlStore,
    redis: &RedisStore,
    metrics: &WorkerMetrics,
) -> anyhow::Result<Rebuilt> {
    let Some(lock) = RebuildLock::acquire(redis).await? else {
        anyhow::bail!(
            "another worker is rebuilding Redis (it holds {}); try again when it is done",
            keys::rebuild_lock(redis.prefix())
        );
    };
    let outcome = async {
        let started = Instant::now();
        // Consumers stop writing first: a counter they bumped while keys are being deleted
        // could lose its update, or keep one its position no longer remembers.
        lock.mark(CLEARING).await?;
        let deleted_keys = clear(&lock, redis).await?;
        replay(
            &lock,
            mysql,
            redis,
            metrics,
            &CancellationToken::new(),
            started,
            deleted_keys,
        )
        .await
    }
    .await;
    lock.release().await;
    outcome
}

/// The registered projects whose marker is missing (lost with their node), but those
/// registered a moment ago (their marker is being created).
async fn lost_projects(conn: &mut Pooled, redis: &RedisStore) -> anyhow::Result<Vec<String>> {
    let registered: Vec<(String, i64)> = redis::cmd("HGETALL")
        .arg(keys::projects(redis.prefix()))
        .query_async(&mut **conn)
        .await
        .context("read the registered projects")?;
    let settled = chrono::Utc::now().timestamp_millis() - REGISTRATION_GRACE_MS;
    let mut lost = Vec::new();
    for chunk in registered.chunks(MARKERS_PER_READ) {
        // One MGET, split by slot on a cluster.
        let markers: Vec<Option<String>> = redis::cmd("MGET")
            .arg(
                chunk
                    .iter()
                    .map(|(project, _)| keys::Keys::new(redis.prefix(), project).generation())
                    .collect::<Vec<_>>(),
            )
            .query_async(&mut **conn)
            .await
            .context("read the projects' markers")?;
        for ((project, at), marker) in chunk.iter().zip(markers) {
            if marker.is_none() && *at < settled {
                lost.push(project.clone());
            }
        }
    }
    Ok(lost)
}

/// Deletes every key under `{prefix}:` but the deployment's marker, the registry and the
/// locks (SCAN + UNLINK, in batches, so Redis is never blocked for long), on every node of a
/// cluster. First every project's marker is set to `clearing:<token>`, so that no consumer
/// writes a key this deletes (the deployment's marker alone stops none on a cluster). Returns
/// how many keys were deleted.
async fn clear(lock: &RebuildLock<'_>, redis: &RedisStore) -> anyhow::Result<u64> {
    let prefix = redis.prefix();
    let keep = [
        keys::generation(prefix),
        keys::projects(prefix),
        keys::rebuild_lock(prefix),
        keys::retention_lock(prefix),
    ];
    let clearing = keys::marker::clearing_by(lock.token());
    let mut conn = redis.pool().get().await?;
    // Workers of a version before hash tags write only while their marker is there: gone
    // first, they stop writing keys this would have to delete again.
    redis::cmd("DEL")
        .arg(keys::legacy_generation(prefix))
        .query_async::<()>(&mut *conn)
        .await
        .context("delete the earlier version's marker")?;
    // The registered projects first: one registered just before the deployment's marker said
    // `clearing` may not have its marker yet, and would create it `ready` behind the SCAN.
    let registered: Vec<String> = redis::cmd("HKEYS")
        .arg(keys::projects(prefix))
        .query_async(&mut *conn)
        .await
        .context("read the registered projects")?;
    for project in &registered {
        redis::cmd("SET")
            .arg(keys::Keys::new(prefix, project).generation())
            .arg(&clearing)
            .query_async::<()>(&mut *conn)
            .await
            .context("hold a project's consumers")?;
    }
    lock.renew().await?;
    let mut markers = Scan::new(
        &mut conn,
        format!("{}:{{*}}:generation", glob_escape(prefix)),
    )
    .await?;
    while let Some(batch) = markers.next(&mut conn).await? {
        for key in batch.iter().filter(|k| !keep.contains(k)) {
            redis::cmd("SET")
                .arg(key)
                .arg(&clearing)
                .query_async::<()>(&mut *conn)
                .await
                .context("hold a project's consumers")?;
        }
        lock.renew().await?;
    }
    let mut everything = Scan::new(&mut conn, format!("{}:*", glob_escape(prefix))).await?;
    let mut deleted = 0;
    while let Some(batch) = everything.next(&mut conn).await? {
        let doomed: Vec<String> = batch.into_iter().filter(|k| !keep.contains(k)).collect();
        if !doomed.is_empty() {
            // Split by slot on a cluster (one UNLINK per slot).
            let n: u64 = redis::cmd("UNLINK")
                .arg(&doomed)
                .query_async(&mut *conn)
                .await
                .context("UNLINK the aggregates")?;
            deleted += n;
        }
        lock.renew().await?;
    }
    Ok(deleted)
}

/// A SCAN of the keys matching a pattern on every node that holds keys (each master of a
/// cluster, or the one Redis), a batch at a time.
struct Scan {
    nodes: Vec<Option<(String, u16)>>,
    node: usize,
    cursor: u64,
    pattern: String,
}

impl Scan {
    async fn new(conn: &mut Pooled, pattern: String) -> anyhow::Result<Self> {
        let nodes = match conn.masters().await.context("list the cluster's masters")? {
            Some(masters) => masters.into_iter().map(Some).collect(),
            None => vec![None],
        };
        Ok(Self {
            nodes,
            node: 0,
            cursor: 0,
            pattern,
        })
    }

    /// The next batch (maybe empty), or `None` when every node was walked.
    async fn next(&mut self, conn: &mut Pooled) -> anyhow::Result<Option<Vec<String>>> {
        let Some(node) = self.nodes.get(self.node) else {
            return Ok(None);
        };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(self.cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(KEYS_PER_SCAN);
        let (next, batch): (u64, Vec<String>) = conn
            .on_node(node.as_ref(), cmd)
            .await
            .context("SCAN the aggregates")?;
        if next == 0 {
            self.node += 1;
        }
        self.cursor = next;
        Ok(Some(batch))
    }
}

/// Replays `user_events` in id order through the aggregate script, restores the all-time
/// totals from the rollups, then marks Redis ready.
///
/// The consumer is held (`CLEARING`: the script writes nothing for it) and every read comes
/// from one MySQL snapshot, so the rebuilt Redis is exactly the snapshot, and its positions
/// are the snapshot's `kafka_positions`: the consumer, when it resumes, skips the messages the
/// snapshot holds (below the positions) and applies the others. Rows stored before origins
/// were recorded get their legacy dedupe mark back instead. The all-time totals
/// (`events:total`, `pages:total`) are then set from `rollup_events_hour` and
/// `rollup_page_views_hour`, which keep the history that retention deleted from `user_events`.
async fn replay(
    lock: &RebuildLock<'_>,
    mysql: &MysqlStore,
    redis: &RedisStore,
    metrics: &WorkerMetrics,
    shutdown: &CancellationToken,
    started: Instant,
    deleted_keys: u64,
) -> anyhow::Result<Rebuilt> {
    lock.mark(CLEARING).await?;
    // The isolation level is set for the next transaction, before it begins: every read of
    // the rebuild then sees one snapshot, whatever the server's default.
    let mut connection = mysql
        .pool()
        .acquire()
        .await
        .context("open the rebuild's snapshot")?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *connection)
        .await
        .context("open the rebuild's snapshot")?;
    let mut snapshot = connection
        .begin()
        .await
        .context("open the rebuild's snapshot")?;
    let mut after: u64 = 0;
    let (mut replayed, mut applied) = (0_u64, 0_u64);
    let mut projects = std::collections::BTreeSet::new();
    loop {
        if shutdown.is_cancelled() {
            anyhow::bail!(
                "shutdown after replaying {replayed} events; the next worker to take the lock \
                 clears and replays again"
            );
        }
        let rows: Vec<StoredEvent> = sqlx::query_as(
            // A bot's events are stored, and counted nowhere: not in Redis either.
            "SELECT id, project, event_id, distinct_id, event_type, event_time, page_path, \
             session_id, kafka_partition FROM user_events WHERE id > ? AND is_bot = 0 \
             ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(ROWS_PER_READ)
        .fetch_all(&mut *snapshot)
        .await
        .context("read user_events for the rebuild")?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let inputs: Vec<(AggregateInput<'_>, bool)> = rows
            .iter()
            .map(|row| (row.input(), row.kafka_partition.is_none()))
            .collect();
        projects.extend(rows.iter().map(|row| row.project.as_str().to_string()));
        let new = redis
            .apply_during_rebuild(&inputs, lock.token())
            .await
            .context("apply replayed events to Redis")?;
        replayed += rows.len() as u64;
        applied += new as u64;
        metrics.redis_rebuilt_events.inc_by(rows.len() as u64);
        lock.renew().await?;
        if rows.len() < ROWS_PER_READ as usize {
            break;
        }
    }
    projects.extend(restore_all_time_totals(&mut snapshot, redis).await?);
    // And those registered whose events are all gone: marked ready, with nothing to count.
    let mut conn = redis.pool().get().await?;
    let registered: Vec<String> = redis::cmd("HKEYS")
        .arg(keys::projects(redis.prefix()))
        .query_async(&mut *conn)
        .await
        .context("read the registered projects")?;
    drop(conn);
    projects.extend(registered);
    let projects: Vec<String> = projects.into_iter().collect();
    // Redis now holds exactly the snapshot's events: the positions MySQL had reached in it.
    let positions: Vec<Position> = stored_positions(&mut snapshot)
        .await
        .context("read the partitions' positions")?
        .into_iter()
        .map(|p| Position {
            topic: p.topic.0,
            partition: p.kafka_partition,
            next_offset: p.next_offset,
        })
        .collect();
    redis
        .set_positions(&projects, &positions)
        .await
        .context("set the partitions' positions")?;
    snapshot.commit().await.ok();
    lock.mark_projects(&projects).await?;
    lock.mark(READY).await?;
    metrics.redis_rebuilds.inc();
    let rebuilt = Rebuilt {
        deleted_keys,
        events_replayed: replayed,
        events_applied: applied,
        duration: started.elapsed(),
    };
    tracing::info!(
        events = replayed,
        applied,
        deleted_keys,
        duration_ms = rebuilt.duration.as_millis() as u64,
        "Redis rebuilt from MySQL; its figures are exact again"
    );
    Ok(rebuilt)
}

/// Sets every project's all-time counters from the rollups of the same snapshot: they count
/// every event ever stored, also those retention has since deleted from `user_events`.
/// Returns the projects the rollups name.
async fn restore_all_time_totals(
    snapshot: &mut sqlx::Transaction<'_, sqlx::MySql>,
    redis: &RedisStore,
) -> anyhow::Result<Vec<String>> {
    let types = all_time(
        snapshot,
        "SELECT project, event_type AS member, CAST(SUM(events) AS SIGNED) AS total \
         FROM rollup_events_hour GROUP BY project, event_type",
    )
    .await
    .context("read the event rollups")?;
    let pages = all_time(
        snapshot,
        "SELECT project, page_path AS member, CAST(SUM(views) AS SIGNED) AS total \
         FROM rollup_page_views_hour GROUP BY project, page_path",
    )
    .await
    .context("read the page-view rollups")?;
    let mut by_project: std::collections::BTreeMap<&str, (Vec<&AllTimeTotal>, Vec<&AllTimeTotal>)> =
        std::collections::BTreeMap::new();
    for row in &types {
        by_project
            .entry(row.project.as_str())
            .or_default()
            .0
            .push(row);
    }
    for row in &pages {
        by_project
            .entry(row.project.as_str())
            .or_default()
            .1
            .push(row);
    }
    let keep = isize::try_from(redis.hot_pages_total_max()).unwrap_or(isize::MAX);
    let mut conn = redis.pool().get().await?;
    // One transaction per project: its keys share a slot, as a cluster requires.
    for (project, (types, pages)) in &by_project {
        let keys = keys::Keys::new(redis.prefix(), project);
        let mut pipe = redis::pipe();
        pipe.del(keys.events_total()).ignore();
        pipe.del(keys.pages_total()).ignore();
        for row in types {
            pipe.hset(keys.events_total(), row.member.as_str(), row.total)
                .ignore();
        }
        for row in pages {
            pipe.zadd(keys.pages_total(), row.member.as_str(), row.total)
                .ignore();
        }
        // The same trim as the script's: the least viewed beyond the kept number go.
        pipe.zremrangebyrank(keys.pages_total(), 0, -keep - 1)
            .ignore();
        pipe.atomic()
            .query_async::<()>(&mut *conn)
            .await
            .context("write the all-time totals")?;
    }
    Ok(by_project.keys().map(|p| p.to_string()).collect())
}

/// One all-time total of a rollup: an event type's events or a page's views in a project.
#[derive(sqlx::FromRow)]
struct AllTimeTotal {
    project: DbText,
    member: DbText,
    total: i64,
}

async fn all_time(
    snapshot: &mut sqlx::Transaction<'_, sqlx::MySql>,
    query: &'static str,
) -> sqlx::Result<Vec<AllTimeTotal>> {
    sqlx::query_as(query).fetch_all(&mut **snapshot).await
}

/// The columns of `user_events` the aggregates are derived from.
#[derive(sqlx::FromRow)]
struct StoredEvent {
    id: u64,
    project: DbText,
    event_id: DbText,
    distinct_id: DbText,
    event_type: DbText,
    event_time: NaiveDateTime,
    page_path: Option<DbText>,
    session_id: Option<DbText>,
    /// `None` for rows stored before origins were recorded (see `store::mysql::Verdict`).
    kafka_partition: Option<i32>,
}

impl StoredEvent {
    fn input(&self) -> AggregateInput<'_> {
        AggregateInput::new(
            self.project.as_str(),
            self.event_id.as_str(),
            self.distinct_id.as_str(),
            self.event_type.as_str(),
            // Stored in UTC (see the migrations).
            self.event_time.and_utc().timestamp_millis(),
            self.page_path.as_ref().map(DbText::as_str),
            self.session_id.as_ref().map(DbText::as_str),
        )
    }
}

/// The rebuild lock, held by one worker of the group, renewed as work goes on, released by
/// its holder at the end; with it, the holder alone sets the generation marker.
struct RebuildLock<'a>(RedisLock<'a>);

impl<'a> RebuildLock<'a> {
    async fn acquire(redis: &'a RedisStore) -> anyhow::Result<Option<Self>> {
        let key = keys::rebuild_lock(redis.prefix());
        Ok(RedisLock::acquire(redis, key, LOCK_TTL).await?.map(Self))
    }

    async fn renew(&self) -> anyhow::Result<()> {
        self.0.renew().await
    }

    /// Sets the generation marker, if this lock is still held (and renews it).
    async fn mark(&self, value: &str) -> anyhow::Result<()> {
        let mut conn = self.0.redis().pool().get().await?;
        let marked: i64 = redis::Script::new(MARK)
            .key(self.0.key())
            .key(keys::generation(self.0.redis().prefix()))
            .arg(self.0.token())
            .arg(value)
            .arg(self.0.ttl().as_secs())
            .invoke_async(&mut *conn)
            .await?;
        anyhow::ensure!(
            marked == 1,
            "lost the rebuild lock (it expired, or Redis restarted) before marking Redis {value}"
        );
        Ok(())
    }

    fn token(&self) -> &str {
        self.0.token()
    }

    /// Marks each project `ready`, registered, if this lock's rebuild replayed it or nothing
    /// wrote it (a project marked by another token means this lock was lost meanwhile).
    async fn mark_projects(&self, projects: &[String]) -> anyhow::Result<()> {
        let redis = self.0.redis();
        let mut conn = redis.pool().get().await?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        for chunk in projects.chunks(MARKERS_PER_READ) {
            let fields: Vec<(&str, i64)> = chunk.iter().map(|p| (p.as_str(), now_ms)).collect();
            redis::cmd("HSET")
                .arg(keys::projects(redis.prefix()))
                .arg(&fields)
                .query_async::<()>(&mut *conn)
                .await
                .context("register the rebuilt projects")?;
        }
        let clearing = keys::marker::clearing_by(self.token());
        let script = redis::Script::new(MARK_PROJECT);
        for project in projects {
            let marked: i64 = script
                .key(keys::Keys::new(redis.prefix(), project).generation())
                .arg(&clearing)
                .arg(READY)
                .invoke_async(&mut *conn)
                .await?;
            anyhow::ensure!(
                marked == 1,
                "lost the rebuild lock (another rebuild holds project {project}) before marking \
                 Redis ready"
            );
        }
        self.renew().await
    }

    async fn release(self) {
        self.0.release().await;
    }
}

/// `prefix` as a literal in a SCAN MATCH pattern.
fn glob_escape(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_literally() {
        assert_eq!(glob_escape("if"), "if");
        assert_eq!(glob_escape("a*b[1]?"), "a\\*b\\[1\\]\\?");
    }
}
