//! The canonical ingest endpoint and the shared path every adapter ends in.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use insightflow_model::{
    parse_batch, BatchOutcome, BodyError, RawBody, Rejection, RequestClock, Text,
};
use serde::Serialize;

use crate::body;
use crate::error::IngestError;
use crate::startup::AppState;

/// What the client is told about its request.
#[derive(Debug, Serialize)]
pub struct BatchReport {
    /// Events now held by Kafka.
    pub accepted: usize,
    /// Every refused event: position, id, field and reason.
    pub rejected: Vec<Rejection>,
    /// The gateway's clock when the request arrived, so SDKs can correct theirs.
    pub server_time: DateTime<Utc>,
    /// `sent_at - server_time` in milliseconds when the batch carried `sent_at`: the skew
    /// subtracted from every event time of the batch.
    pub clock_skew_ms: Option<i64>,
}

/// `POST /api/v1/events` and `/api/v1/events/batch`: one event, `{"sent_at", "events": [..]}`
/// or an array of events.
pub async fn ingest(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, IngestError> {
    let received_at = Utc::now();
    let body = read_json_body(&req, payload, &state).await?;
    let text = utf8(&body)?;
    let raw = RawBody::parse(text, &state.limits)?;
    let project = state
        .keys
        .authenticate(&req, raw.write_key.as_ref().map(Text::as_str))?;
    let clock = RequestClock::new(received_at, raw.sent_at()?, state.limits.max_future_seconds);
    let client = state.clients.for_request(&req);
    let outcome = parse_batch(&raw, &project, &clock, &state.limits, |agent| match agent {
        Some(ua) => state.clients.with_user_agent(&client, ua),
        None => client.clone(),
    });
    publish(&state, outcome, &clock, raw.events.len()).await
}

/// Reads the body under the configured caps and counts the bytes.
pub(crate) async fn read_json_body(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<bytes::Bytes, IngestError> {
    let (body, wire_len) = body::read(req, payload, state.limits.max_body_bytes).await?;
    state.metrics.bytes_received.inc_by(wire_len as u64);
    Ok(body)
}

pub(crate) fn utf8(body: &[u8]) -> Result<&str, IngestError> {
    std::str::from_utf8(body).map_err(|e| {
        IngestError::InvalidBody(BodyError::Malformed(format!(
            "body is not valid UTF-8: {e}"
        )))
    })
}

/// Publishes the accepted events and answers: 200 with the report once Kafka holds every
/// accepted event, 400 when nothing was valid, 503 when Kafka could not take them.
pub(crate) async fn publish(
    state: &AppState,
    outcome: BatchOutcome,
    clock: &RequestClock,
    events_in_request: usize,
) -> Result<HttpResponse, IngestError> {
    state.metrics.batch_size.observe(events_in_request as f64);
    for rejection in &outcome.rejected {
        state
            .metrics
            .events_rejected
            .with_label_values(&[rejection.field.as_str()])
            .inc();
    }
    let report = BatchReport {
        accepted: outcome.accepted.len(),
        rejected: outcome.rejected,
        server_time: clock.received_at,
        clock_skew_ms: clock.skew.map(|s| s.num_milliseconds()),
    };
    if outcome.accepted.is_empty() {
        return Err(IngestError::NoValidEvents(Box::new(report)));
    }
    if let Err(e) = state.producer.publish(&outcome.accepted).await {
        state
            .metrics
            .unavailable
            .with_label_values(&[e.cause()])
            .inc();
        return Err(IngestError::Unavailable {
            cause: e.cause(),
            retry_after_seconds: state.retry_after_seconds,
        });
    }
    state.metrics.events_accepted.inc_by(report.accepted as u64);
    Ok(HttpResponse::Ok().json(report))
}

/// `GET /api/v1/limits`: the limits and encodings this gateway enforces.
pub async fn limits(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "limits": state.limits,
        "content_types": body::SUPPORTED_MEDIA_TYPES,
        "content_encodings": body::SUPPORTED_ENCODINGS,
    }))
}
