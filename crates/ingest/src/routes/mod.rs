pub mod events;
pub mod health;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health::health))
        .route("/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(health::metrics))
        .route("/api/v1/events", web::post().to(events::ingest))
        .route("/api/v1/events/batch", web::post().to(events::ingest))
        .route("/api/v1/limits", web::get().to(events::limits));
}
