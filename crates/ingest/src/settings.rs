use std::collections::HashMap;

use crate::privacy::PrivacySettings;
use anyhow::{anyhow, bail, Context};
use insightflow_model::{Limits, ProjectId};
use insightflow_runtime::kafka::{KafkaConnection, TopicSpec};
use insightflow_runtime::server::ConnectionSettings;
use insightflow_runtime::settings::{self, SettingsError, Sources};
use insightflow_runtime::telemetry::LogSettings;
use ipnet::IpNet;
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub connections: ConnectionSettings,
    pub kafka: KafkaSettings,
    pub limits: Limits,
    pub rate_limit: RateLimitSettings,
    pub auth: AuthSettings,
    #[serde(default)]
    pub privacy: PrivacySettings,
    pub bots: BotSettings,
    pub geo: GeoSettings,
    pub log: LogSettings,
}

/// Senders whose events are flagged as a bot's (`crate::bots`).
#[derive(Debug, Clone, Deserialize)]
pub struct BotSettings {
    /// Regex patterns added to the maintained bot list, matched case-insensitively.
    pub user_agents: Vec<String>,
    /// Addresses and CIDR networks whose requests are a bot's.
    #[serde(deserialize_with = "networks")]
    pub ignore_ips: Vec<IpNet>,
}

/// Where client IPs are located (`crate::geo`).
#[derive(Debug, Clone, Deserialize)]
pub struct GeoSettings {
    /// A MaxMind-format database (GeoIP2/GeoLite2 City or Country); empty: no location.
    pub database: String,
}

impl GeoSettings {
    pub fn database(&self) -> Option<&std::path::Path> {
        Some(self.database.trim())
            .filter(|p| !p.is_empty())
            .map(std::path::Path::new)
    }
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
        ("bots.user_agents", "acme-uptime,^loadtest/"),
        ("bots.ignore_ips", "203.0.113.0/24,198.51.100.7"),
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

    /// What the types cannot say: settings that are only wrong together. Checked at start-up.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.connections.validate()?;
        // A request that waits out Kafka's delivery timeout must still get that answer (503,
        // retry) rather than be cut off by the request deadline while its events are in flight.
        if self.connections.request_timeout_ms <= self.kafka.delivery_timeout_ms {
            bail!(
                "connections.request_timeout_ms ({}) must exceed kafka.delivery_timeout_ms ({}), \
                 leaving clients time to send their body, e.g. \
                 INGEST__CONNECTIONS__REQUEST_TIMEOUT_MS={}",
                self.connections.request_timeout_ms,
                self.kafka.delivery_timeout_ms,
                self.kafka.delivery_timeout_ms + 10_000,
            );
        }
        self.auth.key_list()?;
        for pattern in &self.bots.user_agents {
            regex::Regex::new(&pattern.to_ascii_lowercase()).map_err(|e| {
                anyhow!("bots.user_agents: {pattern:?} is not a regular expression: {e}")
            })?;
        }
        if self.auth.write_keys.is_empty() && !self.auth.allow_open {
            bail!(
                "the gateway has no write keys and would accept anyone's events: set \
                 INGEST__AUTH__WRITE_KEYS (e.g. INGEST__AUTH__WRITE_KEYS=wk_live_1=default), or \
                 INGEST__AUTH__ALLOW_OPEN=true to accept events without a key on purpose \
                 (development only)"
            );
        }
        Ok(())
    }

    /// The address of the separate `/metrics` listener, when one is configured.
    pub fn metrics_listen(&self) -> Option<&str> {
        Some(self.http.metrics_listen.trim()).filter(|address| !address.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub retry_after_seconds: u32,
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// Origins allowed to post from a browser; `*` allows any.
    pub cors_allowed_origins: Vec<String>,
    pub cors_max_age_seconds: usize,
    /// `/metrics` on a listener of its own at this address; empty = on the main port.
    pub metrics_listen: String,
}

/// Networks given as CIDRs (`10.0.0.0/8`) or bare addresses (`192.0.2.7`, one host).
fn networks<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    let given: Vec<String> = Vec::deserialize(deserializer)?;
    given
        .iter()
        .map(|text| {
            let text = text.trim();
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{text:?} is neither an IP address nor a CIDR network"
                    ))
                })
        })
        .collect()
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
    /// Accept events without a key (development only); without this, no keys is an error.
    pub allow_open: bool,
}

