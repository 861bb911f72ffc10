//! What stores an event once: `event_ids`, one narrow row per stored event, keyed by
//! `(project, event_id)`, with the message that stored it (its origin) and the stored copy's
//! event time.
//!
//! `user_events` is partitioned by event time, and MariaDB lets a partitioned table have only
//! unique keys that include the partitioning column; a client's retry of an event carries the
//! same event id but may get another event time (the gateway corrects the client's clock with
//! the request's `sent_at`), so no unique key of `user_events` could catch it. The batch's
//! transaction inserts here before it inserts the raw rows: a concurrent writer of the same
//! event fails on this primary key (and `mysql::write` retries with a lookup first).
//!
//! Rows expire with the raw events: the retention job deletes those whose event time is
//! before the day it drops raw events up to, in chunks, before it drops those days
//! (`crate::retention`). A row never goes before its raw event.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::{MySql, MySqlPool, QueryBuilder, Transaction};

use super::mysql::Sourced;
use super::DbText;

/// Ids per statement (two placeholders each in `record`).
const IDS_PER_STATEMENT: usize = 1000;

/// The events of a batch already stored, by project and event id, with their origin
/// (partition, offset), `None` for rows stored before origins were recorded.
pub type StoredOrigins = HashMap<String, HashMap<String, Option<(i32, i64)>>>;

/// Which of `events` are stored already, and by which message.
pub async fn stored_origins(
    tx: &mut Transaction<'_, MySql>,
    events: &[Sourced<'_>],
) -> Result<StoredOrigins, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        event_id: DbText,
        kafka_partition: Option<i32>,
        kafka_offset: Option<i64>,
    }
    let mut by_project: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in events {
        by_project
            .entry(s.event.project().as_str())
            .or_default()
            .push(s.event.event_id().as_str());
    }
    let mut stored = StoredOrigins::new();
    for (project, ids) in by_project {
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let mut q = QueryBuilder::<MySql>::new(
                "SELECT event_id, kafka_partition, kafka_offset FROM event_ids WHERE project = ",
            );
            q.push_bind(project).push(" AND event_id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            let rows: Vec<Row> = q.build_query_as().fetch_all(&mut **tx).await?;
            if rows.is_empty() {
                continue;
            }
            let ids = stored.entry(project.to_owned()).or_default();
            for row in rows {
                let origin = row.kafka_partition.zip(row.kafka_offset);
                ids.insert(row.event_id.0, origin);
            }
        }
    }
    Ok(stored)
}

/// Records `fresh` (events no message stored before, each once) as stored by their messages.
/// An event another transaction recorded meanwhile fails the statement with a duplicate key
/// (MySQL error 1062), which `mysql::write` takes for a lost race.
pub async fn record(
    tx: &mut Transaction<'_, MySql>,
    fresh: &[Sourced<'_>],
) -> Result<u64, sqlx::Error> {
    let mut recorded = 0;
    for chunk in fresh.chunks(IDS_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO event_ids (project, event_id, event_time, kafka_partition, kafka_offset) ",
        );
        q.push_values(chunk, |mut row, s| {
            row.push_bind(s.event.project().as_str())
                .push_bind(s.event.event_id().as_str())
                .push_bind(s.event.timestamp().naive_utc())
                .push_bind(s.source.partition)
                .push_bind(s.source.offset);
        });
        recorded += q.build().execute(&mut **tx).await?.rows_affected();
    }
    Ok(recorded)
}

/// Deletes the rows of events older than `before`, `chunk` rows at a time (each its own
/// short transaction). Returns the rows deleted.
pub async fn expire_older_than(
    pool: &MySqlPool,
    before: DateTime<Utc>,
    chunk: u64,
) -> Result<u64, sqlx::Error> {
    super::mysql::delete_in_chunks(pool, "event_ids", before, chunk).await
}
