use std::collections::HashMap;

use insightflow_runtime::kafka::{KafkaConnection, TopicSpec};
use insightflow_runtime::server::ConnectionSettings;
use insightflow_runtime::settings::{self, SettingsError, Sources};
use insightflow_runtime::telemetry::LogSettings;
use serde::Deserialize;

pub use insightflow_stats_api::StatsSettings;
pub use insightflow_store::mysql::MysqlSettings;
pub use insightflow_store::redis::RedisSettings;

const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub kafka: KafkaSettings,
    pub mysql: MysqlSettings,
    pub redis: RedisSettings,
    pub aggregates: AggregateSettings,
    pub retention: RetentionSettings,
    pub sessions: SessionSettings,
    pub backoff: BackoffSettings,
    pub stats: StatsSettings,
    pub connections: ConnectionSettings,
    pub log: LogSettings,
}

/// Where the worker's settings come from; every list setting with the example an error shows.
const SOURCES: Sources<'static> = Sources {
    defaults: DEFAULTS,
    prefix: "WORKER",
    lists: &[("stats.api_keys", "token1=shop|blog,token2=*")],
};

impl Settings {
    /// Defaults, then `$WORKER_CONFIG`, then `WORKER__*` variables.
    pub fn load() -> Result<Self, SettingsError> {
        settings::load(&SOURCES)
    }

    /// `load` from an environment given as a map (tests).
    pub fn load_with_env(env: HashMap<String, String>) -> Result<Self, SettingsError> {
        settings::load_with_env(&SOURCES, Some(env))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    /// `host:port` of a listener serving only `/metrics`; empty: the API port serves it.
    pub metrics_listen: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KafkaSettings {
    pub brokers: String,
    #[serde(default)]
    pub extra: HashMap<String, String>,
    pub group_id: String,
    pub topic: TopicSpec,
    pub dead_letter_topic: String,
    pub batch_max_events: usize,
    pub batch_max_wait_ms: u64,
    pub fetch_wait_max_ms: u32,
    pub session_timeout_ms: u32,
    pub auto_commit_interval_ms: u32,
    pub statistics_interval_ms: u32,
    pub lag_probe_interval_ms: u64,
    pub max_prefetch_kbytes: u32,
}

impl KafkaSettings {
    pub fn connection(&self) -> KafkaConnection {
        KafkaConnection {
            brokers: self.brokers.clone(),
            extra: self.extra.clone(),
        }
    }

    /// The topics the worker owns: the events topic (created here too, so a worker can start
    /// before any gateway) and the dead-letter topic.
    pub fn topics(&self) -> Vec<TopicSpec> {
        vec![
            self.topic.clone(),
            TopicSpec {
                name: self.dead_letter_topic.clone(),
                partitions: 1,
                replication_factor: self.topic.replication_factor,
            },
        ]
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AggregateSettings {
    pub dedupe_ttl_seconds: u64,
    pub online_keep_seconds: u64,
    pub session_ttl_seconds: u64,
    pub minute_retention_hours: u64,
    pub hour_retention_days: u64,
    pub day_retention_days: u64,
    pub recent_path_length: u64,
    pub recent_path_ttl_days: u64,
    pub hot_pages_total_max: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RetentionSettings {
    pub raw_event_days: u64,
    pub interval_seconds: u64,
    pub chunk_rows: u64,
}

/// Server sessions, for events that carry no `session_id` (`store/sessions.rs`).
#[derive(Debug, Clone, Deserialize)]
pub struct SessionSettings {
    /// A gap between a person's events longer than this starts a new session (at least 1).
    pub inactivity_minutes: std::num::NonZeroU32,
}

impl SessionSettings {
    pub fn rule(&self) -> crate::store::sessions::SessionRule {
        crate::store::sessions::SessionRule {
            inactivity: chrono::TimeDelta::minutes(i64::from(self.inactivity_minutes.get())),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct BackoffSettings {
    pub initial_ms: u64,
    pub max_ms: u64,
}

#[cfg(test)]
mod list_settings_tests {
    use super::*;

    #[test]
    fn api_keys_are_comma_separated_in_the_documented_form() {
        let settings = Settings::load_with_env(HashMap::from([(
            "WORKER__STATS__API_KEYS".to_owned(),
            "secret=*,bff=shop|blog".to_owned(),
        )]))
        .unwrap();
        assert_eq!(settings.stats.api_keys, ["secret=*", "bff=shop|blog"]);
    }
}
