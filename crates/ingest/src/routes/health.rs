use actix_web::{web, HttpResponse};

use crate::error::ErrorBody;
use crate::startup::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The process answers")))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: Kafka answered the last probe and the producer queue has room. A load balancer
/// should stop sending traffic while this is 503.
#[utoipa::path(get, path = "/ready", tag = "operations", responses(
    (status = 200, description = "Kafka reachable, producer queue has room"),
    (status = 503, description = "Not ready; see Retry-After")))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let write_keys = if state.keys.is_open() {
        "open: no keys (auth.allow_open = true, development only)"
    } else {
        "required"
    };
    if state.producer.is_ready() {
        HttpResponse::Ok()
            .json(serde_json::json!({"status": "ready", "kafka": "ok", "write_keys": write_keys}))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", state.retry_after_seconds.to_string()))
            .json(serde_json::json!({
                "status": "not_ready",
                "kafka": "unreachable or producer queue nearly full",
                "producer_queue_depth": state.producer.queue_depth(),
                "write_keys": write_keys,
            }))
    }
}

/// Prometheus text exposition of this gateway's registry; 404 when `http.metrics_listen`
/// moves it to a listener of its own.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain"),
    (status = 404, description = "Served on the metrics listener (http.metrics_listen)", body = ErrorBody)))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if state.metrics_elsewhere {
        // The setting, not the address: the main port may face the internet.
        return HttpResponse::NotFound().json(ErrorBody {
            error: "not_found",
            field: "path",
            reason: "/metrics is served on the separate metrics listener (http.metrics_listen), \
                     not on this port"
                .to_owned(),
        });
    }
    insightflow_runtime::http::metrics_response(&state.registry)
}
