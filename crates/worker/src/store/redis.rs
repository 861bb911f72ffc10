//! Redis aggregates, applied exactly once per event by `aggregate.lua`, one chunk of a batch
//! at a time, with as little Redis work per event as that takes:
//!
//! - the chunk's events become one command per key (`aggregates.rs`);
//! - which events are new to Redis is decided per partition, not per event: Redis keeps each
//!   partition's position (the offset after the last message applied) and applies a chunk
//!   only if none of its messages is below its partition's position. MySQL, which is written
//!   first, says which messages count an event at all (`mysql::Verdict`): the one that stored
//!   it, not a client's retry of it. A redelivered message that stored its event before a
//!   crash is applied if the position says Redis has not seen it, skipped if it has.
//!
//! So a chunk costs Redis one guard per partition (`HGET`) instead of one dedupe mark per
//! event (`SET NX EX`), and Redis remembers nothing per event.
//!
//! Chunks hold one project's events, and the positions are kept per project: a script call
//! touches only keys of the project's hash slot, which Redis Cluster requires. A project's
//! messages of a partition are still applied in offset order, so its own position per
//! partition guards it as the partition's position did. A batch with events of several
//! projects is applied project by project; a crash in between leaves some projects applied
//! and their positions moved, and the redelivered batch applies the others only.
//!
//! A project is applied only while its generation marker says `ready`. The first chunk of a
//! project Redis holds nothing of finds no marker: it registers the project in
//! `keys::projects` (only while the deployment's marker says `ready`, in the same slot), and
//! the one worker whose registration is new creates the marker with its chunk. A registered
//! project without a marker was lost with its node: the chunk waits for the rebuild.

use std::collections::BTreeMap;

use deadpool_redis::redis::{self, Script, Value};
use insightflow_model::{Event, EventType};
use insightflow_store::keys::{self, Keys};
use insightflow_store::redis::{Pool, Pooled, RedisPool, RedisSettings};

use super::aggregates::{self, Commands, Window};
use super::mysql::Source;
use super::{stored_path, StoreError};
use crate::settings::AggregateSettings;

/// Events per script call: each call blocks Redis while it runs, so keep them short. Also
/// bounds a command's arguments (2 per event at most) below what Lua's `unpack` takes (8,000).
const EVENTS_PER_SCRIPT: usize = 1000;
/// Tries of a chunk whose guard failed: each try drops the messages another writer applied,
/// and only a writer that keeps overtaking this one (a rebalance in a loop) fails it more.
const GUARD_TRIES: usize = 8;

/// Registers a project Redis holds nothing of, while the deployment's marker says `ready`
/// (a rebuild registers what it replays itself). 1: newly registered, 0: registered before,
/// -1: Redis is not ready.
const REGISTER: &str = "if redis.call('GET', KEYS[1]) ~= 'ready' then return -1 end \
     return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])";

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

impl Position {
    /// The partition's field in `keys::Keys::positions`.
    pub fn field(topic: &str, partition: i32) -> String {
        format!("{topic}/{partition}")
    }
}

