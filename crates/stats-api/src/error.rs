//! The stats API's one error type and its one mapping to HTTP (400, 401, 403, 404, 429, 503
//! with `Retry-After`). Store errors convert with `?` (`From`), so a query's failure and
//! MySQL's statement time limit are told apart in one place (`unavailable`).

use actix_web::HttpResponse;
use deadpool_redis::redis;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {reason}")]
    BadRequest { field: &'static str, reason: String },
    /// No such funnel, user or endpoint: 404.
    #[error("{field}: {reason}")]
    NotFound { field: &'static str, reason: String },
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error("the key does not grant access to project {0}")]
    Forbidden(String),
    #[error("rate limit exceeded")]
    RateLimited { retry_after_seconds: u64 },
    #[error("too many failed authentications from this client")]
    AuthLocked { retry_after_seconds: u64 },
    #[error("the key may read, not write")]
    ReadOnlyKey,
    /// A cap on this key's share of a resource (live streams): 429.
    #[error("{reason}")]
    KeyCap {
        /// The limit's name in `worker_stats_refused_total{limit}`.
        limit: &'static str,
        field: &'static str,
        reason: String,
        retry_after_seconds: u64,
    },
    /// A cap on the whole process's resource (live streams, heavy queries, query time): 503.
    #[error("{reason}")]
    Busy {
        limit: &'static str,
        field: &'static str,
        reason: String,
        retry_after_seconds: u64,
    },
    #[error("a dependency is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// One computation's error, answered to every request that waited for it.
    #[error("{0}")]
    Shared(std::sync::Arc<ApiError>),
}

impl ApiError {
    /// The cap that refused the request, for `worker_stats_refused_total{limit}`.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            Self::RateLimited { .. } => Some("key_rate"),
            Self::AuthLocked { .. } => Some("failed_auth"),
            Self::KeyCap { limit, .. } | Self::Busy { limit, .. } => Some(limit),
            Self::Shared(inner) => inner.limit(),
            _ => None,
        }
    }

    pub fn bad(field: &'static str, reason: impl Into<String>) -> Self {
        Self::BadRequest {
            field,
            reason: reason.into(),
        }
    }

    pub fn not_found(field: &'static str, reason: impl Into<String>) -> Self {
        Self::NotFound {
            field,
            reason: reason.into(),
        }
    }
}

impl actix_web::ResponseError for ApiError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        match self {
            Self::Shared(inner) => inner.status_code(),
            Self::BadRequest { .. } => actix_web::http::StatusCode::BAD_REQUEST,
            Self::NotFound { .. } => actix_web::http::StatusCode::NOT_FOUND,
            Self::Unauthorized => actix_web::http::StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => actix_web::http::StatusCode::FORBIDDEN,
            Self::RateLimited { .. } | Self::AuthLocked { .. } | Self::KeyCap { .. } => {
                actix_web::http::StatusCode::TOO_MANY_REQUESTS
            }
            Self::ReadOnlyKey => actix_web::http::StatusCode::FORBIDDEN,
            Self::Busy { .. } | Self::Unavailable(_) => {
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Shared(inner) => inner.error_response(),
            Self::BadRequest { field, reason } => {
                HttpResponse::BadRequest().json(serde_json::json!({
                    "error": "invalid_parameter", "field": field, "reason": reason,
                }))
            }
            Self::NotFound { field, reason } => HttpResponse::NotFound().json(serde_json::json!({
                "error": "not_found", "field": field, "reason": reason,
            })),
            Self::Unauthorized => HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Bearer"))
                .json(serde_json::json!({
                    "error": "unauthorized", "field": "authorization",
                    "reason": "send a stats API key as `Authorization: Bearer <key>`",
                })),
            Self::Forbidden(project) => HttpResponse::Forbidden().json(serde_json::json!({
                "error": "forbidden", "field": "project",
                "reason": format!("the key does not grant access to project {project}"),
            })),
            Self::RateLimited {
                retry_after_seconds,
            } => HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", retry_after_seconds.to_string()))
                .json(serde_json::json!({
                    "error": "rate_limited", "field": "",
                    "reason": format!("too many requests for this key; retry in {retry_after_seconds} s"),
                })),
            Self::AuthLocked {
                retry_after_seconds,
            } => HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", retry_after_seconds.to_string()))
                .json(serde_json::json!({
                    "error": "too_many_failed_authentications", "field": "authorization",
                    "reason": format!(
                        "too many requests with a missing or wrong key from this client \
                         (stats.failed_auth_per_minute); retry in {retry_after_seconds} s"
                    ),
                })),
            Self::ReadOnlyKey => HttpResponse::Forbidden().json(serde_json::json!({
                "error": "forbidden", "field": "authorization",
                "reason": "this key may read only; creating, changing or deleting funnels \
                           needs a key with the admin scope (`token=projects:admin`)",
            })),
            Self::KeyCap {
                field,
                reason,
                retry_after_seconds,
                ..
            } => HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", retry_after_seconds.to_string()))
                .json(serde_json::json!({"error": "limit_reached", "field": field, "reason": reason})),
            Self::Busy {
                field,
                reason,
                retry_after_seconds,
                ..
            } => HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", retry_after_seconds.to_string()))
                .json(serde_json::json!({"error": "busy", "field": field, "reason": reason})),
            Self::Unavailable(e) => {
                tracing::error!(error = %format!("{e:#}"), "stats query failed");
                HttpResponse::ServiceUnavailable()
                    .insert_header(("Retry-After", "5"))
                    .json(serde_json::json!({"error": "unavailable", "field": "", "reason": "a data store is unavailable"}))
            }
        }
    }
}

/// A store failed. MySQL stopping a query at `stats.query_timeout_ms` is not an outage: the
/// client is told the query was too heavy for now (503, Retry-After).
pub fn unavailable(e: impl Into<anyhow::Error>) -> ApiError {
    let e = e.into();
    if e.downcast_ref::<sqlx::Error>()
        .is_some_and(is_statement_timeout)
    {
        return ApiError::Busy {
            limit: "query_timeout",
            field: "",
            reason: "the query ran longer than the stats API allows (stats.query_timeout_ms); \
                     narrow the time range or retry later"
                .to_owned(),
            retry_after_seconds: 10,
        };
    }
    ApiError::Unavailable(e)
}

/// MariaDB's `max_statement_time` (1969) or MySQL's `max_execution_time` (3024) stopped it.
fn is_statement_timeout(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|my| matches!(my.number(), 1969 | 3024)),
        _ => false,
    }
}

/// Every store error is `unavailable`: handlers use `?`.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        unavailable(e)
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        unavailable(e)
    }
}

impl From<deadpool_redis::PoolError> for ApiError {
    fn from(e: deadpool_redis::PoolError) -> Self {
        unavailable(e)
    }
}

impl From<redis::ParsingError> for ApiError {
    fn from(e: redis::ParsingError) -> Self {
        unavailable(e)
    }
}
