//! Property tests of issue 13, "everything the gateway accepts can be stored": events generated
//! at and one past every limit (times at the edges of the range, strings at each column's width
//! and beyond it, in characters of one to four bytes, unpaired surrogates and oversized numbers
//! in JSON) are either refused with the right field, or accepted with every stored value inside
//! its column.
//!
//! The widths are read here from the migration itself, and the time range is written out as
//! dates, so the checks do not lean on the model's own constants.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic as test failures

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, SecondsFormat, TimeDelta, TimeZone, Timelike, Utc};
use insightflow_model::shape::Canonical;
use insightflow_model::{
    parse_batch_as, ClientInfo, Event, Limits, ProjectId, RawBody, RequestClock,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const MIGRATION: &str = include_str!("../../../../migrations/20261122000001_initial.sql");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// `VARCHAR(n)`: characters.
    Chars,
    /// `TEXT`: bytes.
    Bytes,
}

/// `user_events`' string columns as the migration declares them.
static COLUMNS: LazyLock<HashMap<String, (usize, Unit)>> = LazyLock::new(|| {
    let start = MIGRATION.find("CREATE TABLE user_events").unwrap();
    let body = &MIGRATION[start..];
    let body = &body[..body.find(") ENGINE").unwrap()];
    let mut columns = HashMap::new();
    for line in body.lines().skip(1) {
        let mut words = line.split_whitespace();
        let (Some(name), Some(ty)) = (words.next(), words.next()) else {
            continue;
        };
        if let Some(n) = ty
            .strip_prefix("VARCHAR(")
            .and_then(|t| t.strip_suffix(')'))
        {
            columns.insert(name.to_owned(), (n.parse().unwrap(), Unit::Chars));
        } else if ty == "TEXT" {
            columns.insert(name.to_owned(), (65_535, Unit::Bytes));
        }
    }
    columns
});

fn column(name: &str) -> (usize, Unit) {
    *COLUMNS
        .get(name)
        .unwrap_or_else(|| panic!("user_events.{name} is not a string column"))
}

fn width(name: &str) -> usize {
    column(name).0
}

fn length(value: &str, unit: Unit) -> usize {
    match unit {
        Unit::Chars => value.chars().count(),
        Unit::Bytes => value.len(),
    }
}

fn received() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn earliest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap()
}

/// The last millisecond of MySQL's `DATETIME(3)`.
fn latest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap() + TimeDelta::milliseconds(999)
}

/// Limits far beyond the columns, so that the column rules, not the configured limits, are
/// what the generated strings meet.
fn generous() -> Limits {
    Limits {
        max_body_bytes: 16 << 20,
        max_event_bytes: 16 << 20,
        max_string_bytes: 1 << 20,
        max_url_bytes: 1 << 20,
        ..Limits::default()
    }
}

/// A string `units` long as a column counts it: ASCII, then `share` percent of it in `wide`
/// characters, so that a cut at the width can fall inside a multi-byte character.
#[derive(Debug, Clone)]
struct Sized {
    units: usize,
    wide: char,
    share: usize,
}

impl Sized {
    fn build(&self, unit: Unit) -> String {
        let wide_len = self.wide.len_utf8();
        let (ascii, wide) = match unit {
            Unit::Chars => {
                let wide = self.units * self.share / 100;
                (self.units - wide, wide)
            }
            Unit::Bytes => {
                let wide = self.units * self.share / 100 / wide_len;
                (self.units - wide * wide_len, wide)
            }
        };
        let mut s = "a".repeat(ascii);
        s.extend(std::iter::repeat_n(self.wide, wide));
        s
    }
}

fn wide() -> impl Strategy<Value = char> {
    prop_oneof![Just('a'), Just('é'), Just('€'), Just('𝄞')]
}

/// Lengths around `width`: short, one under, at, one past, a few past, twice. For values the
/// gateway cuts.
fn sized(width: usize) -> impl Strategy<Value = Sized> {
    let units = prop_oneof![
        1..8usize,
        Just(width - 1),
        Just(width),
        Just(width + 1),
        Just(width + 3),
        Just(width * 2),
    ];
    (units, wide(), 0..=100usize).prop_map(|(units, wide, share)| Sized { units, wide, share })
}

/// Lengths up to `width` mostly, one or a few past it sometimes. For values the gateway
/// refuses: one of them too long refuses the whole event, so most must fit for accepted events
/// to be generated at all.
fn bounded(width: usize) -> impl Strategy<Value = Sized> {
    let units = prop_oneof![
        4 => 1..8usize,
        4 => Just(width - 1),
        8 => Just(width),
        1 => Just(width + 1),
        1 => Just(width + 3),
    ];
    (units, wide(), 0..=100usize).prop_map(|(units, wide, share)| Sized { units, wide, share })
}

