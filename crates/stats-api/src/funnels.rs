//! Funnel definitions (CRUD), funnel analysis and the A -> B conversion rate.
//!
//! Analysis is per user: each user's earliest step-1 event inside the range is their entry;
//! every later step must follow within `window_seconds` of that entry. In `ordered` mode other
//! events may happen between steps; in `strict` mode each step must be the user's very next
//! event. Events are ordered by event time, then by arrival (row id).

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use chrono::{Duration, NaiveDateTime};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::MySqlPool;

use super::auth::{AdminProject, Project};
use super::error::{unavailable, ApiError};
use super::limits::Heavy;
use super::params::{self, RangeParams, TimeRange};
use super::ApiState;
use insightflow_store::DbText;

pub const MAX_STEPS: usize = 10;
pub const MAX_WINDOW_SECONDS: u32 = 90 * 86_400;
/// Concurrent slices of a funnel scan.
const SCAN_SLICES: i32 = 2;

/// One step: an event type, optionally only events whose property equals a value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Step {
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderMode {
    Ordered,
    Strict,
}

impl OrderMode {
    fn parse(field: &'static str, raw: &str) -> Result<Self, ApiError> {
        match raw {
            "ordered" => Ok(Self::Ordered),
            "strict" => Ok(Self::Strict),
            other => Err(ApiError::bad(
                field,
                format!("{other:?} is not one of ordered, strict"),
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Ordered => "ordered",
            Self::Strict => "strict",
        }
    }
}

/// A funnel as the API accepts it.
#[derive(Debug, Deserialize)]
pub struct FunnelBody {
    pub name: Option<String>,
    pub steps: Option<Vec<Step>>,
    pub window_seconds: Option<i64>,
    pub order_mode: Option<String>,
}

/// A validated funnel definition.
#[derive(Debug, Clone, Serialize)]
pub struct FunnelSpec {
    pub name: String,
    pub steps: Vec<Step>,
    pub window_seconds: u32,
    pub order_mode: OrderMode,
}

/// The JSON path of a (possibly nested, dot-separated) property name.
pub fn property_path(field: &'static str, name: &str) -> Result<String, ApiError> {
    let segments: Vec<&str> = name.split('.').collect();
    let valid = name.len() <= 128
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !valid {
        return Err(ApiError::bad(
            field,
            format!("{name:?} is not a property name ([A-Za-z0-9_-], '.' for nesting)"),
        ));
    }
    Ok(format!(
        "${}",
        segments
            .iter()
            .map(|s| format!(".\"{s}\""))
            .collect::<String>()
    ))
}

/// How a filter value compares with `JSON_UNQUOTE(JSON_EXTRACT(...))`.
fn value_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl FunnelSpec {
    pub fn parse(body: FunnelBody) -> Result<Self, ApiError> {
        let name = body
            .name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad("name", "is required"))?;
        if name.chars().count() > 128 {
            return Err(ApiError::bad("name", "has at most 128 characters"));
        }
        if name.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::bad(
                "name",
                "must not be a number (numbers are funnel ids)",
            ));
        }
        let steps = body
            .steps
            .ok_or_else(|| ApiError::bad("steps", "is required"))?;
        if !(2..=MAX_STEPS).contains(&steps.len()) {
            return Err(ApiError::bad(
                "steps",
                format!("a funnel has 2 to {MAX_STEPS} steps"),
            ));
        }
        let mut parsed = Vec::with_capacity(steps.len());
        for step in steps {
            let event_type = params::event_type("steps", &step.event_type)?;
            match (&step.property, &step.value) {
                (None, None) => {}
                (Some(p), Some(v)) => {
                    property_path("steps", p)?;
                    if value_text(v).is_none() {
                        return Err(ApiError::bad(
                            "steps",
                            "a step's value must be a string, number or boolean",
                        ));
                    }
                }
                _ => {
                    return Err(ApiError::bad(
                        "steps",
                        "a step's property and value go together",
                    ))
                }
            }
            parsed.push(Step { event_type, ..step });
        }
        let window_seconds = match body.window_seconds {
            None => 86_400,
            Some(w) if (1..=i64::from(MAX_WINDOW_SECONDS)).contains(&w) => w as u32,
            Some(_) => {
                return Err(ApiError::bad(
                    "window_seconds",
                    format!("must be from 1 to {MAX_WINDOW_SECONDS}"),
                ))
            }
        };
        let order_mode = OrderMode::parse(
            "order_mode",
            body.order_mode.as_deref().unwrap_or("ordered"),
        )?;
        Ok(Self {
            name,
            steps: parsed,
            window_seconds,
            order_mode,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredFunnel {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FunnelSpec,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

type FunnelRow = (
    u64,
    DbText,
    DbText,
    u32,
    DbText,
    NaiveDateTime,
    NaiveDateTime,
);

const FUNNEL_COLUMNS: &str =
    "id, name, CAST(steps AS CHAR), window_seconds, order_mode, created_at, updated_at";

fn stored(row: FunnelRow) -> Result<StoredFunnel, ApiError> {
    let (id, name, steps, window_seconds, order_mode, created, updated) = row;
    let steps: Vec<Step> = serde_json::from_str(steps.as_str())
        .map_err(|e| unavailable(anyhow::anyhow!("funnel {id} has unreadable steps: {e}")))?;
    Ok(StoredFunnel {
        id,
        spec: FunnelSpec {
            name: name.0,
            steps,
            window_seconds,
            order_mode: OrderMode::parse("order_mode", order_mode.as_str())
                .unwrap_or(OrderMode::Ordered),
        },
        created_at: created.and_utc(),
        updated_at: updated.and_utc(),
    })
}

/// A funnel by id (digits) or by name; unknown -> 404 naming the funnel.
pub async fn find(db: &MySqlPool, project: &str, funnel: &str) -> Result<StoredFunnel, ApiError> {
    let row: Option<FunnelRow> = if let Ok(id) = funnel.parse::<u64>() {
        sqlx::query_as(&format!(
            "SELECT {FUNNEL_COLUMNS} FROM funnel_configs WHERE project = ? AND id = ?"
        ))
        .bind(project)
        .bind(id)
        .fetch_optional(db)
        .await
    } else {
        sqlx::query_as(&format!(
            "SELECT {FUNNEL_COLUMNS} FROM funnel_configs WHERE project = ? AND name = ?"
        ))
        .bind(project)
        .bind(funnel)
        .fetch_optional(db)
        .await
    }?;
    row.map(stored).transpose()?.ok_or_else(|| {
        ApiError::not_found(
            "funnel",
            format!("no funnel {funnel:?} in project {project}"),
        )
    })
}

/// `GET /funnels`: every funnel of the project.
pub async fn list(state: web::Data<ApiState>, project: Project) -> Result<HttpResponse, ApiError> {
    let rows: Vec<FunnelRow> = sqlx::query_as(&format!(
        "SELECT {FUNNEL_COLUMNS} FROM funnel_configs WHERE project = ? ORDER BY id"
    ))
    .bind(project.as_str())
    .fetch_all(state.db())
    .await?;
    let funnels = rows
        .into_iter()
        .map(stored)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(json!({"project": project.as_str(), "funnels": funnels})))
}

fn is_duplicate(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|db| db.number() == 1062)
}

/// `POST /funnels`: creates a funnel; 201 with its id.
pub async fn create(
    state: web::Data<ApiState>,
    AdminProject(project): AdminProject,
    body: web::Json<FunnelBody>,
) -> Result<HttpResponse, ApiError> {
    let spec = FunnelSpec::parse(body.into_inner())?;
    let steps = serde_json::to_string(&spec.steps).map_err(unavailable)?;
    let result = sqlx::query(
        "INSERT INTO funnel_configs (project, name, steps, window_seconds, order_mode) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(project.as_str())
    .bind(&spec.name)
    .bind(steps)
    .bind(spec.window_seconds)
    .bind(spec.order_mode.as_str())
    .execute(state.db())
    .await;
    match result {
        Ok(done) => {
            let funnel = find(
                state.db(),
                project.as_str(),
                &done.last_insert_id().to_string(),
            )
            .await?;
            Ok(HttpResponse::Created().json(funnel))
        }
        Err(e) if is_duplicate(&e) => Err(ApiError::bad(
            "name",
            format!("a funnel named {:?} already exists", spec.name),
        )),
        Err(e) => Err(unavailable(e)),
    }
}

/// `GET /funnels/{funnel}` (id or name).
pub async fn get(
    state: web::Data<ApiState>,
    project: Project,
    path: web::Path<FunnelPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(find(state.db(), project.as_str(), &path.funnel).await?))
}

#[derive(Debug, Deserialize)]
pub struct FunnelPath {
    pub funnel: String,
}

/// `PUT /funnels/{funnel}`: replaces the definition.
pub async fn update(
    state: web::Data<ApiState>,
    AdminProject(project): AdminProject,
    path: web::Path<FunnelPath>,
    body: web::Json<FunnelBody>,
) -> Result<HttpResponse, ApiError> {
    let existing = find(state.db(), project.as_str(), &path.funnel).await?;
    let spec = FunnelSpec::parse(body.into_inner())?;
    let steps = serde_json::to_string(&spec.steps).map_err(unavailable)?;
    sqlx::query(
        "UPDATE funnel_configs SET name = ?, steps = ?, window_seconds = ?, order_mode = ? \
         WHERE project = ? AND id = ?",
    )
    .bind(&spec.name)
    .bind(steps)
    .bind(spec.window_seconds)
    .bind(spec.order_mode.as_str())
    .bind(project.as_str())
    .bind(existing.id)
    .execute(state.db())
    .await
    .map_err(|e| {
        if is_duplicate(&e) {
            ApiError::bad(
                "name",
                format!("a funnel named {:?} already exists", spec.name),
            )
        } else {
            unavailable(e)
        }
    })?;
    let funnel = find(state.db(), project.as_str(), &existing.id.to_string()).await?;
    Ok(HttpResponse::Ok().json(funnel))
}

/// `DELETE /funnels/{funnel}`.
pub async fn delete(
    state: web::Data<ApiState>,
    AdminProject(project): AdminProject,
    path: web::Path<FunnelPath>,
) -> Result<HttpResponse, ApiError> {
    let existing = find(state.db(), project.as_str(), &path.funnel).await?;
    sqlx::query("DELETE FROM funnel_configs WHERE project = ? AND id = ?")
        .bind(project.as_str())
        .bind(existing.id)
        .execute(state.db())
        .await?;
    Ok(HttpResponse::Ok().json(json!({"deleted": existing.id, "name": existing.spec.name})))
}

/// One user's event, reduced to what the analysis needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub time_ms: i64,
    pub id: u64,
    /// Bit `i` set when the event matches step `i`.
    pub steps: u32,
}

/// How far each user got, and when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepResult {
    pub users: u64,
    pub conversion_from_first: f64,
    pub conversion_from_previous: f64,
    pub drop_off: u64,
    pub median_seconds_from_previous: Option<f64>,
    pub median_seconds_from_first: Option<f64>,
}

