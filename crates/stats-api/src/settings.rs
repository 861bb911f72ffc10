//! `[stats]` in the worker's settings (`WORKER__STATS__*`): keys, limits and the API's own
//! pools.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct StatsSettings {
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub api_keys: Vec<String>,
    /// Serve the stats API without keys (development only); without this, no keys is an error.
    pub allow_open: bool,
    /// How long a rendered dashboard is shared by identical requests; 0 = never.
    pub dashboard_cache_ms: u64,
    /// How old a dashboard may be when served while a newer one is computed.
    pub dashboard_max_stale_ms: u64,
    pub failed_auth_per_minute: u32,
    pub live_streams_per_key: usize,
    pub live_streams_max: usize,
    pub heavy_queries_max: usize,
    pub heavy_query_wait_ms: u64,
    /// MySQL stops a stats query after this long; 0 = no limit.
    pub query_timeout_ms: u64,
    /// The stats API's own pools (the consumer has `mysql.max_connections`, `redis.pool_size`).
    pub mysql_max_connections: u32,
    pub redis_pool_size: usize,
}
