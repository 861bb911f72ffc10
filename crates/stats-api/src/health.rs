use actix_web::{web, HttpResponse, ResponseError};

use super::error::ApiError;

use super::ApiState;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready when MySQL and Redis answer, and (in a consuming process) Kafka answered the last
/// probe and the consumer runs, is not paused on a failing dependency and is not starved of
/// partitions while its group stalls (`ConsumerHealth`).
pub async fn ready(state: web::Data<ApiState>) -> HttpResponse {
    let (mysql, redis) = tokio::join!(
        insightflow_store::mysql::ping(&state.mysql),
        state.redis.ping()
    );
    // A serving-only process does not need Kafka: it is not part of its readiness.
    let kafka = state.consumer.as_ref().map(|c| c.kafka_reachable());
    let consumer = state.consumer.as_ref().map(|c| c.consumer());
    let ready =
        mysql && redis && kafka != Some(false) && consumer.as_ref().is_none_or(|(ok, _)| *ok);
    let status = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "mysql": status(mysql),
        "redis": status(redis),
        "kafka": kafka.map(status),
        "consumer": consumer.map(|(_, described)| described),
        "stats_api": if state.access.is_open() {
            "open: no keys (stats.allow_open = true, development only)"
        } else {
            "keys required"
        },
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(body)
    }
}

pub async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    if state.metrics_elsewhere {
        return ApiError::not_found(
            "path",
            "/metrics is served on the metrics listener (http.metrics_listen)",
        )
        .error_response();
    }
    insightflow_runtime::http::metrics_response(&state.registry)
}
