//! What clients send, deserialized leniently and without copying where possible. Every
//! value here is untrusted; [`crate::Event::from_raw`] turns it into a validated event.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A client string, borrowed from the request body unless it had escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

/// A client identifier: a string, or an integer (many apps use numeric user ids) kept as its
/// decimal text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdText<'a>(pub Cow<'a, str>);

struct TextVisitor {
    accept_integers: bool,
}

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.accept_integers {
            "a string or an integer"
        } else {
            "a string"
        })
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        if self.accept_integers {
            Ok(Cow::Owned(v.to_string()))
        } else {
            Err(E::invalid_type(de::Unexpected::Unsigned(v), &self))
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        if self.accept_integers {
            Ok(Cow::Owned(v.to_string()))
        } else {
            Err(E::invalid_type(de::Unexpected::Signed(v), &self))
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(TextVisitor {
                accept_integers: false,
            })
            .map(Text)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for IdText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(TextVisitor {
                accept_integers: true,
            })
            .map(IdText)
    }
}

impl IdText<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<IdText<'_>> for String {
    fn from(id: IdText<'_>) -> Self {
        id.0.into_owned()
    }
}

impl Text<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One event in the canonical shape (`POST /api/v1/events`). Unknown fields are ignored so
/// newer SDKs keep working against an older gateway.
#[derive(Debug, Default, Deserialize)]
pub struct RawEvent<'a> {
    #[serde(borrow, default)]
    pub event_id: Option<IdText<'a>>,
    #[serde(borrow, default)]
    pub event_type: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub event_name: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub user_id: Option<IdText<'a>>,
    #[serde(borrow, default)]
    pub anonymous_id: Option<IdText<'a>>,
    #[serde(borrow, default)]
    pub session_id: Option<IdText<'a>>,
    #[serde(borrow, default)]
    pub timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub page: Option<RawPage<'a>>,
    #[serde(borrow, default)]
    pub element: Option<RawElement<'a>>,
    /// Borrowed from the body, or built by an adapter that gathers loose fields into it.
    #[serde(borrow, default, deserialize_with = "borrowed_json")]
    pub properties: Option<Cow<'a, RawValue>>,
    #[serde(borrow, default, deserialize_with = "borrowed_json")]
    pub user_properties: Option<Cow<'a, RawValue>>,
    #[serde(borrow, default)]
    pub context: Option<RawContext<'a>>,
    /// `{"type": .., "data": {..}}`, the reference collector's shape, is recognised by these
    /// two fields when `event_type` is absent.
    #[serde(borrow, default, rename = "type")]
    pub legacy_type: Option<Text<'a>>,
    #[serde(borrow, default, rename = "data")]
    pub legacy_data: Option<&'a RawValue>,
}

/// A JSON value borrowed from the body (serde's `Cow` support would copy it).
fn borrowed_json<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'de, RawValue>>, D::Error> {
    Option::<&'de RawValue>::deserialize(deserializer).map(|v| v.map(Cow::Borrowed))
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPage<'a> {
    #[serde(borrow, default)]
    pub url: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub path: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub title: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub referrer: Option<Text<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawElement<'a> {
    #[serde(borrow, default)]
    pub tag: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub id: Option<Text<'a>>,
    /// A space-separated string or an array of class names.
    #[serde(borrow, default)]
    pub classes: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub text: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub selector: Option<Text<'a>>,
    #[serde(default)]
    pub x: Option<f64>,
    #[serde(default)]
    pub y: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawContext<'a> {
    #[serde(borrow, default)]
    pub library: Option<RawLibrary<'a>>,
    #[serde(default)]
    pub screen: Option<RawScreen>,
    #[serde(borrow, default)]
    pub locale: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub timezone: Option<Text<'a>>,
    /// The end user's browser, when a server-side SDK forwards it; otherwise the request's
    /// `User-Agent` is used.
    #[serde(borrow, default)]
    pub user_agent: Option<Text<'a>>,
    /// UTM fields the SDK read itself (Segment's `context.campaign`); the page URL's own
    /// `utm_*` parameters win over them ([`crate::acquisition`]).
    #[serde(borrow, default)]
    pub campaign: Option<RawCampaign<'a>>,
}

/// Segment's `context.campaign`: `name` is the campaign (`utm_campaign`).
#[derive(Debug, Default, Deserialize)]
pub struct RawCampaign<'a> {
    #[serde(borrow, default)]
    pub source: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub medium: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub term: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub content: Option<Text<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLibrary<'a> {
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub version: Option<Text<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawScreen {
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
}
