use crate::privacy::PrivacySettings;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header::{self, HeaderName};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use bytes::Bytes;
use insightflow_model::{Limits, ProjectId};
use insightflow_runtime::http::{self, HttpMetrics};
use insightflow_runtime::kafka::BrokerProbe;
use insightflow_runtime::server::{self, ConnectionMetrics};
use prometheus::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::WriteKeys;
use crate::bots::BotRules;
use crate::client::ClientResolver;
use crate::geo::GeoDb;
use crate::metrics::IngestMetrics;
use crate::producer::EventProducer;
use crate::rate_limit::RateLimits;
use crate::routes;
use crate::settings::{HttpSettings, Settings};

/// Everything a request handler needs, built once.
pub struct AppState {
    pub producer: Arc<EventProducer>,
    pub keys: WriteKeys,
    pub clients: ClientResolver,
    pub privacy: PrivacySettings,
    pub limits: Limits,
    pub metrics: IngestMetrics,
    pub registry: Registry,
    pub retry_after_seconds: u32,
    pub rate_limits: Arc<RateLimits>,
    /// `/openapi.json`, rendered once.
    pub openapi: Bytes,
    /// `/metrics` is served by its own listener (`http.metrics_listen`), not the main port.
    pub metrics_elsewhere: bool,
}

pub struct Application {
    port: u16,
    server: Server,
    /// The `/metrics` listener, when `http.metrics_listen` is set, and its port.
    metrics: Option<(Server, u16)>,
    producer: Arc<EventProducer>,
    broker_watch: JoinHandle<()>,
    rate_limit_housekeeping: JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Application {
    /// Binds the configured address and builds the gateway.
    pub async fn build(
        settings: Settings,
        registry: Registry,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let address = (settings.http.host.as_str(), settings.http.port);
        let listener = TcpListener::bind(address)
            .with_context(|| format!("cannot listen on {}:{}", address.0, address.1))?;
        Self::build_with_listener(settings, listener, registry, shutdown).await
    }

    /// Builds the gateway on an already bound listener (tests bind port 0). Fails when Kafka
    /// cannot be reached, naming the address, rather than at the first request.
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
        registry: Registry,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        let port = listener.local_addr()?.port();
        insightflow_runtime::kafka::ensure_topics(
            &settings.kafka.connection(),
            std::slice::from_ref(&settings.kafka.topic),
        )
        .await?;
        let ingest_metrics = IngestMetrics::register(&registry)?;
        let http_metrics = web::Data::new(HttpMetrics::register(&registry, "ingest")?);
        http::register_process_metrics(&registry)?;
        let connections = settings.connections.clone();
        let connection_metrics = ConnectionMetrics::register(&registry, "ingest", &connections)?;
        let (broker, broker_watch) = BrokerProbe::spawn(
            &settings.kafka.connection(),
            &settings.kafka.topic.name,
            Duration::from_secs(1),
            shutdown.child_token(),
        )?;
        let producer = Arc::new(EventProducer::new(
            &settings.kafka,
            broker,
            ingest_metrics.clone(),
        )?);
        let default_project = ProjectId::parse(settings.auth.default_project.clone())
            .context("auth.default_project is not a valid project name")?;
        let rate_limits = Arc::new(RateLimits::new(&settings.rate_limit)?);
        let geo = match settings.geo.database() {
            Some(path) => Some(Arc::new(GeoDb::open(path)?)),
            None => None,
        };
        let rate_limit_housekeeping = tokio::spawn(
            rate_limits
                .clone()
                .housekeeping(Duration::from_secs(60), shutdown.child_token()),
        );
        let cors = settings.http.clone();
        let state = web::Data::new(AppState {
            producer: producer.clone(),
            keys: WriteKeys::new(settings.auth.key_list()?, default_project),
            clients: ClientResolver::new(settings.http.trusted_proxies.clone(), 10_000)
                .with_ip_policy(settings.privacy.ip)
                .with_bots(BotRules::new(
                    &settings.bots.user_agents,
                    settings.bots.ignore_ips.clone(),
                ))
                .with_geo(geo),
            privacy: settings.privacy.clone(),
            limits: settings.limits.clone(),
            metrics: ingest_metrics,
            registry: registry.clone(),
            retry_after_seconds: settings.http.retry_after_seconds,
            rate_limits,
            openapi: Bytes::from(crate::openapi::document()?),
            metrics_elsewhere: settings.metrics_listen().is_some(),
        });
        let workers = match settings.http.workers {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        let deadline = web::Data::new(connections.deadline());
        let connection_data = web::Data::new(connection_metrics.clone());
        // Started last of all that can fail, so a failed start-up leaves no server running.
        let metrics = match settings.metrics_listen() {
            Some(address) => Some(server::metrics_server(
                address,
                registry.clone(),
                &connections,
            )?),
            None => None,
        };
        // Middleware wrapped last runs first: request metrics see every answer, then CORS.
        // The request deadline wraps each route (`routes::configure`), inside both, so its
        // 408 is counted and carries CORS headers; it bounds the handler, body read included.
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(deadline.clone())
                .app_data(connection_data.clone())
                .wrap(cors_policy(&cors))
                .app_data(http_metrics.clone())
                .wrap(from_fn(http::record_request))
                .configure(routes::configure)
        })
        .workers(workers)
        .on_connect(connection_metrics.on_connect())
        .max_connections(connections.per_worker(workers))
        .client_request_timeout(connections.header_timeout())
        .keep_alive(connections.keep_alive())
        // After answering a request whose body it did not read (a 408, a 413), the server
        // discards what the client still sends for this long before closing: closing at once
        // with unread data resets the connection, and the client could lose the answer.
        .client_disconnect_timeout(Duration::from_secs(1))
        .disable_signals()
        .shutdown_timeout(10)
        .listen(listener)?
        .run();
        Ok(Self {
            port,
            server,
            metrics,
            producer,
            broker_watch,
            rate_limit_housekeeping,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the separate `/metrics` listener, when `http.metrics_listen` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(_, port)| *port)
    }

    /// Serves until the shutdown token fires, then stops taking requests, lets in-flight ones
    /// finish, and flushes the producer so nothing acknowledged stays behind in memory.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let mut servers = vec![self.server];
        servers.extend(self.metrics.map(|(server, _)| server));
        let served = http::serve_until_cancelled(servers, self.shutdown).await;
        tracing::info!("ingest: intake stopped; flushing the producer");
        let _ = self.broker_watch.await;
        let _ = self.rate_limit_housekeeping.await;
        let producer = self.producer;
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await?;
        tracing::info!("ingest: stopped");
        served.context("HTTP server failed")
    }
}

/// Browsers may post from the configured origins; preflights are answered by the middleware
/// and cached for `cors_max_age_seconds`.
fn cors_policy(http: &HttpSettings) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "OPTIONS"])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::AUTHORIZATION,
            HeaderName::from_static("x-write-key"),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(http.cors_max_age_seconds);
    if http.cors_allowed_origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin();
    } else {
        for origin in &http.cors_allowed_origins {
            cors = cors.allowed_origin(origin);
        }
    }
    cors
}
