use serde::Serialize;

/// Why one field of one event was refused. `field` is a dotted path into the event as the
/// client sent it (`page.url`, `properties`), so an SDK developer can find the culprit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
