//! The stats API's caps on what one client, and all clients together, may hold: live
//! streams per key and in total, and heavy queries at once. Each refusal is a clear answer
//! (429 for a key's share, 503 for the process's, both with Retry-After) and is counted in
//! `worker_stats_refused_total{limit}` by [`count_refusals`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest};
use insightflow_runtime::secret::KeyId;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::ApiState;
use crate::StatsSettings;

#[derive(Clone)]
pub struct ApiLimitMetrics {
    pub auth_failures: IntCounterVec,
    pub refused: IntCounterVec,
    pub live_streams: IntGauge,
    pub heavy_running: IntGauge,
}

impl ApiLimitMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "worker_stats_auth_failures_total",
                    "Stats API requests with a missing or unknown key",
                ),
                &["reason"],
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "worker_stats_refused_total",
                    "Stats API requests refused by a cap: key_rate, failed_auth, \
                     live_per_key, live_total, heavy_busy, query_timeout",
                ),
                &["limit"],
            )?,
            live_streams: IntGauge::new(
                "worker_stats_live_streams_open",
                "Live streams (/live) open now (caps: stats.live_streams_max, _per_key)",
            )?,
            heavy_running: IntGauge::new(
                "worker_stats_heavy_queries_running",
                "Heavy stats queries running now (cap: stats.heavy_queries_max)",
            )?,
        };
        registry.register(Box::new(m.auth_failures.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.live_streams.clone()))?;
        registry.register(Box::new(m.heavy_running.clone()))?;
        Ok(m)
    }
}

/// Counts every request a cap refused, by the cap's name.
pub async fn count_refusals(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<ApiState>>().cloned();
    let response = next.call(req).await?;
    let limit = response
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .and_then(ApiError::limit);
    if let (Some(limit), Some(state)) = (limit, state) {
        state
            .limits
            .metrics
            .refused
            .with_label_values(&[limit])
            .inc();
    }
    Ok(response)
}

/// The caps, shared by the API's workers.
pub struct ApiLimits {
    pub metrics: ApiLimitMetrics,
    live_per_key: usize,
    live_max: usize,
    /// Open streams per key (`None`: an open API) and in total.
    live: Mutex<(HashMap<Option<KeyId>, usize>, usize)>,
    heavy: Arc<Semaphore>,
    heavy_max: usize,
    heavy_wait: Duration,
}

impl ApiLimits {
    pub fn new(settings: &StatsSettings, metrics: ApiLimitMetrics) -> anyhow::Result<Self> {
        anyhow::ensure!(
            settings.live_streams_per_key > 0 && settings.live_streams_max > 0,
            "stats.live_streams_per_key and stats.live_streams_max must be at least 1"
        );
        anyhow::ensure!(
            settings.heavy_queries_max > 0,
            "stats.heavy_queries_max must be at least 1"
        );
        Ok(Self {
            metrics,
            live_per_key: settings.live_streams_per_key,
            live_max: settings.live_streams_max,
            live: Mutex::new((HashMap::new(), 0)),
            heavy: Arc::new(Semaphore::new(settings.heavy_queries_max)),
            heavy_max: settings.heavy_queries_max,
            heavy_wait: Duration::from_millis(settings.heavy_query_wait_ms),
        })
    }

    /// A place for one more live stream of `key`, held until the stream ends.
    pub fn open_stream(self: &Arc<Self>, key: Option<KeyId>) -> Result<LiveSlot, ApiError> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let (per_key, total) = &mut *live;
        if *total >= self.live_max {
            return Err(ApiError::Busy {
                limit: "live_total",
                field: "",
                reason: format!(
                    "this server holds its maximum of {} live streams (stats.live_streams_max)",
                    self.live_max
                ),
                retry_after_seconds: 30,
            });
        }
        let mine = per_key.entry(key).or_insert(0);
        if *mine >= self.live_per_key {
            return Err(ApiError::KeyCap {
                limit: "live_per_key",
                field: "authorization",
                reason: format!(
                    "this key holds its maximum of {} live streams (stats.live_streams_per_key); \
                     close one first",
                    self.live_per_key
                ),
                retry_after_seconds: 30,
            });
        }
        *mine += 1;
        *total += 1;
        self.metrics.live_streams.inc();
        Ok(LiveSlot {
            limits: self.clone(),
            key,
        })
    }
}

/// One open live stream; dropping it (the stream ended, or the client left) frees the place.
pub struct LiveSlot {
    limits: Arc<ApiLimits>,
    key: Option<KeyId>,
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        let mut live = self.limits.live.lock().unwrap_or_else(|p| p.into_inner());
        let (per_key, total) = &mut *live;
        if let Some(mine) = per_key.get_mut(&self.key) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                per_key.remove(&self.key);
            }
        }
        *total = total.saturating_sub(1);
        self.limits.metrics.live_streams.dec();
    }
}

/// A turn to run a heavy query (funnels, conversion, breakdowns, heatmaps, time series,
/// dashboards): taken as a handler argument after the project, held until the handler
/// returns. Waits at most `stats.heavy_query_wait_ms` for a turn, then answers 503.
pub struct Heavy {
    _permit: OwnedSemaphorePermit,
    running: IntGauge,
}

impl Drop for Heavy {
    fn drop(&mut self) {
        self.running.dec();
    }
}

impl Heavy {
    /// Waits for a turn, at most `stats.heavy_query_wait_ms`.
    pub async fn acquire(state: &ApiState) -> Result<Self, ApiError> {
        let limits = &state.limits;
        let permit =
            match tokio::time::timeout(limits.heavy_wait, limits.heavy.clone().acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                // Timed out, or the semaphore was closed (it never is).
                _ => {
                    return Err(ApiError::Busy {
                        limit: "heavy_busy",
                        field: "",
                        reason: format!(
                            "{} heavy queries are running, the most this server runs at once \
                             (stats.heavy_queries_max), and none ended within {} ms; retry \
                             shortly",
                            limits.heavy_max,
                            limits.heavy_wait.as_millis()
                        ),
                        retry_after_seconds: 2,
                    })
                }
            };
        limits.metrics.heavy_running.inc();
        Ok(Self {
            _permit: permit,
            running: limits.metrics.heavy_running.clone(),
        })
    }
}

impl FromRequest for Heavy {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        Box::pin(async move {
            let state = state
                .ok_or_else(|| ApiError::Unavailable(anyhow::anyhow!("stats API state missing")))?;
            Self::acquire(&state).await
        })
    }
}
