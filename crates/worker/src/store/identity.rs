//! Identity stitching: the ids a client sent before it knew who the user was, linked to the
//! person (user id) they turned out to be, in `person_links`.
//!
//! A link is made, in the transaction that stores the batch, by a new `identify` event
//! (`user_id` + `anonymous_id`: the anonymous id is linked to the user) or `alias` event
//! (`properties.previous_id`, and the `anonymous_id` if any, linked to the `user_id`). Then, in
//! the same transaction, everything stored under the linked id moves to the person (back-fill):
//! its raw events (`user_events.distinct_id`; the raw `user_id`/`anonymous_id` columns keep what
//! the client sent), its sessions, and its `users` row, merged into the person's. Every later
//! event whose distinct id is linked is stored under the person the same way. So every figure
//! that counts people by `distinct_id` counts the person, before and after the link, over every
//! raw event still retained.
//!
//! Rules:
//! - **One step.** A person is a user id, never a linked id: linking to an id that is itself
//!   linked links to its person.
//! - **First link wins.** An id already linked to another person is not re-pointed.
//! - **Known users are never merged.** An id that is a user id (a `users` row that is a user's,
//!   a person other ids are linked to, or the `user_id` of an event of the same batch) is not
//!   linked to another user.
//! - Refusals are counted (`worker_identity_links_refused_total{reason}`) and logged by event id.
//! - **Idempotent.** Only events new to MySQL make links (a replayed identify is a duplicate and
//!   changes nothing); an identical link is no change; a back-fill finds nothing the second time.
//!
//! Concurrency: the batch's ids are looked up in `person_links` with a shared lock, so a link
//! made by a concurrent batch either commits first (and this batch sees it and stores under the
//! person) or waits for this batch (and then moves its rows). Lost races and deadlocks are
//! retried like any other (`mysql::is_race`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use insightflow_model::{Event, EventType};
use sqlx::{MySql, QueryBuilder, Transaction};

use super::DbText;

/// Ids per statement of a lookup.
const IDS_PER_STATEMENT: usize = 500;

/// The event type of Segment's alias call (and of a canonical alias).
const ALIAS: &str = "alias";

/// Why a link was refused (the metric's `reason` label).
pub const ALREADY_LINKED: &str = "already_linked";
pub const KNOWN_USER: &str = "known_user";
pub const REFUSAL_REASONS: [&str; 2] = [ALREADY_LINKED, KNOWN_USER];

/// A project and an id in it.
type Id = (String, String);

/// What the batch's ids resolve to, and what must move.
#[derive(Debug, Default)]
pub struct Identities {
    /// Project -> linked id -> person, for every id of the batch that has a link (stored
    /// before, or made by this batch).
    persons: HashMap<String, HashMap<String, String>>,
    /// Linked ids whose rows must move to their person in this transaction: the ones this
    /// batch linked, and the ones this batch stored events of.
    to_merge: BTreeSet<Id>,
    /// The ids this batch linked: their raw events stored before move too (events of the
    /// batch are stored under their person already).
    linked_now: HashSet<Id>,
    /// Links this batch made.
    pub linked: u64,
    /// Links this batch refused, per reason.
    pub refused: BTreeMap<&'static str, u64>,
}

impl Identities {
    /// The id to store and count `distinct_id` under: its person when it is linked.
    pub fn person_of<'a>(&'a self, project: &str, distinct_id: &'a str) -> &'a str {
        self.persons
            .get(project)
            .and_then(|ids| ids.get(distinct_id))
            .map_or(distinct_id, String::as_str)
    }

    fn linked_to(&self, (project, id): &Id) -> Option<&String> {
        self.persons.get(project)?.get(id)
    }

    fn add(&mut self, (project, id): Id, person: String) {
        self.persons.entry(project).or_default().insert(id, person);
    }
}

/// The ids an `identify` or `alias` event asks to link to its `user_id`.
fn link_sources(e: &Event) -> Vec<String> {
    let t = e.event_type();
    let is_alias = t.is(ALIAS);
    if !(t.is(EventType::IDENTIFY) || is_alias) {
        return Vec::new();
    }
    let Some(user) = e.user_id().map(|u| u.as_str()) else {
        return Vec::new();
    };
    let mut sources = Vec::with_capacity(2);
    if is_alias {
        #[derive(serde::Deserialize)]
        struct AliasProperties {
            previous_id: Option<serde_json::Value>,
        }
        let previous = e
            .properties()
            .and_then(|p| serde_json::from_str::<AliasProperties>(p.get()).ok())
            .and_then(|p| p.previous_id);
        match previous {
            Some(serde_json::Value::String(s)) if !s.is_empty() => sources.push(s),
            Some(serde_json::Value::Number(n)) => sources.push(n.to_string()),
            _ => {}
        }
    }
    if let Some(anonymous) = e.anonymous_id() {
        sources.push(anonymous.as_str().to_owned());
    }
    sources.retain(|s| s != user);
    sources.dedup();
    sources
}

