//! The InsightFlow event model: what SDKs send, what the gateway validates, and the envelope
//! that travels through Kafka to the worker. Pure types and functions; no I/O.
//!
//! Input flows one way: JSON bytes -> [`RawEvent`] (lenient, borrowed) -> [`Event`] (validated,
//! enriched, private invariants). Only [`Event`] is ever serialized to Kafka, and the worker
//! deserializes Kafka payloads straight back into [`Event`], re-checking the invariants, so a
//! message that does not validate is a poison message by construction.

pub mod acquisition;
mod batch;
pub mod columns;
mod error;
mod event;
mod event_type;
mod ids;
mod limits;
mod payload;
mod raw;
pub mod shape;
mod stored_json;
mod time;

pub use batch::{parse_batch, parse_batch_as, BatchOutcome, BodyError, RawBody, Rejection};
pub use error::FieldError;
pub use event::{ClientInfo, Context, Element, Event, Library, Page, Screen};
pub use event_type::EventType;
pub use ids::{AnonymousId, EventId, ProjectId, SessionId, UserId};
pub use limits::Limits;
pub use payload::PayloadWriter;
pub use raw::{
    IdText, RawCampaign, RawContext, RawElement, RawEvent, RawLibrary, RawPage, RawScreen, Text,
};
pub use time::{
    parse_timestamp, stored_time, RequestClock, TimestampSource, EARLIEST_TIME, LATEST_TIME,
};

/// Version of the [`Event`] JSON layout on the Kafka topic. It travels in every message (field
/// `schema_version` and header `schema-version`); the worker dead-letters versions it does not know.
///
/// Version 2 added the event's `acquisition` and the sender's location and bot flag
/// (`client.country`, `region`, `city`, `bot`). The worker still reads version 1 (messages
/// published before an upgrade): their acquisition is derived from their page as the gateway
/// would have (without Segment's `context.campaign`, which version 1 did not carry), their
/// bot flag from `device_type == "bot"`, and they have no location.
pub const SCHEMA_VERSION: u16 = 2;
/// [`SCHEMA_VERSION`] as the `schema-version` header's text.
pub const SCHEMA_VERSION_TEXT: &str = {
    assert!(
        SCHEMA_VERSION == 2,
        "keep the header text in step with SCHEMA_VERSION"
    );
    "2"
};
/// The older versions the worker still reads ([`SCHEMA_VERSION`]).
pub const READABLE_SCHEMA_VERSIONS: [u16; 2] = [1, SCHEMA_VERSION];

/// Kafka header names set on every message.
pub mod headers {
    pub const SCHEMA_VERSION: &str = "schema-version";
    pub const EVENT_ID: &str = "event-id";
    pub const EVENT_TYPE: &str = "event-type";
    pub const PROJECT: &str = "project";
}
