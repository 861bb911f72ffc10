use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::columns::{self, Column};
use crate::FieldError;

/// Checks shared by every identifier: present, bounded, printable.
///
/// The bound is the column's width counted in bytes, stricter than MySQL's characters: an id
/// that fits it always fits the column, and is also a bounded key in Kafka and Redis.
fn check_identifier(value: &str, field: &str, max_len: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > max_len {
        return Err(FieldError::new(
            field,
            format!("must be at most {max_len} bytes, got {}", value.len()),
        ));
    }
    // ASCII (nearly every id) is settled by its bytes; other text by its characters, where
    // the C1 controls (U+0080..U+009F) are too.
    let printable_ascii = value.bytes().all(|b| (0x20..0x7f).contains(&b));
    if !printable_ascii && value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$meta:meta])* $name:ident, field = $field:literal, column = $column:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl $name {
            /// The most bytes an id may have: its column's width.
            pub const MAX_LEN: usize = $column.width();
            pub const COLUMN: Column = $column;

            pub fn parse(value: impl Into<String>) -> Result<Self, FieldError> {
                let value = value.into();
                check_identifier(&value, $field, Self::MAX_LEN)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = FieldError;
            fn try_from(value: String) -> Result<Self, FieldError> {
                Self::parse(value)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// Idempotency key of an event, unique per project. Client-generated (a UUID from our SDKs,
    /// Segment's `messageId`, ...); the gateway generates a UUIDv7 when the client sent none.
    EventId, field = "event_id", column = columns::EVENT_ID
);
identifier!(
    /// The application's identifier of a known user.
    UserId, field = "user_id", column = columns::USER_ID
);
identifier!(
    /// The SDK's identifier of a device or browser before (or without) identification.
    AnonymousId, field = "anonymous_id", column = columns::ANONYMOUS_ID
);
identifier!(
    /// A visit, as the SDK delimits it.
    SessionId, field = "session_id", column = columns::SESSION_ID
);

/// A tenant. Comes from the write key's configuration, never from the event body.
///
/// Shared, not copied: every event of a request carries its project, and a clone is a
/// reference count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct ProjectId(Arc<str>);

impl ProjectId {
    pub const MAX_LEN: usize = columns::PROJECT.width();

    /// `[a-z0-9_-]{1,64}`: project ids appear in Redis keys and Kafka keys.
    pub fn parse(value: impl Into<String>) -> Result<Self, FieldError> {
        let value = value.into();
        check_identifier(&value, "project", Self::MAX_LEN)?;
        if !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(FieldError::new(
                "project",
                "must contain only a-z, 0-9, '_' and '-'",
            ));
        }
        Ok(Self(value.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProjectId {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, FieldError> {
        Self::parse(value)
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_reject_empty_long_and_control_characters() {
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a".repeat(256)).is_err());
        assert!(UserId::parse("a".repeat(255)).is_ok());
        assert_eq!(
            SessionId::parse("s\n1").unwrap_err().field,
            "session_id".to_owned()
        );
    }

    #[test]
    fn every_control_character_is_refused_ascii_or_not() {
        for c in (0u32..0x250).filter_map(char::from_u32) {
            let id = format!("a{c}b");
            assert_eq!(
                UserId::parse(id.clone()).is_err(),
                c.is_control(),
                "{c:?} in {id:?}"
            );
        }
        assert!(
            UserId::parse("é\u{85}").is_err(),
            "a C1 control after non-ASCII"
        );
    }

    #[test]
    fn an_id_within_its_byte_bound_fits_its_column() {
        // 127 two-byte characters: 254 bytes, within the bound, and 127 of the column's 255.
        let accented = "é".repeat(127);
        assert!(UserId::parse(accented.clone()).is_ok());
        assert!(UserId::COLUMN.fits(&accented));
        // 128 of them are 256 bytes: refused, although MySQL would hold 255 characters.
        assert!(UserId::parse("é".repeat(128)).is_err());
        // Each id is bounded by its own column: the one its field names.
        for (field, column) in [
            (EventId::parse("").unwrap_err().field, EventId::COLUMN),
            (UserId::parse("").unwrap_err().field, UserId::COLUMN),
            (
                AnonymousId::parse("").unwrap_err().field,
                AnonymousId::COLUMN,
            ),
            (SessionId::parse("").unwrap_err().field, SessionId::COLUMN),
            (ProjectId::parse("").unwrap_err().field, columns::PROJECT),
        ] {
            assert_eq!(field, column.name());
            assert_eq!(column.overflow(), columns::Overflow::Refuse, "{field}");
        }
        assert!(EventId::parse("\0").is_err(), "NUL is a control character");
    }

    #[test]
    fn project_ids_are_restricted_to_key_safe_characters() {
        assert!(ProjectId::parse("shop-eu_1").is_ok());
        assert!(ProjectId::parse("Shop").is_err());
        assert!(ProjectId::parse("a:b").is_err());
    }
}
