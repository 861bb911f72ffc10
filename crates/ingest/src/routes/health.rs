use actix_web::{web, HttpResponse};

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
    if state.producer.is_ready() {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready", "kafka": "ok"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", state.retry_after_seconds.to_string()))
            .json(serde_json::json!({
                "status": "not_ready",
                "kafka": "unreachable or producer queue nearly full",
                "producer_queue_depth": state.producer.queue_depth(),
            }))
    }
}

/// Prometheus text exposition of this gateway's registry.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    insightflow_runtime::http::metrics_response(&state.registry)
}
