//! Reading the events a funnel analysis walks: one scan of the covering index
//! `(project, event_type, event_time, distinct_id)` (no row lookups), split in time slices read
//! on separate connections, and beside it one query per step with a property filter for the
//! ids of the matching events of its type (the only rows whose properties are read). Each
//! event read then becomes a `Hit` carrying the set of steps it matches.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDateTime;
use futures::TryStreamExt;
use sqlx::{MySql, MySqlPool, QueryBuilder, Row};

use super::analysis::{Hit, StepSet};
use super::spec::{OrderMode, Step};
use crate::error::ApiError;
use crate::filters::Filter;
use crate::params::TimeRange;
use crate::property::{property_path, value_text};

/// Concurrent slices of a funnel scan: MySQL runs each query on one core, and decoding
/// overlaps with reading.
const SCAN_SLICES: i32 = 2;

/// One event as the scan reads it, without its user (the map it is filed under says who):
/// `type_code` is the position of its type in the list the query names (1-based, as
/// `FIELD()` answers; 0 for none).
struct ScannedEvent {
    id: u64,
    event_time: NaiveDateTime,
    type_code: i64,
}

/// Events filed by user. Rows are read borrowed: a user's id is copied once, when first
/// seen, not once per row (a scan reads millions of rows and thousands of users).
#[derive(Default)]
struct ByUser {
    slots: HashMap<Box<[u8]>, usize>,
    users: Vec<(String, Vec<ScannedEvent>)>,
}

impl ByUser {
    fn push(&mut self, who: &[u8], event: ScannedEvent) {
        let slot = match self.slots.get(who) {
            Some(&slot) => slot,
            None => {
                let slot = self.users.len();
                self.users
                    .push((String::from_utf8_lossy(who).into_owned(), Vec::new()));
                self.slots.insert(who.into(), slot);
                slot
            }
        };
        self.users[slot].1.push(event);
    }
}

/// Every user's hits: the step events (ordered mode), or every event (strict mode), from
/// `range.from` to `horizon`, of the events `filter` accepts (the others do not exist for the
/// analysis: under a filter, strict mode breaks only on a matching event).
pub async fn load_hits(
    db: &MySqlPool,
    project: &str,
    steps: &[Step],
    mode: OrderMode,
    range: TimeRange,
    horizon: NaiveDateTime,
    filter: &Filter,
) -> Result<HashMap<String, Vec<Hit>>, ApiError> {
    let types = distinct_types(steps);
    let filters = futures::future::try_join_all(
        steps
            .iter()
            .enumerate()
            .map(|(n, step)| accepted_ids(db, project, n, step, range.from_naive(), horizon)),
    );
    let scan = scan(
        db,
        project,
        &types,
        mode,
        range.from_naive(),
        horizon,
        filter,
    );
    let (events, accepted) = tokio::try_join!(scan, filters)?;
    let matcher = StepMatcher::new(steps, &types, accepted.into_iter().collect());
    Ok(events
        .into_iter()
        .map(|(who, events)| {
            let hits = events.into_iter().map(|e| matcher.hit(&e)).collect();
            (who, hits)
        })
        .collect())
}

/// The steps' event types, each once, in step order.
fn distinct_types(steps: &[Step]) -> Vec<String> {
    let mut types: Vec<String> = Vec::new();
    for step in steps {
        if !types.contains(&step.event_type) {
            types.push(step.event_type.clone());
        }
    }
    types
}

/// For step `n` with a property filter, the ids of its type's events the filter accepts;
/// `None` for a step without one.
async fn accepted_ids(
    db: &MySqlPool,
    project: &str,
    n: usize,
    step: &Step,
    from: NaiveDateTime,
    horizon: NaiveDateTime,
) -> Result<Option<(usize, HashSet<u64>)>, ApiError> {
    let (Some(property), Some(value)) = (&step.property, &step.value) else {
        return Ok(None);
    };
    let ids = sqlx::query_scalar::<_, u64>(
        "SELECT id FROM user_events FORCE INDEX (ix_user_events_type_time) \
         WHERE project = ? AND event_type = ? AND event_time >= ? AND event_time < ? \
         AND JSON_UNQUOTE(JSON_EXTRACT(properties, ?)) = ?",
    )
    .bind(project)
    .bind(&step.event_type)
    .bind(from)
    .bind(horizon)
    .bind(property_path("steps", property)?)
    .bind(value_text(value).unwrap_or_default())
    .fetch_all(db)
    .await?;
    Ok(Some((n, ids.into_iter().collect())))
}

