use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::acquisition::{self, Acquisition, Campaign};
use crate::columns::{self, Column};
use crate::raw::{IdText, RawCampaign, RawContext, RawElement, RawEvent, RawPage, Text};
use crate::stored_json::refused_by_mysql;
use crate::time::stored_time;
use crate::{
    AnonymousId, EventId, EventType, FieldError, Limits, ProjectId, RequestClock, SessionId,
    TimestampSource, UserId, READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION,
};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Page {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The URL's path (no query, no fragment); derived from `url` when the client sent none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Element {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Space-separated class names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Click position in CSS pixels relative to the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<i32>,
}

impl Page {
    /// Every field fitted to its column ([`columns`]).
    fn stored(self) -> Result<Self, FieldError> {
        Ok(Self {
            url: fit(self.url, columns::PAGE_URL, "page.url")?,
            path: fit(self.path, columns::PAGE_PATH, "page.path")?,
            title: fit(self.title, columns::PAGE_TITLE, "page.title")?,
            referrer: fit(self.referrer, columns::REFERRER, "page.referrer")?,
        })
    }
}

impl Element {
    /// Every field fitted to its column ([`columns`]).
    fn stored(self) -> Result<Self, FieldError> {
        Ok(Self {
            tag: fit(self.tag, columns::ELEMENT_TAG, "element.tag")?,
            id: fit(self.id, columns::ELEMENT_ID, "element.id")?,
            classes: fit(self.classes, columns::ELEMENT_CLASSES, "element.classes")?,
            text: fit(self.text, columns::ELEMENT_TEXT, "element.text")?,
            selector: fit(self.selector, columns::ELEMENT_SELECTOR, "element.selector")?,
            x: self.x,
            y: self.y,
        })
    }
}

/// `value` fitted to `column` by the one rule, [`Column::fit`].
fn fit(value: Option<String>, column: Column, field: &str) -> Result<Option<String>, FieldError> {
    match value {
        Some(v) => column.fit(v, field),
        None => Ok(None),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Library {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Screen {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<Library>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<Screen>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// What the gateway learned about the sender: the same for every event of a request, so it is
/// shared (`Arc`) rather than copied per event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// `desktop`, `mobile`, `tablet`, `bot` or `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// Where the client IP is, from the gateway's geo database (none without one): ISO
    /// 3166-1 alpha-2 country, ISO 3166-2 subdivision code without the country, city name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// A bot by its user agent or its IP (the gateway's rules): stored, flagged, and left out
    /// of every aggregate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bot: bool,
}

impl ClientInfo {
    /// This description with every field fitted to its column ([`columns`]): the gateway
    /// builds it so, and [`Event`] fits whatever it is given. A field whose column would
    /// refuse it is left out instead: the description is the gateway's own, with no client
    /// field to blame.
    pub fn stored(self) -> Self {
        let fitted = |value: Option<String>, column: Column| {
            fit(value, column, column.name()).ok().flatten()
        };
        Self {
            ip: fitted(self.ip, columns::IP),
            user_agent: fitted(self.user_agent, columns::USER_AGENT),
            browser: fitted(self.browser, columns::BROWSER),
            browser_version: fitted(self.browser_version, columns::BROWSER_VERSION),
            os: fitted(self.os, columns::OS),
            device_type: fitted(self.device_type, columns::DEVICE_TYPE),
            country: fitted(self.country, columns::COUNTRY),
            region: fitted(self.region, columns::REGION),
            city: fitted(self.city, columns::CITY),
            bot: self.bot,
        }
    }

    fn is_stored(&self) -> bool {
        [
            (&self.ip, columns::IP),
            (&self.user_agent, columns::USER_AGENT),
            (&self.browser, columns::BROWSER),
            (&self.browser_version, columns::BROWSER_VERSION),
            (&self.os, columns::OS),
            (&self.device_type, columns::DEVICE_TYPE),
            (&self.country, columns::COUNTRY),
            (&self.region, columns::REGION),
            (&self.city, columns::CITY),
        ]
        .iter()
        .all(|(value, column)| value.as_deref().is_none_or(|v| column.fits(v)))
    }

    /// The shared description, copied only when something in it does not fit.
    fn shared_stored(client: Arc<Self>) -> Arc<Self> {
        if client.is_stored() {
            client
        } else {
            Arc::new(Self::clone(&client).stored())
        }
    }
}

/// A validated, enriched event: the payload of every message on the events topic.
///
/// Fields are private so an `Event` can only come from [`Event::from_raw`] (the gateway) or
/// from deserializing a Kafka payload (the worker), and both paths check the invariants:
/// a known schema version, at least one of `user_id` / `anonymous_id`, object-valued properties,
/// and everything storable: times from [`crate::EARLIEST_TIME`] to [`crate::LATEST_TIME`],
/// strings fitted to their columns ([`columns`]), JSON that MySQL's `JSON` column takes.
///
/// The fields are visible in this crate for one reader: the payload writer
/// ([`crate::PayloadWriter`]) names every one, so a field added here does not compile until
/// the payload carries it. Nothing else in the crate builds an `Event` but the two paths.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "EventWire")]
pub struct Event {
    pub(crate) schema_version: u16,
    pub(crate) event_id: EventId,
    pub(crate) project: ProjectId,
    pub(crate) event_type: EventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) event_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user_id: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) anonymous_id: Option<AnonymousId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session_id: Option<SessionId>,
    pub(crate) timestamp: DateTime<Utc>,
    pub(crate) timestamp_source: TimestampSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_timestamp: Option<DateTime<Utc>>,
    pub(crate) received_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) page: Option<Page>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) element: Option<Element>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) properties: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user_properties: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) context: Option<Context>,
    /// Where the visit came from ([`crate::acquisition`]); none for an event with no page
    /// URL, referrer or campaign.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) acquisition: Option<Acquisition>,
    pub(crate) client: Arc<ClientInfo>,
}

