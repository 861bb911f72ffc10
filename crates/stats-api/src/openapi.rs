//! The OpenAPI document of the stats API, served at `/openapi.json`.
//!
//! Built once from the table the router registers (`routes::ENDPOINTS`), so every route is
//! documented and every documented route is served.

use std::sync::OnceLock;

use actix_web::http::Method;
use actix_web::HttpResponse;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, Required,
    ResponseBuilder,
};

use super::routes::{Endpoint, ENDPOINTS, RANGE};

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

fn operation(route: &Endpoint, project_in_path: bool) -> utoipa::openapi::path::Operation {
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
    if route.path.contains("{funnel}") || route.path.contains("{distinct_id}") {
        op = op.response(
            "404",
            ResponseBuilder::new().description("No such funnel or user: {error, field, reason}"),
        );
    }
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

fn http_method(method: &Method) -> HttpMethod {
    match *method {
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::DELETE => HttpMethod::Delete,
        Method::PATCH => HttpMethod::Patch,
        Method::HEAD => HttpMethod::Head,
        Method::OPTIONS => HttpMethod::Options,
        _ => HttpMethod::Get,
    }
}

pub(crate) fn build() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for route in ENDPOINTS {
        for (path, project_in_path) in route.full_paths() {
            paths = paths.path(
                path,
                PathItem::new(
                    http_method(&route.method),
                    operation(route, project_in_path),
                ),
            );
        }
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
