use std::collections::HashMap;

use anyhow::{anyhow, Context};
use insightflow_model::{Limits, ProjectId};
use insightflow_runtime::kafka::{KafkaConnection, TopicSpec};
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

impl Settings {
    /// Defaults, then `$INGEST_CONFIG`, then `INGEST__*` variables.
    pub fn load() -> anyhow::Result<Self> {
        insightflow_runtime::settings::load(DEFAULTS, "INGEST")
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
