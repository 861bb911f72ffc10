//! The gateway's one error type and its one mapping to HTTP.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use insightflow_model::BodyError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::routes::events::BatchReport;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    InvalidBody(#[from] BodyError),
    #[error("no valid events in the request")]
    NoValidEvents(Box<BatchReport>),
    #[error("{field}: {reason}")]
    PayloadTooLarge { field: &'static str, reason: String },
    #[error("unsupported {field}: {reason}")]
    UnsupportedMediaType { field: &'static str, reason: String },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("rate limit exceeded for this {limiter}")]
    RateLimited {
        limiter: &'static str,
        retry_after_seconds: u64,
    },
    #[error("events could not be stored: {cause}")]
    Unavailable {
        cause: &'static str,
        retry_after_seconds: u32,
    },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Every error answer: a stable code, the field at fault (empty when none) and a reason
/// written for the SDK developer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    /// `invalid_body`, `no_valid_events`, `payload_too_large`, `unsupported_media_type`,
    /// `unauthorized`, `rate_limited`, `unavailable`, `internal`; `request_timeout` (408,
    /// `connections.request_timeout_ms`) and `not_found` (`/metrics` moved to its listener).
    pub error: &'a str,
    pub field: &'a str,
    pub reason: String,
}

impl IngestError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidBody(BodyError::TooManyEvents { .. }) => "payload_too_large",
            Self::InvalidBody(_) => "invalid_body",
            Self::NoValidEvents(_) => "no_valid_events",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::Unauthorized(_) => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn field(&self) -> &str {
        match self {
            Self::InvalidBody(e) => e.field(),
            Self::NoValidEvents(_) => "events",
            Self::PayloadTooLarge { field, .. } | Self::UnsupportedMediaType { field, .. } => field,
            Self::Unauthorized(_) => "write_key",
            Self::RateLimited { .. } | Self::Unavailable { .. } | Self::Internal(_) => "",
        }
    }
}

impl ResponseError for IngestError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidBody(BodyError::TooManyEvents { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidBody(_) | Self::NoValidEvents(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::RateLimited {
                retry_after_seconds,
                ..
            } => {
                response.insert_header((header::RETRY_AFTER, retry_after_seconds.to_string()));
            }
            Self::Unavailable {
                retry_after_seconds,
                ..
            } => {
                response.insert_header((header::RETRY_AFTER, retry_after_seconds.to_string()));
            }
            Self::Unauthorized(_) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"insightflow\""),
                ));
            }
            Self::Internal(e) => tracing::error!(error = ?e, "internal error"),
            _ => {}
        }
        if let Self::NoValidEvents(report) = self {
            return response.json(serde_json::json!({
                "error": self.code(),
                "field": self.field(),
                "reason": "every event of the request was rejected",
                "accepted": report.accepted,
                "rejected": report.rejected,
                "server_time": report.server_time,
                "clock_skew_ms": report.clock_skew_ms,
            }));
        }
        let reason = match self {
            // Never echo internals to the client; the cause chain is in the log.
            Self::Internal(_) => "internal error".to_owned(),
            Self::InvalidBody(e) => e.to_string(),
            Self::PayloadTooLarge { reason, .. } | Self::UnsupportedMediaType { reason, .. } => {
                reason.clone()
            }
            other => other.to_string(),
        };
        response.json(ErrorBody {
            error: self.code(),
            field: self.field(),
            reason,
        })
    }
}
