//! Whether this process's consumer is doing its work, for `/ready`.
//!
//! Three things can stop the work while the process still answers HTTP:
//! - the consume loop is not running (it ended or panicked; the process then stops too, but
//!   `/ready` must not say "ok" meanwhile);
//! - a store is failing, so the loop is paused and retrying;
//! - the member holds no partitions while the group makes no progress on a topic with
//!   unconsumed events, for longer than the session timeout: the partitions are held by a
//!   member that does not consume them (say, one that died and was never evicted).
//!
//! An instance without partitions in a group that is consuming (more instances than
//! partitions) is ready: idle by design, and a spare for the next rebalance.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use insightflow_runtime::kafka::BrokerProbe;
use insightflow_stats_api::ConsumerStatus;

/// The group's position as the broker sees it, from the lag probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupProgress {
    /// Messages between the group's committed offsets and the partitions' ends.
    pub lag: i64,
    /// The sum of the committed offsets: it grows while anyone in the group consumes.
    pub committed: i64,
}

#[derive(Debug)]
struct Inner {
    running: AtomicBool,
    stores_ok: AtomicBool,
    stall_after: Duration,
    /// Since when this member holds no partitions (`None` while it holds some).
    unassigned_since: Mutex<Option<Instant>>,
    /// The last progress sample and when the committed offsets last moved.
    progress: Mutex<Option<(GroupProgress, Instant)>>,
}

/// Shared by the consume loop, its rebalance callbacks, the lag probe and `/ready`.
#[derive(Debug, Clone)]
pub struct ConsumerHealth(Arc<Inner>);

/// What `/ready` reports about the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerState {
    Ok,
    NotRunning,
    Paused,
    /// No partitions for `for_seconds` while the group's `lag` unconsumed events do not move.
    Starved {
        for_seconds: u64,
        lag: i64,
    },
}

impl ConsumerState {
    pub fn is_ok(&self) -> bool {
        *self == Self::Ok
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Ok => "ok".to_owned(),
            Self::NotRunning => "not running".to_owned(),
            Self::Paused => "paused: a dependency is failing".to_owned(),
            Self::Starved { for_seconds, lag } => format!(
                "starved: no partitions for {for_seconds} s while the group has {lag} \
                 unconsumed events and commits nothing"
            ),
        }
    }
}

/// What a consuming process tells the stats API's `/ready`: whether Kafka answered the last
/// probe, and the consumer's state.
pub struct ConsumerReadiness {
    pub kafka: BrokerProbe,
    pub health: ConsumerHealth,
}

impl ConsumerStatus for ConsumerReadiness {
    fn kafka_reachable(&self) -> bool {
        self.kafka.is_reachable()
    }

    fn consumer(&self) -> (bool, String) {
        let state = self.health.state();
        (state.is_ok(), state.describe())
    }
}

impl ConsumerHealth {
    /// `stall_after`: how long holding no partitions of a stalled topic is tolerated (the
    /// session timeout: the time the group needs to evict a dead member).
    pub fn new(stall_after: Duration) -> Self {
        Self(Arc::new(Inner {
            running: AtomicBool::new(false),
            stores_ok: AtomicBool::new(true),
            stall_after,
            unassigned_since: Mutex::new(Some(Instant::now())),
            progress: Mutex::new(None),
        }))
    }

    /// Marks the consume loop running until the guard is dropped (by a return or a panic).
    pub fn running(&self) -> RunningGuard {
        self.0.running.store(true, Ordering::Relaxed);
        RunningGuard(self.clone())
    }

    pub(super) fn set_stores_ok(&self, ok: bool) {
        self.0.stores_ok.store(ok, Ordering::Relaxed);
    }

    /// False while the consume loop is paused on a failing store.
    pub(super) fn stores_ok(&self) -> bool {
        self.0.stores_ok.load(Ordering::Relaxed)
    }

    /// The rebalance callback's news: how many partitions this member now holds.
    pub(super) fn set_assigned(&self, partitions: usize, now: Instant) {
        if let Ok(mut since) = self.0.unassigned_since.lock() {
            *since = match (partitions, *since) {
                (0, None) => Some(now),
                (0, kept) => kept,
                _ => None,
            };
        }
    }

    /// The lag probe's news.
    pub fn record_progress(&self, sample: GroupProgress, now: Instant) {
        if let Ok(mut progress) = self.0.progress.lock() {
            let moved_at = match *progress {
                Some((previous, at)) if previous.committed == sample.committed => at,
                _ => now,
            };
            *progress = Some((sample, moved_at));
        }
    }

    pub fn state(&self) -> ConsumerState {
        self.state_at(Instant::now())
    }

