//! The reference tracking service's endpoints: flat events with `event_type`, `page_url`,
//! `referrer` ... at the top level (see `insightflow_model::shape::Flat`), and convenience
//! endpoints whose path names the type. A thin adapter onto the shared pipeline.

use actix_web::{web, HttpRequest, HttpResponse};
use insightflow_model::shape::Flat;
use insightflow_model::EventType;

use super::events::{ingest_as, Envelope};
use crate::error::IngestError;
use crate::startup::AppState;

macro_rules! flat_endpoint {
    ($name:ident, $path:tt, $shape:expr, $body:ty, $doc:tt) => {
        #[doc = $doc]
        #[utoipa::path(
            post,
            path = $path,
            tag = "reference",
            params(crate::openapi::WriteKeyQuery),
            request_body(content = $body, content_type = "application/json"),
            responses(
                (status = 200, description = "Every accepted event is in Kafka", body = crate::routes::events::BatchReport),
                (status = "4XX", description = "Refused; see the error body", body = crate::error::ErrorBody),
                (status = 503, description = "Kafka unavailable; retry after Retry-After", body = crate::error::ErrorBody),
            ),
            security((), ("write_key" = []), ("basic" = []))
        )]
        pub async fn $name(
            req: HttpRequest,
            payload: web::Payload,
            state: web::Data<AppState>,
        ) -> Result<HttpResponse, IngestError> {
            ingest_as(&req, payload, &state, Envelope::Canonical, &$shape).await
        }
    };
}

use crate::openapi::{FlatBatch, FlatEvent};

flat_endpoint!(track, "/api/v1/track", Flat::new(), FlatEvent,
    "One flat event (or `{\"events\": [..]}`): `event_type`, `event_name`, `user_id`, `session_id`, `page_url`, `referrer`, `properties`; other fields are kept in `properties`.");
flat_endpoint!(
    track_batch,
    "/api/v1/track/batch",
    Flat::new(),
    FlatBatch,
    "`{\"events\": [..]}` of flat events."
);
flat_endpoint!(
    page_view,
    "/api/v1/page-view",
    Flat::of_type(EventType::PAGE_VIEW),
    FlatEvent,
    "A page view as a flat event; the path sets `event_type`."
);
flat_endpoint!(
    product_view,
    "/api/v1/product-view",
    Flat::of_type(EventType::PRODUCT_VIEW),
    FlatEvent,
    "A product view as a flat event (`product_id`, `price` ... are kept in `properties`)."
);
flat_endpoint!(
    purchase,
    "/api/v1/purchase",
    Flat::of_type(EventType::PURCHASE),
    FlatEvent,
    "A purchase as a flat event (`order_id`, `total`, `items` ... are kept in `properties`)."
);
