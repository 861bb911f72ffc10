//! The two sinks of the worker, which turn at-least-once delivery from Kafka into an
//! exactly-once effect.
//!
//! MySQL is written first, one transaction per batch: `event_ids` (`dedupe.rs`) stores an
//! event once, derived rows come from new events only, and each event keeps the message that
//! stored it (partition, offset). That tells, for every message, whether it is the one that
//! counts its event (`mysql::Verdict`).
//!
//! Redis is written second, in chunks, each one atomic: a chunk applies only if none of its
//! messages is below its partition's position in Redis (per project, `Keys::positions`), and
//! moves the positions past it. Within a partition messages are applied in offset order, so a position
//! says exactly which of its messages Redis has applied: a redelivered message below it was
//! applied, one at or past it was not (`redis.rs`). Nothing is remembered per event.

pub mod aggregates;
pub mod dedupe;
pub mod identity;
pub mod lock;
pub mod mysql;
pub mod redis;
pub mod sessions;

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