/// The bounds of an analysis: entries in `[entry_from, entry_to)`, later steps at most
/// `window_ms` after the entry and before `horizon_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub entry_from: i64,
    pub entry_to: i64,
    pub window_ms: Option<i64>,
    pub horizon_ms: i64,
}

/// For one user's hits sorted by (time, id): the times at which each reached step was done.
pub fn walk(hits: &[Hit], n_steps: usize, mode: OrderMode, bounds: Bounds) -> Vec<i64> {
    let Some(entry) = hits.iter().position(|h| {
        h.steps & 1 == 1 && h.time_ms >= bounds.entry_from && h.time_ms < bounds.entry_to
    }) else {
        return Vec::new();
    };
    let start = hits[entry].time_ms;
    // Exclusive: a step exactly `window` after the entry still counts.
    let deadline = bounds.window_ms.map_or(bounds.horizon_ms, |w| {
        (start + w + 1).min(bounds.horizon_ms)
    });
    let mut times = vec![start];
    let mut at = entry;
    for step in 1..n_steps {
        let bit = 1u32 << step;
        let next = match mode {
            OrderMode::Ordered => hits
                .iter()
                .enumerate()
                .skip(at + 1)
                .take_while(|(_, h)| h.time_ms < deadline)
                .find(|(_, h)| h.steps & bit != 0)
                .map(|(i, _)| i),
            OrderMode::Strict => hits
                .get(at + 1)
                .filter(|h| h.steps & bit != 0 && h.time_ms < deadline)
                .map(|_| at + 1),
        };
        match next {
            Some(i) => {
                at = i;
                times.push(hits[i].time_ms);
            }
            None => break,
        }
    }
    times
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Per-step figures over every user's walk.
pub fn summarize(
    users: HashMap<String, Vec<Hit>>,
    n_steps: usize,
    mode: OrderMode,
    bounds: Bounds,
) -> Vec<StepResult> {
    let mut reached = vec![0u64; n_steps];
    let mut from_previous: Vec<Vec<f64>> = vec![Vec::new(); n_steps];
    let mut from_first: Vec<Vec<f64>> = vec![Vec::new(); n_steps];
    for (_, mut hits) in users {
        hits.sort_unstable();
        let times = walk(&hits, n_steps, mode, bounds);
        for (step, t) in times.iter().enumerate() {
            reached[step] += 1;
            if step > 0 {
                from_previous[step].push((t - times[step - 1]) as f64 / 1000.0);
                from_first[step].push((t - times[0]) as f64 / 1000.0);
            }
        }
    }
    (0..n_steps)
        .map(|step| {
            let previous = if step == 0 {
                reached[0]
            } else {
                reached[step - 1]
            };
            StepResult {
                users: reached[step],
                conversion_from_first: ratio(reached[step], reached[0]),
                conversion_from_previous: ratio(reached[step], previous),
                drop_off: previous - reached[step],
                median_seconds_from_previous: median(&mut from_previous[step]),
                median_seconds_from_first: median(&mut from_first[step]),
            }
        })
        .collect()
}

/// Loads the hits of the analysis: the step events (ordered mode), or every event (strict
/// mode), from `from` to the horizon, in one scan of the covering index
/// `(project, event_type, event_time, distinct_id)` (no row lookups). Steps with a property
/// filter add one query each for the ids of the matching events of their type, the only
/// rows whose properties are read.
pub async fn load_hits(
    db: &MySqlPool,
    project: &str,
    steps: &[Step],
    mode: OrderMode,
    range: TimeRange,
    horizon: NaiveDateTime,
) -> Result<HashMap<String, Vec<Hit>>, ApiError> {
    let mut types: Vec<&str> = Vec::new();
    for step in steps {
        if !types.contains(&step.event_type.as_str()) {
            types.push(step.event_type.as_str());
        }
    }
    // Per step: its type's position in `types` (1-based, as FIELD() answers) and the query
    // for the ids its property filter accepts; these run concurrently with the scan.
    let codes: Vec<i64> = steps
        .iter()
        .map(|step| {
            types
                .iter()
                .position(|t| *t == step.event_type)
                .map_or(0, |i| i as i64 + 1)
        })
        .collect();
    let mut filters = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        if let (Some(property), Some(value)) = (&step.property, &step.value) {
            let query = sqlx::query_scalar::<_, u64>(
                "SELECT id FROM user_events FORCE INDEX (ix_user_events_type_time) \
                 WHERE project = ? AND event_type = ? AND event_time >= ? AND event_time < ? \
                 AND JSON_UNQUOTE(JSON_EXTRACT(properties, ?)) = ?",
            )
            .bind(project.to_owned())
            .bind(step.event_type.clone())
            .bind(range.from_naive())
            .bind(horizon)
            .bind(property_path("steps", property)?)
            .bind(value_text(value).unwrap_or_default())
            .fetch_all(db);
            filters.push(async move {
                query.await.map(|ids| {
                    (
                        n,
                        ids.into_iter().collect::<std::collections::HashSet<u64>>(),
                    )
                })
            });
        }
    }

    // The scan is split in time slices read on separate connections: MySQL runs each query
    // on one core, and decoding overlaps with reading.
    let start = range.from_naive();
    let span = horizon - start;
    let bounds: Vec<NaiveDateTime> = (0..=SCAN_SLICES)
        .map(|i| {
            if i == SCAN_SLICES {
                horizon
            } else {
                start + span / SCAN_SLICES * i
            }
        })
        .collect();
    let scans = bounds.windows(2).map(|slice| {
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "SELECT distinct_id, id, event_time, CAST(FIELD(event_type",
        );
        for t in &types {
            q.push(", ").push_bind(t.to_string());
        }
        q.push(") AS SIGNED) FROM user_events FORCE INDEX (ix_user_events_type_time_user) WHERE project = ")
            .push_bind(project.to_owned())
            .push(" AND event_time >= ")
            .push_bind(slice[0])
            .push(" AND event_time < ")
            .push_bind(slice[1]);
        if mode == OrderMode::Ordered {
            q.push(" AND event_type IN (");
            let mut list = q.separated(", ");
            for t in &types {
                list.push_bind(t.to_string());
            }
            q.push(")");
        }
        async move {
            let mut users: HashMap<String, Vec<Hit>> = HashMap::new();
            let mut rows = q
                .build_query_as::<(DbText, u64, NaiveDateTime, i64)>()
                .fetch(db);
            while let Some((who, id, at, code)) = rows.try_next().await? {
                // The type code for now; turned into the step mask once the filters are in.
                users.entry(who.0).or_default().push(Hit {
                    time_ms: at.and_utc().timestamp_millis(),
                    id,
                    steps: code as u32,
                });
            }
            Ok::<_, sqlx::Error>(users)
        }
    });
    let scan = async {
        let mut parts = futures::future::try_join_all(scans).await?.into_iter();
        let mut users = parts.next().unwrap_or_default();
        for part in parts {
            for (who, hits) in part {
                users.entry(who).or_default().extend(hits);
            }
        }
        Ok::<_, sqlx::Error>(users)
    };
    let (mut users, accepted) = tokio::try_join!(scan, futures::future::try_join_all(filters))?;
    let mut accepts: Vec<Option<std::collections::HashSet<u64>>> = vec![None; steps.len()];
    for (n, ids) in accepted {
        accepts[n] = Some(ids);
    }
    for hits in users.values_mut() {
        for hit in hits.iter_mut() {
            let code = i64::from(hit.steps);
            let mut mask = 0u32;
            if code > 0 {
                for (step, step_code) in codes.iter().enumerate() {
                    if *step_code == code
                        && accepts[step]
                            .as_ref()
                            .is_none_or(|ids| ids.contains(&hit.id))
                    {
                        mask |= 1 << step;
                    }
                }
            }
            hit.steps = mask;
        }
    }
    Ok(users)
}

