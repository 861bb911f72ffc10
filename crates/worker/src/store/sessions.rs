//! Sessions in MySQL, in the batch's transaction (`mysql.rs`), after its new events are
//! inserted.
//!
//! - **Client sessions**: events that carry a `session_id` are upserted into its row.
//! - **Server sessions**: an event without one (every event through the Segment-compatible
//!   API) gets one by the inactivity rule: a person's (project, distinct id) events without a
//!   client session, in time order (ties by event id), form one session until a gap longer
//!   than `[sessions] inactivity_minutes`. A session's id is `srv:` and 32 hex digits of the
//!   SHA-256 of `{project}\n{distinct_id}\n{first event's time in ms}\n{first event's id}`
//!   (`server_session_id`), so it depends on its events alone, never on arrival order. A
//!   client `session_id` that starts with `srv:` is ignored: that prefix names server
//!   sessions only. Identify, alias and group calls get none (`NOT_ACTIVITY`), nor do bots.
//!
//! A late or out-of-order event can extend a session, split nothing, and bridge two
//! sessions into one (it can also move a session's start, hence its id). So for each person
//! with such events the transaction takes the stored server sessions within the inactivity
//! gap of them, in full, deletes them and recomputes the sessions of that span, stored events
//! and new alike, with the same rule; the span's events get their session's id
//! (`user_events.session_id`). Sessions outside the span cannot change: nothing new is within
//! the gap of them. Hence after any arrival order, replay or redelivery the sessions are those
//! of the in-order computation. `users.total_sessions` moves by the difference (down when
//! sessions merge).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, DurationRound, NaiveDateTime, TimeDelta, Utc};
use insightflow_model::{Event, EventType};
use sha2::{Digest, Sha256};
use sqlx::{MySql, QueryBuilder, Transaction};

use super::identity::Identities;
use super::mysql::{Sourced, Verdict};
use super::{stored_path, DbText};

/// Every server session id starts with this; a client's session id that does is ignored.
pub const SERVER_SESSION_PREFIX: &str = "srv:";
/// Calls that say who someone is, not what they did: no server session has them (an identify
/// a second after a single page view does not make it a visit of two events).
pub const NOT_ACTIVITY: [&str; 3] = [EventType::IDENTIFY, "alias", "group"];
/// Rows per multi-row statement (as in `mysql.rs`).
const ROWS_PER_STATEMENT: usize = 500;
/// People per statement that reads a span of each one's events.
const PEOPLE_PER_STATEMENT: usize = 200;
/// Added to each side of a person's new events' times when their stored neighbours are
/// looked up: the event's time in memory may be finer than the column's milliseconds. Reading
/// more of the person's sessions than needed is harmless (they are recomputed whole).
const TIME_SLACK: TimeDelta = TimeDelta::seconds(1);

/// How server sessions are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRule {
    /// A gap between two consecutive events of a person longer than this starts a new session.
    pub inactivity: TimeDelta,
}

impl Default for SessionRule {
    fn default() -> Self {
        Self {
            inactivity: TimeDelta::minutes(30),
        }
    }
}

/// The session id the client sent, unless it is in the server's namespace.
pub fn client_session(e: &Event) -> Option<&str> {
    e.session_id()
        .map(|s| s.as_str())
        .filter(|s| !s.starts_with(SERVER_SESSION_PREFIX))
}

/// Whether the event gets a server session: it carries no client session and is activity.
fn gets_server_session(e: &Event) -> bool {
    client_session(e).is_none() && !NOT_ACTIVITY.contains(&e.event_type().as_str())
}

/// The id of the server session whose first event (in time, then event id order) is
/// `first_event_id` at `first_time` (stored precision, milliseconds).
pub fn server_session_id(
    project: &str,
    distinct_id: &str,
    first_time: NaiveDateTime,
    first_event_id: &str,
) -> String {
    let digest = Sha256::digest(
        format!(
            "{project}\n{distinct_id}\n{}\n{first_event_id}",
            first_time.and_utc().timestamp_millis()
        )
        .as_bytes(),
    );
    let hex = format!("{digest:x}");
    format!("{SERVER_SESSION_PREFIX}{}", &hex[..32])
}

