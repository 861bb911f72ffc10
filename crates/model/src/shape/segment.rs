//! Segment's HTTP Tracking API messages (analytics.js, analytics-node and the mobile SDKs):
//! camelCase fields, one of six call types, `messageId` as the event id.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::object::object;
use super::{read_naming_field, EventShape};
use crate::raw::{IdText, RawCampaign, RawContext, RawEvent, RawLibrary, RawPage, RawScreen, Text};
use crate::{EventType, FieldError};

/// A Segment call type. The single-call endpoints imply one (`/v1/track`, `/v1/t`); in a
/// batch each message names its own in `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentCall {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl SegmentCall {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "track" => Self::Track,
            "identify" => Self::Identify,
            "page" => Self::Page,
            "screen" => Self::Screen,
            "group" => Self::Group,
            "alias" => Self::Alias,
            _ => return None,
        })
    }
}

/// Messages of Segment's API; `call` is the type the endpoint implies, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Segment {
    pub call: Option<SegmentCall>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    message_id: Option<IdText<'a>>,
    #[serde(borrow, default)]
    user_id: Option<IdText<'a>>,
    #[serde(borrow, default)]
    anonymous_id: Option<IdText<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<Text<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(borrow, default)]
    traits: Option<&'a RawValue>,
    #[serde(borrow, default)]
    context: Option<Context<'a>>,
    #[serde(borrow, default)]
    group_id: Option<IdText<'a>>,
    #[serde(borrow, default)]
    previous_id: Option<IdText<'a>>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Context<'a> {
    #[serde(borrow, default)]
    user_agent: Option<Text<'a>>,
    #[serde(borrow, default)]
    page: Option<Page<'a>>,
    #[serde(borrow, default)]
    library: Option<RawLibrary<'a>>,
    #[serde(borrow, default)]
    locale: Option<Text<'a>>,
    #[serde(borrow, default)]
    timezone: Option<Text<'a>>,
    #[serde(default)]
    screen: Option<RawScreen>,
    #[serde(borrow, default)]
    traits: Option<&'a RawValue>,
    #[serde(borrow, default)]
    campaign: Option<RawCampaign<'a>>,
}

/// `context.page`, and the page fields of a page call's `properties`.
#[derive(Default, Deserialize)]
struct Page<'a> {
    #[serde(borrow, default)]
    url: Option<Text<'a>>,
    #[serde(borrow, default)]
    path: Option<Text<'a>>,
    #[serde(borrow, default)]
    title: Option<Text<'a>>,
    #[serde(borrow, default)]
    referrer: Option<Text<'a>>,
}

impl<'a> Page<'a> {
    fn or(self, other: Self) -> RawPage<'a> {
        RawPage {
            url: self.url.or(other.url),
            path: self.path.or(other.path),
            title: self.title.or(other.title),
            referrer: self.referrer.or(other.referrer),
        }
    }
}

/// Segment's spec event names -> the standard types; anything else becomes a normalised
/// custom type. The original name always travels in `event_name`.
const SPEC_EVENTS: [(&str, &str); 7] = [
    ("Order Completed", EventType::PURCHASE),
    ("Product Viewed", EventType::PRODUCT_VIEW),
    ("Product Clicked", EventType::CLICK),
    ("Product Added", EventType::CART_ADD),
    ("Product Removed", EventType::CART_REMOVE),
    ("Products Searched", EventType::SEARCH),
    ("Form Submitted", EventType::FORM_SUBMIT),
];

/// The event type of a track call named `name`: a standard type for Segment's spec events,
/// else the name in snake_case (`"Signed Up!"` -> `signed_up`).
pub fn segment_event_type(name: &str) -> Result<Cow<'static, str>, FieldError> {
    if let Some((_, standard)) = SPEC_EVENTS
        .iter()
        .find(|(spec, _)| spec.eq_ignore_ascii_case(name.trim()))
    {
        return Ok(Cow::Borrowed(standard));
    }
    let mut slug = String::with_capacity(name.len().min(EventType::MAX_LEN));
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('_') {
            slug.push('_');
        }
        if slug.len() >= EventType::MAX_LEN {
            break;
        }
    }
    let slug = slug.trim_end_matches('_');
    match slug.as_bytes().first() {
        None => Err(FieldError::new(
            "event",
            format!("{name:?} has no letters or digits to make an event type of"),
        )),
        Some(b) if b.is_ascii_digit() => {
            let mut prefixed = format!("e_{slug}");
            prefixed.truncate(EventType::MAX_LEN);
            Ok(Cow::Owned(prefixed.trim_end_matches('_').to_owned()))
        }
        Some(_) => Ok(Cow::Owned(slug.to_owned())),
    }
}