/// The serialized form of [`Event`], before its invariants are checked.
#[derive(Deserialize)]
struct EventWire {
    schema_version: u16,
    event_id: EventId,
    project: ProjectId,
    event_type: EventType,
    #[serde(default)]
    event_name: Option<String>,
    #[serde(default)]
    user_id: Option<UserId>,
    #[serde(default)]
    anonymous_id: Option<AnonymousId>,
    #[serde(default)]
    session_id: Option<SessionId>,
    timestamp: DateTime<Utc>,
    timestamp_source: TimestampSource,
    #[serde(default)]
    client_timestamp: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
    #[serde(default)]
    page: Option<Page>,
    #[serde(default)]
    element: Option<Element>,
    #[serde(default)]
    properties: Option<Box<RawValue>>,
    #[serde(default)]
    user_properties: Option<Box<RawValue>>,
    #[serde(default)]
    context: Option<Context>,
    #[serde(default)]
    acquisition: Option<Acquisition>,
    #[serde(default)]
    client: Arc<ClientInfo>,
}

impl TryFrom<EventWire> for Event {
    type Error = FieldError;

    fn try_from(w: EventWire) -> Result<Self, FieldError> {
        if !READABLE_SCHEMA_VERSIONS.contains(&w.schema_version) {
            return Err(FieldError::new(
                "schema_version",
                format!(
                    "unknown schema version {} (this build reads {READABLE_SCHEMA_VERSIONS:?})",
                    w.schema_version
                ),
            ));
        }
        check_identity(w.user_id.as_ref(), w.anonymous_id.as_ref())?;
        for (field, value) in [
            ("properties", &w.properties),
            ("user_properties", &w.user_properties),
        ] {
            if let Some(v) = value {
                check_object(v.get(), field, usize::MAX)?;
            }
        }
        let page = w.page.map(Page::stored).transpose()?;
        let (acquisition, client) = if w.schema_version == 1 {
            // Upgraded as the gateway would have written it (`SCHEMA_VERSION`).
            let mut client = Arc::unwrap_or_clone(w.client);
            client.bot = client.device_type.as_deref() == Some("bot");
            (of_page(page.as_ref(), None), Arc::new(client))
        } else {
            (w.acquisition, w.client)
        };
        // A payload written before these rules (or by another producer) is fitted the same
        // way, and one that cannot be stored is poison, dead-lettered by the worker, instead
        // of failing every insert of its batch.
        Ok(Self {
            schema_version: SCHEMA_VERSION,
            event_id: w.event_id,
            project: w.project,
            event_type: w.event_type,
            event_name: fit(w.event_name, columns::EVENT_NAME, "event_name")?,
            user_id: w.user_id,
            anonymous_id: w.anonymous_id,
            session_id: w.session_id,
            timestamp: stored_time(w.timestamp, "timestamp")?,
            timestamp_source: w.timestamp_source,
            client_timestamp: w
                .client_timestamp
                .map(|t| stored_time(t, "client_timestamp"))
                .transpose()?,
            received_at: stored_time(w.received_at, "received_at")?,
            page,
            element: w.element.map(Element::stored).transpose()?,
            properties: w.properties,
            user_properties: w.user_properties,
            context: w.context,
            acquisition,
            client: ClientInfo::shared_stored(client),
        })
    }
}

