//! Requests about one person (admin keys only): erase them, export what is stored about them,
//! and stop or resume collecting their events. docs/PRIVACY.md says what each one covers.
//!
//! Erasure suppresses the person first (their later events are dropped by the worker, which
//! reads the suppression list in the transaction that stores a batch), then deletes their raw
//! events, sessions and profile, then their Redis traces (recent path, presence online, session
//! hashes), and writes an audit line that names them only by digest. Counts that never named
//! anyone stay: rollups, all-time and per-bucket counters, hot pages, unique-user estimates
//! (a HyperLogLog keeps no ids).
//!
//! A person is a user id and every id linked to it (`person_links`, written by the worker from
//! identify and alias events): each request about any of their ids is about all of them.

use actix_web::{web, HttpResponse};
use deadpool_redis::redis;
use futures::{SinkExt, StreamExt};
use serde_json::json;

use super::auth::AdminProject;
use super::error::ApiError;
use super::limits::Heavy;
use super::users::{distinct_id, UserPath};
use super::ApiState;
use insightflow_store::person::person_digest;
use insightflow_store::DbText;

/// Raw events are deleted this many at a time: each statement stays short, under the API
/// pool's statement time limit, whatever the person's history.
const DELETE_CHUNK: u32 = 5_000;

/// Why a person is suppressed.
const ERASED: &str = "erased";
const OPTED_OUT: &str = "opted_out";

/// The person `who` is (their user id when `who` is linked to one), and the ids linked to
/// that person, in order.
async fn person_of(
    db: &sqlx::MySqlPool,
    project: &str,
    who: &str,
) -> Result<(String, Vec<String>), ApiError> {
    let person: Option<DbText> = sqlx::query_scalar(
        "SELECT person_id FROM person_links WHERE project = ? AND distinct_id = ?",
    )
    .bind(project)
    .bind(who)
    .fetch_optional(db)
    .await?;
    let person = person.map_or_else(|| who.to_owned(), DbText::into_string);
    let linked = linked_ids(db, project, &person).await?;
    Ok((person, linked))
}

async fn linked_ids(
    db: &sqlx::MySqlPool,
    project: &str,
    person: &str,
) -> Result<Vec<String>, ApiError> {
    let linked: Vec<DbText> = sqlx::query_scalar(
        "SELECT distinct_id FROM person_links WHERE project = ? AND person_id = ? \
         ORDER BY distinct_id",
    )
    .bind(project)
    .bind(person)
    .fetch_all(db)
    .await?;
    Ok(linked.into_iter().map(DbText::into_string).collect())
}

/// Adds the person to the suppression list (or updates why).
async fn suppress(
    db: &sqlx::MySqlPool,
    project: &str,
    digest: &str,
    reason: &str,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO suppressed_people (project, person_sha256, reason, since) \
         VALUES (?, ?, ?, UTC_TIMESTAMP(3)) ON DUPLICATE KEY UPDATE reason = VALUES(reason)",
    )
    .bind(project)
    .bind(digest)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(())
}