impl EventShape for Segment {
    fn decode<'a>(&self, json: &'a str) -> Result<RawEvent<'a>, FieldError> {
        let m: Message<'a> = read_naming_field(json, "message")?;
        let call = match (&m.kind, self.call) {
            (Some(kind), _) => SegmentCall::parse(kind.as_str()).ok_or_else(|| {
                FieldError::new(
                    "type",
                    format!(
                        "{:?} is not a Segment call: track, identify, page, screen, group or alias",
                        kind.as_str()
                    ),
                )
            })?,
            (None, Some(call)) => call,
            (None, None) => return Err(FieldError::new("type", "is required in a batch")),
        };
        let context = m.context.unwrap_or_default();
        let mut properties = m.properties.map(Cow::Borrowed);
        let mut user_properties = context.traits.map(Cow::Borrowed);
        let mut event_name = None;
        let mut call_page = Page::default();
        let event_type: Text<'a> = match call {
            SegmentCall::Track => {
                let name = m
                    .event
                    .ok_or_else(|| FieldError::new("event", "is required for track calls"))?;
                let event_type = segment_event_type(name.as_str())?;
                event_name = Some(name);
                Text(event_type)
            }
            SegmentCall::Identify => {
                user_properties = m.traits.map(Cow::Borrowed).or(user_properties);
                Text(Cow::Borrowed(EventType::IDENTIFY))
            }
            SegmentCall::Page | SegmentCall::Screen => {
                event_name = m.name;
                if let Some(p) = m.properties {
                    // A page call's properties carry url, path, title and referrer.
                    call_page = serde_json::from_str(p.get()).unwrap_or_default();
                }
                Text(Cow::Borrowed(if call == SegmentCall::Page {
                    EventType::PAGE_VIEW
                } else {
                    "screen_view"
                }))
            }
            SegmentCall::Group => {
                let group_id = m
                    .group_id
                    .ok_or_else(|| FieldError::new("groupId", "is required for group calls"))?;
                let id_json = serde_json::to_string(group_id.as_str())
                    .map_err(|e| FieldError::new("groupId", e.to_string()))?;
                let traits = m.traits.map_or("{}", RawValue::get);
                if !traits.trim_start().starts_with('{') {
                    return Err(FieldError::new("traits", "must be a JSON object"));
                }
                properties = Some(Cow::Owned(object([
                    ("group_id", id_json.as_str()),
                    ("traits", traits),
                ])));
                Text(Cow::Borrowed("group"))
            }
            SegmentCall::Alias => {
                let previous = m
                    .previous_id
                    .ok_or_else(|| FieldError::new("previousId", "is required for alias calls"))?;
                let id_json = serde_json::to_string(previous.as_str())
                    .map_err(|e| FieldError::new("previousId", e.to_string()))?;
                properties = Some(Cow::Owned(object([("previous_id", id_json.as_str())])));
                Text(Cow::Borrowed("alias"))
            }
        };
        let page = call_page.or(context.page.unwrap_or_default());
        let has_page = page.url.is_some()
            || page.path.is_some()
            || page.title.is_some()
            || page.referrer.is_some();
        let raw_context = RawContext {
            library: context.library,
            screen: context.screen,
            locale: context.locale,
            timezone: context.timezone,
            user_agent: context.user_agent,
            campaign: context.campaign,
        };
        Ok(RawEvent {
            event_id: m.message_id,
            event_type: Some(event_type),
            event_name,
            user_id: m.user_id,
            anonymous_id: m.anonymous_id,
            session_id: None,
            timestamp: m.timestamp,
            page: has_page.then_some(page),
            element: None,
            properties,
            user_properties,
            context: Some(raw_context),
            legacy_type: None,
            legacy_data: None,
        })
    }

    fn client_field<'f>(&self, canonical: &'f str) -> Cow<'f, str> {
        Cow::Borrowed(match canonical {
            "event_id" => "messageId",
            "user_id" => "userId",
            "anonymous_id" => "anonymousId",
            "event_type" | "event_name" => "event",
            "user_properties" => "traits",
            "page.url" => "context.page.url",
            "page.path" => "context.page.path",
            "page.title" => "context.page.title",
            "page.referrer" => "context.page.referrer",
            "context.user_agent" => "context.userAgent",
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_events_map_to_standard_types_and_others_to_snake_case() {
        let cases = [
            ("Order Completed", "purchase"),
            ("product viewed", "product_view"),
            ("Product Added", "cart_add"),
            ("Product Removed", "cart_remove"),
            ("Products Searched", "search"),
            ("Signed Up!", "signed_up"),
            ("  Video -- Played  ", "video_played"),
            ("404 Seen", "e_404_seen"),
        ];
        for (name, expected) in cases {
            assert_eq!(segment_event_type(name).unwrap(), expected, "{name}");
            EventType::parse(expected).unwrap();
        }
        assert_eq!(segment_event_type("!!!").unwrap_err().field, "event");
        let long = segment_event_type(&"Ab ".repeat(100)).unwrap();
        assert!(EventType::parse(&long).is_ok(), "{long}");
    }

    #[test]
    fn an_analytics_js_track_call_maps_every_field() {
        let e = Segment { call: Some(SegmentCall::Track) }
            .decode(
                r#"{"timestamp":"2026-01-01T10:00:00.000Z","integrations":{},"type":"track",
                "properties":{"order_id":"o1","total":12},"event":"Order Completed",
                "messageId":"ajs-next-1","anonymousId":"a-1","userId":"u-1",
                "context":{"page":{"path":"/cart","referrer":"","search":"","title":"Cart","url":"https://shop.example/cart"},
                  "userAgent":"Mozilla/5.0","locale":"en-US","library":{"name":"analytics.js","version":"npm:next-1.70.0"},
                  "traits":{"plan":"pro"}},"writeKey":"wk","sentAt":"2026-01-01T10:00:01.000Z"}"#,
            )
            .unwrap();
        assert_eq!(e.event_type.unwrap().as_str(), "purchase");
        assert_eq!(e.event_name.unwrap().as_str(), "Order Completed");
        assert_eq!(e.event_id.unwrap().as_str(), "ajs-next-1");
        assert_eq!(e.page.unwrap().title.unwrap().as_str(), "Cart");
        let context = e.context.unwrap();
        assert_eq!(context.user_agent.unwrap().as_str(), "Mozilla/5.0");
        assert_eq!(
            context.library.unwrap().name.unwrap().as_str(),
            "analytics.js"
        );
        assert_eq!(e.user_properties.unwrap().get(), r#"{"plan":"pro"}"#);
    }

    #[test]
    fn calls_without_their_required_parts_are_refused_by_field() {
        let batch = Segment::default();
        assert_eq!(batch.decode(r#"{"userId":"u"}"#).unwrap_err().field, "type");
        assert_eq!(
            batch
                .decode(r#"{"type":"fly","userId":"u"}"#)
                .unwrap_err()
                .field,
            "type"
        );
        assert_eq!(
            batch
                .decode(r#"{"type":"track","userId":"u"}"#)
                .unwrap_err()
                .field,
            "event"
        );
        assert_eq!(
            batch
                .decode(r#"{"type":"group","userId":"u"}"#)
                .unwrap_err()
                .field,
            "groupId"
        );
        assert_eq!(
            batch
                .decode(r#"{"type":"track","event":"x","userId":[]}"#)
                .unwrap_err()
                .field,
            "userId"
        );
        let group = batch
            .decode(r#"{"type":"group","userId":"u","groupId":"g\"1","traits":{"seats":3}}"#)
            .unwrap();
        assert_eq!(
            group.properties.unwrap().get(),
            r#"{"group_id":"g\"1","traits":{"seats":3}}"#
        );
    }
}
