//! The two sinks of the worker. Both are idempotent by event id, so at-least-once delivery
//! from Kafka becomes an exactly-once effect.

pub mod lock;
pub mod mysql;
pub mod redis;

/// How text columns are read (shared with the stats API).
pub use insightflow_store::DbText;

/// How a failed write should be handled.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is unreachable, overloaded, or a transaction lost a race: retry the same batch.
    #[error("transient: {0}")]
    Transient(#[source] anyhow::Error),
    /// The data itself was refused (too long, invalid JSON ...): retrying cannot help.
    #[error("refused data: {0}")]
    Data(#[source] anyhow::Error),
}

/// Truncates to at most `max` characters, on a character boundary.
pub(crate) fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Path as stored and rolled up (the column holds 512 characters).
pub(crate) fn stored_path(path: &str) -> &str {
    truncate_chars(path, 512)
}