    fn state_at(&self, now: Instant) -> ConsumerState {
        if !self.0.running.load(Ordering::Relaxed) {
            return ConsumerState::NotRunning;
        }
        if !self.0.stores_ok.load(Ordering::Relaxed) {
            return ConsumerState::Paused;
        }
        let unassigned_for = self
            .0
            .unassigned_since
            .lock()
            .ok()
            .and_then(|since| *since)
            .map(|since| now.saturating_duration_since(since));
        let progress = self.0.progress.lock().ok().and_then(|p| *p);
        match (unassigned_for, progress) {
            (Some(idle), Some((sample, moved_at)))
                if idle > self.0.stall_after
                    && sample.lag > 0
                    && now.saturating_duration_since(moved_at) > self.0.stall_after =>
            {
                ConsumerState::Starved {
                    for_seconds: idle.as_secs(),
                    lag: sample.lag,
                }
            }
            _ => ConsumerState::Ok,
        }
    }
}

/// Clears the running flag when the consume loop ends, however it ends.
pub struct RunningGuard(ConsumerHealth);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0 .0.running.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(10);

    fn progress(lag: i64, committed: i64) -> GroupProgress {
        GroupProgress { lag, committed }
    }

    #[test]
    fn not_running_until_the_loop_runs_and_again_after_it_ends() {
        let health = ConsumerHealth::new(STALL);
        assert_eq!(health.state(), ConsumerState::NotRunning);
        let guard = health.running();
        assert_eq!(health.state(), ConsumerState::Ok);
        drop(guard);
        assert_eq!(health.state(), ConsumerState::NotRunning);
    }

    #[test]
    fn a_panicking_loop_is_not_running() {
        let health = ConsumerHealth::new(STALL);
        let inside = health.clone();
        let result = std::panic::catch_unwind(move || {
            let _guard = inside.running();
            panic!("the consume loop fails");
        });
        assert!(result.is_err());
        assert_eq!(health.state(), ConsumerState::NotRunning);
    }

    #[test]
    fn a_failing_store_pauses() {
        let health = ConsumerHealth::new(STALL);
        let _guard = health.running();
        health.set_stores_ok(false);
        assert_eq!(health.state(), ConsumerState::Paused);
        health.set_stores_ok(true);
        assert_eq!(health.state(), ConsumerState::Ok);
    }

    #[test]
    fn no_partitions_while_the_group_stalls_is_starvation_after_the_stall_time() {
        let health = ConsumerHealth::new(STALL);
        let t0 = Instant::now();
        let _guard = health.running();
        health.set_assigned(0, t0);
        health.record_progress(progress(500, 1_000), t0);
        // Within the stall time: a rebalance may still hand us partitions.
        assert_eq!(health.state_at(t0 + STALL / 2), ConsumerState::Ok);
        health.record_progress(progress(700, 1_000), t0 + STALL);
        let later = t0 + STALL + Duration::from_secs(1);
        assert_eq!(
            health.state_at(later),
            ConsumerState::Starved {
                for_seconds: 11,
                lag: 700
            }
        );
        // Partitions arrive: ready again at once.
        health.set_assigned(4, later);
        assert_eq!(health.state_at(later), ConsumerState::Ok);
    }

    #[test]
    fn no_partitions_is_fine_while_the_group_consumes_or_has_nothing_to_consume() {
        let health = ConsumerHealth::new(STALL);
        let t0 = Instant::now();
        let _guard = health.running();
        health.set_assigned(0, t0);
        // More instances than partitions: the others commit, so the committed sum moves.
        health.record_progress(progress(300, 1_000), t0);
        health.record_progress(progress(300, 5_000), t0 + STALL * 2);
        assert_eq!(
            health.state_at(t0 + STALL * 2 + Duration::from_secs(1)),
            ConsumerState::Ok
        );
        // Nothing to consume: idle is fine however long it lasts.
        health.record_progress(progress(0, 5_000), t0 + STALL * 5);
        assert_eq!(health.state_at(t0 + STALL * 6), ConsumerState::Ok);
    }

    #[test]
    fn losing_the_last_partition_starts_the_clock_then() {
        let health = ConsumerHealth::new(STALL);
        let t0 = Instant::now();
        let _guard = health.running();
        health.set_assigned(8, t0);
        health.record_progress(progress(100, 0), t0);
        let revoked = t0 + STALL * 3;
        health.set_assigned(0, revoked);
        assert_eq!(health.state_at(revoked + STALL / 2), ConsumerState::Ok);
        assert!(matches!(
            health.state_at(revoked + STALL * 2),
            ConsumerState::Starved { lag: 100, .. }
        ));
    }
}
