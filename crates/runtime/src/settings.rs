//! Layered configuration: built-in defaults -> optional file -> environment variables.

use std::collections::HashMap;

use serde::de::DeserializeOwned;

/// Where a service's settings come from.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The service's default TOML, compiled into the binary so it runs from anywhere.
    pub defaults: &'a str,
    /// `INGEST` or `WORKER`: the file is named by `{prefix}_CONFIG`, variables are
    /// `{prefix}__SECTION__KEY`.
    pub prefix: &'a str,
    /// Every list setting (`section.key`) with an example value: given in the environment,
    /// these are comma-separated.
    pub lists: &'a [(&'a str, &'a str)],
}

/// A setting the service cannot start with. Its `Display` is the one line an operator needs:
/// the variable, what is wrong with its value, and an example.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SettingsError {
    message: String,
}

impl SettingsError {
    /// A value that parsed but cannot be used (checked by the service after loading).
    pub fn invalid(message: impl std::fmt::Display) -> Self {
        Self {
            message: format!("invalid setting: {message}"),
        }
    }

    /// Prints the one line and ends the process with status 2 (a usage error), no backtrace.
    pub fn exit(self) -> ! {
        eprintln!("error: {self}");
        std::process::exit(2)
    }
}

/// Loads a service's settings: `sources.defaults`, then the file named by `{PREFIX}_CONFIG`
/// (TOML or YAML by extension), then the process's `{PREFIX}__SECTION__KEY` variables.
pub fn load<T: DeserializeOwned>(sources: &Sources<'_>) -> Result<T, SettingsError> {
    load_with_env(sources, None)
}

/// `load` with the environment given as a map (`None`: the process's), so tests do not
/// touch the process environment other tests read.
pub fn load_with_env<T: DeserializeOwned>(
    sources: &Sources<'_>,
    env: Option<HashMap<String, String>>,
) -> Result<T, SettingsError> {
    let prefix = sources.prefix;
    let config_file = match &env {
        Some(map) => map.get(&format!("{prefix}_CONFIG")).cloned(),
        None => std::env::var(format!("{prefix}_CONFIG")).ok(),
    };
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        sources.defaults,
        config::FileFormat::Toml,
    ));
    if let Some(path) = &config_file {
        builder = builder.add_source(config::File::with_name(path));
    }
    let mut environment = config::Environment::with_prefix(prefix)
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .try_parsing(true)
        .source(env);
    for (key, _) in sources.lists {
        environment = environment.with_list_parse_key(key);
    }
    builder
        .add_source(environment)
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| explain(&e, sources, config_file.as_deref()))
}

/// One line naming the variable, the problem and an example.
fn explain(
    error: &config::ConfigError,
    sources: &Sources<'_>,
    file: Option<&str>,
) -> SettingsError {
    let prefix = sources.prefix;
    let (key, problem) = match error {
        config::ConfigError::Type {
            key,
            unexpected,
            expected,
            ..
        } => (
            key.clone(),
            format!("got {unexpected}, expected {expected}"),
        ),
        config::ConfigError::At { error, key, .. } => (key.clone(), error.to_string()),
        config::ConfigError::FileParse { uri, cause } => {
            let file = uri.as_deref().or(file).unwrap_or("the configuration file");
            return SettingsError {
                message: format!("cannot read {prefix}_CONFIG={file}: {cause}"),
            };
        }
        config::ConfigError::NotFound(what) => {
            return SettingsError {
                message: format!("{prefix}_CONFIG: {what} not found"),
            };
        }
        other => {
            let text = other.to_string();
            if let Some(file) = file.filter(|f| text.contains(f)) {
                return SettingsError {
                    message: format!("cannot read {prefix}_CONFIG={file}: {text}"),
                };
            }
            (None, text)
        }
    };
    // An element of a list is reported as `section.key[3]`: the variable is the list's.
    let key = key.map(|k| match k.find('[') {
        Some(bracket) => k[..bracket].to_owned(),
        None => k,
    });
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return SettingsError {
            message: format!(
                "invalid configuration ({prefix}__* variables, {prefix}_CONFIG): {problem}"
            ),
        };
    };
    let variable = format!("{prefix}__{}", key.replace('.', "__").to_uppercase());
    let example = sources
        .lists
        .iter()
        .find(|(list, _)| *list == key)
        .map(|(_, example)| format!("a comma-separated list, e.g. {variable}='{example}'"))
        .unwrap_or_else(|| example_for(&problem, &variable));
    SettingsError {
        message: format!("invalid setting {variable} ({key}): {problem}; {example}"),
    }
}

fn example_for(problem: &str, variable: &str) -> String {
    let value = if problem.contains("boolean") {
        "true"
    } else if problem.contains("integer") || problem.contains("u16") || problem.contains("u32") {
        "8080"
    } else if problem.contains("float") {
        "0.8"
    } else {
        "value"
    };
    format!("e.g. {variable}={value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Example {
        http: Http,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Http {
        port: u16,
        origins: Vec<String>,
        open: bool,
    }

    const SOURCES: Sources<'static> = Sources {
        defaults: "[http]\nport = 1\norigins = []\nopen = false\n",
        prefix: "EXAMPLE",
        lists: &[("http.origins", "https://a.example,https://b.example")],
    };

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_list_is_comma_separated_in_the_environment() {
        let loaded: Example = load_with_env(
            &SOURCES,
            env(&[(
                "EXAMPLE__HTTP__ORIGINS",
                "https://a.example,https://b.example",
            )]),
        )
        .unwrap();
        assert_eq!(
            loaded.http.origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(
            (loaded.http.port, loaded.http.open),
            (1, false),
            "defaults kept"
        );
        let one: Example =
            load_with_env(&SOURCES, env(&[("EXAMPLE__HTTP__ORIGINS", "solo")])).unwrap();
        assert_eq!(one.http.origins, ["solo"]);
    }

    #[test]
    fn a_bad_value_names_the_variable_the_problem_and_an_example_on_one_line() {
        let error = load_with_env::<Example>(&SOURCES, env(&[("EXAMPLE__HTTP__PORT", "eighty")]))
            .unwrap_err()
            .to_string();
        assert!(!error.contains('\n'), "{error}");
        assert!(error.contains("EXAMPLE__HTTP__PORT"), "{error}");
        assert!(error.contains("eighty"), "{error}");
        assert!(error.contains("e.g. EXAMPLE__HTTP__PORT=8080"), "{error}");
        let error = load_with_env::<Example>(&SOURCES, env(&[("EXAMPLE__HTTP__OPEN", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("EXAMPLE__HTTP__OPEN=true"), "{error}");
    }

    #[test]
    fn a_missing_config_file_is_named() {
        let error = load_with_env::<Example>(
            &SOURCES,
            env(&[("EXAMPLE_CONFIG", "/nonexistent/insightflow.toml")]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("EXAMPLE_CONFIG"), "{error}");
        assert!(error.contains("/nonexistent/insightflow"), "{error}");
    }
}
