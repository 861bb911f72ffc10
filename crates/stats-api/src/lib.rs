//! The stats API, served by the worker for backend-for-frontend services: routes, keys and
//! limits, the queries over MySQL and Redis, the OpenAPI document and the embedded dashboard.
//! It reads what the consumer writes through the layout they share (`insightflow-store`) and
//! knows nothing of Kafka: a consuming process tells `/ready` about its consumer through
//! `ConsumerStatus`.
//!
//! Which store answers: live windows (online now, all-time counters, hot pages of recent
//! hours, the live stream) come from Redis; ranges come from MySQL (rollups for counts,
//! `user_events` for people, sessions, funnels, breakdowns and heatmaps). Both are written
//! from the same events exactly once, MySQL first, so every figure is exact and `as_of`
//! (read before the query) is a lower bound of what the answer includes. Exact only while
//! Redis is whole: answers with Redis figures read the project's generation marker in the
//! same round trip (`ApiState::redis_read`) and say `"exact": false` while Redis is lost or
//! rebuilding. Each read touches one project's keys, which share a hash slot: the same
//! pipelines run on one Redis and on Redis Cluster.

pub mod auth;
pub mod buckets;
pub mod cohorts;
pub mod console;
pub mod dashboard;
pub mod dashboard_cache;
pub mod envelope;
pub mod error;
pub mod event_pages;
pub mod filters;
pub mod funnels;
pub mod health;
pub mod limits;
pub mod live;
pub mod openapi;
pub mod pages;
pub mod params;
pub mod privacy;
pub mod property;
pub mod reference;
pub mod routes;
pub mod segments;
pub mod sessions;
pub mod settings;
pub mod stats;
pub mod summary;
pub mod timeseries;
pub mod token_buckets;
pub mod uniques;
pub mod users;

use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};
use deadpool_redis::redis::{self, FromRedisValue};
use insightflow_store::keys::{self, marker, Keys};
use insightflow_store::mysql::MysqlSettings;
use insightflow_store::redis::{Pool, Pooled, RedisPool, RedisSettings};
use prometheus::Registry;
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;

use auth::{Project, StatsAccess};
use error::{unavailable, ApiError};
use routes::Mount;
pub use settings::StatsSettings;
use stats::AsOf;

/// What a consuming process adds to `/ready`: the API does not know the consumer, the worker
/// tells it through this.
pub trait ConsumerStatus: Send + Sync {
    /// Kafka answered the last probe.
    fn kafka_reachable(&self) -> bool;
    /// Whether the consumer does its work, and what `/ready` says of it.
    fn consumer(&self) -> (bool, String);
}

/// The pools the API reads through.
#[derive(Clone)]
pub struct ReadStores {
    pub mysql: MySqlPool,
    pub redis: RedisPool,
}

impl ReadStores {
    /// The API's own pools (`stats.mysql_max_connections`, `stats.redis_pool_size`), apart
    /// from the consumer's: a storm of stats reads cannot starve the writes, nor a slow write
    /// the reads. MySQL stops the API's statements at `stats.query_timeout_ms`.
    pub async fn connect(
        mysql: &MysqlSettings,
        redis: &RedisSettings,
        stats: &StatsSettings,
    ) -> anyhow::Result<Self> {
        let timeout =
            (stats.query_timeout_ms > 0).then(|| Duration::from_millis(stats.query_timeout_ms));
        Ok(Self {
            mysql: insightflow_store::mysql::connect(mysql, stats.mysql_max_connections, timeout)
                .await?,
            redis: RedisPool::connect(redis, stats.redis_pool_size).await?,
        })
    }
}

pub struct ApiState {
    pub mysql: MySqlPool,
    pub redis: RedisPool,
    pub registry: Registry,
    /// Present when this process consumes: `/ready` then also reflects Kafka and the consumer.
    pub consumer: Option<Box<dyn ConsumerStatus>>,
    /// Stats API keys and their rate limits.
    pub access: StatsAccess,
    /// Fires on shutdown: ends live streams so the server can stop.
    pub shutdown: CancellationToken,
    /// Rendered dashboards, served while a newer one is computed (`dashboard_cache`).
    pub dashboards: std::sync::Arc<dashboard::DashboardCache>,
    /// Caps on live streams and heavy queries.
    pub limits: std::sync::Arc<limits::ApiLimits>,
    /// `/metrics` is served on its own listener (`http.metrics_listen`), not here.
    pub metrics_elsewhere: bool,
}

impl ApiState {
    pub fn redis_pool(&self) -> &Pool {
        self.redis.pool()
    }

    pub fn keys(&self, project: &Project) -> Keys {
        Keys::new(self.redis.prefix(), project.as_str())
    }

    pub async fn redis_conn(&self) -> Result<Pooled, ApiError> {
        Ok(self.redis.pool().get().await?)
    }

    pub fn db(&self) -> &sqlx::MySqlPool {
        &self.mysql
    }

    /// Runs a read of the project's Redis figures with its generation marker appended to the
    /// same pipeline (one round trip, so the marker describes the figures read), and returns
    /// the figures as `T` and whether Redis was whole when they were read. `pipe` reads only
    /// keys of `project` (one slot on a cluster).
    pub async fn redis_read<T: FromRedisValue>(
        &self,
        project: &Project,
        pipe: redis::Pipeline,
    ) -> Result<(T, RedisGeneration), ApiError> {
        let (replies, generation) = self.redis_replies(project, pipe).await?;
        Ok((
            redis::from_redis_value(redis::Value::Array(replies))?,
            generation,
        ))
    }