#[derive(Debug, Deserialize)]
pub struct AnalysisQuery {
    #[serde(flatten)]
    pub range: RangeParams,
    pub mode: Option<String>,
}

/// `GET /funnels/{funnel}/analysis?from=&to=&mode=strict`: users per step, conversion from
/// the first and previous step, drop-off and median time to convert.
pub async fn analysis(
    state: web::Data<ApiState>,
    project: Project,
    _turn: Heavy,
    path: web::Path<FunnelPath>,
    query: web::Query<AnalysisQuery>,
) -> Result<HttpResponse, ApiError> {
    let (range, _) = query.range.resolve(Duration::days(7))?;
    let funnel = find(state.db(), project.as_str(), &path.funnel).await?;
    let mode = match query.mode.as_deref() {
        None => funnel.spec.order_mode,
        Some(raw) => OrderMode::parse("mode", raw)?,
    };
    let window_ms = i64::from(funnel.spec.window_seconds) * 1000;
    let horizon = range.to + Duration::milliseconds(window_ms);
    let as_of = state.as_of(&project).await?;
    let users = load_hits(
        state.db(),
        project.as_str(),
        &funnel.spec.steps,
        mode,
        range,
        horizon.naive_utc(),
    )
    .await?;
    let bounds = Bounds {
        entry_from: range.from.timestamp_millis(),
        entry_to: range.to.timestamp_millis(),
        window_ms: Some(window_ms),
        horizon_ms: horizon.timestamp_millis(),
    };
    let results = summarize(users, funnel.spec.steps.len(), mode, bounds);
    let steps: Vec<serde_json::Value> = funnel
        .spec
        .steps
        .iter()
        .zip(&results)
        .enumerate()
        .map(|(i, (step, result))| {
            let mut value = serde_json::to_value(result).unwrap_or_default();
            value["step"] = json!(i + 1);
            value["event_type"] = json!(step.event_type);
            if let Some(p) = &step.property {
                value["property"] = json!(p);
                value["value"] = json!(step.value);
            }
            value
        })
        .collect();
    let overall = results
        .last()
        .map_or(0.0, |last| last.conversion_from_first);
    Ok(HttpResponse::Ok().json(json!({
        "project": project.as_str(),
        "funnel": funnel,
        "mode": mode.as_str(),
        "range": range.as_json(),
        "steps": steps,
        "overall_conversion": overall,
        "exact": true,
        "source": "mysql",
        "as_of": as_of,
    })))
}