/// What the sessions step did, for the users step and for Redis.
#[derive(Debug, Default)]
pub struct SessionsWritten<'e> {
    /// Per person, how many sessions the batch added (client sessions new to the table, and
    /// server sessions gained); people whose sessions merged are already counted down.
    pub opened: BTreeMap<(&'e str, &'e str), u64>,
    /// The server session of each stored event of the recomputed spans, by (project, event id).
    pub assigned: HashMap<(String, String), String>,
}

/// Upserts the client sessions of `events` (new events only, no bots) and recomputes the
/// server sessions their sessionless events touch. Server sessions are the person's
/// (`identities`: the id the events are stored under).
pub async fn upsert_sessions<'e>(
    tx: &mut Transaction<'_, MySql>,
    events: &[&'e Event],
    identities: &Identities,
    rule: SessionRule,
) -> Result<SessionsWritten<'e>, sqlx::Error> {
    let mut change: BTreeMap<(&'e str, &'e str), i64> = upsert_client_sessions(tx, events)
        .await?
        .into_iter()
        .map(|(person, n)| (person, n as i64))
        .collect();
    let sessionless: Vec<&'e Event> = events
        .iter()
        .copied()
        .filter(|e| gets_server_session(e))
        .collect();
    let mut assigned = HashMap::new();
    let mut merged: Vec<(Person, u64)> = Vec::new();
    if !sessionless.is_empty() {
        let server = recompute_server_sessions(tx, &sessionless, identities, rule).await?;
        // Sessions gained count on the `users` row of one of the person's events, which the
        // users step writes (and identity stitching moves to the person); sessions lost
        // (merged) count down the person's row, there since they had them.
        let mut counted_on: BTreeMap<Person, (&'e str, &'e str)> = BTreeMap::new();
        for e in &sessionless {
            let project = e.project().as_str();
            let person = identities.person_of(project, e.distinct_id());
            counted_on
                .entry((project.to_owned(), person.to_owned()))
                .or_insert((project, e.distinct_id()));
        }
        for (person, n) in server.change {
            match (n, counted_on.get(&person)) {
                (n, Some(key)) if n > 0 => *change.entry(*key).or_default() += n,
                (n, _) if n < 0 => merged.push((person, n.unsigned_abs())),
                _ => {}
            }
        }
        assigned = server.assigned;
    }
    let mut opened = BTreeMap::new();
    for (person, n) in change {
        if n > 0 {
            opened.insert(person, n as u64);
        }
    }
    for ((project, distinct_id), fewer) in merged {
        sqlx::query(
            "UPDATE users SET total_sessions = total_sessions - LEAST(total_sessions, ?) \
             WHERE project = ? AND distinct_id = ?",
        )
        .bind(fewer)
        .bind(project)
        .bind(distinct_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(SessionsWritten { opened, assigned })
}

/// Upserts the batch's client sessions and returns, per (project, distinct id), how many
/// sessions the batch opened (sessions not in the table before).
async fn upsert_client_sessions<'e>(
    tx: &mut Transaction<'_, MySql>,
    events: &[&'e Event],
) -> Result<BTreeMap<(&'e str, &'e str), u64>, sqlx::Error> {
    struct Session<'a> {
        distinct_id: &'a str,
        started: DateTime<Utc>,
        last: DateTime<Utc>,
        events: u64,
        pages: Pages,
    }
    let mut sessions: BTreeMap<(&str, &str), Session<'_>> = BTreeMap::new();
    for e in events {
        let Some(session_id) = client_session(e) else {
            continue;
        };
        let s = sessions
            .entry((e.project().as_str(), session_id))
            .or_insert(Session {
                distinct_id: e.distinct_id(),
                started: e.timestamp(),
                last: e.timestamp(),
                events: 0,
                pages: Pages::default(),
            });
        s.started = s.started.min(e.timestamp());
        s.last = s.last.max(e.timestamp());
        s.events += 1;
        if e.event_type().is(EventType::PAGE_VIEW) {
            s.pages.add(
                stored_time(e.timestamp()),
                e.event_id().as_str(),
                e.page().and_then(|p| p.path.as_deref()).map(stored_path),
            );
        }
    }
    if sessions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut existing: HashSet<(String, String)> = HashSet::new();
    let mut by_project: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (project, session) in sessions.keys() {
        by_project.entry(project).or_default().push(session);
    }
    for (project, ids) in by_project {
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<MySql>::new(
                "SELECT project, session_id FROM sessions WHERE project = ",
            );
            q.push_bind(project).push(" AND session_id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            // Locks the rows and the gaps: a concurrent batch carrying the same session (a user
            // who identified mid-session is keyed to another partition) waits for this one, so
            // a session is never counted as new twice.
            q.push(") FOR UPDATE");
            let rows = q
                .build_query_as::<(DbText, DbText)>()
                .fetch_all(&mut **tx)
                .await?;
            existing.extend(rows.into_iter().map(|(p, s)| (p.0, s.0)));
        }
    }
    let rows: Vec<_> = sessions.iter().collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new(format!(
            "INSERT INTO sessions (project, session_id, distinct_id, started_at, last_seen, events, \
             {PAGE_COLUMNS}) "
        ));
        q.push_values(chunk, |mut row, ((project, session_id), s)| {
            row.push_bind(*project)
                .push_bind(*session_id)
                .push_bind(s.distinct_id)
                .push_bind(s.started.naive_utc())
                .push_bind(s.last.naive_utc())
                .push_bind(s.events);
            s.pages.bind(&mut row);
        });
        // A page view replaces the entry (exit) only if it comes before (after) it by (time,
        // event id): the same pages in any arrival order. Assignments run left to right, so the
        // time, compared by the others, is assigned last.
        let earlier = "VALUES(entry_at) IS NOT NULL AND (entry_at IS NULL \
             OR (VALUES(entry_at), VALUES(entry_event_id)) < (entry_at, entry_event_id))";
        let later = "VALUES(exit_at) IS NOT NULL AND (exit_at IS NULL \
             OR (VALUES(exit_at), VALUES(exit_event_id)) > (exit_at, exit_event_id))";
        q.push(format!(
            " ON DUPLICATE KEY UPDATE started_at = LEAST(started_at, VALUES(started_at)), \
             last_seen = GREATEST(last_seen, VALUES(last_seen)), events = events + VALUES(events), \
             page_views = page_views + VALUES(page_views), \
             entry_path = IF({earlier}, VALUES(entry_path), entry_path), \
             entry_event_id = IF({earlier}, VALUES(entry_event_id), entry_event_id), \
             entry_at = IF({earlier}, VALUES(entry_at), entry_at), \
             exit_path = IF({later}, VALUES(exit_path), exit_path), \
             exit_event_id = IF({later}, VALUES(exit_event_id), exit_event_id), \
             exit_at = IF({later}, VALUES(exit_at), exit_at)"
        ));
        q.build().execute(&mut **tx).await?;
    }
    let mut opened = BTreeMap::new();
    for ((project, session_id), s) in &sessions {
        if !existing.contains(&((*project).to_owned(), (*session_id).to_owned())) {
            *opened.entry((*project, s.distinct_id)).or_default() += 1;
        }
    }
    Ok(opened)
}

