//! Event properties as parameters name them: a dot-separated name becomes a JSON path, and a
//! filter value the text `JSON_UNQUOTE(JSON_EXTRACT(...))` compares it with. Used by the
//! breakdown and by funnel steps.

use super::error::ApiError;

/// The JSON path of a (possibly nested, dot-separated) property name.
pub fn property_path(field: &'static str, name: &str) -> Result<String, ApiError> {
    let segments: Vec<&str> = name.split('.').collect();
    let valid = name.len() <= 128
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !valid {
        return Err(ApiError::bad(
            field,
            format!("{name:?} is not a property name ([A-Za-z0-9_-], '.' for nesting)"),
        ));
    }
    Ok(format!(
        "${}",
        segments
            .iter()
            .map(|s| format!(".\"{s}\""))
            .collect::<String>()
    ))
}

/// How a filter value compares with `JSON_UNQUOTE(JSON_EXTRACT(...))`.
pub fn value_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