fn maybe(width: usize) -> BoxedStrategy<Option<Sized>> {
    proptest::option::weighted(0.7, sized(width)).boxed()
}

fn maybe_bounded(width: usize) -> BoxedStrategy<Option<Sized>> {
    proptest::option::weighted(0.7, bounded(width)).boxed()
}

/// A client time in epoch milliseconds and whether to send it as RFC 3339.
#[derive(Debug, Clone)]
enum ClientTime {
    Millis(i64, bool),
    /// `2016-12-31T23:59:60.250Z`: a leap second.
    LeapSecond,
}

fn client_time() -> impl Strategy<Value = Option<ClientTime>> {
    let e = earliest().timestamp_millis();
    let l = latest().timestamp_millis();
    let r = received().timestamp_millis();
    let millis = prop_oneof![
        1 => Just(e - 1),
        2 => Just(e),
        2 => Just(e + 1),
        2 => Just(r - 3_600_000),
        2 => Just(r + 30_000),
        2 => Just(r + 7_200_000),
        2 => Just(l - 1),
        2 => Just(l),
        1 => Just(l + 1),
        1 => Just(-100_000_000_000_000), // issue 13's reproduction
        1 => Just(0),
        1 => Just(1_767_225_600), // epoch seconds sent as milliseconds
        4 => e..=l,
    ];
    proptest::option::weighted(
        0.9,
        prop_oneof![
            9 => (millis, any::<bool>()).prop_map(|(m, rfc)| ClientTime::Millis(m, rfc)),
            1 => Just(ClientTime::LeapSecond),
        ],
    )
}

fn sent_at() -> impl Strategy<Value = Option<DateTime<Utc>>> {
    prop_oneof![
        4 => Just(None),
        2 => Just(Some(received())),
        2 => Just(Some(received() + TimeDelta::minutes(10))),
        2 => Just(Some(received() - TimeDelta::days(20 * 365))),
        1 => Just(Some(Utc.with_ymd_and_hms(9000, 1, 1, 0, 0, 0).unwrap())),
        1 => Just(Some(earliest() - TimeDelta::milliseconds(1))),
        1 => Just(Some(latest() + TimeDelta::milliseconds(1))),
    ]
}

