use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use insightflow_runtime::http::{self, HttpMetrics};
use insightflow_runtime::kafka::{ensure_topics, topic_retention, BrokerProbe};
use insightflow_runtime::server::{self, ConnectionMetrics};
use prometheus::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use insightflow_stats_api::limits::ApiLimitMetrics;
use insightflow_stats_api::{self as api, ApiState, ConsumerStatus, ReadStores};

use crate::consumer::{self, ConsumerHealth, ConsumerReadiness, EventConsumer};
use crate::metrics::WorkerMetrics;
use crate::settings::Settings;
use crate::store::mysql::MysqlStore;
use crate::store::redis::RedisStore;
use crate::{rebuild, retention};

/// What this process does. Operators scale consumers and API replicas independently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Consume and serve the stats API (the default).
    All,
    /// Consume only (no HTTP server but `/health`, `/ready`, `/metrics` are still served).
    Consume,
    /// Serve the stats API only.
    Serve,
}

impl Role {
    fn consumes(self) -> bool {
        matches!(self, Self::All | Self::Consume)
    }
}

pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    servers: Vec<Server>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(
        settings: Settings,
        role: Role,
        registry: Registry,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let address = (settings.http.host.as_str(), settings.http.port);
        let listener = TcpListener::bind(address)
            .with_context(|| format!("cannot listen on {}:{}", address.0, address.1))?;
        Self::build_with_listener(settings, role, listener, registry, shutdown).await
    }

    /// Connects to MySQL, Redis and Kafka (failing with the unreachable one's address), starts
    /// the consumer, the Redis guard and the retention job when the role consumes, and the
    /// HTTP server.
    pub async fn build_with_listener(
        settings: Settings,
        role: Role,
        listener: TcpListener,
        registry: Registry,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let port = listener.local_addr()?.port();
        check_settings(&settings, role)?;
        let metrics = WorkerMetrics::register(&registry)?;
        let http_metrics = web::Data::new(HttpMetrics::register(&registry, "worker")?);
        http::register_process_metrics(&registry)?;
        let connection_metrics =
            ConnectionMetrics::register(&registry, "worker", &settings.connections)?;
        let limit_metrics = ApiLimitMetrics::register(&registry)?;
        // Serving and consuming never share a pool (`ReadStores::connect`); a process that
        // only consumes answers `/ready` through the consumer's pools.
        let (consumer_stores, stores) = if role == Role::Consume {
            let mysql = MysqlStore::connect(&settings.mysql)
                .await?
                .with_sessions(settings.sessions.rule());
            let redis = RedisStore::connect(&settings.redis, &settings.aggregates).await?;
            let shared = ReadStores {
                mysql: mysql.pool().clone(),
                redis: redis.shared().clone(),
            };
            (Some((mysql, redis)), shared)
        } else {
            (
                None,
                ReadStores::connect(&settings.mysql, &settings.redis, &settings.stats).await?,
            )
        };
        let mut tasks: Vec<JoinHandle<anyhow::Result<()>>> = Vec::new();
        // Only a consuming process talks to Kafka: `serve` needs MySQL and Redis alone.
        let kafka = if role.consumes() {
            ensure_topics(&settings.kafka.connection(), &settings.kafka.topics()).await?;
            let (kafka, probe_task) = BrokerProbe::spawn(
                &settings.kafka.connection(),
                &settings.kafka.topic.name,
                Duration::from_secs(2),
                shutdown.child_token(),
            )?;
            tasks.push(tokio::spawn(async move {
                probe_task.await?;
                Ok(())
            }));
            Some(kafka)
        } else {
            None
        };
        let consumer_status = if let Some(kafka) = kafka {
            // The consumer's own pools (in the consume role, the same as /ready's).
            let (mysql, redis) = match consumer_stores {
                Some(stores) => stores,
                None => (
                    MysqlStore::connect(&settings.mysql)
                        .await?
                        .with_sessions(settings.sessions.rule()),
                    RedisStore::connect(&settings.redis, &settings.aggregates).await?,
                ),
            };
            let kept =
                topic_retention(&settings.kafka.connection(), &settings.kafka.topic.name).await?;
            consumer::replay_window::check(
                &settings.kafka.topic.name,
                kept,
                &settings.aggregates,
                &settings.retention,
            )
            .map_err(|reason| {
                anyhow::anyhow!("the dedupe window does not cover replays: {reason}")
            })?;
            // Before the consumer: it cannot apply anything to Redis until the guard found
            // the generation marker (or rebuilt Redis and set it).
            let guard = rebuild::guard(
                mysql.clone(),
                redis.clone(),
                metrics.clone(),
                shutdown.child_token(),
            );
            tasks.push(tokio::spawn(stop_all_when_done(
                "Redis guard",
                shutdown.clone(),
                guard,
            )));
            let health = ConsumerHealth::new(Duration::from_millis(u64::from(
                settings.kafka.session_timeout_ms,
            )));
            let consumer = EventConsumer::new(
                &settings.kafka,
                settings.backoff.clone(),
                mysql.clone(),
                redis.clone(),
                metrics.clone(),
                health.clone(),
            )?;
            let consumed = consumer.run(shutdown.child_token());
            tasks.push(tokio::spawn(stop_all_when_done(
                "consumer",
                shutdown.clone(),
                consumed,
            )));
            let lag = consumer::lag::run(
                settings.kafka.clone(),
                Duration::from_millis(settings.kafka.lag_probe_interval_ms),
                metrics.clone(),
                health.clone(),
                shutdown.child_token(),
            );
            tasks.push(tokio::spawn(stop_all_when_done(
                "lag probe",
                shutdown.clone(),
                lag,
            )));
            let job = retention::run(
                settings.retention.clone(),
                mysql.clone(),
                redis.clone(),
                metrics.clone(),
                shutdown.child_token(),
            );
            tasks.push(tokio::spawn(async move {
                job.await;
                Ok(())
            }));
            Some(Box::new(ConsumerReadiness { kafka, health }) as Box<dyn ConsumerStatus>)
        } else {
            None
        };
        let state = web::Data::new(ApiState {
            mysql: stores.mysql,
            redis: stores.redis,
            registry,
            consumer: consumer_status,
            access: stats_access(&settings, role)?.with_metrics(limit_metrics.clone()),
            shutdown: shutdown.clone(),
            dashboards: api::dashboard::cache(&settings.stats),
            limits: Arc::new(api::limits::ApiLimits::new(&settings.stats, limit_metrics)?),
            metrics_elsewhere: !settings.http.metrics_listen.is_empty(),
        });
        let metrics_server = match settings.http.metrics_listen.as_str() {
            "" => None,
            address => Some(server::metrics_server(
                address,
                state.registry.clone(),
                &settings.connections,
            )?),
        };
        let workers = match settings.http.workers {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        let serve_stats = role != Role::Consume;
        let limits = settings.connections.clone();
        let deadline = web::Data::new(limits.deadline());
        let on_connect = connection_metrics.on_connect();
        let connection_metrics = web::Data::new(connection_metrics);
        let server = HttpServer::new(move || {
            let app = App::new()
                .app_data(state.clone())
                .app_data(http_metrics.clone())
                .app_data(deadline.clone())
                .app_data(connection_metrics.clone())
                .wrap(from_fn(server::enforce_deadline))
                .wrap(from_fn(http::record_request));
            if serve_stats {
                app.configure(api::configure)
            } else {
                app.configure(api::configure_operational)
            }
        })
        .workers(workers)
        .on_connect(on_connect)
        .max_connections(limits.per_worker(workers))
        .client_request_timeout(limits.header_timeout())
        .client_disconnect_timeout(Duration::from_secs(1))
        .keep_alive(limits.keep_alive())
        .disable_signals()
        .shutdown_timeout(10)
        .listen(listener)?
        .run();
        let (metrics_server, metrics_port) = metrics_server.unzip();
        Ok(Self {
            port,
            metrics_port,
            servers: std::iter::once(server).chain(metrics_server).collect(),
            tasks,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the separate `/metrics` listener, when `http.metrics_listen` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    /// Runs until the shutdown token fires (a signal, or a task that ended on its own), then
    /// stops the HTTP server and waits for the consumer to finish its batch and commit. Fails
    /// when a task failed: the process exits non-zero and its supervisor restarts it.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = http::serve_until_cancelled(self.servers, self.shutdown).await;
        let mut failure = None;
        for task in self.tasks {
            let error = match task.await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("a worker task panicked: {e}"),
            };
            tracing::error!(error = %format!("{error:#}"), "a worker task failed");
            failure.get_or_insert(error);
        }
        tracing::info!("worker stopped");
        served.context("HTTP server failed")?;
        failure.map_or(Ok(()), Err)
    }
}

/// What loading cannot check: keys, caps and timeouts that parse but cannot be used. Run
/// before anything connects, so a bad setting fails at once (`main`: one line, status 2).
pub fn check_settings(settings: &Settings, role: Role) -> anyhow::Result<()> {
    settings.connections.validate()?;
    stats_access(settings, role)?;
    api::limits::ApiLimits::new(
        &settings.stats,
        ApiLimitMetrics::register(&Registry::new())?,
    )?;
    Ok(())
}

/// The stats API's keys. A process that serves the API with no keys refuses to start unless
/// `stats.allow_open` says that is on purpose: nothing answers without a key by accident.
fn stats_access(settings: &Settings, role: Role) -> anyhow::Result<api::auth::StatsAccess> {
    let access = api::auth::StatsAccess::from_settings(&settings.stats)?;
    if role != Role::Consume && access.is_open() {
        anyhow::ensure!(
            settings.stats.allow_open,
            "the stats API has no keys and would answer anyone: set WORKER__STATS__API_KEYS \
             (e.g. WORKER__STATS__API_KEYS='a-long-random-token=default'), or \
             WORKER__STATS__ALLOW_OPEN=true to serve it open on purpose (development only)"
        );
        tracing::warn!(
            "the stats API is OPEN: no keys, no rate limit (stats.allow_open = true); \
             set stats.api_keys anywhere but on a development machine"
        );
    }
    Ok(access)
}

/// Runs a task that must last as long as the process. If it ends before shutdown was asked
/// for (an error, a panic, or a return), the whole process stops and the task's end is
/// returned as an error: supervisors restart processes, not tasks.
async fn stop_all_when_done(
    name: &'static str,
    shutdown: CancellationToken,
    task: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    let outcome = tokio::spawn(task).await;
    if shutdown.is_cancelled() {
        return outcome.map_err(|e| anyhow::anyhow!("the {name} task panicked: {e}"))?;
    }
    tracing::error!(
        task = name,
        "a task ended before shutdown; stopping the process"
    );
    shutdown.cancel();
    match outcome {
        Ok(Ok(())) => anyhow::bail!("the {name} task ended before shutdown"),
        Ok(Err(e)) => Err(e.context(format!("the {name} task failed"))),
        Err(e) => anyhow::bail!("the {name} task panicked: {e}"),
    }
}
