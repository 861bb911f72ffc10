//! The Redis key layout, in one place: the consumer writes the keys these functions name
//! (`crates/worker/src/store/aggregates.rs` builds its commands with them), and the stats API
//! reads them through the same functions.
//!
//! Every key is `{prefix}:{project}:{name}`. Time buckets are UTC and numbered from the epoch
//! (minute = unix seconds / 60, hour = / 3600, day = / 86400) so the script can compute them.

pub struct Keys {
    base: String,
}

impl Keys {
    pub fn new(prefix: &str, project: &str) -> Self {
        Self {
            base: format!("{prefix}:{project}:"),
        }
    }

    fn key(&self, name: std::fmt::Arguments<'_>) -> String {
        format!("{}{}", self.base, name)
    }

    /// Sorted set: distinct id -> last event time (ms).
    pub fn online(&self) -> String {
        self.key(format_args!("online"))
    }
    /// Hash: event type -> count, all time.
    pub fn events_total(&self) -> String {
        self.key(format_args!("events:total"))
    }
    /// Hash: event type -> count in one UTC minute.
    pub fn events_minute(&self, epoch_minute: i64) -> String {
        self.key(format_args!("events:m:{epoch_minute}"))
    }
    /// Hash: event type -> count in one UTC hour.
    pub fn events_hour(&self, epoch_hour: i64) -> String {
        self.key(format_args!("events:h:{epoch_hour}"))
    }
    /// Sorted set: page path -> views, all time (trimmed to the top pages).
    pub fn pages_total(&self) -> String {
        self.key(format_args!("pages:total"))
    }
    pub fn pages_hour(&self, epoch_hour: i64) -> String {
        self.key(format_args!("pages:h:{epoch_hour}"))
    }
    pub fn pages_day(&self, epoch_day: i64) -> String {
        self.key(format_args!("pages:d:{epoch_day}"))
    }
    /// Sorted set: session id -> last event time (ms), for counting active sessions.
    pub fn sessions_active(&self) -> String {
        self.key(format_args!("sessions:active"))
    }
    /// Hash per session (user, started, last_seen, events, last_path), expiring when idle.
    pub fn session(&self, session_id: &str) -> String {
        self.key(format_args!("session:{session_id}"))
    }
    /// String with a TTL: the event was applied (its dedupe mark). Set for every event by
    /// versions before events recorded their origin in MySQL; now read only for events stored
    /// by those versions, and set again for them by a rebuild (`crates/worker/src/store`).
    pub fn applied_mark(&self, event_id: &str) -> String {
        self.key(format_args!("seen:{event_id}"))
    }
    /// HyperLogLog: distinct ids seen in one UTC day (an estimate, 0.81 % standard error).
    /// Named `uv:`, not the `uniq:` of the sets earlier versions wrote: `PFADD` on one of those
    /// would fail with WRONGTYPE until it expired.
    pub fn unique_day(&self, epoch_day: i64) -> String {
        self.key(format_args!("uv:d:{epoch_day}"))
    }
    /// HyperLogLog: distinct ids seen in one UTC hour (see `unique_day`).
    pub fn unique_hour(&self, epoch_hour: i64) -> String {
        self.key(format_args!("uv:h:{epoch_hour}"))
    }
    /// List: the user's most recent events, newest first (`ms|type|path`).
    pub fn recent_path(&self, distinct_id: &str) -> String {
        self.key(format_args!("path:{distinct_id}"))
    }
    /// Hash: `newest_event_ms`, `applied_events`: freshness for `as_of`.
    pub fn meta(&self) -> String {
        self.key(format_args!("meta"))
    }
}

/// Hash of the consumer's position per partition (`topic/partition` -> next offset): every
/// message of the partition below it has been applied, none at or past it. Moved in the same
/// script as the aggregates, by every chunk; a chunk with a message below it is not applied.
/// Global, not per project.
pub fn positions(prefix: &str) -> String {
    format!("{prefix}:positions")
}

/// The generation marker (no TTL): `ready` when Redis holds every event MySQL holds,
/// `rebuilding` while a rebuild replays MySQL into it, `clearing` while `worker rebuild-redis`
/// deletes the old aggregates. Missing means Redis lost its data: the aggregate script then
/// writes nothing and the stats API stops calling Redis figures exact (see the worker's
/// `rebuild.rs`). Its values are in `marker`.
pub fn generation(prefix: &str) -> String {
    format!("{prefix}:generation")
}

/// The values of the generation marker the rebuild sets and the stats API reads.
pub mod marker {
    /// Redis holds every event MySQL holds.
    pub const READY: &str = "ready";
    /// Old aggregates are being deleted or the MySQL snapshot is being replayed; the
    /// consumer waits. (`rebuilding`, left by an earlier version, is replayed again.)
    pub const CLEARING: &str = "clearing";
}

/// The lock held by the one worker that rebuilds Redis from MySQL.
pub fn rebuild_lock(prefix: &str) -> String {
    format!("{prefix}:rebuild-lock")
}

/// The lock the retention job holds while it runs.
pub fn retention_lock(prefix: &str) -> String {
    format!("{prefix}:lock:retention")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_prefix_and_project() {
        let keys = Keys::new("if", "shop");
        assert_eq!(keys.events_minute(29_000_000), "if:shop:events:m:29000000");
        assert_eq!(keys.session("s1"), "if:shop:session:s1");
        assert_eq!(positions("if"), "if:positions");
        assert_eq!(generation("if"), "if:generation");
        assert_eq!(rebuild_lock("if"), "if:rebuild-lock");
    }
}