type Person = (String, String);

struct ServerSessions {
    /// Per person, sessions after minus sessions before.
    change: BTreeMap<Person, i64>,
    assigned: HashMap<(String, String), String>,
}

/// A stored event without a client session, as the recomputation reads it.
#[derive(sqlx::FromRow)]
struct SpanEvent {
    id: u64,
    project: DbText,
    distinct_id: DbText,
    event_id: DbText,
    event_time: NaiveDateTime,
    session_id: Option<DbText>,
    event_type: DbText,
    page_path: Option<DbText>,
}

/// A stored server session, as the recomputation reads it.
#[derive(sqlx::FromRow)]
struct StoredSession {
    project: DbText,
    distinct_id: DbText,
    started_at: NaiveDateTime,
    last_seen: NaiveDateTime,
}

/// Which stored events belong to server sessions, or to none yet (the batch's new events).
fn sessionless_condition() -> String {
    format!("(session_id IS NULL OR session_id LIKE '{SERVER_SESSION_PREFIX}%')")
}

/// Recomputes the server sessions of the people of `events` (new events without a client
/// session, already inserted) around those events.
async fn recompute_server_sessions(
    tx: &mut Transaction<'_, MySql>,
    events: &[&Event],
    identities: &Identities,
    rule: SessionRule,
) -> Result<ServerSessions, sqlx::Error> {
    // Each person's new events, as a time span. People in order: every statement locks
    // their rows in the index's order, the same in every transaction.
    let mut spans: BTreeMap<Person, (NaiveDateTime, NaiveDateTime)> = BTreeMap::new();
    for e in events {
        let t = e.timestamp().naive_utc();
        let project = e.project().as_str();
        let person = identities.person_of(project, e.distinct_id());
        let span = spans
            .entry((project.to_owned(), person.to_owned()))
            .or_insert((t, t));
        span.0 = span.0.min(t);
        span.1 = span.1.max(t);
    }
    for span in spans.values_mut() {
        span.0 -= TIME_SLACK;
        span.1 += TIME_SLACK;
    }
    // 1. Every sessionless event within the gap of a new one (the new ones included), and
    // the server sessions they are in.
    let near: BTreeMap<Person, (NaiveDateTime, NaiveDateTime)> = spans
        .iter()
        .map(|(p, (from, to))| (p.clone(), (*from - rule.inactivity, *to + rule.inactivity)))
        .collect();
    // The batch's own events are not in a session yet (a `srv:` id a client sent is no
    // session's).
    let new: HashSet<(&str, &str)> = events
        .iter()
        .map(|e| (e.project().as_str(), e.event_id().as_str()))
        .collect();
    let is_new = |e: &SpanEvent| new.contains(&(e.project.as_str(), e.event_id.as_str()));
    let near_events: Vec<SpanEvent> = read_spans(tx, &near).await?;
    let mut touched_ids: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in near_events.iter().filter(|e| !is_new(e)) {
        if let Some(id) = &e.session_id {
            touched_ids
                .entry(e.project.as_str())
                .or_default()
                .insert(id.as_str());
        }
    }
    // 2. Their extents: the span to recompute runs from the first one's start to the last
    // one's end (and over the new events).
    for (project, ids) in touched_ids {
        let ids: Vec<&str> = ids.into_iter().collect();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<MySql>::new(
                "SELECT project, distinct_id, started_at, last_seen FROM sessions WHERE project = ",
            );
            q.push_bind(project).push(" AND session_id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(") FOR UPDATE");
            let rows: Vec<StoredSession> = q.build_query_as().fetch_all(&mut **tx).await?;
            for s in rows {
                if let Some(span) = spans.get_mut(&(s.project.0, s.distinct_id.0)) {
                    span.0 = span.0.min(s.started_at);
                    span.1 = span.1.max(s.last_seen);
                }
            }
        }
    }
    // 3. The parts of those sessions beyond the gap of the new events: then every session
    // read is whole. (Within the gap, step 1 read them.)
    let mut earlier = BTreeMap::new();
    let mut later = BTreeMap::new();
    for (person, (from, to)) in &spans {
        let (near_from, near_to) = near[person];
        if *from < near_from {
            earlier.insert(person.clone(), (*from, near_from));
        }
        if *to > near_to {
            later.insert(person.clone(), (near_to, *to));
        }
    }
    let mut read: HashSet<u64> = HashSet::new();
    let mut by_person: BTreeMap<Person, Vec<SpanEvent>> = BTreeMap::new();
    let beyond = [
        read_spans(tx, &earlier).await?,
        read_spans(tx, &later).await?,
    ];
    for e in near_events.into_iter().chain(beyond.into_iter().flatten()) {
        // The ranges share their ends.
        if read.insert(e.id) {
            by_person
                .entry((e.project.0.clone(), e.distinct_id.0.clone()))
                .or_default()
                .push(e);
        }
    }
    let mut change = BTreeMap::new();
    let mut assigned = HashMap::new();
    let mut gone: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut rows: Vec<(String, NewSession)> = Vec::new();
    let mut relabel: Vec<Relabel> = Vec::new();
    for ((project, distinct_id), mut events) in by_person {
        events.sort_by(|a, b| {
            (a.event_time, a.event_id.as_str()).cmp(&(b.event_time, b.event_id.as_str()))
        });
        let before: BTreeSet<String> = events
            .iter()
            .filter(|e| !is_new(e))
            .filter_map(|e| e.session_id.as_ref().map(|s| s.0.clone()))
            .collect();
        let sessions = split(&events, rule);
        let after: BTreeSet<String> = sessions
            .iter()
            .map(|s| {
                let first = &events[s.first];
                server_session_id(
                    &project,
                    &distinct_id,
                    first.event_time,
                    first.event_id.as_str(),
                )
            })
            .collect();
        change.insert(
            (project.clone(), distinct_id.clone()),
            after.len() as i64 - before.len() as i64,
        );
        for old in before.difference(&after) {
            gone.entry(project.clone()).or_default().insert(old.clone());
        }
        for s in sessions {
            let first = &events[s.first];
            let id = server_session_id(
                &project,
                &distinct_id,
                first.event_time,
                first.event_id.as_str(),
            );
            let mut pages = Pages::default();
            for e in &events[s.first..s.end] {
                if e.event_type.as_str() == EventType::PAGE_VIEW {
                    pages.add(
                        e.event_time,
                        e.event_id.as_str(),
                        e.page_path.as_ref().map(DbText::as_str),
                    );
                }
                if e.session_id.as_ref().map(|x| x.as_str()) != Some(id.as_str()) {
                    relabel.push(Relabel {
                        row: e.id,
                        at: e.event_time,
                        session: id.clone(),
                    });
                }
                assigned.insert((project.clone(), e.event_id.0.clone()), id.clone());
            }
            rows.push((
                id,
                NewSession {
                    project: project.clone(),
                    distinct_id: distinct_id.clone(),
                    started: first.event_time,
                    last: events[s.end - 1].event_time,
                    events: (s.end - s.first) as u64,
                    pages,
                },
            ));
        }
    }
    write_server_sessions(tx, &gone, &rows, &relabel).await?;
    Ok(ServerSessions { change, assigned })
}

