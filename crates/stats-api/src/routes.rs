//! Every stats API route, declared once: the router (`configure`) registers these rows and the
//! OpenAPI document (`openapi.rs`) describes the same rows, so the two cannot disagree. The
//! test below requests every documented path with its method and checks that a handler, not
//! the fallback, answered it.
//!
//! Not in this table: `/health`, `/ready`, `/metrics`, `/openapi.json` and the dashboard
//! under `/ui/`, which are operational pages, not stats API endpoints.

use actix_web::http::Method;
use actix_web::{web, Route};

use super::filters::{DIMENSION_DOC, FILTER_PARAM, INCLUDE_BOTS_PARAM};
use super::segments::{BY2_PARAM, BY_LIMIT_PARAM, BY_PARAM};
use super::{
    cohorts, dashboard, funnels, live, pages, privacy, reference, sessions, stats, summary,
    timeseries, uniques, users,
};

/// Where a route is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mount {
    /// Reads one project: under `/api/v1/projects/{project}`, and under `/api/v1` with the
    /// project in `?project=`.
    Project,
    /// The reference services' routes, kept working: under `/api/v1` only.
    Reference,
}

/// One route: what the router registers and what the OpenAPI document says of it.
pub struct Endpoint {
    pub method: Method,
    /// The path below the mount.
    pub path: &'static str,
    pub mount: Mount,
    pub summary: &'static str,
    /// Parameters besides the project, the range, `{distinct_id}` and `{event_type}` (which
    /// the document adds itself): `(name, description)`; a name that appears in the path as
    /// `{name}` is a path parameter.
    pub params: &'static [(&'static str, &'static str)],
    /// Takes `from`, `to` and `tz` (`RANGE`).
    pub range: bool,
    /// Attaches the handler to a route that already has this row's method.
    handler: fn(Route) -> Route,
}

/// The range parameters, in the order the document lists them.
pub const RANGE: &[(&str, &str)] = &[
    ("from", "Range start: RFC 3339, epoch ms, or YYYY-MM-DD[THH:MM[:SS]] in `tz`; rounded down to the minute"),
    ("to", "Range end (exclusive), same forms; default now; rounded up to the minute"),
    ("tz", "IANA time zone for local dates and buckets (default UTC)"),
];

const FUNNEL: &[(&str, &str)] = &[("funnel", "Funnel id or name")];

const fn endpoint(
    method: Method,
    mount: Mount,
    path: &'static str,
    summary: &'static str,
    params: &'static [(&'static str, &'static str)],
    range: bool,
    handler: fn(Route) -> Route,
) -> Endpoint {
    Endpoint {
        method,
        path,
        mount,
        summary,
        params,
        range,
        handler,
    }
}

const fn get(
    path: &'static str,
    summary: &'static str,
    params: &'static [(&'static str, &'static str)],
    range: bool,
    handler: fn(Route) -> Route,
) -> Endpoint {
    endpoint(
        Method::GET,
        Mount::Project,
        path,
        summary,
        params,
        range,
        handler,
    )
}