    /// `redis_read` with the project's freshness read in the same round trip: `meta` and the
    /// positions are appended to the pipeline, and come back as the answer's `as_of`.
    pub async fn redis_read_as_of<T: FromRedisValue>(
        &self,
        project: &Project,
        mut pipe: redis::Pipeline,
    ) -> Result<(T, AsOf, RedisGeneration), ApiError> {
        let keys = self.keys(project);
        pipe.hgetall(keys.meta()).hgetall(keys.positions());
        let (mut replies, generation) = self.redis_replies(project, pipe).await?;
        let positions: stats::Meta = redis::from_redis_value(last_reply(&mut replies)?)?;
        let meta: stats::Meta = redis::from_redis_value(last_reply(&mut replies)?)?;
        let figures = redis::from_redis_value(redis::Value::Array(replies))?;
        Ok((figures, AsOf::from_parts(&meta, positions), generation))
    }

    /// The pipeline's replies, with the project's generation marker appended to it and read
    /// off them.
    async fn redis_replies(
        &self,
        project: &Project,
        mut pipe: redis::Pipeline,
    ) -> Result<(Vec<redis::Value>, RedisGeneration), ApiError> {
        pipe.get(self.keys(project).generation());
        let mut conn = self.redis_conn().await?;
        let mut replies: Vec<redis::Value> = pipe.query_async(&mut *conn).await?;
        let marker: Option<String> = redis::from_redis_value(last_reply(&mut replies)?)?;
        let generation = match marker {
            Some(marker) => RedisGeneration::of_marker(Some(&marker)),
            None => self.unmarked(&mut conn, project).await?,
        };
        Ok((replies, generation))
    }

    /// A project without a marker: new to Redis (nothing of it to lose) while the deployment
    /// is whole and the project unregistered; otherwise lost (or being rebuilt).
    async fn unmarked(
        &self,
        conn: &mut Pooled,
        project: &Project,
    ) -> Result<RedisGeneration, ApiError> {
        let prefix = self.redis.prefix();
        let (deployment, registered): (Option<String>, bool) = redis::pipe()
            .get(keys::generation(prefix))
            .hexists(keys::projects(prefix), project.as_str())
            .query_async(&mut **conn)
            .await?;
        Ok(match (deployment.as_deref(), registered) {
            (Some(marker::READY), false) => RedisGeneration::Ready,
            (Some(marker::READY), true) | (None, _) => RedisGeneration::Lost,
            (Some(_), _) => RedisGeneration::Rebuilding,
        })
    }

    /// Freshness of the project's data, read before a MySQL query so the answer includes at
    /// least everything it names.
    pub async fn as_of(&self, project: &Project) -> Result<AsOf, ApiError> {
        let mut conn = self.redis_conn().await?;
        stats::as_of(&mut conn, &self.keys(project)).await
    }
}

fn last_reply(replies: &mut Vec<redis::Value>) -> Result<redis::Value, ApiError> {
    replies
        .pop()
        .ok_or_else(|| unavailable(anyhow::anyhow!("Redis answered fewer replies than asked")))
}

/// Whether Redis held every applied event when figures were read from it (the generation
/// marker, see the worker's `rebuild.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RedisGeneration {
    Ready,
    /// Being rebuilt from MySQL (or cleared first): figures are partial.
    Rebuilding,
    /// The marker is gone: Redis restarted empty and no rebuild has started yet.
    Lost,
}

impl RedisGeneration {
    fn of_marker(marker: Option<&str>) -> Self {
        match marker {
            Some(marker::READY) => Self::Ready,
            Some(_) => Self::Rebuilding,
            None => Self::Lost,
        }
    }

    pub fn is_ready(self) -> bool {
        self == Self::Ready
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Rebuilding => "rebuilding",
            Self::Lost => "lost",
        }
    }

    /// The less whole of two reads (an answer built from both).
    pub fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::Lost, _) | (_, Self::Lost) => Self::Lost,
            (Self::Rebuilding, _) | (_, Self::Rebuilding) => Self::Rebuilding,
            _ => Self::Ready,
        }
    }

    /// An answer holding Redis figures: unchanged while Redis is whole; otherwise
    /// `"exact": false` and `"redis"` naming the state, so no partial figure passes for truth.
    pub fn stamp(self, mut body: serde_json::Value) -> serde_json::Value {
        if !self.is_ready() {
            if let Some(fields) = body.as_object_mut() {
                fields.insert("exact".into(), false.into());
                fields.insert("redis".into(), self.as_str().into());
            }
        }
        body
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
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::bad("query", e.to_string()).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|e, _| ApiError::bad("path", e.to_string()).into()),
    )
    .app_data(
        web::JsonConfig::default()
            .limit(64 * 1024)
            .error_handler(|e, _| ApiError::bad("body", e.to_string()).into()),
    )
    .route("/openapi.json", web::get().to(openapi::document))
    .configure(console::configure)
    .service(
        web::scope("/api/v1/projects/{project}")
            .wrap(from_fn(limits::count_refusals))
            .configure(|cfg| routes::register(Mount::Project, cfg)),
    )
    .service(
        web::scope("/api/v1")
            .wrap(from_fn(limits::count_refusals))
            .configure(|cfg| routes::register(Mount::Project, cfg))
            .configure(|cfg| routes::register(Mount::Reference, cfg)),
    )
    .default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(
        "path",
        "no such endpoint; see /openapi.json",
    ))
}