/// The events of `[from, horizon)` by user, read in `SCAN_SLICES` time slices at once.
async fn scan(
    db: &MySqlPool,
    project: &str,
    types: &[String],
    mode: OrderMode,
    from: NaiveDateTime,
    horizon: NaiveDateTime,
    filter: &Filter,
) -> Result<HashMap<String, Vec<ScannedEvent>>, ApiError> {
    let span = horizon - from;
    let bounds: Vec<NaiveDateTime> = (0..=SCAN_SLICES)
        .map(|i| {
            if i == SCAN_SLICES {
                horizon
            } else {
                from + span / SCAN_SLICES * i
            }
        })
        .collect();
    let slices = bounds
        .windows(2)
        .map(|slice| scan_slice(db, project, types, mode, slice[0], slice[1], filter));
    let mut users: HashMap<String, Vec<ScannedEvent>> = HashMap::new();
    for part in futures::future::try_join_all(slices).await? {
        for (who, events) in part.users {
            users.entry(who).or_default().extend(events);
        }
    }
    Ok(users)
}

async fn scan_slice(
    db: &MySqlPool,
    project: &str,
    types: &[String],
    mode: OrderMode,
    from: NaiveDateTime,
    to: NaiveDateTime,
    filter: &Filter,
) -> Result<ByUser, sqlx::Error> {
    let mut q =
        QueryBuilder::<MySql>::new("SELECT distinct_id, id, event_time, CAST(FIELD(event_type");
    for t in types {
        q.push(", ").push_bind(t.clone());
    }
    q.push(") AS SIGNED) AS type_code FROM user_events FORCE INDEX (ix_user_events_type_time_user) WHERE project = ")
        .push_bind(project.to_owned())
        .push(" AND event_time >= ")
        .push_bind(from)
        .push(" AND event_time < ")
        .push_bind(to);
    if mode == OrderMode::Ordered {
        q.push(" AND event_type IN (");
        let mut list = q.separated(", ");
        for t in types {
            list.push_bind(t.clone());
        }
        q.push(")");
    }
    // The covering index has none of the filter's columns: a filter costs a row read each.
    filter.push_sql(&mut q);
    let mut users = ByUser::default();
    let mut rows = q.build().fetch(db);
    while let Some(row) = rows.try_next().await? {
        // The id column is binary-collated: read as bytes, as `DbText` does.
        let who: &[u8] = row.try_get_unchecked(0)?;
        let event = ScannedEvent {
            id: row.try_get(1)?,
            event_time: row.try_get(2)?,
            type_code: row.try_get(3)?,
        };
        users.push(who, event);
    }
    Ok(users)
}

/// Which steps an event matches: its type is the step's, and the step's property filter (if
/// any) accepted its id.
struct StepMatcher {
    /// Per step: the 1-based position of its type in the scanned type list.
    type_codes: Vec<i64>,
    /// Per step: the ids its property filter accepts; `None` when it has no filter.
    accepts: Vec<Option<HashSet<u64>>>,
}

impl StepMatcher {
    fn new(steps: &[Step], types: &[String], accepted: Vec<Option<(usize, HashSet<u64>)>>) -> Self {
        let type_codes = steps
            .iter()
            .map(|step| {
                types
                    .iter()
                    .position(|t| *t == step.event_type)
                    .map_or(0, |i| i as i64 + 1)
            })
            .collect();
        let mut accepts = vec![None; steps.len()];
        for (n, ids) in accepted.into_iter().flatten() {
            accepts[n] = Some(ids);
        }
        Self {
            type_codes,
            accepts,
        }
    }

    fn hit(&self, event: &ScannedEvent) -> Hit {
        let mut steps = StepSet::default();
        if event.type_code > 0 {
            for (step, code) in self.type_codes.iter().enumerate() {
                if *code == event.type_code
                    && self.accepts[step]
                        .as_ref()
                        .is_none_or(|ids| ids.contains(&event.id))
                {
                    steps.insert(step);
                }
            }
        }
        Hit {
            time_ms: event.event_time.and_utc().timestamp_millis(),
            id: event.id,
            steps,
        }
    }
}
