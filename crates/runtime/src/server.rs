//! What bounds a client's use of an HTTP server (open connections, time to send a request
//! head, time to send the rest of a request, idle keep-alive), the metrics that show each
//! bound, and the separate `/metrics` listener. Both services build their servers with these.

use std::any::Any;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Extensions, Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use prometheus::{IntCounter, IntGauge, Registry};
use serde::Deserialize;

/// `[connections]` in both services' settings.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectionSettings {
    /// Open connections the process serves at once; further clients wait in the kernel's
    /// accept queue until one closes.
    pub max_connections: usize,
    /// A new connection must deliver a complete request head within this long, or it gets
    /// 408 and is closed (slow-header clients, idle connections that never send).
    pub header_timeout_ms: u64,
    /// From the request head to the response head: reading the body and answering. A
    /// request over it gets 408 (a slow body cannot hold a worker forever).
    pub request_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this long.
    pub keep_alive_seconds: u64,
}

impl ConnectionSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_connections > 0,
            "connections.max_connections must be at least 1"
        );
        anyhow::ensure!(
            self.header_timeout_ms > 0 && self.request_timeout_ms > 0,
            "connections.header_timeout_ms and connections.request_timeout_ms must be positive"
        );
        Ok(())
    }

    /// actix counts connections per worker thread: the process's cap split between them.
    pub fn per_worker(&self, workers: usize) -> usize {
        self.max_connections.div_ceil(workers.max(1)).max(1)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_seconds)
    }

    pub fn deadline(&self) -> RequestDeadline {
        RequestDeadline(Duration::from_millis(self.request_timeout_ms))
    }
}

/// `{service}_http_connections_open` (and `_max`, the cap), and
/// `{service}_http_requests_timed_out_total`.
#[derive(Clone)]
pub struct ConnectionMetrics {
    open: IntGauge,
    timed_out: IntCounter,
    without_request: IntCounter,
}

impl ConnectionMetrics {
    pub fn register(
        registry: &Registry,
        service: &str,
        settings: &ConnectionSettings,
    ) -> prometheus::Result<Self> {
        let open = IntGauge::new(
            format!("{service}_http_connections_open"),
            "HTTP connections open now (the cap is _max)",
        )?;
        let max = IntGauge::new(
            format!("{service}_http_connections_max"),
            "connections.max_connections: open connections served at once",
        )?;
        let timed_out = IntCounter::new(
            format!("{service}_http_requests_timed_out_total"),
            "requests answered 408 because they took longer than connections.request_timeout_ms",
        )?;
        let without_request = IntCounter::new(
            format!("{service}_http_connections_without_request_total"),
            "connections closed before any request reached the application: a head not sent \
             within connections.header_timeout_ms (408), a malformed head, or a client that left",
        )?;
        max.set(i64::try_from(settings.max_connections).unwrap_or(i64::MAX));
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(max))?;
        registry.register(Box::new(timed_out.clone()))?;
        registry.register(Box::new(without_request.clone()))?;
        Ok(Self {
            open,
            timed_out,
            without_request,
        })
    }

    /// For `HttpServer::on_connect`: counts the connection open until actix drops it.
    pub fn on_connect(&self) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + Clone + 'static {
        let metrics = self.clone();
        move |_, extensions| {
            metrics.open.inc();
            extensions.insert(OpenConnection {
                metrics: metrics.clone(),
                served: AtomicBool::new(false),
            });
        }
    }
}

/// Lives in a connection's extensions: dropped when the connection closes.
pub(crate) struct OpenConnection {
    metrics: ConnectionMetrics,
    /// A request reached the application (see `http::record_request`).
    served: AtomicBool,
}

impl OpenConnection {
    pub(crate) fn mark_served(&self) {
        self.served.store(true, Ordering::Relaxed);
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.open.dec();
        if !self.served.load(Ordering::Relaxed) {
            self.metrics.without_request.inc();
        }
    }
}

/// How long a request may take from its head to its response head. Add it as app data next
/// to [`ConnectionMetrics`] and wrap the app in [`enforce_deadline`].
#[derive(Debug, Clone, Copy)]
pub struct RequestDeadline(pub Duration);

/// Answers 408 with a JSON body when the request (reading its body included) is not answered
/// within its [`RequestDeadline`]. A streamed response (server-sent events) is answered at
/// once and is not cut by this.
pub async fn enforce_deadline(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(deadline) = req.app_data::<web::Data<RequestDeadline>>().map(|d| d.0) else {
        return next.call(req).await;
    };
    let metrics = req.app_data::<web::Data<ConnectionMetrics>>().cloned();
    match tokio::time::timeout(deadline, next.call(req)).await {
        Ok(response) => response,
        Err(_) => {
            if let Some(metrics) = metrics {
                metrics.timed_out.inc();
            }
            // The request was handed to the router, so it cannot be answered as a
            // `ServiceResponse` here: the error becomes the response.
            Err(RequestTimedOut(deadline).into())
        }
    }
}

/// A request that took longer than its deadline: 408 with the usual JSON error body.
#[derive(Debug, thiserror::Error)]
#[error("the request was not received and answered within {} ms", .0.as_millis())]
pub struct RequestTimedOut(pub Duration);

impl actix_web::ResponseError for RequestTimedOut {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::REQUEST_TIMEOUT
    }

    fn error_response(&self) -> HttpResponse {
        // The body may be half read: the connection cannot carry another request.
        HttpResponse::RequestTimeout()
            .force_close()
            .json(serde_json::json!({
                "error": "request_timeout",
                "field": "body",
                "reason": format!(
                    "the request was not received and answered within {} ms \
                     (connections.request_timeout_ms)",
                    self.0.as_millis()
                ),
            }))
    }
}

/// `/metrics` on a listener of its own (`http.metrics_listen`), so the main port, which may
/// face the internet, need not expose it. Serves nothing else.
pub fn metrics_server(
    address: &str,
    registry: Registry,
    settings: &ConnectionSettings,
) -> anyhow::Result<(Server, u16)> {
    let listener = TcpListener::bind(address)
        .with_context(|| format!("cannot listen on http.metrics_listen = {address}"))?;
    let port = listener.local_addr()?.port();
    let registry = web::Data::new(registry);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(registry.clone())
            .route(
                "/metrics",
                web::get().to(|registry: web::Data<Registry>| async move {
                    crate::http::metrics_response(&registry)
                }),
            )
            .default_service(web::to(|| async {
                HttpResponse::NotFound().json(serde_json::json!({
                    "error": "not_found", "field": "path",
                    "reason": "this listener serves /metrics only",
                }))
            }))
    })
    .workers(1)
    .max_connections(64)
    .client_request_timeout(settings.header_timeout())
    .keep_alive(settings.keep_alive())
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok((server, port))
}
