use actix_web::{web, HttpResponse};

use super::ApiState;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready when MySQL and Redis answer, Kafka answered the last probe, and (in a consuming
/// process) the consumer is not paused on a failing dependency.
pub async fn ready(state: web::Data<ApiState>) -> HttpResponse {
    let (mysql, redis) = tokio::join!(state.mysql.ping(), state.redis.ping());
    let kafka = state.kafka.is_reachable();
    let consumer = state.consumer.as_ref().map(|c| c.is_healthy());
    let ready = mysql && redis && kafka && consumer.unwrap_or(true);
    let status = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "mysql": status(mysql),
        "redis": status(redis),
        "kafka": status(kafka),
        "consumer": consumer.map(|ok| if ok { "ok" } else { "paused: a dependency is failing" }),
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
    insightflow_runtime::http::metrics_response(&state.registry)
}
