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
pub use raw::{IdText, RawContext, RawElement, RawEvent, RawLibrary, RawPage, RawScreen, Text};
pub use time::{
    parse_timestamp, stored_time, RequestClock, TimestampSource, EARLIEST_TIME, LATEST_TIME,
};

/// Version of the [`Event`] JSON layout on the Kafka topic. It travels in every message (field
/// `schema_version` and header `schema-version`); the worker dead-letters versions it does not know.
pub const SCHEMA_VERSION: u16 = 1;

/// Kafka header names set on every message.
pub mod headers {
    pub const SCHEMA_VERSION: &str = "schema-version";
    pub const EVENT_ID: &str = "event-id";
    pub const EVENT_TYPE: &str = "event-type";
    pub const PROJECT: &str = "project";
}
