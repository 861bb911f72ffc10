//! The OpenAPI document of the stats API, served at `/openapi.json`.
//!
//! Built once from a table of routes so the document and `api::configure` are read side by
//! side: every route registered there has a row here.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, Required,
    ResponseBuilder,
};

const RANGE: &[(&str, &str)] = &[
    ("from", "Range start: RFC 3339, epoch ms, or YYYY-MM-DD[THH:MM[:SS]] in `tz`; rounded down to the minute"),
    ("to", "Range end (exclusive), same forms; default now; rounded up to the minute"),
    ("tz", "IANA time zone for local dates and buckets (default UTC)"),
];

struct Route {
    method: HttpMethod,
    path: &'static str,
    summary: &'static str,
    params: &'static [(&'static str, &'static str)],
    range: bool,
}

const fn get(
    path: &'static str,
    summary: &'static str,
    params: &'static [(&'static str, &'static str)],
    range: bool,
) -> Route {
    Route {
        method: HttpMethod::Get,
        path,
        summary,
        params,
        range,
    }
}

fn routes() -> Vec<Route> {
    let funnel = &[("funnel", "Funnel id or name")][..];
    vec![
        get("/online", "Distinct users with an event in the last N seconds (Redis)", &[("seconds", "1..1800, default 300")], false),
        get("/summary", "Events, page views, unique users and sessions for a range (MySQL)", &[("compare", "`previous`: also the previous period of equal length")], true),
        get("/counts", "Event counts by type for a range (MySQL rollups)", &[("types", "Comma-separated event types (default: all)")], true),
        get("/stats/events", "All-time event counts by type (Redis)", &[], false),
        get("/events", "Recent raw events of a type, newest first", &[("event_type", "Required"), ("limit", "1..500, default 50"), ("cursor", "next_cursor of the previous page")], true),
        get("/timeseries", "Counts per local bucket, zero buckets included", &[("bucket", "minute | hour | day (default hour)"), ("types", "Comma-separated event types (default: all present)")], true),
        get("/pages/hot", "Top pages by views; whole UTC hours (Redis for the last 7 days, MySQL rollups before)", &[("limit", "1..1000, default 10"), ("source", "auto | redis | mysql")], true),
        get("/breakdown", "Top values of one or two properties of an event type", &[("event_type", "Required"), ("by", "Property name (dot for nesting) or $browser, $os, $device_type, $page_path, $event_name"), ("by2", "Optional second dimension"), ("limit", "1..1000, default 10")], true),
        get("/heatmap", "Most-clicked elements of a page and the click density grid", &[("page", "Page path, required"), ("cell", "Grid cell size in pixels, 1..2000, default 50"), ("limit", "1..1000, default 20")], true),
        get("/conversion", "Users who did A and then B", &[("start_event", "A, required"), ("end_event", "B, required"), ("window_seconds", "B within this long after the first A (default: before `to`)")], true),
        get("/dashboard", "Summary, online now, hot pages, counts and a time series in one call; ETag / If-None-Match -> 304", &[("bucket", "minute | hour | day"), ("online_seconds", "1..1800"), ("pages", "1..100")], true),
        get("/users/{distinct_id}", "A user's profile", &[], false),
        get("/users/{distinct_id}/events", "A user's events, newest first, cursor-paginated", &[("event_type", "Optional filter"), ("limit", "1..500, default 50"), ("cursor", "next_cursor of the previous page")], true),
        get("/funnels", "Funnel definitions", &[], false),
        Route { method: HttpMethod::Post, path: "/funnels", summary: "Create a funnel: {name, steps: [{event_type, property?, value?}], window_seconds, order_mode: ordered|strict}", params: &[], range: false },
        get("/funnels/{funnel}", "One funnel", funnel, false),
        Route { method: HttpMethod::Put, path: "/funnels/{funnel}", summary: "Replace a funnel", params: funnel, range: false },
        Route { method: HttpMethod::Delete, path: "/funnels/{funnel}", summary: "Delete a funnel", params: funnel, range: false },
        get("/funnels/{funnel}/analysis", "Users per step, conversion from first and previous, drop-off, median time to convert", &[("funnel", "Funnel id or name"), ("mode", "ordered | strict (default: the funnel's)")], true),
        get("/live", "Server-sent events: online count and per-type counts every second", &[("online_seconds", "1..1800")], false),
    ]
}