/// `DELETE /users/{distinct_id}`: erases the person; says what went and what stays.
pub async fn erase(
    state: web::Data<ApiState>,
    AdminProject(project): AdminProject,
    // Deletes a whole history in chunks: it takes turns with the other heavy queries.
    _turn: Heavy,
    path: web::Path<UserPath>,
) -> Result<HttpResponse, ApiError> {
    let asked = distinct_id(&path.distinct_id)?;
    let db = state.db();
    let (person, _) = person_of(db, project.as_str(), asked).await?;
    let digest = person_digest(&person);
    suppress(db, project.as_str(), &digest, ERASED).await?;
    // Read after the person is suppressed: a batch that links an id to them has committed by
    // now (the suppression waited for it), or drops the identify that would link it.
    let linked = linked_ids(db, project.as_str(), &person).await?;
    for id in &linked {
        suppress(db, project.as_str(), &person_digest(id), ERASED).await?;
    }
    let ids: Vec<&str> = std::iter::once(person.as_str())
        .chain(linked.iter().map(String::as_str))
        .collect();

    let mut sessions: Vec<DbText> = Vec::new();
    for who in &ids {
        sessions.extend(
            sqlx::query_scalar::<_, DbText>(
                "SELECT session_id FROM sessions WHERE project = ? AND distinct_id = ?",
            )
            .bind(project.as_str())
            .bind(*who)
            .fetch_all(db)
            .await?,
        );
    }
    let keys = state.keys(&project);
    let mut conn = state.redis_conn().await?;
    let mut redis_deleted = 0_u64;
    let mut events_deleted = 0_u64;
    let mut sessions_deleted = 0_u64;
    let mut profile_deleted = false;
    let mut pipe = redis::pipe();
    for who in ids.iter().copied() {
        loop {
            let chunk: Vec<(u64, DbText, chrono::NaiveDateTime)> = sqlx::query_as(
                "SELECT id, event_id, event_time FROM user_events \
                 FORCE INDEX (ix_user_events_user_time) \
                 WHERE project = ? AND distinct_id = ? LIMIT ?",
            )
            .bind(project.as_str())
            .bind(who)
            .bind(DELETE_CHUNK)
            .fetch_all(db)
            .await?;
            if chunk.is_empty() {
                break;
            }
            let mut delete =
                sqlx::QueryBuilder::<sqlx::MySql>::new("DELETE FROM user_events WHERE id IN (");
            let mut list = delete.separated(", ");
            for (id, _, _) in &chunk {
                list.push_bind(*id);
            }
            // The rows' times name the partitions (days of event time) to look in.
            let from = chunk.iter().map(|(_, _, at)| *at).min();
            let to = chunk.iter().map(|(_, _, at)| *at).max();
            delete
                .push(") AND event_time >= ")
                .push_bind(from)
                .push(" AND event_time <= ")
                .push_bind(to);
            events_deleted += delete.build().execute(db).await?.rows_affected();
            // Their dedupe rows (`event_ids`) name their event ids too; the suppression keeps
            // a replay of these events from being stored again without them.
            let mut dedupe =
                sqlx::QueryBuilder::<sqlx::MySql>::new("DELETE FROM event_ids WHERE project = ");
            dedupe
                .push_bind(project.as_str())
                .push(" AND event_id IN (");
            let mut list = dedupe.separated(", ");
            for (_, event_id, _) in &chunk {
                list.push_bind(event_id.as_str());
            }
            dedupe.push(")");
            dedupe.build().execute(db).await?;
            // Their dedupe marks name their event ids, which a client may have built from the
            // person: safe to drop, since their events no longer reach Redis.
            let marks: Vec<String> = chunk
                .iter()
                .map(|(_, event_id, _)| keys.applied_mark(event_id.as_str()))
                .collect();
            redis_deleted += redis::cmd("DEL")
                .arg(&marks)
                .query_async::<u64>(&mut *conn)
                .await?;
        }
        sessions_deleted +=
            sqlx::query("DELETE FROM sessions WHERE project = ? AND distinct_id = ?")
                .bind(project.as_str())
                .bind(who)
                .execute(db)
                .await?
                .rows_affected();
        profile_deleted |= sqlx::query("DELETE FROM users WHERE project = ? AND distinct_id = ?")
            .bind(project.as_str())
            .bind(who)
            .execute(db)
            .await?
            .rows_affected()
            > 0;
        pipe.del(keys.recent_path(who)).zrem(keys.online(), who);
    }
    let links_deleted = sqlx::query("DELETE FROM person_links WHERE project = ? AND person_id = ?")
        .bind(project.as_str())
        .bind(&person)
        .execute(db)
        .await?
        .rows_affected();
    for session in &sessions {
        pipe.del(keys.session(session.as_str()))
            .zrem(keys.sessions_active(), session.as_str());
    }
    let removed: Vec<u64> = pipe.query_async(&mut *conn).await?;
    redis_deleted += removed.iter().sum::<u64>();

    let requested_by = state.access.requester(&project);
    let audit = sqlx::query(
        "INSERT INTO person_erasures (project, person_sha256, requested_by, requested_at, \
         events_deleted, sessions_deleted, profile_deleted, redis_deleted) \
         VALUES (?, ?, ?, UTC_TIMESTAMP(3), ?, ?, ?, ?)",
    )
    .bind(project.as_str())
    .bind(&digest)
    .bind(&requested_by)
    .bind(events_deleted)
    .bind(sessions_deleted)
    .bind(profile_deleted)
    .bind(redis_deleted)
    .execute(db)
    .await?
    .last_insert_id();
    tracing::info!(
        project = project.as_str(),
        person = %&digest[..12],
        requested_by,
        events_deleted,
        sessions_deleted,
        profile_deleted,
        links_deleted,
        redis_deleted,
        audit,
        "person erased"
    );
    Ok(HttpResponse::Ok().json(json!({
        "project": project.as_str(),
        "distinct_id": asked,
        "person": person,
        "linked_ids": linked,
        "erased": {
            "events": events_deleted,
            "sessions": sessions_deleted,
            "profile": profile_deleted,
            "links": links_deleted,
            "redis_keys_and_members": redis_deleted,
        },
        "suppressed": ERASED,
        "kept_without_identity": [
            "event counts in the minute and hour rollups and Redis counters",
            "page-view counts per page",
            "unique-user estimates (HyperLogLogs hold no ids)",
        ],
        "audit": {"id": audit, "requested_by": requested_by, "person_sha256": digest},
    })))
}