/// Looks up the links of the batch's new events (with a shared lock), makes the links their
/// `identify` and `alias` events ask for, and says what each id resolves to.
pub async fn link(
    tx: &mut Transaction<'_, MySql>,
    events: &[&Event],
) -> Result<Identities, sqlx::Error> {
    let mut asked: Vec<(&Event, Vec<String>)> = Vec::new();
    let mut ids: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for e in events {
        let project = e.project().as_str();
        let mine = ids.entry(project).or_default();
        mine.insert(e.distinct_id().to_owned());
        let sources = link_sources(e);
        if !sources.is_empty() {
            mine.extend(sources.iter().cloned());
            asked.push((e, sources));
        }
    }
    let mut identities = Identities::default();
    for (project, ids) in &ids {
        let links = select_ids(tx, LINKS_BY_ID, project, ids, ") LOCK IN SHARE MODE").await?;
        for (id, person) in links {
            identities.add(((*project).to_owned(), id), person);
        }
    }
    if !asked.is_empty() {
        let known = known_users(tx, events, &asked).await?;
        let mut new_links = Vec::new();
        for (e, sources) in &asked {
            let project = e.project().as_str();
            let user = e.distinct_id();
            let person = identities.person_of(project, user).to_owned();
            for source in sources {
                let key = (project.to_owned(), source.clone());
                let refusal = match identities.linked_to(&key) {
                    Some(linked) if *linked == person => continue,
                    Some(_) => ALREADY_LINKED,
                    None if *source == person => continue,
                    None if known.contains(&key) => KNOWN_USER,
                    None => {
                        identities.add(key.clone(), person.clone());
                        identities.linked_now.insert(key.clone());
                        identities.to_merge.insert(key);
                        new_links.push(NewLink {
                            project,
                            distinct_id: source.clone(),
                            person: person.clone(),
                            at: e.timestamp(),
                            by_event_id: e.event_id().as_str(),
                        });
                        continue;
                    }
                };
                *identities.refused.entry(refusal).or_default() += 1;
                tracing::warn!(
                    project,
                    event_id = e.event_id().as_str(),
                    event_type = e.event_type().as_str(),
                    reason = refusal,
                    "identity link refused"
                );
            }
        }
        identities.linked = new_links.len() as u64;
        insert_links(tx, &new_links).await?;
    }
    for e in events {
        let key = (e.project().as_str().to_owned(), e.distinct_id().to_owned());
        if identities.linked_to(&key).is_some() {
            identities.to_merge.insert(key);
        }
    }
    Ok(identities)
}

/// Lookups by a list of ids: the statement up to `IN (`, read as `(id, value)` rows.
const LINKS_BY_ID: &str =
    "SELECT distinct_id, person_id FROM person_links WHERE project = ? AND distinct_id IN (";
const LINKS_BY_PERSON: &str =
    "SELECT person_id, person_id FROM person_links WHERE project = ? AND person_id IN (";
const USERS_BY_ID: &str =
    "SELECT distinct_id, distinct_id FROM users WHERE project = ? AND distinct_id IN (";

/// The `(id, value)` rows of `select` (one of the lookups above) for `ids` of `project`;
/// `tail` closes the list and adds what follows it.
async fn select_ids(
    tx: &mut Transaction<'_, MySql>,
    select: &str,
    project: &str,
    ids: &BTreeSet<String>,
    tail: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let ids: Vec<&String> = ids.iter().collect();
    let (head, rest) = select
        .split_once('?')
        .expect("a lookup has the project's placeholder");
    let mut found = Vec::new();
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new(head);
        q.push_bind(project).push(rest);
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(id.as_str());
        }
        q.push(tail);
        let rows: Vec<(DbText, DbText)> = q.build_query_as().fetch_all(&mut **tx).await?;
        found.extend(rows.into_iter().map(|(k, v)| (k.0, v.0)));
    }
    Ok(found)
}

/// Of the ids asked to be linked, the ones that are user ids: a user's `users` row, a person
/// other ids are linked to, or the `user_id` of an event of this batch.
async fn known_users(
    tx: &mut Transaction<'_, MySql>,
    events: &[&Event],
    asked: &[(&Event, Vec<String>)],
) -> Result<HashSet<Id>, sqlx::Error> {
    let mut known: HashSet<Id> = events
        .iter()
        .filter_map(|e| {
            Some((
                e.project().as_str().to_owned(),
                e.user_id()?.as_str().to_owned(),
            ))
        })
        .collect();
    let mut sources: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (e, ids) in asked {
        sources
            .entry(e.project().as_str())
            .or_default()
            .extend(ids.iter().cloned());
    }
    for (project, ids) in &sources {
        let users = select_ids(tx, USERS_BY_ID, project, ids, ") AND user_id IS NOT NULL").await?;
        let persons = select_ids(tx, LINKS_BY_PERSON, project, ids, ")").await?;
        for (id, _) in users.into_iter().chain(persons) {
            known.insert(((*project).to_owned(), id));
        }
    }
    Ok(known)
}

