pub mod events;
pub mod health;
pub mod reference;
pub mod segment;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::{from_fn, Next};
use actix_web::{guard, web, HttpResponse, Route};
use insightflow_runtime::server::enforce_deadline;

/// One registered route. The table below is the only place routes are registered, and the
/// OpenAPI test checks that `/openapi.json` documents every entry.
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    verb: Method,
    route: fn() -> Route,
}

macro_rules! endpoint {
    (GET $path:literal => $handler:path) => {
        Endpoint {
            method: "get",
            path: $path,
            verb: Method::GET,
            route: || web::get().to($handler),
        }
    };
    (POST $path:literal => $handler:path) => {
        Endpoint {
            method: "post",
            path: $path,
            verb: Method::POST,
            route: || web::post().to($handler),
        }
    };
}

pub const ENDPOINTS: &[Endpoint] = &[
    endpoint!(GET "/health" => health::health),
    endpoint!(GET "/ready" => health::ready),
    endpoint!(GET "/metrics" => health::metrics),
    endpoint!(GET "/openapi.json" => openapi_json),
    endpoint!(GET "/api/v1/limits" => events::limits),
    endpoint!(POST "/api/v1/events" => events::ingest),
    endpoint!(POST "/api/v1/events/batch" => events::ingest_batch),
    endpoint!(POST "/v1/batch" => segment::batch),
    endpoint!(POST "/v1/track" => segment::track),
    endpoint!(POST "/v1/identify" => segment::identify),
    endpoint!(POST "/v1/page" => segment::page),
    endpoint!(POST "/v1/screen" => segment::screen),
    endpoint!(POST "/v1/group" => segment::group),
    endpoint!(POST "/v1/alias" => segment::alias),
    endpoint!(POST "/v1/b" => segment::batch_short),
    endpoint!(POST "/v1/t" => segment::track_short),
    endpoint!(POST "/v1/i" => segment::identify_short),
    endpoint!(POST "/v1/p" => segment::page_short),
    endpoint!(POST "/v1/s" => segment::screen_short),
    endpoint!(POST "/v1/g" => segment::group_short),
    endpoint!(POST "/v1/a" => segment::alias_short),
    endpoint!(POST "/api/v1/track" => reference::track),
    endpoint!(POST "/api/v1/track/batch" => reference::track_batch),
    endpoint!(POST "/api/v1/page-view" => reference::page_view),
    endpoint!(POST "/api/v1/product-view" => reference::product_view),
    endpoint!(POST "/api/v1/purchase" => reference::purchase),
];

/// Registers every endpoint, each under the request deadline (`connections.request_timeout_ms`).
/// The method guard on the resource keeps a wrong method a 404, as `ServiceConfig::route`
/// makes it.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for endpoint in ENDPOINTS {
        cfg.service(
            web::resource(endpoint.path)
                .guard(guard::Method(endpoint.verb.clone()))
                .wrap(from_fn(enforce_deadline))
                .wrap(from_fn(answer_errors))
                .route((endpoint.route)()),
        );
    }
}

/// Answers an error from the middleware inside it (the deadline's 408) here, so that the
/// `App`'s middleware see an answer like any other: request metrics count the 408, CORS
/// headers let a browser script read it. An error passed up instead would skip both.
///
/// Per resource, not on the `App`: this keeps a handle on the request, and `App` middleware
/// run before the router, which needs the only handle to record the match (actix-web panics
/// otherwise). A resource's middleware run after it was matched.
async fn answer_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let request = req.request().clone();
    match next.call(req).await {
        Ok(response) => Ok(response.map_into_left_body()),
        Err(error) => Ok(ServiceResponse::from_err(error, request).map_into_right_body()),
    }
}

/// This gateway's OpenAPI 3 document, generated from the handlers and types.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi_json(state: web::Data<crate::startup::AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi.clone())
}