/// `GET /users/{distinct_id}/export`: what is stored about the person, as JSON lines: the
/// profile first (`"record": "profile"`), then every raw event oldest first, then
/// `{"record": "end", "events": n}`. A response without the end line is incomplete (the read
/// failed or took longer than `EXPORT_DEADLINE`): ask again.
pub async fn export(
    state: web::Data<ApiState>,
    AdminProject(project): AdminProject,
    turn: Heavy,
    path: web::Path<UserPath>,
) -> Result<HttpResponse, ApiError> {
    let asked = distinct_id(&path.distinct_id)?;
    let db = state.db().clone();
    // Everything of a linked id is stored under its person.
    let (who, _) = person_of(&db, project.as_str(), asked).await?;
    let profile: Option<DbText> = sqlx::query_scalar(PROFILE_JSON)
        .bind(project.as_str())
        .bind(&who)
        .fetch_optional(&db)
        .await?;
    let project = project.as_str().to_owned();
    // The rows are read by a task into a small channel: a slow reader slows the read, and the
    // deadline frees the connection whatever the reader does.
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<web::Bytes, ApiError>>(16);
    tokio::spawn(async move {
        // The read holds a connection while the client reads: a heavy turn until it ends.
        let _turn = turn;
        let line = |text: &str| Ok(web::Bytes::from(format!("{text}\n")));
        let send_all = async {
            if let Some(profile) = profile {
                tx.send(line(profile.as_str())).await.ok()?;
            }
            let mut rows = sqlx::query_scalar::<_, DbText>(EVENT_JSON)
                .bind(&project)
                .bind(&who)
                .fetch(&db);
            let mut events = 0_u64;
            while let Some(row) = rows.next().await {
                match row {
                    Ok(event) => tx.send(line(event.as_str())).await.ok()?,
                    Err(e) => {
                        tracing::warn!(error = %e, "a person's export failed");
                        return None;
                    }
                }
                events += 1;
            }
            let end = json!({"record": "end", "events": events}).to_string();
            tx.send(line(&end)).await.ok()
        };
        if tokio::time::timeout(EXPORT_DEADLINE, send_all)
            .await
            .is_err()
        {
            tracing::warn!(
                "a person's export ran out of time ({EXPORT_DEADLINE:?}); it ends incomplete"
            );
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(rx))
}

/// The longest an export may take, reading and sending.
const EXPORT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

const PROFILE_JSON: &str = "SELECT JSON_OBJECT('record', 'profile', 'project', project, \
     'distinct_id', distinct_id, 'user_id', user_id, 'anonymous_id', anonymous_id, \
     'first_seen', first_seen, 'last_seen', last_seen, 'total_events', total_events, \
     'total_sessions', total_sessions, 'device_type', device_type, 'browser', browser, 'os', os, \
     'properties', properties) FROM users WHERE project = ? AND distinct_id = ?";

const EVENT_JSON: &str = "SELECT JSON_OBJECT('record', 'event', 'event_id', event_id, \
     'event_type', event_type, 'event_name', event_name, 'user_id', user_id, \
     'anonymous_id', anonymous_id, 'session_id', session_id, 'event_time', event_time, \
     'client_time', client_time, 'received_at', received_at, 'page_url', page_url, \
     'page_title', page_title, 'referrer', referrer, 'element_tag', element_tag, \
     'element_id', element_id, 'element_classes', element_classes, 'element_text', element_text, \
     'element_selector', element_selector, 'click_x', click_x, 'click_y', click_y, \
     'properties', properties, 'user_properties', user_properties, 'context', context, \
     'user_agent', user_agent, 'browser', browser, 'os', os, 'device_type', device_type, 'ip', ip) \
     FROM user_events FORCE INDEX (ix_user_events_user_time) \
     WHERE project = ? AND distinct_id = ? ORDER BY event_time, id";

/// `PUT /users/{distinct_id}/suppression`: stop collecting the person's events (opt-out);
/// what is stored stays until erased.
pub async fn opt_out(
    state: web::Data<ApiState>,
    AdminProject(project): AdminProject,
    path: web::Path<UserPath>,
) -> Result<HttpResponse, ApiError> {
    let who = distinct_id(&path.distinct_id)?;
    let (person, linked) = person_of(state.db(), project.as_str(), who).await?;
    for id in std::iter::once(&person).chain(&linked) {
        suppress(state.db(), project.as_str(), &person_digest(id), OPTED_OUT).await?;
    }
    Ok(HttpResponse::Ok().json(json!({
        "project": project.as_str(), "distinct_id": who, "suppressed": OPTED_OUT,
        "person": person, "linked_ids": linked,
    })))
}

/// `DELETE /users/{distinct_id}/suppression`: collect the person's events again.
pub async fn resume(
    state: web::Data<ApiState>,
    AdminProject(project): AdminProject,
    path: web::Path<UserPath>,
) -> Result<HttpResponse, ApiError> {
    let who = distinct_id(&path.distinct_id)?;
    let (person, linked) = person_of(state.db(), project.as_str(), who).await?;
    let mut lifted = 0;
    for id in std::iter::once(&person).chain(&linked) {
        lifted +=
            sqlx::query("DELETE FROM suppressed_people WHERE project = ? AND person_sha256 = ?")
                .bind(project.as_str())
                .bind(person_digest(id))
                .execute(state.db())
                .await?
                .rows_affected();
    }
    if lifted == 0 {
        return Err(ApiError::not_found(
            "distinct_id",
            format!("{who:?} is not suppressed in project {}", project.as_str()),
        ));
    }
    Ok(HttpResponse::Ok().json(json!({
        "project": project.as_str(), "distinct_id": who, "suppressed": null,
    })))
}
