//! The canonical ingest endpoint and the shared path every adapter ends in.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use insightflow_model::shape::{Canonical, EventShape};
use insightflow_model::{
    parse_batch_as, BatchOutcome, BodyError, Limits, RawBody, Rejection, RequestClock, Text,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::body;
use crate::error::{ErrorBody, IngestError};
use crate::openapi::{CanonicalBody, WriteKeyQuery};
use crate::startup::AppState;

/// What the client is told about its request.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchReport {
    /// Always `true` on a 200 answer (what Segment's SDKs look for).
    pub success: bool,
    /// Events now held by Kafka.
    pub accepted: usize,
    /// Every refused event: position, id, field and reason.
    pub rejected: Vec<Rejection>,
    /// The gateway's clock when the request arrived, so SDKs can correct theirs.
    pub server_time: DateTime<Utc>,
    /// `sent_at - server_time` in milliseconds when the batch carried `sent_at`: the skew
    /// subtracted from every event time of the batch.
    pub clock_skew_ms: Option<i64>,
    /// Only when the request's privacy signal is honoured (`privacy.honor_gpc`,
    /// `honor_dnt`): its events, answered and not collected. Not to be sent again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_collected: Option<usize>,
}

/// How a request body is laid out around its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Envelope {
    /// One event, `{"sent_at", "write_key", "events": [..]}` or an array of events.
    Canonical,
    /// One Segment message, or `{"batch": [..], "sentAt", "writeKey"}`.
    Segment,
}

/// The one path every ingest endpoint takes: rate limit by IP, read and cap the body, find the
/// events, authenticate, rate limit by key, validate each event in `shape`, publish, answer.
pub(crate) async fn ingest_as(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    envelope: Envelope,
    shape: &impl EventShape,
) -> Result<HttpResponse, IngestError> {
    let received_at = Utc::now();
    if let Some(ip) = state.clients.client_ip(req) {
        limited(state, state.rate_limits.check_ip(ip))?;
    }
    let body = read_json_body(req, payload, state).await?;
    let text = utf8(&body)?;
    let raw = match envelope {
        Envelope::Canonical => RawBody::parse(text, &state.limits)?,
        Envelope::Segment => RawBody::parse_segment(text, &state.limits)?,
    };
    let caller = state
        .keys
        .identify(req, raw.write_key.as_ref().map(Text::as_str))?;
    if let Some(key) = &caller.write_key {
        limited(state, state.rate_limits.check_write_key(key))?;
    }
    if let Some(signal) = state.privacy.not_collected(req) {
        let events = raw.events.len();
        state
            .metrics
            .not_collected
            .with_label_values(&[signal])
            .inc_by(events as u64);
        return Ok(HttpResponse::Ok().json(BatchReport {
            success: true,
            accepted: 0,
            rejected: Vec::new(),
            server_time: received_at,
            clock_skew_ms: None,
            not_collected: Some(events),
        }));
    }
    let clock = RequestClock::new(received_at, raw.sent_at()?, state.limits.max_future_seconds);
    let mut clients = state.clients.for_events(req);
    let outcome = parse_batch_as(
        shape,
        &raw,
        &caller.project,
        &clock,
        &state.limits,
        |agent| clients.for_event(agent),
    );
    publish(state, outcome, &clock, raw.events.len()).await
}

fn limited(state: &AppState, check: Result<(), IngestError>) -> Result<(), IngestError> {
    if let Err(IngestError::RateLimited { limiter, .. }) = &check {
        state
            .metrics
            .rate_limited
            .with_label_values(&[*limiter])
            .inc();
    }
    check
}

/// One canonical event, `{"sent_at": .., "events": [..]}` or an array of events;
/// `{"type": .., "data": {..}}` events are recognised by shape.
#[utoipa::path(
    post,
    path = "/api/v1/events",
    tag = "canonical",
    params(WriteKeyQuery),
    request_body(content = CanonicalBody, content_type = "application/json",
        description = "Also text/plain (sendBeacon); Content-Encoding gzip or deflate."),
    responses(
        (status = 200, description = "Every accepted event is in Kafka", body = BatchReport),
        (status = 400, description = "Nothing valid", body = ErrorBody),
        (status = 401, description = "Missing or unknown write key", body = ErrorBody),
        (status = 408, description = "Not received and answered within connections.request_timeout_ms; the connection is closed", body = ErrorBody),
        (status = 413, description = "Body or batch too large", body = ErrorBody),
        (status = 415, description = "Unsupported media type or encoding", body = ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = ErrorBody),
        (status = 503, description = "Kafka unavailable; retry the whole batch after Retry-After", body = ErrorBody),
    ),
    security((), ("write_key" = []), ("basic" = []))
)]
pub async fn ingest(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, IngestError> {
    ingest_as(&req, payload, &state, Envelope::Canonical, &Canonical).await
}

/// The same as `POST /api/v1/events`, for SDKs that post batches to their own path.
#[utoipa::path(
    post,
    path = "/api/v1/events/batch",
    tag = "canonical",
    params(WriteKeyQuery),
    request_body(content = CanonicalBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Every accepted event is in Kafka", body = BatchReport),
        (status = "4XX", description = "Refused; see the error body", body = ErrorBody),
        (status = 503, description = "Kafka unavailable; retry after Retry-After", body = ErrorBody),
    ),
    security((), ("write_key" = []), ("basic" = []))
)]
pub async fn ingest_batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, IngestError> {
    ingest_as(&req, payload, &state, Envelope::Canonical, &Canonical).await
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
        success: true,
        accepted: outcome.accepted.len(),
        rejected: outcome.rejected,
        server_time: clock.received_at,
        clock_skew_ms: clock.skew.map(|s| s.num_milliseconds()),
        not_collected: None,
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

/// What `GET /api/v1/limits` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsReport<'a> {
    pub limits: &'a Limits,
    /// Accepted `Content-Type`s.
    pub content_types: &'static [&'static str],
    /// Accepted `Content-Encoding`s.
    pub content_encodings: &'static [&'static str],
}

/// The limits and encodings this gateway enforces, machine-readable.
#[utoipa::path(
    get,
    path = "/api/v1/limits",
    tag = "canonical",
    responses((status = 200, body = LimitsReport))
)]
pub async fn limits(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(LimitsReport {
        limits: &state.limits,
        content_types: &body::SUPPORTED_MEDIA_TYPES,
        content_encodings: &body::SUPPORTED_ENCODINGS,
    })
}
