//! The facts both sides of the worker rely on: the consumer writes MySQL and Redis, the stats
//! API (`insightflow-stats-api`) reads them, and neither depends on the other.
//!
//! - `keys`: the Redis key layout (the consumer writes, the stats API reads) and
//!   `keys::marker`, the values of the marker that says whether Redis is whole.
//! - `text`: `DbText`, how every text column is read back from MySQL.
//! - `person`: how the suppression list and the erasure audit name a person (a digest).
//! - `mysql`, `redis`: the connection settings and how a pool is connected and checked, so
//!   every pool fails at boot with the address it could not reach.

pub mod keys;
pub mod mysql;
pub mod person;
pub mod redis;
pub mod text;

pub use text::DbText;
