//! The reference tracking service's flat events (`POST /api/v1/track`, `/track/batch`,
//! `/page-view`, `/product-view`, `/purchase`) and the `data` of `{"type", "data"}` events:
//!
//! ```json
//! {"event_type": "page_view", "event_name": "homepage_visited", "user_id": 42,
//!  "session_id": "s1", "page_url": "https://shop.example/", "referrer": "...",
//!  "properties": {...}, "product_id": "p-1", "price": 9.5}
//! ```
//!
//! Known fields map onto the canonical event; every other top-level field is kept in
//! `properties`, so convenience fields such as `product_id` or `order_id` are not lost.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::object::{object, Members};
use super::{without_position, EventShape};
use crate::raw::{RawContext, RawEvent, RawPage, Text};
use crate::FieldError;

#[derive(Debug, Clone, Default)]
pub struct Flat {
    /// The type the endpoint implies (`/api/v1/purchase` -> `purchase`); it wins over a body's
    /// `event_type`, which then only fills `event_name` when that is absent.
    fixed_type: Option<Text<'static>>,
}

impl Flat {
    /// Events that carry their own `event_type`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Events of a convenience endpoint, whose path names the type.
    pub fn of_type(event_type: &'static str) -> Self {
        Self {
            fixed_type: Some(Text(Cow::Borrowed(event_type))),
        }
    }

    /// `{"type": .., "data": ..}`: the outer `type` is the event type.
    pub(crate) fn with_type(event_type: Text<'_>) -> Self {
        Self {
            fixed_type: Some(Text(Cow::Owned(event_type.0.into_owned()))),
        }
    }
}

fn field<'a, T: Deserialize<'a>>(value: &'a RawValue, name: &str) -> Result<T, FieldError> {
    serde_json::from_str(value.get()).map_err(|e| FieldError::new(name, without_position(e)))
}

impl EventShape for Flat {
    fn decode<'a>(&self, json: &'a str) -> Result<RawEvent<'a>, FieldError> {
        let members = Members::parse(json, "event")?;
        let mut event = RawEvent::default();
        let mut page = RawPage::default();
        let mut user_agent = None;
        let mut properties: Option<&'a RawValue> = None;
        let mut extra: Vec<(&str, &str)> = Vec::new();
        let mut body_type = None;
        for (key, value) in &members.0 {
            let name = key.as_str();
            match name {
                "event_id" => event.event_id = field(value, name)?,
                "event_type" => body_type = field(value, name)?,
                "event_name" => event.event_name = field(value, name)?,
                "user_id" => event.user_id = field(value, name)?,
                "anonymous_id" => event.anonymous_id = field(value, name)?,
                "session_id" => event.session_id = field(value, name)?,
                "timestamp" => event.timestamp = field(value, name)?,
                "page_url" => page.url = field(value, name)?,
                "page_path" => page.path = field(value, name)?,
                "page_title" => page.title = field(value, name)?,
                "referrer" => page.referrer = field(value, name)?,
                "user_agent" => user_agent = field(value, name)?,
                "page" => event.page = field(value, name)?,
                "element" => event.element = field(value, name)?,
                "context" => event.context = field(value, name)?,
                "properties" => properties = Some(value),
                "user_properties" => {
                    event.user_properties =
                        field::<Option<&RawValue>>(value, name)?.map(Cow::Borrowed)
                }
                _ => extra.push((name, value.get())),
            }
        }
        if event.page.is_none()
            && (page.url.is_some()
                || page.title.is_some()
                || page.path.is_some()
                || page.referrer.is_some())
        {
            event.page = Some(page);
        }
        if user_agent.is_some() {
            event
                .context
                .get_or_insert_with(RawContext::default)
                .user_agent = user_agent;
        }
        event.properties = merge_properties(properties, &extra)?;
        match (&self.fixed_type, body_type) {
            (Some(fixed), body) => {
                event.event_type = Some(fixed.clone());
                if event.event_name.is_none() {
                    event.event_name = body;
                }
            }
            (None, body) => event.event_type = body,
        }
        // The reference clients often send only a session: it identifies the visitor.
        if event.user_id.is_none() && event.anonymous_id.is_none() {
            event.anonymous_id = event.session_id.clone();
        }
        Ok(event)
    }

    fn client_field<'f>(&self, canonical: &'f str) -> Cow<'f, str> {
        Cow::Borrowed(match canonical {
            "page.url" => "page_url",
            "page.path" => "page_path",
            "page.title" => "page_title",
            "page.referrer" => "referrer",
            "context.user_agent" => "user_agent",
            other => other,
        })
    }
}

/// `properties` as sent, plus the event's unknown top-level fields (an explicit property of
/// the same name wins).
fn merge_properties<'a>(
    properties: Option<&'a RawValue>,
    extra: &[(&str, &str)],
) -> Result<Option<Cow<'a, RawValue>>, FieldError> {
    let properties = properties.filter(|p| p.get() != "null");
    if extra.is_empty() {
        return Ok(properties.map(Cow::Borrowed));
    }
    let explicit = match properties {
        Some(p) => Members::parse(p.get(), "properties")?.0,
        None => Vec::new(),
    };
    let merged = explicit.iter().map(|(k, v)| (k.as_str(), v.get())).chain(
        extra
            .iter()
            .copied()
            .filter(|(k, _)| !explicit.iter().any(|(e, _)| e.as_str() == *k)),
    );
    Ok(Some(Cow::Owned(object(merged))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_fields_map_onto_the_canonical_event() {
        let e = Flat::new()
            .decode(
                r#"{"event_type":"page_view","event_name":"homepage_visited","user_id":42,
                "session_id":"s1","page_url":"https://shop.example/?a=1","referrer":"https://q.example",
                "user_agent":"curl/8","properties":{"a":1}}"#,
            )
            .unwrap();
        assert_eq!(e.event_type.unwrap().as_str(), "page_view");
        assert_eq!(e.user_id.unwrap().as_str(), "42");
        let page = e.page.unwrap();
        assert_eq!(page.url.unwrap().as_str(), "https://shop.example/?a=1");
        assert_eq!(page.referrer.unwrap().as_str(), "https://q.example");
        assert_eq!(e.context.unwrap().user_agent.unwrap().as_str(), "curl/8");
        assert!(matches!(e.properties, Some(Cow::Borrowed(p)) if p.get() == r#"{"a":1}"#));
    }

    #[test]
    fn convenience_endpoints_fix_the_type_and_keep_loose_fields() {
        let e = Flat::of_type("purchase")
            .decode(r#"{"session_id":"s9","order_id":"o-1","total":30.5,"properties":{"total":1,"coupon":"X"}}"#)
            .unwrap();
        assert_eq!(e.event_type.unwrap().as_str(), "purchase");
        assert_eq!(
            e.anonymous_id.unwrap().as_str(),
            "s9",
            "the session identifies the visitor"
        );
        assert_eq!(
            e.properties.unwrap().get(),
            r#"{"total":1,"coupon":"X","order_id":"o-1"}"#
        );
    }

    #[test]
    fn wrong_types_name_the_flat_field() {
        let err = Flat::new()
            .decode(r#"{"event_type":"x","page_url":7}"#)
            .unwrap_err();
        assert_eq!(err.field, "page_url");
        let err = Flat::new()
            .decode(r#"{"event_type":"x","properties":[1],"extra":1}"#)
            .unwrap_err();
        assert_eq!(err.field, "properties");
        assert_eq!(Flat::new().decode("3").unwrap_err().field, "event");
    }
}