impl AuthSettings {
    /// (write key, project) pairs from the `key=project` entries, in order. An empty or
    /// repeated key is refused: one would open the gateway to requests without a key, the
    /// other would leave it to the order which project a key writes to.
    pub fn key_list(&self) -> anyhow::Result<Vec<(String, ProjectId)>> {
        let mut keys: Vec<(String, ProjectId)> = Vec::with_capacity(self.write_keys.len());
        for (n, pair) in (1..).zip(&self.write_keys) {
            let (key, project) = pair.split_once('=').ok_or_else(|| {
                anyhow!("auth.write_keys entries are key=project, got one without '='")
            })?;
            let key = key.trim();
            if key.is_empty() {
                bail!("auth.write_keys entry {n} has an empty key, e.g. wk_live_1=shop");
            }
            // Messages name positions, never the secrets.
            if let Some(first) = keys.iter().position(|(k, _)| k == key) {
                bail!(
                    "auth.write_keys entries {} and {n} have the same key",
                    first + 1
                );
            }
            let project = ProjectId::parse(project.trim()).with_context(|| {
                format!("auth.write_keys entry {n} has an invalid project name")
            })?;
            keys.push((key.to_owned(), project));
        }
        Ok(keys)
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
        // A bare address is one host: the example an error shows must itself be accepted.
        let settings = with("INGEST__HTTP__TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.7");
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

#[cfg(test)]
mod validation_tests {
    use super::*;

    /// The settings with `pairs` in the environment.
    fn bare(pairs: &[(&str, &str)]) -> Settings {
        Settings::load_with_env(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
        .unwrap()
    }

    /// `bare`, on a gateway open on purpose (no keys needed), unless `pairs` say otherwise.
    fn with(pairs: &[(&str, &str)]) -> Settings {
        let mut all = vec![("INGEST__AUTH__ALLOW_OPEN", "true")];
        all.extend_from_slice(pairs);
        bare(&all)
    }

    #[test]
    fn the_defaults_are_valid_and_keep_metrics_on_the_main_port() {
        let settings = with(&[]);
        settings.validate().unwrap();
        assert_eq!(settings.connections.max_connections, 10_000);
        assert!(settings.connections.request_timeout_ms > settings.kafka.delivery_timeout_ms);
        assert_eq!(settings.metrics_listen(), None);
        let moved = with(&[
            ("INGEST__HTTP__METRICS_LISTEN", "0.0.0.0:9464"),
            ("INGEST__CONNECTIONS__MAX_CONNECTIONS", "64"),
        ]);
        assert_eq!(moved.metrics_listen(), Some("0.0.0.0:9464"));
        assert_eq!(moved.connections.max_connections, 64);
    }

    #[test]
    fn a_request_deadline_within_the_delivery_timeout_is_refused_naming_both() {
        for request_timeout in ["5000", "4000"] {
            let error = with(&[("INGEST__CONNECTIONS__REQUEST_TIMEOUT_MS", request_timeout)])
                .validate()
                .unwrap_err()
                .to_string();
            assert!(error.contains("connections.request_timeout_ms"), "{error}");
            assert!(
                error.contains("kafka.delivery_timeout_ms (5000)"),
                "{error}"
            );
            assert!(!error.contains('\n'), "{error}");
        }
        with(&[
            ("INGEST__CONNECTIONS__REQUEST_TIMEOUT_MS", "1500"),
            ("INGEST__KAFKA__DELIVERY_TIMEOUT_MS", "1000"),
        ])
        .validate()
        .unwrap();
        let no_connections = with(&[("INGEST__CONNECTIONS__MAX_CONNECTIONS", "0")]);
        assert!(no_connections.validate().is_err());
    }

    #[test]
    fn empty_and_repeated_write_keys_are_refused_without_showing_them() {
        let empty = with(&[("INGEST__AUTH__WRITE_KEYS", "wk_1=shop, =blog")]);
        let error = empty.validate().unwrap_err().to_string();
        assert!(error.contains("entry 2 has an empty key"), "{error}");
        let repeated = with(&[("INGEST__AUTH__WRITE_KEYS", "wk_1=shop,wk_2=blog,wk_1=blog")]);
        let error = repeated.validate().unwrap_err().to_string();
        assert!(error.contains("entries 1 and 3"), "{error}");
        assert!(!error.contains("wk_1"), "{error}");
        let fine = with(&[("INGEST__AUTH__WRITE_KEYS", "wk_1=shop,wk_2=shop")]);
        assert_eq!(fine.auth.key_list().unwrap().len(), 2);
    }

    #[test]
    fn no_write_keys_is_refused_unless_open_on_purpose() {
        let error = format!(
            "{:#}",
            bare(&[])
                .validate()
                .expect_err("no keys, not open on purpose")
        );
        assert!(error.contains("INGEST__AUTH__WRITE_KEYS"), "{error}");
        assert!(error.contains("INGEST__AUTH__ALLOW_OPEN=true"), "{error}");
        assert!(bare(&[("INGEST__AUTH__ALLOW_OPEN", "true")])
            .validate()
            .is_ok());
        assert!(bare(&[("INGEST__AUTH__WRITE_KEYS", "wk_1=shop")])
            .validate()
            .is_ok());
    }
}
