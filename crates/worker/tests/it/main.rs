//! The worker's integration tests, in one binary (one link, one process): a module per
//! concern, against the real Kafka, MariaDB and Redis. Tests that load the machine or kill
//! processes on purpose (abuse, crash recovery, exactly-once under faults) take turns on
//! `support::HEAVY`; every test has its own topic, group, database and key prefix.

mod correctness_support;
mod stats_support;
mod support;

mod abuse;
mod console;
mod crash_recovery;
mod exactly_once;
mod identity;
mod least_privilege;
mod partitions;
mod pipeline;
mod pipeline_fuzz;
mod privacy;
mod redis_loss;
mod retention;
mod server_sessions;
mod stats_acquisition;
mod stats_api;
mod stats_correctness;
mod stats_filters;
mod stats_sessions;
mod store_writes;
