//! The stats API served by the worker for backend-for-frontend services.

pub mod health;
pub mod stats;

use actix_web::web;
use deadpool_redis::Pool;
use insightflow_runtime::kafka::BrokerProbe;
use prometheus::Registry;

use crate::consumer::ConsumerHealth;
use crate::metrics::WorkerMetrics;
use crate::store::mysql::MysqlStore;
use crate::store::redis::RedisStore;

pub struct ApiState {
    pub mysql: MysqlStore,
    pub redis: RedisStore,
    pub metrics: WorkerMetrics,
    pub registry: Registry,
    /// Present when this process consumes: `/ready` then also reflects the consumer.
    pub consumer: Option<ConsumerHealth>,
    pub kafka: BrokerProbe,
}

impl ApiState {
    pub fn redis_pool(&self) -> &Pool {
        self.redis.pool()
    }
}

/// Health, readiness and metrics: served in every role.
pub fn configure_operational(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health::health))
        .route("/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(health::metrics));
}

/// Everything: operational endpoints and the stats API.
pub fn configure(cfg: &mut web::ServiceConfig) {
    configure_operational(cfg);
    cfg.route("/api/v1/stats/events", web::get().to(stats::event_counts));
}