fn check_identity(
    user: Option<&UserId>,
    anonymous: Option<&AnonymousId>,
) -> Result<(), FieldError> {
    if user.is_none() && anonymous.is_none() {
        return Err(FieldError::new(
            "user_id",
            "user_id or anonymous_id is required",
        ));
    }
    Ok(())
}

/// Properties must be a JSON object no deeper than `max_depth`, which MySQL's `JSON` column
/// takes.
fn check_object(json: &str, field: &str, max_depth: usize) -> Result<(), FieldError> {
    if !json.trim_start().starts_with('{') {
        return Err(FieldError::new(field, "must be a JSON object"));
    }
    let depth = json_depth(json);
    if depth > max_depth {
        return Err(FieldError::new(
            field,
            format!("is nested {depth} levels deep, limit {max_depth}"),
        ));
    }
    if let Some(reason) = refused_by_mysql(json) {
        return Err(FieldError::new(field, reason));
    }
    Ok(())
}

/// Maximum nesting of objects and arrays in already well-formed JSON, without parsing it.
fn json_depth(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// An optional client string: absent or empty is `None`, longer than `max` is an error.
fn text(value: Option<Text<'_>>, field: &str, max: usize) -> Result<Option<String>, FieldError> {
    match value {
        None => Ok(None),
        Some(t) if t.0.is_empty() => Ok(None),
        Some(t) if t.0.len() > max => Err(FieldError::new(
            field,
            format!("must be at most {max} bytes, got {}", t.0.len()),
        )),
        Some(t) => Ok(Some(t.0.into_owned())),
    }
}

fn id<T>(
    value: Option<IdText<'_>>,
    parse: impl FnOnce(String) -> Result<T, FieldError>,
) -> Result<Option<T>, FieldError> {
    match value {
        Some(t) if !t.0.is_empty() => parse(t.0.into_owned()).map(Some),
        _ => Ok(None),
    }
}

/// The path part of a URL: no scheme or host, no query or fragment.
pub(crate) fn path_of(url: &str) -> &str {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            match after.find(['/', '?', '#']) {
                Some(j) if after.as_bytes()[j] == b'/' => &after[j..],
                _ => return "/",
            }
        }
        None => url,
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    if end == 0 {
        "/"
    } else {
        &rest[..end]
    }
}

fn page(raw: RawPage<'_>, limits: &Limits) -> Result<Option<Page>, FieldError> {
    let url = text(raw.url, "page.url", limits.max_url_bytes)?;
    let path = match text(raw.path, "page.path", limits.max_url_bytes)? {
        Some(path) => Some(path),
        None => url.as_deref().map(|u| path_of(u).to_owned()),
    };
    let page = Page {
        url,
        path,
        title: text(raw.title, "page.title", limits.max_string_bytes)?,
        referrer: text(raw.referrer, "page.referrer", limits.max_url_bytes)?,
    }
    .stored()?;
    Ok((page != Page::default()).then_some(page))
}

