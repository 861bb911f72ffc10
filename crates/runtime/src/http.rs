//! HTTP plumbing both services share: request metrics by route template, and the Prometheus
//! text endpoint.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
    TextEncoder,
};

/// `{service}_http_requests_total{route,method,status}` and
/// `{service}_http_request_duration_seconds{route,method}`. Add it to the app as
/// `web::Data<HttpMetrics>` and wrap the app in [`record_request`].
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    pub fn register(registry: &Registry, service: &str) -> prometheus::Result<Self> {
        let metrics = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    format!("{service}_http_requests_total"),
                    "HTTP requests by route template and status",
                ),
                &["route", "method", "status"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    format!("{service}_http_request_duration_seconds"),
                    "HTTP request duration",
                )
                .buckets(exponential_buckets(0.0002, 2.0, 18)?),
                &["route", "method"],
            )?,
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        Ok(metrics)
    }
}

/// Counts and times every request by route template (never the raw path, which would put
/// user ids in label values).
pub async fn record_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(connection) = req.conn_data::<crate::server::OpenConnection>() {
        connection.mark_served();
    }
    let metrics = req.app_data::<web::Data<HttpMetrics>>().cloned();
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.call(req).await;
    if let Some(metrics) = metrics {
        // An error passed up by a middleware (the request deadline's 408) is answered by
        // actix from the error: count it by the status it becomes.
        let status = match &response {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        let status = status.as_u16().to_string();
        metrics
            .requests
            .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
            .inc();
        metrics
            .duration
            .with_label_values(&[route.as_str(), method.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    response
}

/// `process_*` of this process (resident memory, CPU seconds, open fds, start time), read from
/// /proc at each scrape: what the operators' dashboard shows per instance.
pub fn register_process_metrics(registry: &Registry) -> prometheus::Result<()> {
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(())
}

/// The registry in Prometheus text format.
pub fn metrics_response(registry: &Registry) -> HttpResponse {
    let mut buffer = Vec::with_capacity(16 * 1024);
    match TextEncoder::new().encode(&registry.gather(), &mut buffer) {
        Ok(()) => HttpResponse::Ok()
            .content_type(prometheus::TEXT_FORMAT)
            .body(buffer),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// Serves until `shutdown` fires, then stops taking connections and lets in-flight requests
/// finish. Cancels `shutdown` on return, so the caller's other tasks stop too even when a
/// server ended by itself. `servers`: the main one first, then e.g. the metrics listener.
pub async fn serve_until_cancelled(
    servers: Vec<actix_web::dev::Server>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let handles: Vec<_> = servers.iter().map(actix_web::dev::Server::handle).collect();
    let token = shutdown.clone();
    let stopper = tokio::spawn(async move {
        token.cancelled().await;
        for handle in handles {
            handle.stop(true).await;
        }
    });
    // Whichever server ends first (by itself, or stopped) ends the process's serving.
    let served = futures::future::select_all(servers).await.0;
    shutdown.cancel();
    let _ = stopper.await;
    served
}
