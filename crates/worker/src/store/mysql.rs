//! Raw events, users, sessions and rollups in MySQL: one transaction per batch, and every
//! derived row computed only from events that were not stored before the transaction (their
//! ids are in `event_ids`, `dedupe.rs`), so a replayed batch changes nothing. Each event is
//! stored with the message that stored it (its origin), and the transaction records how far it got in each partition
//! (`kafka_positions`): what the Redis side needs to apply every event exactly once without a
//! mark per event (see `super`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, DurationRound, NaiveDateTime, TimeDelta, Utc};
use insightflow_model::Event;
use sqlx::{MySql, MySqlPool, QueryBuilder, Transaction};

use super::sessions::{server_session_ids, upsert_sessions, SessionRule};
use super::{dedupe, identity, stored_path, DbText, StoreError};
use insightflow_store::mysql::{self, redact, MysqlSettings};
use insightflow_store::person::person_digest;

/// Rows per multi-row statement (MySQL allows 65,535 placeholders; user_events has 47 columns).
const ROWS_PER_STATEMENT: usize = 500;
/// A batch that loses an insert race or a deadlock is retried this many times at once before
/// the error goes back to the caller's backoff.
const RACE_RETRIES: usize = 3;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[derive(Clone)]
pub struct MysqlStore {
    pool: MySqlPool,
    sessions: SessionRule,
}

/// The message an event was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// An event and the message it came in.
#[derive(Debug, Clone, Copy)]
pub struct Sourced<'a> {
    pub event: &'a Event,
    pub source: Source<'a>,
}

/// What the batch's transaction found for one event: whether Redis has to apply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: inserted by this transaction, with this message as its origin.
    Inserted,
    /// Stored earlier by this same message (a redelivery after MySQL committed): Redis
    /// applies it unless its position for the partition is already past the message.
    StoredByThisMessage,
    /// Stored by a version that recorded no origin: Redis applies it unless the event's
    /// dedupe mark, which that version set, is there.
    StoredWithoutOrigin,
    /// Stored by another message (a client's retry, or an earlier copy in this batch): that
    /// message counts it.
    Duplicate,
    /// An event of a suppressed person (erased or opted out): stored nowhere.
    Suppressed,
}