fn coordinate(value: Option<f64>, field: &str) -> Result<Option<i32>, FieldError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && (0.0..=1_000_000.0).contains(&v) => Ok(Some(v.round() as i32)),
        Some(_) => Err(FieldError::new(
            field,
            "must be a number of pixels from 0 to 1000000",
        )),
    }
}

fn element(raw: RawElement<'_>, limits: &Limits) -> Result<Option<Element>, FieldError> {
    let classes = match raw.classes {
        None => None,
        Some(json) => {
            let joined = if json.get().starts_with('[') {
                serde_json::from_str::<Vec<&str>>(json.get())
                    .map(|v| v.join(" "))
                    .or_else(|_| {
                        serde_json::from_str::<Vec<String>>(json.get()).map(|v| v.join(" "))
                    })
            } else {
                serde_json::from_str::<String>(json.get())
            }
            .map_err(|_| {
                FieldError::new("element.classes", "must be a string or an array of strings")
            })?;
            text(
                Some(Text(joined.into())),
                "element.classes",
                limits.max_string_bytes,
            )?
        }
    };
    let element = Element {
        tag: text(raw.tag, "element.tag", columns::ELEMENT_TAG.width())?,
        id: text(raw.id, "element.id", limits.max_string_bytes)?,
        classes,
        text: text(raw.text, "element.text", limits.max_string_bytes)?,
        selector: text(raw.selector, "element.selector", limits.max_string_bytes)?,
        x: coordinate(raw.x, "element.x")?,
        y: coordinate(raw.y, "element.y")?,
    }
    .stored()?;
    Ok((element != Element::default()).then_some(element))
}

fn context(raw: RawContext<'_>, limits: &Limits) -> Result<Option<Context>, FieldError> {
    let library = match raw.library {
        None => None,
        Some(l) => Some(Library {
            name: text(
                l.name,
                "context.library.name",
                limits.max_string_bytes.min(128),
            )?,
            version: text(l.version, "context.library.version", 64)?,
        })
        .filter(|l| *l != Library::default()),
    };
    let context = Context {
        library,
        screen: raw
            .screen
            .map(|s| Screen {
                width: s.width,
                height: s.height,
            })
            .filter(|s| *s != Screen::default()),
        locale: text(raw.locale, "context.locale", 64)?,
        timezone: text(raw.timezone, "context.timezone", 64)?,
    };
    Ok((context != Context::default()).then_some(context))
}

/// Segment's `context.campaign` as owned strings (empty values are none).
fn campaign(raw: RawCampaign<'_>) -> Campaign {
    let owned = |t: Option<Text<'_>>| t.filter(|t| !t.0.is_empty()).map(|t| t.0.into_owned());
    Campaign {
        source: owned(raw.source),
        medium: owned(raw.medium),
        name: owned(raw.name),
        term: owned(raw.term),
        content: owned(raw.content),
    }
}

/// The acquisition of an event with this page and campaign; none when it has no page URL,
/// referrer or campaign to read one from.
fn of_page(page: Option<&Page>, campaign: Option<&Campaign>) -> Option<Acquisition> {
    let url = page.and_then(|p| p.url.as_deref());
    let referrer = page.and_then(|p| p.referrer.as_deref());
    (url.is_some() || referrer.is_some() || campaign.is_some())
        .then(|| acquisition::acquisition(url, referrer, campaign))
}

