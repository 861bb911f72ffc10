//! The InsightFlow worker: a Kafka consumer-group member that applies events to MySQL and
//! Redis exactly once, and the process that serves the stats API (`insightflow-stats-api`)
//! over them.

pub mod consumer;
pub mod metrics;
pub mod rebuild;
pub mod retention;
pub mod settings;
pub mod startup;
pub mod store;

/// The Redis key layout, shared with the stats API (`insightflow-store`).
pub use insightflow_store::keys;
pub use settings::Settings;
pub use startup::{Application, Role};
