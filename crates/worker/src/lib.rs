//! The InsightFlow worker: a Kafka consumer-group member that applies events to MySQL and
//! Redis exactly once, and the stats API that reads them.

pub mod api;
pub mod consumer;
pub mod keys;
pub mod metrics;
pub mod rebuild;
pub mod retention;
pub mod settings;
pub mod startup;
pub mod store;

pub use settings::Settings;
pub use startup::{Application, Role};
