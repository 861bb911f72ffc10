//! Plumbing shared by the gateway and the worker. Nothing here knows about events.

pub mod http;
pub mod kafka;
pub mod net;
pub mod secret;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;
