//! Funnels: definitions (CRUD), funnel analysis and the A -> B conversion rate. The HTTP
//! handlers are here; the definition and its validation in `spec`, its rows in `store`, the
//! reading of events in `scan` and the computation in `analysis`.

pub mod analysis;
pub mod scan;
pub mod spec;
pub mod store;

use crate::filters::Filter;
use actix_web::{web, HttpResponse};
use chrono::Duration;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{AdminProject, Project};
use crate::envelope::Answer;
use crate::error::ApiError;
use crate::limits::Heavy;
use crate::params::{self, RangeParams};
use crate::segments::Segmentation;
use crate::ApiState;
use analysis::{summarize, Bounds, StepResult};
use scan::load_hits;
pub use spec::{FunnelBody, FunnelSpec, OrderMode, Step, MAX_STEPS, MAX_WINDOW_SECONDS};
pub use store::{find, StoredFunnel};

/// `GET /funnels`: every funnel of the project.
pub async fn list(state: web::Data<ApiState>, project: Project) -> Result<HttpResponse, ApiError> {
    let funnels = store::list(state.db(), project.as_str()).await?;
    Ok(HttpResponse::Ok().json(json!({"project": project.as_str(), "funnels": funnels})))
}

/// `POST /funnels`: creates a funnel; 201 with its id.
pub async fn create(
    state: web::Data<ApiState>,
    AdminProject(project): AdminProject,
    body: web::Json<FunnelBody>,
) -> Result<HttpResponse, ApiError> {
    let spec = FunnelSpec::parse(body.into_inner())?;
    let funnel = store::insert(state.db(), project.as_str(), &spec).await?;
    Ok(HttpResponse::Created().json(funnel))
}

#[derive(Debug, Deserialize)]
pub struct FunnelPath {
    pub funnel: String,
}

/// `GET /funnels/{funnel}` (id or name).
pub async fn get(
    state: web::Data<ApiState>,
    project: Project,
    path: web::Path<FunnelPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(find(state.db(), project.as_str(), &path.funnel).await?))
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
    let funnel = store::replace(state.db(), project.as_str(), existing.id, &spec).await?;
    Ok(HttpResponse::Ok().json(funnel))
}

/// `DELETE /funnels/{funnel}`.
pub async fn delete(
    state: web::Data<ApiState>,
    AdminProject(project): AdminProject,
    path: web::Path<FunnelPath>,
) -> Result<HttpResponse, ApiError> {
    let existing = find(state.db(), project.as_str(), &path.funnel).await?;
    store::delete(state.db(), project.as_str(), existing.id).await?;
    Ok(HttpResponse::Ok().json(json!({"deleted": existing.id, "name": existing.spec.name})))
}

#[derive(Debug, Deserialize)]
pub struct AnalysisQuery {
    #[serde(flatten)]
    pub range: RangeParams,
    pub mode: Option<String>,
    pub filter: Option<String>,
    pub include_bots: Option<String>,
    pub by: Option<String>,
    pub by2: Option<String>,
    pub by_limit: Option<String>,
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
    let filter = Filter::parse(query.filter.as_deref(), query.include_bots.as_deref())?;
    let by = Segmentation::parse(
        query.by.as_deref(),
        query.by2.as_deref(),
        query.by_limit.as_deref(),
    )?;
    let as_of = state.as_of(&project).await?;
    let users = load_hits(
        state.db(),
        project.as_str(),
        &funnel.spec.steps,
        mode,
        range,
        horizon.naive_utc(),
        &filter,
    )
    .await?;
    let bounds = Bounds {
        entry_from: range.from.timestamp_millis(),
        entry_to: range.to.timestamp_millis(),
        window_ms: Some(window_ms),
        horizon_ms: horizon.timestamp_millis(),
    };
    let n_steps = funnel.spec.steps.len();
    let figures = |users| {
        let results = summarize(users, n_steps, mode, bounds);
        json!({
            "steps": step_values(&funnel.spec.steps, &results),
            "overall_conversion": overall(&results),
        })
    };
    let segments = match &by {
        Some(by) => Some(
            by.people_segments(
                state.db(),
                project.as_str(),
                &funnel.spec.steps[0].event_type,
                (range.from_naive(), range.to_naive()),
                &filter,
                &users,
                figures,
            )
            .await?,
        ),
        None => None,
    };
    let results = summarize(users, n_steps, mode, bounds);
    let mut answer = json!({
        "funnel": funnel,
        "mode": mode.as_str(),
        "steps": step_values(&funnel.spec.steps, &results),
        "overall_conversion": overall(&results),
    });
    if let (Some(by), Some(segments)) = (by, segments) {
        by.answer(&mut answer, segments);
    }
    Ok(Answer::about(&project, as_of)
        .range(range)
        .filter(&filter)
        .source("mysql")
        .with(answer)
        .ok())
}

/// Each step's figures, numbered and named.
fn step_values(steps: &[Step], results: &[StepResult]) -> Vec<serde_json::Value> {
    steps
        .iter()
        .zip(results)
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
        .collect()
}

/// From the first step to the last.
fn overall(results: &[StepResult]) -> f64 {
    results
        .last()
        .map_or(0.0, |last| last.conversion_from_first)
}

#[derive(Debug, Deserialize)]
pub struct ConversionQuery {
    pub start_event: Option<String>,
    pub end_event: Option<String>,
    #[serde(flatten)]
    pub range: RangeParams,
    pub window_seconds: Option<String>,
    pub filter: Option<String>,
    pub include_bots: Option<String>,
    pub by: Option<String>,
    pub by2: Option<String>,
    pub by_limit: Option<String>,
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
    let start = params::required_event_type("start_event", query.start_event.as_deref())?;
    let end = params::required_event_type("end_event", query.end_event.as_deref())?;
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
    let filter = Filter::parse(query.filter.as_deref(), query.include_bots.as_deref())?;
    let by = Segmentation::parse(
        query.by.as_deref(),
        query.by2.as_deref(),
        query.by_limit.as_deref(),
    )?;
    let as_of = state.as_of(&project).await?;
    let users = load_hits(
        state.db(),
        project.as_str(),
        &steps,
        OrderMode::Ordered,
        range,
        horizon.naive_utc(),
        &filter,
    )
    .await?;
    let bounds = Bounds {
        entry_from: range.from.timestamp_millis(),
        entry_to: range.to.timestamp_millis(),
        window_ms,
        horizon_ms: horizon.timestamp_millis(),
    };
    let figures = |results: Vec<StepResult>| {
        json!({
            "start_users": results[0].users,
            "converted_users": results[1].users,
            "conversion_rate": results[1].conversion_from_first,
            "median_seconds_to_convert": results[1].median_seconds_from_previous,
        })
    };
    let segments = match &by {
        Some(by) => Some(
            by.people_segments(
                state.db(),
                project.as_str(),
                &start,
                (range.from_naive(), range.to_naive()),
                &filter,
                &users,
                |users| figures(summarize(users, 2, OrderMode::Ordered, bounds)),
            )
            .await?,
        ),
        None => None,
    };
    let mut answer = figures(summarize(users, 2, OrderMode::Ordered, bounds));
    answer["start_event"] = json!(start);
    answer["end_event"] = json!(end);
    answer["window_seconds"] = json!(window_seconds);
    if let (Some(by), Some(segments)) = (by, segments) {
        by.answer(&mut answer, segments);
    }
    Ok(Answer::about(&project, as_of)
        .range(range)
        .filter(&filter)
        .source("mysql")
        .with(answer)
        .ok())
}