impl Event {
    /// Validates a client event and enriches it with what the gateway knows.
    pub fn from_raw(
        mut raw: RawEvent<'_>,
        project: &ProjectId,
        clock: &RequestClock,
        client: Arc<ClientInfo>,
        limits: &Limits,
    ) -> Result<Self, FieldError> {
        let event_type = match raw.event_type {
            Some(t) => EventType::parse(t.as_str())?,
            None => return Err(FieldError::new("event_type", "is required")),
        };
        let user_id = id(raw.user_id, UserId::parse)?;
        let anonymous_id = id(raw.anonymous_id, AnonymousId::parse)?;
        check_identity(user_id.as_ref(), anonymous_id.as_ref())?;
        let event_id = match id(raw.event_id, EventId::parse)? {
            Some(id) => id,
            None => EventId::parse(Uuid::now_v7().to_string())?,
        };
        let client_timestamp = raw
            .timestamp
            .map(|t| crate::parse_timestamp(t, "timestamp"))
            .transpose()?;
        let (timestamp, timestamp_source) = clock.event_time(client_timestamp)?;
        for (field, value) in [
            ("properties", raw.properties.as_deref()),
            ("user_properties", raw.user_properties.as_deref()),
        ] {
            if let Some(v) = value {
                check_object(v.get(), field, limits.max_properties_depth)?;
            }
        }
        let page = raw.page.map(|p| page(p, limits)).transpose()?.flatten();
        let campaign = raw
            .context
            .as_mut()
            .and_then(|c| c.campaign.take())
            .map(campaign);
        let acquisition = of_page(page.as_ref(), campaign.as_ref());
        Ok(Self {
            schema_version: SCHEMA_VERSION,
            event_id,
            project: project.clone(),
            event_type,
            event_name: fit(
                text(raw.event_name, "event_name", limits.max_string_bytes)?,
                columns::EVENT_NAME,
                "event_name",
            )?,
            user_id,
            anonymous_id,
            session_id: id(raw.session_id, SessionId::parse)?,
            timestamp,
            timestamp_source,
            client_timestamp,
            received_at: clock.received_at,
            page,
            element: raw
                .element
                .map(|e| element(e, limits))
                .transpose()?
                .flatten(),
            properties: raw.properties.map(Cow::into_owned),
            user_properties: raw.user_properties.map(Cow::into_owned),
            context: raw
                .context
                .map(|c| context(c, limits))
                .transpose()?
                .flatten(),
            acquisition,
            client: ClientInfo::shared_stored(client),
        })
    }

    /// The Kafka message key: project and the user's id (anonymous id when there is none), so
    /// one user's events stay ordered in one partition.
    pub fn kafka_key(&self) -> String {
        let mut key =
            String::with_capacity(self.project.as_str().len() + 1 + self.distinct_id().len());
        key.push_str(self.project.as_str());
        key.push(':');
        key.push_str(self.distinct_id());
        key
    }

    /// The id aggregates count people by: the user id, else the anonymous id.
    pub fn distinct_id(&self) -> &str {
        match (&self.user_id, &self.anonymous_id) {
            (Some(user), _) => user.as_str(),
            (None, Some(anonymous)) => anonymous.as_str(),
            (None, None) => unreachable!("an Event always has a user_id or an anonymous_id"),
        }
    }