/// In registration order: `/stats/events` comes before the reference `/stats/{event_type}`.
#[rustfmt::skip]
pub static ENDPOINTS: &[Endpoint] = &[
    get("/stats/events", "All-time event counts by type (Redis)", &[], false, |r| r.to(stats::event_counts)),
    get("/online", "Distinct users with an event in the last N seconds (Redis)", &[("seconds", "1..1800, default 300")], false, |r| r.to(summary::online)),
    get("/summary", "Events, page views, unique users and sessions for a range (MySQL)", &[("compare", "`previous`: also the previous period of equal length"), FILTER_PARAM, INCLUDE_BOTS_PARAM], true, |r| r.to(summary::summary)),
    get("/unique-users", "Estimated unique users per UTC hour or day and over the range (Redis HyperLogLog, 0.81 % standard error, `exact: false`)", &[("bucket", "hour (ranges starting within 7 days) | day (within 34 days); default hour")], true, |r| r.to(uniques::unique_users)),
    get("/sessions", "Sessions started in the range: bounce rate, average and median duration, pages per session, entry and exit pages (MySQL)", &[("pages", "Entry and exit pages listed, 1..100, default 10")], true, |r| r.to(sessions::sessions)),
    get("/counts", "Event counts by type for a range (MySQL rollups)", &[("types", "Comma-separated event types (default: all)"), FILTER_PARAM, INCLUDE_BOTS_PARAM], true, |r| r.to(summary::counts)),
    get("/events", "Recent raw events of a type, newest first", &[("event_type", "Required"), ("limit", "1..500, default 50"), ("cursor", "next_cursor of the previous page")], true, |r| r.to(summary::recent_events)),
    get("/timeseries", "Counts per local bucket, zero buckets included", &[("bucket", "minute | hour | day (default hour)"), ("types", "Comma-separated event types (default: all present)"), FILTER_PARAM, INCLUDE_BOTS_PARAM, BY_PARAM, BY2_PARAM, BY_LIMIT_PARAM], true, |r| r.to(timeseries::timeseries)),
    get("/pages/hot", "Top pages by views; whole UTC hours (Redis for the last 7 days, MySQL rollups before)", &[("limit", "1..1000, default 10"), ("source", "auto | redis | mysql"), FILTER_PARAM, INCLUDE_BOTS_PARAM], true, |r| r.to(pages::hot_pages)),
    get("/breakdown", "Top values of one or two dimensions (visitors by channel, country...): events and unique users each", &[("event_type", "Only this event type (default: every type)"), ("by", DIMENSION_DOC), ("by2", "Optional second dimension, as `by`"), ("limit", "1..1000, default 10"), FILTER_PARAM, INCLUDE_BOTS_PARAM], true, |r| r.to(pages::breakdown)),
    get("/heatmap", "Most-clicked elements of a page and the click density grid", &[("page", "Page path, required"), ("cell", "Grid cell size in pixels, 1..2000, default 50"), ("limit", "1..1000, default 20")], true, |r| r.to(pages::heatmap)),
    get("/retention", "Retention cohorts: people by the local day, week or month they started, and the share back in each period after", &[("period", "day | week | month (default week)"), ("start_event", "Cohort by the first time of this event (default: first event ever)"), ("return_event", "Count coming back as doing this event (default: any event)")], true, |r| r.to(cohorts::retention)),
    get("/conversion", "Users who did A and then B", &[("start_event", "A, required"), ("end_event", "B, required"), ("window_seconds", "B within this long after the first A (default: before `to`)"), FILTER_PARAM, INCLUDE_BOTS_PARAM, BY_PARAM, BY2_PARAM, BY_LIMIT_PARAM], true, |r| r.to(funnels::conversion)),
    get("/dashboard", "Summary, online now, hot pages, counts and a time series in one call; ETag / If-None-Match -> 304", &[("bucket", "minute | hour | day"), ("online_seconds", "1..1800"), ("pages", "1..100")], true, |r| r.to(dashboard::dashboard)),
    get("/users/{distinct_id}", "A user's profile", &[], false, |r| r.to(users::profile)),
    endpoint(Method::DELETE, Mount::Project, "/users/{distinct_id}", "Erase a person (admin key): raw events, sessions, profile and Redis traces; suppressed from then on; audited", &[], false, |r| r.to(privacy::erase)),
    get("/users/{distinct_id}/export", "Everything stored about a person as JSON lines, ending with an `end` record (admin key)", &[], false, |r| r.to(privacy::export)),
    endpoint(Method::PUT, Mount::Project, "/users/{distinct_id}/suppression", "Stop collecting a person's events (opt-out; admin key)", &[], false, |r| r.to(privacy::opt_out)),
    endpoint(Method::DELETE, Mount::Project, "/users/{distinct_id}/suppression", "Collect a person's events again (admin key)", &[], false, |r| r.to(privacy::resume)),
    get("/users/{distinct_id}/events", "A user's events, newest first, cursor-paginated", &[("event_type", "Optional filter"), ("limit", "1..500, default 50"), ("cursor", "next_cursor of the previous page")], true, |r| r.to(users::path)),
    get("/funnels", "Funnel definitions", &[], false, |r| r.to(funnels::list)),
    endpoint(Method::POST, Mount::Project, "/funnels", "Create a funnel: {name, steps: [{event_type, property?, value?}], window_seconds, order_mode: ordered|strict}", &[], false, |r| r.to(funnels::create)),
    get("/funnels/{funnel}", "One funnel", FUNNEL, false, |r| r.to(funnels::get)),
    endpoint(Method::PUT, Mount::Project, "/funnels/{funnel}", "Replace a funnel", FUNNEL, false, |r| r.to(funnels::update)),
    endpoint(Method::DELETE, Mount::Project, "/funnels/{funnel}", "Delete a funnel", FUNNEL, false, |r| r.to(funnels::delete)),
    get("/funnels/{funnel}/analysis", "Users per step, conversion from first and previous, drop-off, median time to convert", &[("funnel", "Funnel id or name"), ("mode", "ordered | strict (default: the funnel's)"), FILTER_PARAM, INCLUDE_BOTS_PARAM, BY_PARAM, BY2_PARAM, BY_LIMIT_PARAM], true, |r| r.to(funnels::analysis)),
    get("/live", "Server-sent events: online count and per-type counts every second", &[("online_seconds", "1..1800")], false, |r| r.to(live::stream)),
    endpoint(Method::GET, Mount::Reference, "/events/{event_type}/count", "All-time count of one event type (Redis)", &[], false, |r| r.to(reference::type_count)),
    endpoint(Method::GET, Mount::Reference, "/stats", "All-time counts by type and users online now (Redis)", &[], false, |r| r.to(reference::overall)),
    endpoint(Method::GET, Mount::Reference, "/stats/", "All-time counts by type and users online now (Redis)", &[], false, |r| r.to(reference::overall)),
    endpoint(Method::GET, Mount::Reference, "/stats/{event_type}", "One type: all time, last 60 minutes, last 24 hours (Redis)", &[], false, |r| r.to(reference::type_stats)),
];

