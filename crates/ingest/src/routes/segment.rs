//! Segment's HTTP Tracking API, so Segment SDKs work unchanged once their host points here:
//! the named paths (`/v1/track`) that analytics-node and the HTTP API docs use, and the
//! one-letter paths (`/v1/t`, batches at `/v1/b`) that analytics.js posts to. A thin adapter:
//! the events go through the same pipeline as every other shape.

use actix_web::{web, HttpRequest, HttpResponse};
use insightflow_model::shape::{Segment, SegmentCall};

use super::events::{ingest_as, Envelope};
use crate::error::IngestError;
use crate::startup::AppState;

async fn segment(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    call: Option<SegmentCall>,
) -> Result<HttpResponse, IngestError> {
    ingest_as(&req, payload, &state, Envelope::Segment, &Segment { call }).await
}

macro_rules! segment_endpoint {
    ($name:ident, $path:tt, $call:expr, $body:ty, $doc:tt) => {
        #[doc = $doc]
        #[utoipa::path(
            post,
            path = $path,
            tag = "segment",
            request_body(content = $body, content_type = "application/json",
                description = "As Segment SDKs send it; also text/plain, gzip or deflate."),
            responses(
                (status = 200, description = "Every accepted event is in Kafka; `success` is true", body = crate::routes::events::BatchReport),
                (status = "4XX", description = "Refused; see the error body", body = crate::error::ErrorBody),
                (status = 503, description = "Kafka unavailable; retry after Retry-After", body = crate::error::ErrorBody),
            ),
            security(("basic" = []), ("write_key" = []), ())
        )]
        pub async fn $name(
            req: HttpRequest,
            payload: web::Payload,
            state: web::Data<AppState>,
        ) -> Result<HttpResponse, IngestError> {
            segment(req, payload, state, $call).await
        }
    };
}

use crate::openapi::{SegmentBatch, SegmentMessage};

segment_endpoint!(
    batch,
    "/v1/batch",
    None,
    SegmentBatch,
    "A batch of Segment calls of any type."
);
segment_endpoint!(
    track,
    "/v1/track",
    Some(SegmentCall::Track),
    SegmentMessage,
    "A Segment track call."
);
segment_endpoint!(
    identify,
    "/v1/identify",
    Some(SegmentCall::Identify),
    SegmentMessage,
    "A Segment identify call."
);
segment_endpoint!(
    page,
    "/v1/page",
    Some(SegmentCall::Page),
    SegmentMessage,
    "A Segment page call."
);
segment_endpoint!(
    screen,
    "/v1/screen",
    Some(SegmentCall::Screen),
    SegmentMessage,
    "A Segment screen call."
);
segment_endpoint!(
    group,
    "/v1/group",
    Some(SegmentCall::Group),
    SegmentMessage,
    "A Segment group call."
);
segment_endpoint!(
    alias,
    "/v1/alias",
    Some(SegmentCall::Alias),
    SegmentMessage,
    "A Segment alias call."
);
segment_endpoint!(
    batch_short,
    "/v1/b",
    None,
    SegmentBatch,
    "analytics.js's path for batches."
);
segment_endpoint!(
    track_short,
    "/v1/t",
    Some(SegmentCall::Track),
    SegmentMessage,
    "analytics.js's path for track calls."
);
segment_endpoint!(
    identify_short,
    "/v1/i",
    Some(SegmentCall::Identify),
    SegmentMessage,
    "analytics.js's path for identify calls."
);
segment_endpoint!(
    page_short,
    "/v1/p",
    Some(SegmentCall::Page),
    SegmentMessage,
    "analytics.js's path for page calls."
);
segment_endpoint!(
    screen_short,
    "/v1/s",
    Some(SegmentCall::Screen),
    SegmentMessage,
    "analytics.js's path for screen calls."
);
segment_endpoint!(
    group_short,
    "/v1/g",
    Some(SegmentCall::Group),
    SegmentMessage,
    "analytics.js's path for group calls."
);
segment_endpoint!(
    alias_short,
    "/v1/a",
    Some(SegmentCall::Alias),
    SegmentMessage,
    "analytics.js's path for alias calls."
);