    pub fn schema_version(&self) -> u16 {
        self.schema_version
    }
    pub fn event_id(&self) -> &EventId {
        &self.event_id
    }
    pub fn project(&self) -> &ProjectId {
        &self.project
    }
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }
    pub fn event_name(&self) -> Option<&str> {
        self.event_name.as_deref()
    }
    pub fn user_id(&self) -> Option<&UserId> {
        self.user_id.as_ref()
    }
    pub fn anonymous_id(&self) -> Option<&AnonymousId> {
        self.anonymous_id.as_ref()
    }
    pub fn session_id(&self) -> Option<&SessionId> {
        self.session_id.as_ref()
    }
    /// The time the event happened, as used for every aggregate.
    pub fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }
    pub fn timestamp_source(&self) -> TimestampSource {
        self.timestamp_source
    }
    pub fn client_timestamp(&self) -> Option<DateTime<Utc>> {
        self.client_timestamp
    }
    pub fn received_at(&self) -> DateTime<Utc> {
        self.received_at
    }
    /// Where the visit came from; none without a page URL, referrer or campaign.
    pub fn acquisition(&self) -> Option<&Acquisition> {
        self.acquisition.as_ref()
    }
    /// A bot's event (the gateway's rules): stored, and left out of every aggregate.
    pub fn is_bot(&self) -> bool {
        self.client.bot
    }
    pub fn page(&self) -> Option<&Page> {
        self.page.as_ref()
    }
    pub fn element(&self) -> Option<&Element> {
        self.element.as_ref()
    }
    pub fn properties(&self) -> Option<&RawValue> {
        self.properties.as_deref()
    }
    pub fn user_properties(&self) -> Option<&RawValue> {
        self.user_properties.as_deref()
    }
    pub fn context(&self) -> Option<&Context> {
        self.context.as_ref()
    }
    pub fn client(&self) -> &ClientInfo {
        &self.client
    }
    /// The Kafka payload: the same JSON as `serde_json::to_vec(self)`, written faster. For
    /// several events of one request, a [`crate::PayloadWriter`] also writes their shared
    /// sender once.
    pub fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        crate::PayloadWriter::new().write(self, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_derived_from_urls() {
        assert_eq!(path_of("https://shop.example/cart?x=1#top"), "/cart");
        assert_eq!(path_of("https://shop.example"), "/");
        assert_eq!(path_of("https://shop.example?q=1"), "/");
        assert_eq!(path_of("/products/7?ref=home"), "/products/7");
        assert_eq!(path_of("?only=query"), "/");
    }

    #[test]
    fn depth_counts_nesting_but_not_brackets_in_strings() {
        assert_eq!(json_depth(r#"{"a":1}"#), 1);
        assert_eq!(json_depth(r#"{"a":{"b":[1,{"c":2}]}}"#), 4);
        assert_eq!(json_depth(r#"{"a":"{{{[[[\"}"}"#), 1);
    }

    /// A version 1 payload (published before acquisition, location and the bot flag) reads
    /// as the gateway would write it now: acquisition from its page, bot from device_type.
    #[test]
    fn version_1_payloads_are_upgraded_on_read() {
        let v1 = r#"{"schema_version":1,"event_id":"e1","project":"p","event_type":"page_view",
            "user_id":"u","timestamp":"2026-03-04T05:06:07.000Z","timestamp_source":"client",
            "received_at":"2026-03-04T05:06:07.000Z",
            "page":{"url":"https://shop.example/?utm_source=google&utm_medium=cpc","referrer":"https://www.google.com/"},
            "client":{"device_type":"bot","user_agent":"Googlebot/2.1"}}"#;
        let event: Event = serde_json::from_str(v1).unwrap();
        assert_eq!(event.schema_version(), SCHEMA_VERSION);
        let acquisition = event.acquisition().expect("derived from the page");
        assert_eq!(acquisition.channel.as_str(), "paid_search");
        assert_eq!(acquisition.campaign.source.as_deref(), Some("google"));
        assert_eq!(acquisition.referrer_domain.as_deref(), Some("google.com"));
        assert!(event.is_bot());
        assert_eq!(event.client().country, None);

        let unknown = v1.replace(r#""schema_version":1"#, r#""schema_version":9"#);
        let err = serde_json::from_str::<Event>(&unknown).unwrap_err();
        assert!(
            err.to_string().contains("unknown schema version 9"),
            "{err}"
        );
    }

    /// A version 2 payload keeps what the gateway wrote: its acquisition is not derived again.
    #[test]
    fn version_2_acquisition_is_read_as_written() {
        let v2 = r#"{"schema_version":2,"event_id":"e1","project":"p","event_type":"page_view",
            "user_id":"u","timestamp":"2026-03-04T05:06:07.000Z","timestamp_source":"client",
            "received_at":"2026-03-04T05:06:07.000Z",
            "page":{"url":"https://shop.example/?utm_source=google&utm_medium=cpc"},
            "acquisition":{"channel":"email","utm_source":"news","click_id_type":"gclid","click_id":"x"},
            "client":{"country":"FR","bot":true}}"#;
        let event: Event = serde_json::from_str(v2).unwrap();
        let acquisition = event.acquisition().unwrap();
        assert_eq!(acquisition.channel.as_str(), "email");
        assert_eq!(acquisition.click_id.as_ref().map(|c| c.kind), Some("gclid"));
        assert!(event.is_bot());
        assert_eq!(event.client().country.as_deref(), Some("FR"));
        let bad = v2.replace(r#""channel":"email""#, r#""channel":"telepathy""#);
        assert!(serde_json::from_str::<Event>(&bad).is_err());
    }
}