/// The `users` row of a linked id, as merged into its person's.
#[derive(sqlx::FromRow)]
struct Profile {
    anonymous_id: DbText,
    first_seen: chrono::NaiveDateTime,
    last_seen: chrono::NaiveDateTime,
    total_events: u64,
    total_sessions: u64,
    device_type: Option<DbText>,
    browser: Option<DbText>,
    os: Option<DbText>,
    properties: Option<DbText>,
}

struct NewLink<'e> {
    project: &'e str,
    distinct_id: String,
    person: String,
    at: DateTime<Utc>,
    by_event_id: &'e str,
}

/// A plain insert: a concurrent batch that linked the same id first makes this one fail with
/// a duplicate key, and the batch is retried (and then sees that link).
async fn insert_links(
    tx: &mut Transaction<'_, MySql>,
    links: &[NewLink<'_>],
) -> Result<(), sqlx::Error> {
    for chunk in links.chunks(IDS_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO person_links (project, distinct_id, person_id, linked_at, by_event_id) ",
        );
        q.push_values(chunk, |mut row, l| {
            row.push_bind(l.project)
                .push_bind(l.distinct_id.as_str())
                .push_bind(l.person.as_str())
                .push_bind(l.at.naive_utc())
                .push_bind(l.by_event_id);
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Moves every row stored under a linked id of the batch to its person: raw events, sessions,
/// and the `users` row, merged into the person's (first seen the earliest, last seen and the
/// device of the latest, totals summed, properties merged with the person's own values
/// winning). Runs after the batch's rows are written, so the rows this batch stored under the
/// linked id move too; a second run finds nothing to move.
pub async fn merge(
    tx: &mut Transaction<'_, MySql>,
    identities: &Identities,
) -> Result<(), sqlx::Error> {
    for (project, linked) in &identities.to_merge {
        let person = identities.person_of(project, linked);
        if identities
            .linked_now
            .contains(&(project.clone(), linked.clone()))
        {
            sqlx::query(
                "UPDATE user_events SET distinct_id = ? WHERE project = ? AND distinct_id = ?",
            )
            .bind(person)
            .bind(project)
            .bind(linked)
            .execute(&mut **tx)
            .await?;
        }
        sqlx::query("UPDATE sessions SET distinct_id = ? WHERE project = ? AND distinct_id = ?")
            .bind(person)
            .bind(project)
            .bind(linked)
            .execute(&mut **tx)
            .await?;
        let profile: Option<Profile> = sqlx::query_as(
            "SELECT COALESCE(anonymous_id, distinct_id) AS anonymous_id, first_seen, last_seen, \
             total_events, total_sessions, device_type, browser, os, \
             CAST(properties AS CHAR) AS properties \
             FROM users WHERE project = ? AND distinct_id = ? FOR UPDATE",
        )
        .bind(project)
        .bind(linked)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(profile) = profile else {
            continue;
        };
        // Assignments run left to right: device fields compare against the old last_seen.
        sqlx::query(
            "INSERT INTO users (project, distinct_id, user_id, anonymous_id, first_seen, last_seen, \
             total_events, total_sessions, device_type, browser, os, properties) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE \
             device_type = IF(VALUES(last_seen) > last_seen, COALESCE(VALUES(device_type), device_type), device_type), \
             browser = IF(VALUES(last_seen) > last_seen, COALESCE(VALUES(browser), browser), browser), \
             os = IF(VALUES(last_seen) > last_seen, COALESCE(VALUES(os), os), os), \
             anonymous_id = COALESCE(anonymous_id, VALUES(anonymous_id)), \
             properties = IF(VALUES(properties) IS NULL, properties, \
                 JSON_MERGE_PATCH(VALUES(properties), COALESCE(properties, '{}'))), \
             first_seen = LEAST(first_seen, VALUES(first_seen)), \
             last_seen = GREATEST(last_seen, VALUES(last_seen)), \
             total_events = total_events + VALUES(total_events), \
             total_sessions = total_sessions + VALUES(total_sessions)",
        )
        .bind(project)
        .bind(person)
        .bind(person)
        .bind(profile.anonymous_id.as_str())
        .bind(profile.first_seen)
        .bind(profile.last_seen)
        .bind(profile.total_events)
        .bind(profile.total_sessions)
        .bind(profile.device_type.as_ref().map(DbText::as_str))
        .bind(profile.browser.as_ref().map(DbText::as_str))
        .bind(profile.os.as_ref().map(DbText::as_str))
        .bind(profile.properties.as_ref().map(DbText::as_str))
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM users WHERE project = ? AND distinct_id = ?")
            .bind(project)
            .bind(linked)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
