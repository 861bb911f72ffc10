//! Layered configuration: built-in defaults -> optional file -> environment variables.

use anyhow::Context;
use serde::de::DeserializeOwned;

/// Loads a service's settings.
///
/// * `defaults`: the service's default TOML, compiled into the binary so it runs from anywhere;
/// * the file named by `{PREFIX}_CONFIG` (TOML or YAML by extension), when set;
/// * environment variables `{PREFIX}__SECTION__KEY` (e.g. `INGEST__KAFKA__BROKERS`); list values
///   are comma-separated.
pub fn load<T: DeserializeOwned>(defaults: &str, prefix: &str) -> anyhow::Result<T> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(defaults, config::FileFormat::Toml));
    if let Ok(path) = std::env::var(format!("{prefix}_CONFIG")) {
        builder = builder.add_source(config::File::with_name(&path));
    }
    builder
        .add_source(
            config::Environment::with_prefix(prefix)
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("http.cors_allowed_origins")
                .with_list_parse_key("http.trusted_proxies")
                .try_parsing(true),
        )
        .build()
        .and_then(|c| c.try_deserialize())
        .with_context(|| {
            format!("invalid configuration (defaults, ${prefix}_CONFIG, {prefix}__* variables)")
        })
}