/// JSON objects, some of which MySQL's JSON column refuses.
fn properties() -> impl Strategy<Value = Option<&'static str>> {
    proptest::option::weighted(
        0.8,
        prop_oneof![
            4 => Just(r#"{"a":1,"b":"x"}"#),
            1 => Just(r#"{"s":"\ud800"}"#),
            1 => Just(r#"{"s":"\udfff"}"#),
            1 => Just(r#"{"s":"\ud800\u0041"}"#),
            1 => Just(r#"{"\ud83d":true}"#),
            4 => Just(r#"{"s":"\ud83d\ude00"}"#),
            4 => Just(r#"{"s":"\\ud800"}"#),
            1 => Just(r#"{"n":1e400}"#),
            1 => Just(r#"{"n":[-1.5E999]}"#),
            4 => Just(r#"{"n":1.7e308,"m":-2.5e-300}"#),
            1 => Just(r#"{"nested":{"s":["\u00e9","\udc00"]}}"#),
        ],
    )
}

#[derive(Debug, Clone)]
struct Generated {
    event_id: Option<Sized>,
    event_type_len: usize,
    event_name: Option<Sized>,
    user_id: Sized,
    anonymous_id: Option<Sized>,
    session_id: Option<Sized>,
    page: [Option<Sized>; 4],
    element: [Option<Sized>; 5],
    client: [Option<Sized>; 6],
    timestamp: Option<ClientTime>,
    sent_at: Option<DateTime<Utc>>,
    properties: Option<&'static str>,
    user_properties: Option<&'static str>,
}

const PAGE: [(&str, &str); 4] = [
    ("url", "page_url"),
    ("path", "page_path"),
    ("title", "page_title"),
    ("referrer", "referrer"),
];
const ELEMENT: [(&str, &str); 5] = [
    ("tag", "element_tag"),
    ("id", "element_id"),
    ("classes", "element_classes"),
    ("text", "element_text"),
    ("selector", "element_selector"),
];
const CLIENT: [&str; 6] = [
    "ip",
    "user_agent",
    "browser",
    "browser_version",
    "os",
    "device_type",
];

fn generated() -> impl Strategy<Value = Generated> {
    let ids = (
        maybe_bounded(width("event_id")),
        prop_oneof![3 => Just(1usize), 3 => Just(63), 3 => Just(64), 1 => Just(65)],
        maybe_bounded(width("event_name")),
        bounded(width("user_id")),
        maybe_bounded(width("anonymous_id")),
        maybe_bounded(width("session_id")),
    );
    let page = [
        maybe(width("page_url")),
        maybe(width("page_path")),
        maybe(width("page_title")),
        maybe(width("referrer")),
    ];
    let element = [
        maybe_bounded(width("element_tag")),
        maybe_bounded(width("element_id")),
        maybe(width("element_classes")),
        maybe(width("element_text")),
        maybe(width("element_selector")),
    ];
    let client = CLIENT.map(|name| maybe(width(name)));
    let rest = (client_time(), sent_at(), properties(), properties());
    (ids, page, element, client, rest).prop_map(
        |(
            (event_id, event_type_len, event_name, user_id, anonymous_id, session_id),
            page,
            element,
            client,
            (timestamp, sent_at, properties, user_properties),
        )| Generated {
            event_id,
            event_type_len,
            event_name,
            user_id,
            anonymous_id,
            session_id,
            page,
            element,
            client,
            timestamp,
            sent_at,
            properties,
            user_properties,
        },
    )
}

/// What was sent, by column, for comparing what is stored with it.
struct Sent {
    body: String,
    strings: HashMap<&'static str, String>,
    client: ClientInfo,
}

fn build(g: &Generated) -> Sent {
    let mut strings = HashMap::new();
    let mut text = |column: &'static str, s: &Option<Sized>| {
        s.as_ref().map(|s| {
            // Ids and the element's tag are bounded in bytes: generate them around that edge.
            let unit = match column {
                "event_id" | "user_id" | "anonymous_id" | "session_id" | "element_tag" => {
                    Unit::Bytes
                }
                _ => self::column(column).1,
            };
            let value = s.build(unit);
            strings.insert(column, value.clone());
            value
        })
    };
    let mut event = Map::new();
    event.insert("event_type".into(), json!("e".repeat(g.event_type_len)));
    let user_id = text("user_id", &Some(g.user_id.clone()));
    event.insert("user_id".into(), json!(user_id));
    for (field, column, value) in [
        ("event_id", "event_id", &g.event_id),
        ("event_name", "event_name", &g.event_name),
        ("anonymous_id", "anonymous_id", &g.anonymous_id),
        ("session_id", "session_id", &g.session_id),
    ] {
        if let Some(v) = text(column, value) {
            event.insert(field.into(), json!(v));
        }
    }
    let mut page = Map::new();
    for ((field, column), value) in PAGE.iter().zip(&g.page) {
        if let Some(v) = text(column, value) {
            page.insert((*field).into(), json!(v));
        }
    }
    event.insert("page".into(), Value::Object(page));
    let mut element = Map::new();
    for ((field, column), value) in ELEMENT.iter().zip(&g.element) {
        if let Some(v) = text(column, value) {
            element.insert((*field).into(), json!(v));
        }
    }
    event.insert("element".into(), Value::Object(element));
    match &g.timestamp {
        None => {}
        Some(ClientTime::LeapSecond) => {
            event.insert("timestamp".into(), json!("2016-12-31T23:59:60.250Z"));
        }
        Some(ClientTime::Millis(ms, rfc)) => {
            let t = DateTime::from_timestamp_millis(*ms).unwrap();
            let as_text = *rfc && (0..=9999).contains(&chrono::Datelike::year(&t));
            let value = if as_text {
                json!(t.to_rfc3339_opts(SecondsFormat::Millis, true))
            } else {
                json!(ms)
            };
            event.insert("timestamp".into(), value);
        }
    }
    // Raw JSON text, spliced in: serde_json's Value cannot hold an unpaired surrogate.
    let mut event = Value::Object(event).to_string();
    for (field, value) in [
        ("properties", g.properties),
        ("user_properties", g.user_properties),
    ] {
        if let Some(json) = value {
            event.pop();
            event.push_str(&format!(r#","{field}":{json}}}"#));
        }
    }
    let body = match g.sent_at {
        Some(sent) => format!(
            r#"{{"sent_at":"{}","events":[{event}]}}"#,
            sent.to_rfc3339_opts(SecondsFormat::Millis, true)
        ),
        None => event,
    };
    let mut client = ClientInfo::default();
    for (name, value) in CLIENT.iter().zip(&g.client) {
        let value = text(name, value);
        let slot = match *name {
            "ip" => &mut client.ip,
            "user_agent" => &mut client.user_agent,
            "browser" => &mut client.browser,
            "browser_version" => &mut client.browser_version,
            "os" => &mut client.os,
            _ => &mut client.device_type,
        };
        *slot = value;
    }
    Sent {
        body,
        strings,
        client,
    }
}

/// The event time the gateway should store, or `None` when the event must be refused for it;
/// worked out in milliseconds from the rules as documented, not by the model's code.
fn expected_time(g: &Generated) -> Option<i64> {
    let (e, l, r) = (
        earliest().timestamp_millis(),
        latest().timestamp_millis(),
        received().timestamp_millis(),
    );
    let client = match &g.timestamp {
        None => return Some(r),
        Some(ClientTime::LeapSecond) => {
            Utc.with_ymd_and_hms(2016, 12, 31, 23, 59, 59)
                .unwrap()
                .timestamp_millis()
                + 999
        }
        Some(ClientTime::Millis(ms, _)) => *ms,
    };
    if !(e..=l).contains(&client) {
        return None;
    }
    let skew = g.sent_at.map_or(0, |s| s.timestamp_millis() - r);
    let corrected = client - skew;
    if corrected > r + 60_000 {
        Some(r)
    } else if corrected < e {
        None
    } else {
        Some(corrected)
    }
}

/// The fields the event must be refused for, under [`generous`] limits.
fn expected_refusals(g: &Generated, sent: &Sent) -> BTreeSet<&'static str> {
    let mut refused = BTreeSet::new();
    // Ids are bounded by their column's width in bytes.
    for field in ["event_id", "user_id", "anonymous_id", "session_id"] {
        if sent
            .strings
            .get(field)
            .is_some_and(|v| v.len() > width(field))
        {
            refused.insert(field);
        }
    }
    if g.event_type_len > width("event_type") {
        refused.insert("event_type");
    }
    // Names are refused beyond their column, the element's tag beyond its width in bytes.
    let chars_over = |column: &str| {
        sent.strings
            .get(column)
            .is_some_and(|v| v.chars().count() > width(column))
    };
    if chars_over("event_name") {
        refused.insert("event_name");
    }
    if chars_over("element_id") {
        refused.insert("element.id");
    }
    if sent
        .strings
        .get("element_tag")
        .is_some_and(|v| v.len() > width("element_tag"))
    {
        refused.insert("element.tag");
    }
    if expected_time(g).is_none() {
        refused.insert("timestamp");
    }
    for (field, json) in [
        ("properties", g.properties),
        ("user_properties", g.user_properties),
    ] {
        // serde_json refuses what MySQL refuses in these cases: lone surrogates, numbers
        // beyond a double.
        if json.is_some_and(|j| serde_json::from_str::<Value>(j).is_err()) {
            refused.insert(field);
        }
    }
    refused
}

/// Every stored value of an accepted event is inside its column, and cut values are the start
/// of what was sent, as long as the column allows.
fn assert_fits(event: &Event, sent: &Sent) {
    let page = event.page().cloned().unwrap_or_default();
    let element = event.element().cloned().unwrap_or_default();
    let client = event.client();
    let stored: Vec<(&str, Option<&str>)> = vec![
        ("project", Some(event.project().as_str())),
        ("event_id", Some(event.event_id().as_str())),
        ("event_type", Some(event.event_type().as_str())),
        ("event_name", event.event_name()),
        ("user_id", event.user_id().map(|u| u.as_str())),
        ("anonymous_id", event.anonymous_id().map(|a| a.as_str())),
        ("distinct_id", Some(event.distinct_id())),
        ("session_id", event.session_id().map(|s| s.as_str())),
        ("page_url", page.url.as_deref()),
        ("page_path", page.path.as_deref()),
        ("page_title", page.title.as_deref()),
        ("referrer", page.referrer.as_deref()),
        ("element_tag", element.tag.as_deref()),
        ("element_id", element.id.as_deref()),
        ("element_classes", element.classes.as_deref()),
        ("element_text", element.text.as_deref()),
        ("element_selector", element.selector.as_deref()),
        ("user_agent", client.user_agent.as_deref()),
        ("browser", client.browser.as_deref()),
        ("browser_version", client.browser_version.as_deref()),
        ("os", client.os.as_deref()),
        ("device_type", client.device_type.as_deref()),
        ("ip", client.ip.as_deref()),
        ("timestamp_source", Some(event.timestamp_source().as_str())),
    ];
    assert_eq!(
        stored.len(),
        COLUMNS.len(),
        "every string column is checked"
    );
    for (name, value) in stored {
        let Some(value) = value else { continue };
        let (width, unit) = column(name);
        let len = length(value, unit);
        assert!(len <= width, "{name}: {len} > {width}");
        let sent_value = match name {
            "ip" | "user_agent" | "browser" | "browser_version" | "os" | "device_type" => {
                let c = &sent.client;
                match name {
                    "ip" => c.ip.clone(),
                    "user_agent" => c.user_agent.clone(),
                    "browser" => c.browser.clone(),
                    "browser_version" => c.browser_version.clone(),
                    "os" => c.os.clone(),
                    _ => c.device_type.clone(),
                }
            }
            _ => sent.strings.get(name).cloned(),
        };
        if let Some(original) = sent_value {
            assert!(
                original.starts_with(value),
                "{name} is a cut of what was sent"
            );
            if length(&original, unit) <= width {
                assert_eq!(value, original, "{name} fitted and was kept whole");
            } else {
                assert!(
                    len + 4 > width,
                    "{name} was cut to {len}, more than a character short of {width}"
                );
            }
        }
    }
    for (name, time) in [
        ("timestamp", Some(event.timestamp())),
        ("client_timestamp", event.client_timestamp()),
        ("received_at", Some(event.received_at())),
    ] {
        if let Some(t) = time {
            assert!(t >= earliest() && t <= latest(), "{name} {t}");
            assert!(t.nanosecond() < 1_000_000_000, "{name} is a leap second");
        }
    }
    for (name, json) in [
        ("properties", event.properties()),
        ("user_properties", event.user_properties()),
    ] {
        if let Some(json) = json {
            let parsed: Result<Value, _> = serde_json::from_str(json.get());
            assert!(parsed.is_ok(), "{name} {} re-parses", json.get());
        }
    }
    // The worker reads back what the gateway wrote, unchanged.
    let payload = serde_json::to_string(event).unwrap();
    let back: Event = serde_json::from_str(&payload).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), payload);
}

fn run(sent: &Sent, limits: &Limits) -> Result<insightflow_model::BatchOutcome, String> {
    let raw = RawBody::parse(&sent.body, limits).map_err(|e| e.field().to_owned())?;
    let clock = RequestClock::new(
        received(),
        raw.sent_at().map_err(|e| e.field().to_owned())?,
        limits.max_future_seconds,
    );
    let project = ProjectId::parse("p".repeat(width("project"))).unwrap();
    let client = Arc::new(sent.client.clone());
    Ok(parse_batch_as(
        &Canonical,
        &raw,
        &project,
        &clock,
        limits,
        |_| client.clone(),
    ))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn accepted_events_fit_their_columns_and_only_refusable_ones_are_refused(g in generated()) {
        let sent = build(&g);
        let sent_at_in_range = g.sent_at.is_none_or(|s| s >= earliest() && s <= latest());
        let outcome = match run(&sent, &generous()) {
            Err(field) => {
                prop_assert!(!sent_at_in_range, "body refused for {field}");
                prop_assert_eq!(field, "sent_at");
                return Ok(());
            }
            Ok(outcome) => outcome,
        };
        prop_assert!(sent_at_in_range, "a sent_at out of range refuses the body");
        let expected = expected_refusals(&g, &sent);
        if expected.is_empty() {
            prop_assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
            let event = &outcome.accepted[0];
            assert_fits(event, &sent);
            prop_assert_eq!(Some(event.timestamp().timestamp_millis()), expected_time(&g));
        } else {
            prop_assert!(outcome.accepted.is_empty());
            let field = outcome.rejected[0].field.as_str();
            prop_assert!(expected.contains(field), "refused for {}, expected one of {:?}", field, expected);
        }
    }

    #[test]
    fn under_the_default_limits_accepted_events_fit_too(g in generated()) {
        let sent = build(&g);
        if let Ok(outcome) = run(&sent, &Limits::default()) {
            for event in &outcome.accepted {
                assert_fits(event, &sent);
            }
        }
    }
}

#[test]
fn the_reproduction_of_issue_13_is_refused_by_its_timestamp() {
    let sent = Sent {
        body: r#"{"event_type":"click","anonymous_id":"a","timestamp":-100000000000000}"#.into(),
        strings: HashMap::new(),
        client: ClientInfo::default(),
    };
    let outcome = run(&sent, &Limits::default()).unwrap();
    assert!(outcome.accepted.is_empty());
    assert_eq!(outcome.rejected[0].field, "timestamp");
}

#[test]
fn the_migration_was_read() {
    // A parser that found nothing would make every check above vacuous.
    assert_eq!(width("browser_version"), 64);
    assert_eq!(column("page_title"), (65_535, Unit::Bytes));
    assert_eq!(COLUMNS.len(), 24);
}
