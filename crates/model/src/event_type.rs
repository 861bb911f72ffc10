use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{columns, FieldError};

/// An event's type: one of the standard types or a custom name.
///
/// Input is normalised (trimmed, ASCII-lowercased, spaces, hyphens and dots turned into `_`)
/// and must then match `^[a-z][a-z0-9_]{0,63}$`, so `"Page View"` and `"page-view"` are both
/// `page_view`. The exact client spelling can travel in `event_name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct EventType(String);

impl EventType {
    pub const PAGE_VIEW: &'static str = "page_view";
    pub const CLICK: &'static str = "click";
    pub const SCROLL: &'static str = "scroll";
    pub const FORM_SUBMIT: &'static str = "form_submit";
    pub const PURCHASE: &'static str = "purchase";
    pub const PRODUCT_VIEW: &'static str = "product_view";
    pub const SEARCH: &'static str = "search";
    pub const CART_ADD: &'static str = "cart_add";
    pub const CART_REMOVE: &'static str = "cart_remove";
    pub const IDENTIFY: &'static str = "identify";

    /// The types with a documented meaning; anything else matching the pattern is custom.
    pub const STANDARD: [&'static str; 10] = [
        Self::PAGE_VIEW,
        Self::CLICK,
        Self::SCROLL,
        Self::FORM_SUBMIT,
        Self::PURCHASE,
        Self::PRODUCT_VIEW,
        Self::SEARCH,
        Self::CART_ADD,
        Self::CART_REMOVE,
        Self::IDENTIFY,
    ];
    pub const MAX_LEN: usize = columns::EVENT_TYPE.width();
    pub const PATTERN: &'static str = "^[a-z][a-z0-9_]{0,63}$";

    pub fn parse(input: &str) -> Result<Self, FieldError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(FieldError::new("event_type", "must not be empty"));
        }
        let already_normalised = trimmed
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let normalised: String = if already_normalised {
            // What SDKs send (`page_view`): copied whole, not a character at a time.
            trimmed.to_owned()
        } else {
            trimmed
                .chars()
                .map(|c| match c {
                    ' ' | '-' | '.' => '_',
                    c => c.to_ascii_lowercase(),
                })
                .collect()
        };
        let mut bytes = normalised.bytes();
        let starts_with_letter = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
        let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !starts_with_letter || !rest_ok || normalised.len() > Self::MAX_LEN {
            return Err(FieldError::new(
                "event_type",
                format!(
                    "{input:?} is not a valid event type: after normalisation it must match {}",
                    Self::PATTERN
                ),
            ));
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_standard(&self) -> bool {
        Self::STANDARD.contains(&self.0.as_str())
    }

    pub fn is(&self, name: &str) -> bool {
        self.0 == name
    }
}

impl TryFrom<String> for EventType {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, FieldError> {
        Self::parse(&value)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_separators() {
        assert_eq!(EventType::parse("Page View").unwrap().as_str(), "page_view");
        assert_eq!(EventType::parse(" cart-add ").unwrap().as_str(), "cart_add");
        assert!(EventType::parse("purchase").unwrap().is_standard());
        assert!(!EventType::parse("video_played").unwrap().is_standard());
    }

    #[test]
    fn normalised_input_is_kept_as_is_and_the_rest_normalised() {
        for (input, expected) in [
            ("page_view", "page_view"),
            (" page_view ", "page_view"),
            ("a1_b2", "a1_b2"),
            ("Page.View", "page_view"),
            ("x-y z", "x_y_z"),
        ] {
            assert_eq!(EventType::parse(input).unwrap().as_str(), expected);
        }
        assert!(EventType::parse("_x").is_err());
        assert!(EventType::parse("1x").is_err());
    }

    #[test]
    fn the_pattern_and_the_column_agree() {
        let pattern = format!("^[a-z][a-z0-9_]{{0,{}}}$", columns::EVENT_TYPE.width() - 1);
        assert_eq!(EventType::PATTERN, pattern);
        assert!(EventType::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_names_outside_the_pattern() {
        for bad in ["", "   ", "1click", "_x", "émoji", "a/b", &"x".repeat(65)] {
            let err = EventType::parse(bad).unwrap_err();
            assert_eq!(err.field, "event_type", "{bad:?}");
        }
    }
}
