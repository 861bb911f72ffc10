use serde::{Deserialize, Serialize};

/// Input limits, all configurable (the gateway's `limits` settings) and published at
/// `GET /api/v1/limits`. Defaults are documented in the README.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct Limits {
    /// Request body size after decompression (413 beyond).
    pub max_body_bytes: usize,
    /// Events in one request (413 beyond).
    pub max_events_per_batch: usize,
    /// One event's JSON size (that event is rejected, the rest of the batch goes on).
    pub max_event_bytes: usize,
    /// Free-text fields (titles, element text, names, versions ...).
    pub max_string_bytes: usize,
    /// URLs and referrers.
    pub max_url_bytes: usize,
    /// Nesting depth of `properties` and `user_properties` (the object itself is depth 1).
    pub max_properties_depth: usize,
    /// How far in the future (after skew correction) an event time may be before it is
    /// clamped to the receive time.
    pub max_future_seconds: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_events_per_batch: 500,
            max_event_bytes: 32 * 1024,
            max_string_bytes: 1024,
            max_url_bytes: 4096,
            max_properties_depth: 8,
            max_future_seconds: 60,
        }
    }
}
