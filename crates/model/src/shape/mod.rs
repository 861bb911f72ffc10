//! The event shapes the gateway accepts. Each shape turns one event's JSON into a
//! [`RawEvent`]; from there every shape shares one validation path ([`crate::Event::from_raw`])
//! and one batch loop ([`crate::parse_batch_as`]), so an adapter cannot fork the rules.

mod flat;
mod object;
mod segment;

use std::borrow::Cow;

use crate::raw::RawEvent;
use crate::FieldError;

pub use flat::Flat;
pub use segment::{segment_event_type, Segment, SegmentCall};

/// How one event of a request is read.
pub trait EventShape {
    /// Reads one event. Errors name the field as the client spelled it.
    fn decode<'a>(&self, json: &'a str) -> Result<RawEvent<'a>, FieldError>;

    /// The client's name for a canonical field named by validation (`user_id` -> `userId`).
    fn client_field<'f>(&self, canonical: &'f str) -> Cow<'f, str> {
        Cow::Borrowed(canonical)
    }
}

/// `POST /api/v1/events`: the documented canonical event; `{"type": .., "data": {..}}` events
/// of the reference collector are recognised by shape and read as [`Flat`] `data`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Canonical;

impl EventShape for Canonical {
    fn decode<'a>(&self, json: &'a str) -> Result<RawEvent<'a>, FieldError> {
        let event: RawEvent<'a> = read_naming_field(json, "event")?;
        match (&event.event_type, &event.legacy_type, event.legacy_data) {
            (None, Some(kind), Some(data)) => {
                let shape = Flat::with_type(kind.clone());
                shape
                    .decode(data.get())
                    .map_err(|e| FieldError::new(format!("data.{}", e.field), e.reason))
            }
            _ => Ok(event),
        }
    }
}

/// Reads one event's JSON as `T`; an error names the failing field by its path (`page.url`),
/// or `whole` when the JSON itself is wrong.
///
/// The plain read runs first: serde_path_to_error keeps the path by copying every map key it
/// passes, one allocation per field of every event, which the gateway's profile showed. Only
/// input that failed is read again, with the path tracked, to say where.
pub(crate) fn read_naming_field<'a, T: serde::Deserialize<'a>>(
    json: &'a str,
    whole: &str,
) -> Result<T, FieldError> {
    serde_json::from_str(json).map_err(|plain| {
        let mut de = serde_json::Deserializer::from_str(json);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Err(e) => {
                let path = e.path().to_string();
                let field = if path == "." { whole.to_owned() } else { path };
                FieldError::new(field, without_position(e.into_inner()))
            }
            // Only trailing input can fail the plain read alone: the JSON as a whole is wrong.
            Ok(_) => FieldError::new(whole, without_position(plain)),
        }
    })
}

/// serde_json's message without " at line 1 column 17", which means nothing to a client
/// looking at one event of a batch.
pub(crate) fn without_position(e: serde_json::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_events_are_recognised_by_shape() {
        let event = Canonical
            .decode(r#"{"type":"Click","data":{"user_id":"u1","button":"buy"}}"#)
            .unwrap();
        assert_eq!(event.event_type.unwrap().as_str(), "Click");
        assert_eq!(event.user_id.unwrap().as_str(), "u1");
        assert_eq!(event.properties.unwrap().get(), r#"{"button":"buy"}"#);
        let err = Canonical
            .decode(r#"{"type":"click","data":{"user_id":[1]}}"#)
            .unwrap_err();
        assert_eq!(err.field, "data.user_id");
    }

    #[test]
    fn canonical_errors_carry_the_json_path() {
        let err = Canonical
            .decode(r#"{"event_type":"click","page":{"url":5}}"#)
            .unwrap_err();
        assert_eq!(err.field, "page.url");
        assert!(!err.reason.contains("line"), "{}", err.reason);
        assert_eq!(Canonical.decode(r#""x""#).unwrap_err().field, "event");
        // Fails the plain read only (the path-tracking read stops at the object's end).
        let err = Canonical
            .decode(r#"{"event_type":"click","user_id":"u1"} x"#)
            .unwrap_err();
        assert_eq!(err.field, "event");
        assert!(err.reason.contains("trailing"), "{}", err.reason);
    }
}