#[derive(Debug, Deserialize)]
pub struct ConversionQuery {
    pub start_event: Option<String>,
    pub end_event: Option<String>,
    #[serde(flatten)]
    pub range: RangeParams,
    pub window_seconds: Option<String>,
}

/// `GET /conversion?start_event=cart_add&end_event=purchase&from=&to=`: of the users who did
/// A in the range, how many then did B (in the range, or within `window_seconds` of their
/// first A when given).
pub async fn conversion(
    state: web::Data<ApiState>,
    project: Project,
    _turn: Heavy,
    query: web::Query<ConversionQuery>,
) -> Result<HttpResponse, ApiError> {
    let required = |field: &'static str, v: &Option<String>| {
        v.as_deref()
            .ok_or_else(|| ApiError::bad(field, "is required"))
            .and_then(|raw| params::event_type(field, raw))
    };
    let start = required("start_event", &query.start_event)?;
    let end = required("end_event", &query.end_event)?;
    let (range, _) = query.range.resolve(Duration::hours(24))?;
    let window_seconds = query
        .window_seconds
        .as_deref()
        .map(|raw| params::limit("window_seconds", Some(raw), 0, MAX_WINDOW_SECONDS))
        .transpose()?;
    let window_ms = window_seconds.map(|w| i64::from(w) * 1000);
    let horizon = range.to + Duration::milliseconds(window_ms.unwrap_or(0));
    let steps = vec![
        Step {
            event_type: start.clone(),
            property: None,
            value: None,
        },
        Step {
            event_type: end.clone(),
            property: None,
            value: None,
        },
    ];
    let as_of = state.as_of(&project).await?;
    let users = load_hits(
        state.db(),
        project.as_str(),
        &steps,
        OrderMode::Ordered,
        range,
        horizon.naive_utc(),
    )
    .await?;
    let bounds = Bounds {
        entry_from: range.from.timestamp_millis(),
        entry_to: range.to.timestamp_millis(),
        window_ms,
        horizon_ms: horizon.timestamp_millis(),
    };
    let results = summarize(users, 2, OrderMode::Ordered, bounds);
    Ok(HttpResponse::Ok().json(json!({
        "project": project.as_str(),
        "start_event": start,
        "end_event": end,
        "range": range.as_json(),
        "window_seconds": window_seconds,
        "start_users": results[0].users,
        "converted_users": results[1].users,
        "conversion_rate": results[1].conversion_from_first,
        "median_seconds_to_convert": results[1].median_seconds_from_previous,
        "exact": true,
        "source": "mysql",
        "as_of": as_of,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(time_ms: i64, steps: u32) -> Hit {
        Hit {
            time_ms,
            id: time_ms as u64,
            steps,
        }
    }

    const OPEN: Bounds = Bounds {
        entry_from: 0,
        entry_to: 1_000,
        window_ms: Some(100),
        horizon_ms: 10_000,
    };

    #[test]
    fn ordered_mode_allows_other_events_between_steps() {
        let hits = [hit(10, 1), hit(20, 0), hit(30, 2), hit(40, 4)];
        assert_eq!(walk(&hits, 3, OrderMode::Ordered, OPEN), vec![10, 30, 40]);
        assert_eq!(walk(&hits, 3, OrderMode::Strict, OPEN), vec![10]);
    }

    #[test]
    fn the_window_counts_from_the_earliest_entry() {
        let hits = [hit(10, 1), hit(50, 1), hit(120, 2)];
        assert_eq!(walk(&hits, 2, OrderMode::Ordered, OPEN), vec![10]);
        let hits = [hit(10, 1), hit(110, 2)];
        assert_eq!(walk(&hits, 2, OrderMode::Ordered, OPEN), vec![10, 110]);
    }

    #[test]
    fn entries_outside_the_range_do_not_count() {
        let hits = [hit(1_500, 1), hit(1_510, 2)];
        assert!(walk(&hits, 2, OrderMode::Ordered, OPEN).is_empty());
    }

    #[test]
    fn summary_gives_conversion_drop_off_and_medians() {
        let users = HashMap::from([
            ("a".to_owned(), vec![hit(0, 1), hit(10_000, 2)]),
            ("b".to_owned(), vec![hit(0, 1), hit(30_000, 2)]),
            ("c".to_owned(), vec![hit(0, 1)]),
            ("d".to_owned(), vec![hit(5, 2)]),
        ]);
        let bounds = Bounds {
            entry_from: 0,
            entry_to: 100,
            window_ms: None,
            horizon_ms: 100_000,
        };
        let r = summarize(users, 2, OrderMode::Ordered, bounds);
        assert_eq!(r[0].users, 3);
        assert_eq!(r[1].users, 2);
        assert_eq!(r[1].drop_off, 1);
        assert!((r[1].conversion_from_first - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r[1].median_seconds_from_previous, Some(20.0));
    }
}
