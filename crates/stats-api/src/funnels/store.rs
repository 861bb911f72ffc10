//! Funnel definitions in `funnel_configs`: read by id or name, listed, inserted, replaced and
//! deleted. A name is unique per project; a clash is the client's error (400 `name`).

use chrono::NaiveDateTime;
use serde::Serialize;
use sqlx::MySqlPool;

use super::spec::{FunnelSpec, OrderMode, Step};
use crate::error::{unavailable, ApiError};
use insightflow_store::DbText;

/// A funnel as stored, with its id and times.
#[derive(Debug, Clone, Serialize)]
pub struct StoredFunnel {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FunnelSpec,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(sqlx::FromRow)]
struct FunnelRow {
    id: u64,
    name: DbText,
    steps: DbText,
    window_seconds: u32,
    order_mode: DbText,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

const FUNNEL_COLUMNS: &str = "id, name, CAST(steps AS CHAR) AS steps, window_seconds, \
     order_mode, created_at, updated_at";

impl TryFrom<FunnelRow> for StoredFunnel {
    type Error = ApiError;

    fn try_from(row: FunnelRow) -> Result<Self, ApiError> {
        let steps: Vec<Step> = serde_json::from_str(row.steps.as_str()).map_err(|e| {
            unavailable(anyhow::anyhow!(
                "funnel {} has unreadable steps: {e}",
                row.id
            ))
        })?;
        Ok(Self {
            id: row.id,
            spec: FunnelSpec {
                name: row.name.0,
                steps,
                window_seconds: row.window_seconds,
                order_mode: OrderMode::parse("order_mode", row.order_mode.as_str())
                    .unwrap_or(OrderMode::Ordered),
            },
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
        })
    }
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
    row.map(StoredFunnel::try_from).transpose()?.ok_or_else(|| {
        ApiError::not_found(
            "funnel",
            format!("no funnel {funnel:?} in project {project}"),
        )
    })
}

/// Every funnel of the project, by id.
pub async fn list(db: &MySqlPool, project: &str) -> Result<Vec<StoredFunnel>, ApiError> {
    let rows: Vec<FunnelRow> = sqlx::query_as(&format!(
        "SELECT {FUNNEL_COLUMNS} FROM funnel_configs WHERE project = ? ORDER BY id"
    ))
    .bind(project)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(StoredFunnel::try_from).collect()
}

/// Stores a new funnel and returns it as stored.
pub async fn insert(
    db: &MySqlPool,
    project: &str,
    spec: &FunnelSpec,
) -> Result<StoredFunnel, ApiError> {
    let steps = serde_json::to_string(&spec.steps).map_err(unavailable)?;
    let done = sqlx::query(
        "INSERT INTO funnel_configs (project, name, steps, window_seconds, order_mode) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(project)
    .bind(&spec.name)
    .bind(steps)
    .bind(spec.window_seconds)
    .bind(spec.order_mode.as_str())
    .execute(db)
    .await
    .map_err(|e| name_taken(e, spec))?;
    find(db, project, &done.last_insert_id().to_string()).await
}

/// Replaces funnel `id`'s definition and returns it as stored.
pub async fn replace(
    db: &MySqlPool,
    project: &str,
    id: u64,
    spec: &FunnelSpec,
) -> Result<StoredFunnel, ApiError> {
    let steps = serde_json::to_string(&spec.steps).map_err(unavailable)?;
    sqlx::query(
        "UPDATE funnel_configs SET name = ?, steps = ?, window_seconds = ?, order_mode = ? \
         WHERE project = ? AND id = ?",
    )
    .bind(&spec.name)
    .bind(steps)
    .bind(spec.window_seconds)
    .bind(spec.order_mode.as_str())
    .bind(project)
    .bind(id)
    .execute(db)
    .await
    .map_err(|e| name_taken(e, spec))?;
    find(db, project, &id.to_string()).await
}

pub async fn delete(db: &MySqlPool, project: &str, id: u64) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM funnel_configs WHERE project = ? AND id = ?")
        .bind(project)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// A duplicate name is the client's error; anything else is the store's.
fn name_taken(e: sqlx::Error, spec: &FunnelSpec) -> ApiError {
    let duplicate = e
        .as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|db| db.number() == 1062);
    if duplicate {
        ApiError::bad(
            "name",
            format!("a funnel named {:?} already exists", spec.name),
        )
    } else {
        unavailable(e)
    }
}