impl Endpoint {
    /// The full paths this row is served at, each with whether the project is in the path.
    pub fn full_paths(&self) -> Vec<(String, bool)> {
        match self.mount {
            Mount::Project => vec![
                (format!("/api/v1/projects/{{project}}{}", self.path), true),
                (format!("/api/v1{}", self.path), false),
            ],
            Mount::Reference => vec![(format!("/api/v1{}", self.path), false)],
        }
    }

    fn register(&self, cfg: &mut web::ServiceConfig) {
        cfg.route(self.path, (self.handler)(web::method(self.method.clone())));
    }
}

/// Registers the rows of one mount, in table order.
pub fn register(mount: Mount, cfg: &mut web::ServiceConfig) {
    for endpoint in ENDPOINTS.iter().filter(|e| e.mount == mount) {
        endpoint.register(cfg);
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::{test, App};

    use super::*;

    /// A path of the document with every `{parameter}` filled in.
    fn concrete(path: &str) -> String {
        path.replace("{project}", "shop")
            .replace("{distinct_id}", "u1")
            .replace("{funnel}", "1")
            .replace("{event_type}", "click")
    }

    /// Every path and method of the OpenAPI document reaches a handler: without `ApiState`
    /// the handler's extractors fail (500) or its parameters are refused (400), but the
    /// fallback (404 "no such endpoint") or a wrong method (405) means the router and the
    /// document disagree. And every row of the table is in the document.
    #[actix_web::test]
    async fn every_documented_route_is_served_and_every_route_documented() {
        let app = test::init_service(App::new().configure(crate::configure)).await;
        let document: serde_json::Value =
            serde_json::from_str(&crate::openapi::build().to_json().expect("json"))
                .expect("document");
        let paths = document["paths"].as_object().expect("paths");
        let mut operations = 0;
        for (path, item) in paths {
            for method in item.as_object().expect("path item").keys() {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let request = test::TestRequest::default()
                    .method(method.clone())
                    .uri(&concrete(path))
                    .to_request();
                let response = test::call_service(&app, request).await;
                assert!(
                    !matches!(
                        response.status(),
                        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
                    ),
                    "{method} {path} is documented but not routed: {}",
                    response.status()
                );
                operations += 1;
            }
        }
        let mut rows = 0;
        for endpoint in ENDPOINTS {
            for (path, _) in endpoint.full_paths() {
                let method = endpoint.method.as_str().to_lowercase();
                assert!(
                    paths
                        .get(&path)
                        .and_then(|item| item.get(&method))
                        .is_some(),
                    "{method} {path} is routed but not documented"
                );
                rows += 1;
            }
        }
        assert_eq!(
            operations, rows,
            "the document has operations no row declares"
        );
        // The check can fail: a path nobody declared is the fallback's 404.
        let response = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/v1/projects/shop/nothing-here")
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