/// One session of a person's events in order: `events[first..end]`.
struct Split {
    first: usize,
    end: usize,
}

/// Splits events in time order where the gap to the previous one exceeds the rule's.
fn split(events: &[SpanEvent], rule: SessionRule) -> Vec<Split> {
    let mut sessions: Vec<Split> = Vec::new();
    for (at, e) in events.iter().enumerate() {
        match sessions.last_mut() {
            Some(s) if e.event_time - events[at - 1].event_time <= rule.inactivity => {
                s.end = at + 1;
            }
            _ => sessions.push(Split {
                first: at,
                end: at + 1,
            }),
        }
    }
    sessions
}

/// A stored event whose session id changes: its row (`id`, `event_time`) and new session.
struct Relabel {
    row: u64,
    at: NaiveDateTime,
    session: String,
}

struct NewSession {
    project: String,
    distinct_id: String,
    started: NaiveDateTime,
    last: NaiveDateTime,
    events: u64,
    pages: Pages,
}

/// A session's page views, and its first and last one (entry and exit) by (time, event id).
#[derive(Debug, Default, PartialEq, Eq)]
struct Pages {
    views: u64,
    entry: Option<PageView>,
    exit: Option<PageView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PageView {
    at: NaiveDateTime,
    event_id: String,
    path: Option<String>,
}

impl Pages {
    fn add(&mut self, at: NaiveDateTime, event_id: &str, path: Option<&str>) {
        self.views += 1;
        let view = || PageView {
            at,
            event_id: event_id.to_owned(),
            path: path.map(str::to_owned),
        };
        if self
            .entry
            .as_ref()
            .is_none_or(|e| (at, event_id) < (e.at, e.event_id.as_str()))
        {
            self.entry = Some(view());
        }
        if self
            .exit
            .as_ref()
            .is_none_or(|e| (at, event_id) > (e.at, e.event_id.as_str()))
        {
            self.exit = Some(view());
        }
    }

