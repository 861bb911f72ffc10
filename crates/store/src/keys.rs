//! The Redis key layout, in one place: the consumer writes the keys these functions name
//! (`crates/worker/src/store/aggregates.rs` builds its commands with them), and the stats API
//! reads them through the same functions.
//!
//! Every key of a project is `{prefix}:{<project>}:{name}`: the braces make the project the
//! key's hash tag, so on Redis Cluster all of a project's keys (its aggregates, its generation
//! marker and its positions) live in one slot, and one script call or pipeline may touch them
//! all. The deployment's own keys (the deployment-wide marker, the project registry, the
//! rebuild lock) share the tag `{.all}`, which no project id can be (`[a-z0-9_-]`).
//! Time buckets are UTC and numbered from the epoch (minute = unix seconds / 60, hour = /
//! 3600, day = / 86400) so the script can compute them.

pub struct Keys {
    base: String,
}

impl Keys {
    pub fn new(prefix: &str, project: &str) -> Self {
        Self {
            base: format!("{prefix}:{{{project}}}:"),
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
    /// Hash of the project's position per partition (`topic/partition` -> next offset): every
    /// message of the project in the partition below it has been applied, none at or past it.
    /// Moved in the same script as the project's aggregates; a chunk with a message below it
    /// is not applied. Per project (a project's messages of a partition are still in offset
    /// order), so that the script touches one slot.
    pub fn positions(&self) -> String {
        self.key(format_args!("positions"))
    }
    /// The project's generation marker (no TTL): `ready` when Redis holds every event of the
    /// project MySQL holds; `clearing:<token>` while the rebuild holding that lock token
    /// replays it. Missing: the project is new (see `projects`) or its node lost its data.
    /// The aggregate script reads it, the stats API reads it beside the figures.
    pub fn generation(&self) -> String {
        self.key(format_args!("generation"))
    }
}

/// The tag of the deployment's own keys (not a valid project id).
const ALL: &str = "{.all}";

/// The deployment-wide generation marker (no TTL): `ready` when Redis holds every event MySQL
/// holds, `clearing` while a rebuild clears and replays. Missing means Redis (or, on a
/// cluster, the node holding it) lost its data: the guard rebuilds (see the worker's
/// `rebuild.rs`). New projects are registered only while it says `ready`. Its values are in
/// `marker`.
pub fn generation(prefix: &str) -> String {
    format!("{prefix}:{ALL}:generation")
}

/// Hash of the projects Redis holds aggregates of (project -> when it was registered, ms),
/// beside `generation` in one slot: a project's marker that is missing although the project
/// is registered was lost with its node, not never written.
pub fn projects(prefix: &str) -> String {
    format!("{prefix}:{ALL}:projects")
}

/// The marker of versions before hash-tagged keys (`{prefix}:generation`): present, it says
/// Redis holds aggregates under the old key names, which a rebuild deletes.
pub fn legacy_generation(prefix: &str) -> String {
    format!("{prefix}:generation")
}

/// The values of the generation marker the rebuild sets and the stats API reads.
pub mod marker {
    /// Redis holds every event MySQL holds.
    pub const READY: &str = "ready";
    /// A project's marker while the rebuild holding the lock `token` replays it.
    pub fn clearing_by(token: &str) -> String {
        format!("{CLEARING}:{token}")
    }
    /// Old aggregates are being deleted or the MySQL snapshot is being replayed; the
    /// consumer waits. (`rebuilding`, left by an earlier version, is replayed again.)
    pub const CLEARING: &str = "clearing";
}

/// The lock held by the one worker that rebuilds Redis from MySQL (beside `generation`: the
/// rebuild sets the marker only while it holds the lock, in one script).
pub fn rebuild_lock(prefix: &str) -> String {
    format!("{prefix}:{ALL}:rebuild-lock")
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
        assert_eq!(
            keys.events_minute(29_000_000),
            "if:{shop}:events:m:29000000"
        );
        assert_eq!(keys.session("s1"), "if:{shop}:session:s1");
        assert_eq!(keys.positions(), "if:{shop}:positions");
        assert_eq!(keys.generation(), "if:{shop}:generation");
        assert_eq!(generation("if"), "if:{.all}:generation");
        assert_eq!(projects("if"), "if:{.all}:projects");
        assert_eq!(rebuild_lock("if"), "if:{.all}:rebuild-lock");
        assert_eq!(marker::clearing_by("t1"), "clearing:t1");
    }
}
