use std::collections::HashMap;

use anyhow::{anyhow, Context};
use insightflow_model::{Limits, ProjectId};
use insightflow_runtime::kafka::{KafkaConnection, TopicSpec};
use insightflow_runtime::settings::{self, SettingsError, Sources};
use insightflow_runtime::telemetry::LogSettings;
use ipnet::IpNet;
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub kafka: KafkaSettings,
    pub limits: Limits,
    pub rate_limit: RateLimitSettings,
    pub auth: AuthSettings,
    pub log: LogSettings,
}

/// Where the gateway's settings come from; every list setting with the example an error shows.
const SOURCES: Sources<'static> = Sources {
    defaults: DEFAULTS,
    prefix: "INGEST",
    lists: &[
        ("http.trusted_proxies", "10.0.0.0/8,192.0.2.7"),
        (
            "http.cors_allowed_origins",
            "https://shop.example,https://www.shop.example",
        ),
        ("auth.write_keys", "wk_live_1=shop,wk_live_2=blog"),
    ],
};

impl Settings {
    /// Defaults, then `$INGEST_CONFIG`, then `INGEST__*` variables.
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
    pub retry_after_seconds: u32,
    pub trusted_proxies: Vec<IpNet>,
    /// Origins allowed to post from a browser; `*` allows any.
    pub cors_allowed_origins: Vec<String>,
    pub cors_max_age_seconds: usize,
}

/// Token buckets per client IP and per write key; a rate of 0 disables that limiter.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub per_ip_per_second: f64,
    pub per_ip_burst: u32,
    pub per_write_key_per_second: f64,
    pub per_write_key_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KafkaSettings {
    pub brokers: String,
    #[serde(default)]
    pub extra: HashMap<String, String>,
    pub topic: TopicSpec,
    pub compression: String,
    pub linger_ms: u32,
    pub delivery_timeout_ms: u64,
    pub queue_max_messages: u32,
    pub queue_max_kbytes: u32,
    pub shed_at_queue_fill: f64,
}

impl KafkaSettings {
    pub fn connection(&self) -> KafkaConnection {
        KafkaConnection {
            brokers: self.brokers.clone(),
            extra: self.extra.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub default_project: String,
    pub write_keys: Vec<String>,
}

impl AuthSettings {
    /// Write key -> project, from the `key=project` pairs.
    pub fn key_map(&self) -> anyhow::Result<HashMap<String, ProjectId>> {
        self.write_keys
            .iter()
            .map(|pair| {
                let (key, project) = pair.split_once('=').ok_or_else(|| {
                    anyhow!("auth.write_keys entries are key=project, got one without '='")
                })?;
                let project = ProjectId::parse(project.trim())
                    .with_context(|| "auth.write_keys has an invalid project name")?;
                Ok((key.trim().to_owned(), project))
            })
            .collect()
    }
}

#[cfg(test)]
mod list_settings_tests {
    use super::*;

    fn with(variable: &str, value: &str) -> Settings {
        Settings::load_with_env(HashMap::from([(variable.to_owned(), value.to_owned())]))
            .unwrap_or_else(|e| panic!("{variable}={value}: {e}"))
    }

    #[test]
    fn trusted_proxies_are_comma_separated() {
        let settings = with("INGEST__HTTP__TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.7/32");
        let shown: Vec<String> = settings
            .http
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.7/32"]);
    }

    #[test]
    fn cors_origins_are_comma_separated() {
        let settings = with(
            "INGEST__HTTP__CORS_ALLOWED_ORIGINS",
            "https://shop.example,https://www.shop.example",
        );
        assert_eq!(
            settings.http.cors_allowed_origins,
            ["https://shop.example", "https://www.shop.example"]
        );
    }

    #[test]
    fn write_keys_are_comma_separated_key_project_pairs() {
        let settings = with("INGEST__AUTH__WRITE_KEYS", "wk_1=shop,wk_2=blog");
        assert_eq!(settings.auth.write_keys, ["wk_1=shop", "wk_2=blog"]);
    }

    #[test]
    fn a_bad_list_value_says_which_variable_and_shows_an_example() {
        let error = Settings::load_with_env(HashMap::from([(
            "INGEST__HTTP__TRUSTED_PROXIES".to_owned(),
            "not-an-address".to_owned(),
        )]))
        .unwrap_err()
        .to_string();
        assert!(!error.contains('\n'), "{error}");
        assert!(error.contains("INGEST__HTTP__TRUSTED_PROXIES"), "{error}");
    }
}