/// An event for Redis, from a message: what it adds, and where it was read.
#[derive(Debug, Clone, Copy)]
pub struct Applicable<'a> {
    pub input: AggregateInput<'a>,
    pub source: Source<'a>,
    /// Stored by a version that recorded no origin: applied only if its dedupe mark, which
    /// that version set, is absent (`keys::Keys::applied_mark`).
    pub needs_mark_check: bool,
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

    /// The script's writer name and the rebuild's lock token (see `aggregate.lua`).
    fn writer_token(writer: Writer<'_>) -> (&'static str, &str) {
        match writer {
            Writer::Consumer => ("consumer", ""),
            Writer::Rebuild(token) => ("rebuild", token),
        }
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

    /// Applies the events Redis has not applied yet (in batch order, so each partition's in
    /// offset order) and moves the partitions' positions to `positions`. Returns how many
    /// events were new to Redis.
    pub async fn apply(
        &self,
        events: &[Applicable<'_>],
        positions: &[Position],
    ) -> Result<usize, StoreError> {
        let mut conn = self.connection().await?;
        let unmarked = self.without_legacy_marks(&mut conn, events).await?;
        // Per project, each in batch order (so each partition's messages in offset order).
        let mut projects: BTreeMap<&str, Vec<&Applicable<'_>>> = BTreeMap::new();
        for (e, keep) in events.iter().zip(&unmarked) {
            if *keep {
                projects.entry(e.input.project).or_default().push(e);
            }
        }
        let mut applied = 0;
        for (project, events) in projects {
            let chunks: Vec<&[&Applicable<'_>]> = events.chunks(EVENTS_PER_SCRIPT).collect();
            let last = chunks.len() - 1;
            for (n, chunk) in chunks.into_iter().enumerate() {
                // The batch's positions go with the project's last chunk: only then is every
                // event of the project in.
                let batch_positions = if n == last { positions } else { &[] };
                applied += self
                    .apply_chunk(&mut conn, project, chunk, batch_positions)
                    .await?;
            }
        }
        Ok(applied)
    }

    /// One chunk of one project, retried without the messages another writer applied
    /// meanwhile.
    async fn apply_chunk(
        &self,
        conn: &mut Pooled,
        project: &str,
        chunk: &[&Applicable<'_>],
        batch_positions: &[Position],
    ) -> Result<usize, StoreError> {
        let mut chunk: Vec<&Applicable<'_>> = chunk.to_vec();
        for _ in 0..GUARD_TRIES {
            // Per partition of the chunk: its first message, and the one after its last.
            let mut spans: Vec<(Source<'_>, i64)> = Vec::new();
            for e in &chunk {
                let s = e.source;
                match spans
                    .iter_mut()
                    .find(|(f, _)| f.partition == s.partition && f.topic == s.topic)
                {
                    Some((first, next)) => {
                        first.offset = first.offset.min(s.offset);
                        *next = (*next).max(s.offset + 1);
                    }
                    None => spans.push((s, s.offset + 1)),
                }
            }
            let guards: Vec<(String, i64)> = spans
                .iter()
                .map(|(f, _)| (Position::field(f.topic, f.partition), f.offset))
                .collect();
            let mut advances: Vec<(String, i64)> = spans
                .iter()
                .map(|(f, next)| (Position::field(f.topic, f.partition), *next))
                .collect();
            advances.extend(
                batch_positions
                    .iter()
                    .map(|p| (Position::field(&p.topic, p.partition), p.next_offset)),
            );
            let inputs: Vec<AggregateInput<'_>> = chunk.iter().map(|e| e.input).collect();
            let mut outcome = self
                .invoke(
                    conn,
                    project,
                    &inputs,
                    Writer::Consumer,
                    &guards,
                    &advances,
                    None,
                )
                .await?;
            if outcome == Outcome::Unregistered && self.register(conn, project).await? {
                outcome = self
                    .invoke_new(conn, project, &inputs, &guards, &advances)
                    .await?;
            }
            match outcome {
                Outcome::Applied => return Ok(chunk.len()),
                Outcome::Unregistered => {
                    return Err(StoreError::Transient(anyhow::anyhow!(
                        "Redis holds no generation marker for project {project} although it \
                         is registered (its node lost its data?); waiting for the rebuild"
                    )))
                }
                Outcome::Overtaken(positions) => {
                    // Applied by another writer (or by us before a crash): drop those messages.
                    tracing::debug!(
                        ?positions,
                        "part of a chunk was applied before; applying the rest"
                    );
                    chunk.retain(|e| {
                        let field = Position::field(e.source.topic, e.source.partition);
                        positions
                            .iter()
                            .find(|(f, _)| *f == field)
                            .is_none_or(|(_, at)| e.source.offset >= *at)
                    });
                }
            }
        }
        Err(StoreError::Transient(anyhow::anyhow!(
            "another writer kept applying this batch's partitions first"
        )))
    }

    /// For each event, whether it may be applied as far as legacy dedupe marks go: an event
    /// stored without origin was applied by the version that stored it iff its mark is there.
    /// Nothing sets those marks any more but a rebuild, which holds the consumer meanwhile.
    async fn without_legacy_marks(
        &self,
        conn: &mut Pooled,
        events: &[Applicable<'_>],
    ) -> Result<Vec<bool>, StoreError> {
        let mut keep = vec![true; events.len()];
        let checked: Vec<usize> = (0..events.len())
            .filter(|&i| events[i].needs_mark_check)
            .collect();
        if checked.is_empty() {
            return Ok(keep);
        }
        // One pipeline per project: on a cluster a pipeline stays in one slot.
        let mut by_project: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for i in checked {
            by_project
                .entry(events[i].input.project)
                .or_default()
                .push(i);
        }
        for (project, checked) in by_project {
            let keys = Keys::new(self.prefix(), project);
            let mut pipe = redis::pipe();
            for &i in &checked {
                pipe.exists(keys.applied_mark(events[i].input.event_id));
            }
            let marked: Vec<bool> = pipe
                .query_async(&mut **conn)
                .await
                .map_err(|e| transient(e, "cannot read legacy dedupe marks"))?;
            for (i, marked) in checked.into_iter().zip(marked) {
                keep[i] = !marked;
            }
        }
        Ok(keep)
    }

    /// Applies replayed rows during a rebuild (the consumer is held), project by project: no
    /// guards; each project's marker becomes `clearing:<token>` (`token`: the rebuild lock's).
    /// Rows stored without origin get their legacy dedupe mark back, so the consumer skips
    /// them if their message comes again. Returns how many were applied.
    pub async fn apply_during_rebuild(
        &self,
        rows: &[(AggregateInput<'_>, bool)],
        token: &str,
    ) -> Result<usize, StoreError> {
        let mut conn = self.connection().await?;
        let mut projects: BTreeMap<&str, Vec<&(AggregateInput<'_>, bool)>> = BTreeMap::new();
        for row in rows {
            projects.entry(row.0.project).or_default().push(row);
        }
        for (project, rows) in projects {
            for chunk in rows.chunks(EVENTS_PER_SCRIPT) {
                let inputs: Vec<AggregateInput<'_>> = chunk.iter().map(|(e, _)| *e).collect();
                let marks: Vec<&AggregateInput<'_>> = chunk
                    .iter()
                    .filter(|(_, without_origin)| *without_origin)
                    .map(|(e, _)| e)
                    .collect();
                match self
                    .invoke(
                        &mut conn,
                        project,
                        &inputs,
                        Writer::Rebuild(token),
                        &[],
                        &[],
                        Some(&marks),
                    )
                    .await?
                {
                    Outcome::Applied => {}
                    Outcome::Overtaken(_) | Outcome::Unregistered => {
                        return Err(StoreError::Transient(anyhow::anyhow!(
                            "a rebuild's chunk of project {project} was refused"
                        )))
                    }
                }
            }
        }
        Ok(rows.len())
    }

    /// Sets the partitions' positions of each of `projects` (a rebuild, from the snapshot it
    /// replayed: every message below them that the snapshot holds is applied).
    pub async fn set_positions(
        &self,
        projects: &[String],
        positions: &[Position],
    ) -> Result<(), StoreError> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut conn = self.connection().await?;
        let fields: Vec<(String, i64)> = positions
            .iter()
            .map(|p| (Position::field(&p.topic, p.partition), p.next_offset))
            .collect();
        for project in projects {
            redis::cmd("HSET")
                .arg(Keys::new(self.prefix(), project).positions())
                .arg(&fields)
                .query_async::<()>(&mut *conn)
                .await
                .map_err(|e| transient(e, "cannot set the positions"))?;
        }
        Ok(())
    }

    /// Registers `project` as held by Redis: true when this call registered it (so its chunk
    /// may create the project's marker), false when it was registered before. Fails while
    /// Redis is not ready (a rebuild registers what it replays).
    async fn register(&self, conn: &mut Pooled, project: &str) -> Result<bool, StoreError> {
        let registered: i64 = Script::new(REGISTER)
            .key(keys::generation(self.prefix()))
            .key(keys::projects(self.prefix()))
            .arg(project)
            .arg(chrono::Utc::now().timestamp_millis())
            .invoke_async(&mut **conn)
            .await
            .map_err(|e| transient(e, "cannot register a project"))?;
        match registered {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(StoreError::Transient(anyhow::anyhow!(
                "Redis lost its aggregates or is being rebuilt; waiting for the rebuild"
            ))),
        }
    }

    /// `invoke` for the chunk that registered its project: it creates the project's marker.
    async fn invoke_new(
        &self,
        conn: &mut Pooled,
        project: &str,
        events: &[AggregateInput<'_>],
        guards: &[(String, i64)],
        advances: &[(String, i64)],
    ) -> Result<Outcome, StoreError> {
        self.invoke_script(
            conn,
            project,
            events,
            Writer::Consumer,
            true,
            guards,
            advances,
            None,
        )
        .await
    }

    async fn connection(&self) -> Result<Pooled, StoreError> {
        self.pool().get().await.map_err(|e| {
            StoreError::Transient(anyhow::Error::new(e).context("no Redis connection"))
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn invoke(
        &self,
        conn: &mut Pooled,
        project: &str,
        events: &[AggregateInput<'_>],
        writer: Writer<'_>,
        guards: &[(String, i64)],
        advances: &[(String, i64)],
        legacy_marks: Option<&[&AggregateInput<'_>]>,
    ) -> Result<Outcome, StoreError> {
        self.invoke_script(
            conn,
            project,
            events,
            writer,
            false,
            guards,
            advances,
            legacy_marks,
        )
        .await
    }

    /// One call of `aggregate.lua` for `events`, all of `project`.
    #[allow(clippy::too_many_arguments)]
    async fn invoke_script(
        &self,
        conn: &mut Pooled,
        project: &str,
        events: &[AggregateInput<'_>],
        writer: Writer<'_>,
        new_project: bool,
        guards: &[(String, i64)],
        advances: &[(String, i64)],
        legacy_marks: Option<&[&AggregateInput<'_>]>,
    ) -> Result<Outcome, StoreError> {
        debug_assert!(events.iter().all(|e| e.project == project));
        let window = Window {
            prefix: self.prefix(),
            now_ms: chrono::Utc::now().timestamp_millis(),
            settings: &self.aggregates,
        };
        let mut commands = Commands::default();
        aggregates::commands(events, &window, &mut commands);
        for e in legacy_marks.unwrap_or_default() {
            commands.mark_seen(
                self.prefix(),
                e.project,
                e.event_id,
                self.aggregates.dedupe_ttl_seconds,
            );
        }
        let keys = Keys::new(self.prefix(), project);
        let (writer, token) = Self::writer_token(writer);
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(keys.generation())
            .key(keys.positions())
            .arg(writer)
            .arg(token)
            .arg(if new_project { "1" } else { "0" })
            .arg(guards.len())
            .arg(guards)
            .arg(advances.len())
            .arg(advances)
            .arg(commands.args());
        let reply: Value = invocation
            .invoke_async(&mut **conn)
            .await
            .map_err(|e| transient(e, "aggregate script failed"))?;
        match reply {
            Value::Int(n) if n >= 0 => Ok(Outcome::Applied),
            // No marker: a project new to Redis, or lost with its node (`register` tells).
            Value::Int(-2) => Ok(Outcome::Unregistered),
            // The script wrote nothing: Redis is being cleared or rebuilt. Retrying with
            // backoff waits for the rebuild.
            Value::Int(_) => Err(StoreError::Transient(anyhow::anyhow!(
                "Redis lost its aggregates; waiting for the rebuild"
            ))),
            Value::Array(items) => {
                let flat: Vec<String> =
                    redis::from_redis_value(Value::Array(items)).map_err(|e| {
                        StoreError::Transient(anyhow::anyhow!("unreadable guard reply: {e}"))
                    })?;
                let positions = flat
                    .chunks(2)
                    .filter_map(|pair| match pair {
                        [field, at] => at.parse().ok().map(|at: i64| (field.clone(), at)),
                        _ => None,
                    })
                    .collect();
                Ok(Outcome::Overtaken(positions))
            }
            other => Err(StoreError::Transient(anyhow::anyhow!(
                "unexpected aggregate script reply {other:?}"
            ))),
        }
    }
}

fn transient(e: redis::RedisError, context: &'static str) -> StoreError {
    StoreError::Transient(anyhow::Error::new(e).context(context))
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Applied,
    /// A guard failed: the positions (field, next offset) another writer got to.
    Overtaken(Vec<(String, i64)>),
    /// The project has no generation marker (new to Redis, or lost): nothing was written.
    Unregistered,
}

/// Who calls the script: the consumer, or the rebuild holding the lock with this token.
#[derive(Debug, Clone, Copy)]
pub enum Writer<'a> {
    Consumer,
    Rebuild(&'a str),
}

/// One event as the aggregates count it: the consumer builds it from a Kafka event, a
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