impl Verdict {
    /// Whether this message, and no other, counts the event in Redis.
    pub fn counts_in_redis(self) -> bool {
        matches!(
            self,
            Self::Inserted | Self::StoredByThisMessage | Self::StoredWithoutOrigin
        )
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MysqlOutcome {
    pub inserted: usize,
    pub duplicates: usize,
    /// Events of suppressed people (erased or opted out), dropped: `(project, event_id)`.
    /// They must not reach Redis either.
    pub suppressed: Vec<(String, String)>,
    /// One per event written, in order.
    pub verdicts: Vec<Verdict>,
    /// Bots' events inserted by this batch: stored flagged, counted in no aggregate.
    pub bots: usize,
    /// Per event, in order, the server session Redis counts it in (`sessions.rs`); `None`
    /// when the client sent a session or the event does not count in Redis.
    pub session_ids: Vec<Option<String>>,
    /// Events stored now from messages below their partition's position: MySQL had
    /// processed those offsets, yet did not hold these events. Offsets restarted (the topic
    /// was re-created, or its log truncated) or the event's row was deleted (retention of a
    /// late event). Redis takes such a message for one it applied and will not count it.
    /// Per partition.
    pub below_position: BTreeMap<i32, usize>,
    /// Identity links the batch's identify and alias events asked for and were refused, per
    /// reason (`identity::REFUSAL_REASONS`).
    pub links_refused: BTreeMap<&'static str, u64>,
    /// Where the transaction's time went, step by step (`STEPS`).
    pub steps: [std::time::Duration; STEPS.len()],
}

/// The steps of a batch's transaction, in order (`MysqlOutcome::steps`).
pub const STEPS: [&str; 6] = ["lookup", "insert", "sessions", "users", "rollups", "commit"];

fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

fn classify(e: sqlx::Error) -> StoreError {
    let data_error = match &e {
        sqlx::Error::Database(db) => {
            // SQLSTATE class 22 (data exception), 23 other than duplicates, and MySQL's
            // "incorrect value" family: the data is at fault, not the server.
            let state = db.code().unwrap_or_default();
            let duplicate = state == "23000" && db.message().contains("Duplicate entry");
            (state.starts_with("22") || state == "HY000" && db.message().contains("Incorrect"))
                || (state.starts_with("23") && !duplicate)
        }
        _ => false,
    };
    if data_error {
        StoreError::Data(e.into())
    } else {
        StoreError::Transient(e.into())
    }
}

impl MysqlStore {
    /// Connects to an existing database (`migrate` creates it). Fails with the address when
    /// MySQL cannot be reached.
    pub async fn connect(settings: &MysqlSettings) -> anyhow::Result<Self> {
        let pool = mysql::connect(settings, settings.max_connections, None).await?;
        Ok(Self {
            pool,
            sessions: SessionRule::default(),
        })
    }

    /// How server sessions are delimited (`[sessions]`; 30 minutes of inactivity unless set).
    pub fn with_sessions(mut self, rule: SessionRule) -> Self {
        self.sessions = rule;
        self
    }

    /// Creates the database if needed and applies every migration (`worker migrate`).
    pub async fn migrate(settings: &MysqlSettings) -> anyhow::Result<()> {
        use sqlx::migrate::MigrateDatabase;
        if !MySql::database_exists(&settings.url)
            .await
            .with_context(|| format!("cannot reach MySQL at {}", redact(&settings.url)))?
        {
            MySql::create_database(&settings.url).await?;
            tracing::info!("created database");
        }
        let store = Self::connect(settings).await?;
        MIGRATOR
            .run(&store.pool)
            .await
            .context("migration failed")?;
        Ok(())
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    pub async fn ping(&self) -> bool {
        mysql::ping(&self.pool).await
    }

    /// Writes a batch exactly once. Events already stored (replays, client retries) are
    /// counted as duplicates and change nothing. The partitions' positions advance to the
    /// message after the last one of each in `events`.
    pub async fn write(&self, events: &[Sourced<'_>]) -> Result<MysqlOutcome, StoreError> {
        let mut attempt = 0;
        // A batch of messages MySQL has not processed yet can only hold events stored before
        // if a client sent them again: the insert into `event_ids` finds those, and then the
        // batch is written again with a lookup of every event first.
        let mut look_up = false;
        loop {
            match self.write_once(events, look_up).await {
                Err(StoreError::Transient(e)) if attempt < RACE_RETRIES && is_race(&e) => {
                    attempt += 1;
                    look_up = true;
                    tracing::debug!(error = %e, attempt, "batch lost a race; retrying");
                }
                other => return other,
            }
        }
    }

    async fn write_once(
        &self,
        events: &[Sourced<'_>],
        look_up: bool,
    ) -> Result<MysqlOutcome, StoreError> {
        let mut clock = StepClock::start();
        let mut outcome = MysqlOutcome::default();
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let all: Vec<&Event> = events.iter().map(|s| s.event).collect();
        let suppressed = suppressed_people(&mut tx, &all).await.map_err(classify)?;
        let positions = positions_of(&mut tx, events).await.map_err(classify)?;
        let stored = if look_up || processed_before(&positions, events) {
            dedupe::stored_origins(&mut tx, events)
                .await
                .map_err(classify)?
        } else {
            dedupe::StoredOrigins::new()
        };
        let mut seen = HashSet::with_capacity(events.len());
        let mut fresh: Vec<Sourced<'_>> = Vec::with_capacity(events.len());
        for s in events {
            let (project, event_id) = (s.event.project().as_str(), s.event.event_id().as_str());
            let verdict = if suppressed.contains(&(project, s.event.distinct_id())) {
                outcome
                    .suppressed
                    .push((project.to_owned(), event_id.to_owned()));
                Verdict::Suppressed
            } else {
                match stored.get(project).and_then(|ids| ids.get(event_id)) {
                    Some(Some(origin)) if *origin == (s.source.partition, s.source.offset) => {
                        Verdict::StoredByThisMessage
                    }
                    Some(None) => Verdict::StoredWithoutOrigin,
                    Some(Some(_)) => Verdict::Duplicate,
                    None if seen.insert((project, event_id)) => {
                        fresh.push(*s);
                        let position = positions.get(&(s.source.topic, s.source.partition));
                        if position.is_some_and(|next| s.source.offset < *next) {
                            *outcome
                                .below_position
                                .entry(s.source.partition)
                                .or_default() += 1;
                        }
                        Verdict::Inserted
                    }
                    None => Verdict::Duplicate,
                }
            };
            outcome.verdicts.push(verdict);
        }
        outcome.inserted = fresh.len();
        outcome.bots = fresh.iter().filter(|s| s.event.is_bot()).count();
        outcome.duplicates = events.len() - fresh.len() - outcome.suppressed.len();
        let new: Vec<&Event> = fresh.iter().map(|s| s.event).collect();
        let mut identities = identity::link(&mut tx, &new).await.map_err(classify)?;
        outcome.links_refused = std::mem::take(&mut identities.refused);
        clock.lap(&mut outcome.steps[0]);
        let mut assigned = HashMap::new();
        if !fresh.is_empty() {
            // First the dedupe rows: a concurrent writer of the same event fails here.
            dedupe::record(&mut tx, &fresh).await.map_err(classify)?;
            insert_events(&mut tx, &fresh, &identities).await?;
            clock.lap(&mut outcome.steps[1]);
            // A bot's event is stored (flagged) and counts nowhere else.
            let fresh: Vec<&Event> = fresh
                .iter()
                .map(|s| s.event)
                .filter(|e| !e.is_bot())
                .collect();
            let sessions = upsert_sessions(&mut tx, &fresh, &identities, self.sessions)
                .await
                .map_err(classify)?;
            clock.lap(&mut outcome.steps[2]);
            upsert_users(&mut tx, &fresh, &sessions.opened)
                .await
                .map_err(classify)?;
            clock.lap(&mut outcome.steps[3]);
            upsert_rollups(&mut tx, &fresh).await.map_err(classify)?;
            identity::merge(&mut tx, &identities)
                .await
                .map_err(classify)?;
            assigned = sessions.assigned;
        }
        outcome.session_ids = server_session_ids(&mut tx, events, &outcome.verdicts, &assigned)
            .await
            .map_err(classify)?;
        advance_positions(&mut tx, events).await.map_err(classify)?;
        clock.lap(&mut outcome.steps[4]);
        tx.commit().await.map_err(classify)?;
        clock.lap(&mut outcome.steps[5]);
        Ok(outcome)
    }
}

/// Times consecutive steps.
struct StepClock(std::time::Instant);

impl StepClock {
    fn start() -> Self {
        Self(std::time::Instant::now())
    }

    /// Adds the time since the last lap to `step`.
    fn lap(&mut self, step: &mut std::time::Duration) {
        let now = std::time::Instant::now();
        *step += now - self.0;
        self.0 = now;
    }
}

/// The partitions' positions in `kafka_positions` as `tx` sees them (for a Redis rebuild,
/// from the snapshot of the events it replays).
pub async fn stored_positions(
    tx: &mut Transaction<'_, MySql>,
) -> Result<Vec<StoredPosition>, sqlx::Error> {
    sqlx::query_as("SELECT topic, kafka_partition, next_offset FROM kafka_positions")
        .fetch_all(&mut **tx)
        .await
}

/// One row of `kafka_positions`: every message of the partition below `next_offset` is
/// stored (or was a duplicate, or refused).
#[derive(Debug, sqlx::FromRow)]
pub struct StoredPosition {
    pub topic: DbText,
    pub kafka_partition: i32,
    pub next_offset: i64,
}

/// A duplicate key (another writer stored the same event first) or a deadlock.
fn is_race(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|db| matches!(db.number(), 1062 | 1213 | 1205))
}

/// The batch's people who are suppressed (`suppressed_people`, by the digest of their id),
/// read with a shared lock: an erasure's insert into the list waits for this transaction, and
/// then deletes the rows it stored; or this read sees the suppression and nothing is stored.
async fn suppressed_people<'e>(
    tx: &mut Transaction<'_, MySql>,
    events: &[&'e Event],
) -> Result<HashSet<(&'e str, &'e str)>, sqlx::Error> {
    let mut people = HashSet::with_capacity(events.len());
    let mut digests: BTreeMap<(&str, String), (&str, &str)> = BTreeMap::new();
    for e in events {
        let person = (e.project().as_str(), e.distinct_id());
        if people.insert(person) {
            digests.insert((person.0, person_digest(person.1)), person);
        }
    }
    let mut suppressed = HashSet::new();
    let keys: Vec<_> = digests.keys().collect();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new(
            "SELECT project, person_sha256 FROM suppressed_people WHERE (project, person_sha256) IN (",
        );
        let mut list = q.separated(", ");
        for (project, digest) in chunk {
            list.push("(")
                .push_bind_unseparated(*project)
                .push_unseparated(", ")
                .push_bind_unseparated(digest.as_str())
                .push_unseparated(")");
        }
        q.push(") LOCK IN SHARE MODE");
        let rows: Vec<(DbText, DbText)> = q.build_query_as().fetch_all(&mut **tx).await?;
        for (project, digest) in rows {
            if let Some(person) = digests.get(&(project.as_str(), digest.0)) {
                suppressed.insert(*person);
            }
        }
    }
    Ok(suppressed)
}

/// Whether MySQL processed a message of `events` before (a redelivery): one of them is below
/// its partition's position in `kafka_positions`.
/// Whether MySQL has processed any of the batch's messages: one of them is below its
/// partition's position.
fn processed_before(positions: &BTreeMap<(&str, i32), i64>, events: &[Sourced<'_>]) -> bool {
    events.iter().any(|s| {
        positions
            .get(&(s.source.topic, s.source.partition))
            .is_some_and(|next| s.source.offset < *next)
    })
}

/// The positions in `kafka_positions` of the batch's partitions (those MySQL has any for).
async fn positions_of<'e>(
    tx: &mut Transaction<'_, MySql>,
    events: &[Sourced<'e>],
) -> Result<BTreeMap<(&'e str, i32), i64>, sqlx::Error> {
    let first: BTreeSet<(&'e str, i32)> = events
        .iter()
        .map(|s| (s.source.topic, s.source.partition))
        .collect();
    if first.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut q = QueryBuilder::<MySql>::new(
        "SELECT topic, kafka_partition, next_offset FROM kafka_positions \
         WHERE (topic, kafka_partition) IN (",
    );
    let mut list = q.separated(", ");
    for (topic, partition) in &first {
        list.push("(")
            .push_bind_unseparated(*topic)
            .push_unseparated(", ")
            .push_bind_unseparated(*partition)
            .push_unseparated(")");
    }
    q.push(")");
    let positions: Vec<StoredPosition> = q.build_query_as().fetch_all(&mut **tx).await?;
    Ok(first
        .into_iter()
        .filter_map(|(topic, partition)| {
            positions
                .iter()
                .find(|p| p.topic.as_str() == topic && p.kafka_partition == partition)
                .map(|p| ((topic, partition), p.next_offset))
        })
        .collect())
}

/// Moves each partition's position in `kafka_positions` to the message after the last one of
/// it in `events` (never back: a slower writer of the same partition after a rebalance).
async fn advance_positions(
    tx: &mut Transaction<'_, MySql>,
    events: &[Sourced<'_>],
) -> Result<(), sqlx::Error> {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for s in events {
        let n = next
            .entry((s.source.topic, s.source.partition))
            .or_insert(0);
        *n = (*n).max(s.source.offset + 1);
    }
    if next.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<MySql>::new(
        "INSERT INTO kafka_positions (topic, kafka_partition, next_offset) ",
    );
    q.push_values(&next, |mut row, ((topic, partition), offset)| {
        row.push_bind(*topic)
            .push_bind(*partition)
            .push_bind(*offset);
    });
    q.push(" ON DUPLICATE KEY UPDATE next_offset = GREATEST(next_offset, VALUES(next_offset))");
    q.build().execute(&mut **tx).await?;
    Ok(())
}

async fn insert_events(
    tx: &mut Transaction<'_, MySql>,
    events: &[Sourced<'_>],
    identities: &identity::Identities,
) -> Result<(), StoreError> {
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO user_events (project, event_id, event_type, event_name, user_id, anonymous_id, \
             distinct_id, session_id, page_url, page_path, page_title, referrer, element_tag, element_id, \
             element_classes, element_text, element_selector, click_x, click_y, properties, user_properties, \
             context, user_agent, browser, browser_version, os, device_type, ip, event_time, client_time, \
             timestamp_source, received_at, kafka_partition, kafka_offset, utm_source, utm_medium, \
             utm_campaign, utm_term, utm_content, click_id_type, click_id, referrer_domain, channel, \
             country, region, city, is_bot) ",
        );
        q.push_values(chunk, |mut row, s| {
            let e = s.event;
            let page = e.page();
            let element = e.element();
            let client = e.client();
            let acquisition = e.acquisition();
            let campaign = acquisition.map(|a| &a.campaign);
            let click_id = acquisition.and_then(|a| a.click_id.as_ref());
            row.push_bind(e.project().as_str())
                .push_bind(e.event_id().as_str())
                .push_bind(e.event_type().as_str())
                .push_bind(e.event_name())
                .push_bind(e.user_id().map(|u| u.as_str()))
                .push_bind(e.anonymous_id().map(|a| a.as_str()))
                .push_bind(identities.person_of(e.project().as_str(), e.distinct_id()))
                .push_bind(e.session_id().map(|s| s.as_str()))
                .push_bind(page.and_then(|p| p.url.as_deref()))
                .push_bind(page.and_then(|p| p.path.as_deref()).map(stored_path))
                .push_bind(page.and_then(|p| p.title.as_deref()))
                .push_bind(page.and_then(|p| p.referrer.as_deref()))
                .push_bind(element.and_then(|x| x.tag.as_deref()))
                .push_bind(element.and_then(|x| x.id.as_deref()))
                .push_bind(element.and_then(|x| x.classes.as_deref()))
                .push_bind(element.and_then(|x| x.text.as_deref()))
                .push_bind(element.and_then(|x| x.selector.as_deref()))
                .push_bind(element.and_then(|x| x.x))
                .push_bind(element.and_then(|x| x.y))
                .push_bind(e.properties().map(|p| p.get()))
                .push_bind(e.user_properties().map(|p| p.get()))
                .push_bind(e.context().and_then(|c| serde_json::to_string(c).ok()))
                .push_bind(client.user_agent.as_deref())
                .push_bind(client.browser.as_deref())
                .push_bind(client.browser_version.as_deref())
                .push_bind(client.os.as_deref())
                .push_bind(client.device_type.as_deref())
                .push_bind(client.ip.as_deref())
                .push_bind(naive(e.timestamp()))
                .push_bind(e.client_timestamp().map(naive))
                .push_bind(e.timestamp_source().as_str())
                .push_bind(naive(e.received_at()))
                .push_bind(s.source.partition)
                .push_bind(s.source.offset)
                .push_bind(campaign.and_then(|c| c.source.as_deref()))
                .push_bind(campaign.and_then(|c| c.medium.as_deref()))
                .push_bind(campaign.and_then(|c| c.name.as_deref()))
                .push_bind(campaign.and_then(|c| c.term.as_deref()))
                .push_bind(campaign.and_then(|c| c.content.as_deref()))
                .push_bind(click_id.map(|c| c.kind))
                .push_bind(click_id.map(|c| c.value.as_str()))
                .push_bind(acquisition.and_then(|a| a.referrer_domain.as_deref()))
                .push_bind(acquisition.map(|a| a.channel.as_str()))
                .push_bind(client.country.as_deref())
                .push_bind(client.region.as_deref())
                .push_bind(client.city.as_deref())
                .push_bind(e.is_bot());
        });
        let result = q.build().execute(&mut **tx).await.map_err(classify)?;
        if result.rows_affected() != chunk.len() as u64 {
            return Err(StoreError::Transient(anyhow::anyhow!(
                "inserted {} of {} new events",
                result.rows_affected(),
                chunk.len()
            )));
        }
    }
    Ok(())
}

async fn upsert_users(
    tx: &mut Transaction<'_, MySql>,
    events: &[&Event],
    opened_sessions: &BTreeMap<(&str, &str), u64>,
) -> Result<(), sqlx::Error> {
    struct User<'a> {
        user_id: Option<&'a str>,
        anonymous_id: Option<&'a str>,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        latest: &'a Event,
        events: u64,
        sessions: u64,
        properties: Option<serde_json::Value>,
    }
    let mut users: BTreeMap<(&str, &str), User<'_>> = BTreeMap::new();
    // Merge user properties in event-time order so the newest value of a key wins.
    let mut ordered: Vec<&Event> = events.to_vec();
    ordered.sort_by_key(|e| e.timestamp());
    for e in ordered {
        let u = users
            .entry((e.project().as_str(), e.distinct_id()))
            .or_insert(User {
                user_id: None,
                anonymous_id: None,
                first: e.timestamp(),
                last: e.timestamp(),
                latest: e,
                events: 0,
                sessions: opened_sessions
                    .get(&(e.project().as_str(), e.distinct_id()))
                    .copied()
                    .unwrap_or(0),
                properties: None,
            });
        u.user_id = u.user_id.or(e.user_id().map(|x| x.as_str()));
        u.anonymous_id = u.anonymous_id.or(e.anonymous_id().map(|x| x.as_str()));
        u.first = u.first.min(e.timestamp());
        if e.timestamp() >= u.last {
            u.last = e.timestamp();
            u.latest = e;
        }
        u.events += 1;
        if let Some(props) = e.user_properties() {
            if let Ok(patch) = serde_json::from_str::<serde_json::Value>(props.get()) {
                merge_patch(
                    u.properties.get_or_insert_with(|| serde_json::json!({})),
                    patch,
                );
            }
        }
    }
    let rows: Vec<_> = users.iter().collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO users (project, distinct_id, user_id, anonymous_id, first_seen, last_seen, \
             total_events, total_sessions, device_type, browser, os, properties) ",
        );
        q.push_values(chunk, |mut row, ((project, distinct_id), u)| {
            let client = u.latest.client();
            row.push_bind(*project)
                .push_bind(*distinct_id)
                .push_bind(u.user_id)
                .push_bind(u.anonymous_id)
                .push_bind(naive(u.first))
                .push_bind(naive(u.last))
                .push_bind(u.events)
                .push_bind(u.sessions)
                .push_bind(client.device_type.as_deref())
                .push_bind(client.browser.as_deref())
                .push_bind(client.os.as_deref())
                .push_bind(u.properties.as_ref().map(|p| p.to_string()));
        });
        // Assignments run left to right: device fields compare against the old last_seen.
        q.push(
            " ON DUPLICATE KEY UPDATE \
             device_type = IF(VALUES(last_seen) >= last_seen, COALESCE(VALUES(device_type), device_type), device_type), \
             browser = IF(VALUES(last_seen) >= last_seen, COALESCE(VALUES(browser), browser), browser), \
             os = IF(VALUES(last_seen) >= last_seen, COALESCE(VALUES(os), os), os), \
             user_id = COALESCE(user_id, VALUES(user_id)), \
             anonymous_id = COALESCE(anonymous_id, VALUES(anonymous_id)), \
             properties = IF(VALUES(properties) IS NULL, properties, \
                 JSON_MERGE_PATCH(COALESCE(properties, '{}'), VALUES(properties))), \
             first_seen = LEAST(first_seen, VALUES(first_seen)), \
             last_seen = GREATEST(last_seen, VALUES(last_seen)), \
             total_events = total_events + VALUES(total_events), \
             total_sessions = total_sessions + VALUES(total_sessions)",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// RFC 7396 JSON merge patch.
fn merge_patch(target: &mut serde_json::Value, patch: serde_json::Value) {
    match patch {
        serde_json::Value::Object(fields) => {
            if !target.is_object() {
                *target = serde_json::json!({});
            }
            if let Some(map) = target.as_object_mut() {
                for (k, v) in fields {
                    if v.is_null() {
                        map.remove(&k);
                    } else {
                        merge_patch(map.entry(k).or_insert(serde_json::Value::Null), v);
                    }
                }
            }
        }
        other => *target = other,
    }
}

async fn upsert_rollups(
    tx: &mut Transaction<'_, MySql>,
    events: &[&Event],
) -> Result<(), sqlx::Error> {
    let mut minutes: BTreeMap<(&str, NaiveDateTime, &str), u64> = BTreeMap::new();
    let mut hours: BTreeMap<(&str, NaiveDateTime, &str), u64> = BTreeMap::new();
    let mut pages: BTreeMap<(&str, NaiveDateTime, &str), u64> = BTreeMap::new();
    for e in events {
        let t = e.timestamp();
        let minute = t
            .duration_trunc(TimeDelta::minutes(1))
            .unwrap_or(t)
            .naive_utc();
        let hour = t
            .duration_trunc(TimeDelta::hours(1))
            .unwrap_or(t)
            .naive_utc();
        let project = e.project().as_str();
        *minutes
            .entry((project, minute, e.event_type().as_str()))
            .or_default() += 1;
        *hours
            .entry((project, hour, e.event_type().as_str()))
            .or_default() += 1;
        if e.event_type().is(insightflow_model::EventType::PAGE_VIEW) {
            if let Some(path) = e.page().and_then(|p| p.path.as_deref()) {
                *pages.entry((project, hour, stored_path(path))).or_default() += 1;
            }
        }
    }
    for (table, column, rows) in [
        ("rollup_events_minute", "event_type", &minutes),
        ("rollup_events_hour", "event_type", &hours),
        ("rollup_page_views_hour", "page_path", &pages),
    ] {
        let counter = if table == "rollup_page_views_hour" {
            "views"
        } else {
            "events"
        };
        let rows: Vec<_> = rows.iter().collect();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<MySql>::new(format!(
                "INSERT INTO {table} (project, bucket, {column}, {counter}) "
            ));
            q.push_values(chunk, |mut row, ((project, bucket, name), n)| {
                row.push_bind(*project)
                    .push_bind(*bucket)
                    .push_bind(*name)
                    .push_bind(**n);
            });
            q.push(format!(
                " ON DUPLICATE KEY UPDATE {counter} = {counter} + VALUES({counter})"
            ));
            q.build().execute(&mut **tx).await?;
        }
    }
    Ok(())
}

/// Counts of the user_events table, for tests and the benchmark's loss check.
pub async fn count_events(pool: &MySqlPool, project: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM user_events WHERE project = ?")
        .bind(project)
        .fetch_one(pool)
        .await
}

/// Deletes raw events older than `cutoff`, `chunk` rows at a time so no statement holds locks
/// for long. Returns the rows deleted.
pub async fn delete_older_than(
    pool: &MySqlPool,
    cutoff: DateTime<Utc>,
    chunk: u64,
) -> Result<u64, sqlx::Error> {
    delete_in_chunks(pool, "user_events", cutoff, chunk).await
}

/// Deletes the rows of `table` whose `event_time` is before `before`, `chunk` rows at a time
/// (each statement its own short transaction). Returns the rows deleted.
pub(super) async fn delete_in_chunks(
    pool: &MySqlPool,
    table: &'static str,
    before: DateTime<Utc>,
    chunk: u64,
) -> Result<u64, sqlx::Error> {
    let statement = format!("DELETE FROM {table} WHERE event_time < ? ORDER BY event_time LIMIT ?");
    let mut deleted = 0;
    loop {
        let n = sqlx::query(&statement)
            .bind(naive(before))
            .bind(chunk)
            .execute(pool)
            .await?
            .rows_affected();
        deleted += n;
        if n < chunk {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(
            &mut target,
            serde_json::json!({"a": null, "b": {"c": 5}, "e": [1]}),
        );
        assert_eq!(target, serde_json::json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }

    #[test]
    fn credentials_are_redacted_from_urls() {
        assert_eq!(
            redact("mysql://root:secret@db:3306/x"),
            "mysql://***@db:3306/x"
        );
        assert_eq!(redact("mysql://db/x"), "mysql://db/x");
    }
}
