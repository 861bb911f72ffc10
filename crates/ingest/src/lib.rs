//! The InsightFlow ingest gateway: SDK batches in, validated events out to Kafka.
//! Stateless and thin: no database or Redis on the request path.

pub mod auth;
pub mod body;
pub mod bots;
pub mod client;
pub mod error;
pub mod geo;
pub mod metrics;
pub mod openapi;
pub mod privacy;
pub mod producer;
pub mod rate_limit;
pub mod routes;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::Application;