    /// Binds the values of `PAGE_COLUMNS`.
    fn bind(&self, row: &mut sqlx::query_builder::Separated<'_, '_, MySql, &'static str>) {
        row.push_bind(self.views);
        for end in [&self.entry, &self.exit] {
            row.push_bind(end.as_ref().and_then(|v| v.path.clone()))
                .push_bind(end.as_ref().map(|v| v.at))
                .push_bind(end.as_ref().map(|v| v.event_id.clone()));
        }
    }
}

/// The columns `Pages::bind` binds, in order.
const PAGE_COLUMNS: &str =
    "page_views, entry_path, entry_at, entry_event_id, exit_path, exit_at, exit_event_id";

/// An event's time as `user_events.event_time` keeps it (milliseconds).
fn stored_time(t: DateTime<Utc>) -> NaiveDateTime {
    t.duration_trunc(TimeDelta::milliseconds(1))
        .unwrap_or(t)
        .naive_utc()
}

/// Reads each person's stored events without a client session within their span (ends
/// included), locking them.
async fn read_spans(
    tx: &mut Transaction<'_, MySql>,
    spans: &BTreeMap<Person, (NaiveDateTime, NaiveDateTime)>,
) -> Result<Vec<SpanEvent>, sqlx::Error> {
    let spans: Vec<_> = spans.iter().collect();
    let mut out = Vec::new();
    for chunk in spans.chunks(PEOPLE_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new(
            "SELECT id, project, distinct_id, event_id, event_time, session_id, event_type, \
             page_path FROM user_events \
             FORCE INDEX (ix_user_events_user_time) WHERE is_bot = 0 AND event_type NOT IN (",
        );
        let mut types = q.separated(", ");
        for t in NOT_ACTIVITY {
            types.push_bind(t);
        }
        q.push(") AND ");
        q.push(sessionless_condition());
        q.push(" AND (");
        let mut people = q.separated(" OR ");
        for ((project, distinct_id), (from, to)) in chunk {
            people
                .push("(project = ")
                .push_bind_unseparated(project.as_str())
                .push_unseparated(" AND distinct_id = ")
                .push_bind_unseparated(distinct_id.as_str())
                .push_unseparated(" AND event_time >= ")
                .push_bind_unseparated(*from)
                .push_unseparated(" AND event_time <= ")
                .push_bind_unseparated(*to)
                .push_unseparated(")");
        }
        q.push(") FOR UPDATE");
        out.extend(q.build_query_as::<SpanEvent>().fetch_all(&mut **tx).await?);
    }
    Ok(out)
}

/// Deletes the sessions that are no more, writes the recomputed ones and labels their events.
async fn write_server_sessions(
    tx: &mut Transaction<'_, MySql>,
    gone: &BTreeMap<String, BTreeSet<String>>,
    sessions: &[(String, NewSession)],
    relabel: &[Relabel],
) -> Result<(), sqlx::Error> {
    for (project, ids) in gone {
        let ids: Vec<&String> = ids.iter().collect();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<MySql>::new("DELETE FROM sessions WHERE project = ");
            q.push_bind(project.as_str()).push(" AND session_id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.as_str());
            }
            q.push(")");
            q.build().execute(&mut **tx).await?;
        }
    }
    for chunk in sessions.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new(format!(
            "INSERT INTO sessions (project, session_id, distinct_id, started_at, last_seen, events, \
             {PAGE_COLUMNS}) "
        ));
        q.push_values(chunk, |mut row, (id, s)| {
            row.push_bind(s.project.as_str())
                .push_bind(id.as_str())
                .push_bind(s.distinct_id.as_str())
                .push_bind(s.started)
                .push_bind(s.last)
                .push_bind(s.events);
            s.pages.bind(&mut row);
        });
        q.push(
            " ON DUPLICATE KEY UPDATE distinct_id = VALUES(distinct_id), \
             started_at = VALUES(started_at), last_seen = VALUES(last_seen), events = VALUES(events), \
             page_views = VALUES(page_views), entry_path = VALUES(entry_path), \
             entry_at = VALUES(entry_at), entry_event_id = VALUES(entry_event_id), \
             exit_path = VALUES(exit_path), exit_at = VALUES(exit_at), \
             exit_event_id = VALUES(exit_event_id)",
        );
        q.build().execute(&mut **tx).await?;
    }
    for chunk in relabel.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new("UPDATE user_events SET session_id = CASE id");
        for r in chunk {
            q.push(" WHEN ")
                .push_bind(r.row)
                .push(" THEN ")
                .push_bind(r.session.as_str());
        }
        q.push(" END WHERE id IN (");
        let mut list = q.separated(", ");
        for r in chunk {
            list.push_bind(r.row);
        }
        // The rows' times name the partitions (days) to look in.
        let from = chunk.iter().map(|r| r.at).min();
        let to = chunk.iter().map(|r| r.at).max();
        q.push(") AND event_time >= ")
            .push_bind(from)
            .push(" AND event_time <= ")
            .push_bind(to);
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Per event of `events` (as `verdicts` judged them), the server session Redis counts it in:
/// `None` when the client sent a session, or the event does not count in Redis. New events
/// take theirs from `assigned`; an event stored before (a redelivery) from its row.
pub async fn server_session_ids(
    tx: &mut Transaction<'_, MySql>,
    events: &[Sourced<'_>],
    verdicts: &[Verdict],
    assigned: &HashMap<(String, String), String>,
) -> Result<Vec<Option<String>>, sqlx::Error> {
    let mut ids: Vec<Option<String>> = vec![None; events.len()];
    let mut missing: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for ((s, verdict), id) in events.iter().zip(verdicts).zip(ids.iter_mut()) {
        if !verdict.counts_in_redis() || s.event.is_bot() || !gets_server_session(s.event) {
            continue;
        }
        let (project, event_id) = (s.event.project().as_str(), s.event.event_id().as_str());
        match assigned.get(&(project.to_owned(), event_id.to_owned())) {
            Some(session) => *id = Some(session.clone()),
            None => missing.entry(project).or_default().push(event_id),
        }
    }
    let mut stored: HashMap<(String, String), String> = HashMap::new();
    for (project, event_ids) in missing {
        for chunk in event_ids.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<MySql>::new(
                "SELECT event_id, session_id FROM user_events WHERE project = ",
            );
            q.push_bind(project).push(" AND event_id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            let rows: Vec<(DbText, Option<DbText>)> =
                q.build_query_as().fetch_all(&mut **tx).await?;
            for (event_id, session) in rows {
                if let Some(session) = session {
                    stored.insert((project.to_owned(), event_id.0), session.0);
                }
            }
        }
    }
    if !stored.is_empty() {
        for (s, id) in events.iter().zip(ids.iter_mut()) {
            if id.is_none() {
                let key = (
                    s.event.project().as_str().to_owned(),
                    s.event.event_id().as_str().to_owned(),
                );
                *id = stored.get(&key).cloned();
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64, id: &str) -> SpanEvent {
        SpanEvent {
            id: 0,
            project: DbText("p".into()),
            distinct_id: DbText("u".into()),
            event_id: DbText(id.into()),
            event_time: DateTime::from_timestamp(1_700_000_000 + minutes * 60, 0)
                .expect("a time")
                .naive_utc(),
            session_id: None,
            event_type: DbText("page_view".into()),
            page_path: None,
        }
    }

    #[test]
    fn a_gap_of_exactly_the_inactivity_continues_the_session() {
        let events = [at(0, "a"), at(30, "b"), at(61, "c"), at(62, "d")];
        let sessions = split(&events, SessionRule::default());
        let bounds: Vec<(usize, usize)> = sessions.iter().map(|s| (s.first, s.end)).collect();
        assert_eq!(bounds, [(0, 2), (2, 4)]);
    }

    #[test]
    fn entry_and_exit_are_the_first_and_last_page_view_in_any_order() {
        let t = at(0, "x").event_time;
        let views = [
            (t, "b", Some("/b")),
            (t, "a", Some("/a")),
            (t + TimeDelta::seconds(1), "c", None),
            (t - TimeDelta::seconds(1), "z", Some("/z")),
            (t + TimeDelta::seconds(1), "d", Some("/d")),
        ];
        let mut forward = Pages::default();
        for (at, id, path) in views {
            forward.add(at, id, path);
        }
        let mut backward = Pages::default();
        for (at, id, path) in views.iter().rev() {
            backward.add(*at, id, *path);
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.views, 5);
        let entry = forward.entry.as_ref().expect("an entry");
        assert_eq!(
            (entry.event_id.as_str(), entry.path.as_deref()),
            ("z", Some("/z"))
        );
        let exit = forward.exit.as_ref().expect("an exit");
        assert_eq!(
            (exit.event_id.as_str(), exit.path.as_deref()),
            ("d", Some("/d"))
        );
    }

    #[test]
    fn server_ids_are_prefixed_fixed_width_and_depend_on_the_first_event() {
        let t = at(0, "a").event_time;
        let id = server_session_id("p", "u", t, "a");
        assert!(id.starts_with(SERVER_SESSION_PREFIX));
        assert_eq!(id.len(), SERVER_SESSION_PREFIX.len() + 32);
        assert_eq!(id, server_session_id("p", "u", t, "a"));
        assert_ne!(id, server_session_id("p", "u", t, "b"));
        assert_ne!(id, server_session_id("p", "v", t, "a"));
        // printf 'p\nu\n1700000000000\na' | sha256sum
        let digest = format!("{:x}", Sha256::digest(b"p\nu\n1700000000000\na"));
        assert_eq!(id, format!("srv:{}", &digest[..32]));
    }
}