/// The reference services' routes (project in the query only).
fn reference_routes() -> Vec<Route> {
    vec![
        get(
            "/api/v1/events/{event_type}/count",
            "All-time count of one event type (Redis)",
            &[],
            false,
        ),
        get(
            "/api/v1/stats/",
            "All-time counts by type and users online now (Redis)",
            &[],
            false,
        ),
        get(
            "/api/v1/stats/{event_type}",
            "One type: all time, last 60 minutes, last 24 hours (Redis)",
            &[],
            false,
        ),
    ]
}

fn string_param(
    name: &str,
    description: &str,
    location: ParameterIn,
) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location.clone())
        .required(if matches!(location, ParameterIn::Path) {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

fn operation(route: &Route, project_in_path: bool) -> utoipa::openapi::path::Operation {
    let mut op = OperationBuilder::new()
        .summary(Some(route.summary))
        .tag("stats")
        .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
        .response(
            "200",
            ResponseBuilder::new()
                .description("JSON with `as_of` (newest event time applied, consumer positions)"),
        )
        .response(
            "400",
            ResponseBuilder::new().description("Invalid parameter: {error, field, reason}"),
        )
        .response(
            "401",
            ResponseBuilder::new().description("Missing or unknown API key"),
        )
        .response(
            "403",
            ResponseBuilder::new().description("The key does not grant the project"),
        )
        .response(
            "429",
            ResponseBuilder::new().description("Rate limited; see Retry-After"),
        )
        .response(
            "503",
            ResponseBuilder::new().description("A data store is unavailable; see Retry-After"),
        );
    if project_in_path {
        op = op.parameter(string_param("project", "Project id", ParameterIn::Path));
    } else {
        op = op.parameter(string_param(
            "project",
            "Project id (optional when the key grants exactly one project, or the API is open)",
            ParameterIn::Query,
        ));
    }
    for (name, description) in route.params {
        let location = if route.path.contains(&format!("{{{name}}}")) {
            ParameterIn::Path
        } else {
            ParameterIn::Query
        };
        op = op.parameter(string_param(name, description, location));
    }
    if route.path.contains("{distinct_id}") {
        op = op.parameter(string_param(
            "distinct_id",
            "The user's distinct id",
            ParameterIn::Path,
        ));
    }
    if route.path.contains("{event_type}") {
        op = op.parameter(string_param("event_type", "Event type", ParameterIn::Path));
    }
    if route.range {
        for (name, description) in RANGE {
            op = op.parameter(string_param(name, description, ParameterIn::Query));
        }
    }
    op.build()
}

fn build() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for route in routes() {
        paths = paths
            .path(
                format!("/api/v1/projects/{{project}}{}", route.path),
                PathItem::new(route.method.clone(), operation(&route, true)),
            )
            .path(
                format!("/api/v1{}", route.path),
                PathItem::new(route.method.clone(), operation(&route, false)),
            );
    }
    for route in reference_routes() {
        paths = paths.path(
            route.path,
            PathItem::new(route.method.clone(), operation(&route, false)),
        );
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("InsightFlow stats API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Real-time analytics for backend-for-frontend services. See docs/STATS_API.md.",
                )),
        )
        .paths(paths)
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(
                    "bearer",
                    SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
                )
                .build(),
        ))
        .build()
}

/// `GET /openapi.json` (no key needed: the document holds no data).
pub async fn document() -> HttpResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| build().to_json().unwrap_or_else(|_| "{}".to_owned()));
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.as_str())
}
