//! The Kafka payload of an [`Event`], written directly: the same JSON bytes serde's derived
//! `Serialize` writes (fields, order, escaping and time format alike), so the worker's
//! `serde_json::from_slice::<Event>` reads it as before and nothing on the topic changes.
//!
//! Why not serde: the gateway writes every accepted event once, and serde_json's writer was
//! the largest item of its profile (docs/BENCHMARKS.md): strings escaped a byte at a time
//! through `io::Write`, and each time formatted through `fmt::Write` piece by piece and then
//! escaped again. Here a string is checked eight bytes at a time and copied whole when it
//! needs no escape (almost always), a time is written from its fields, and a request's
//! sender description, shared by its events, is written once per request
//! ([`PayloadWriter`]).

use std::sync::Arc;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::value::RawValue;

use crate::{ClientInfo, Context, Element, Event, Library, Page, Screen};

/// Senders remembered per writer. A request's events come from one sender, or from the few
/// browsers a server-side SDK forwards (`context.user_agent`); beyond this many, the rest are
/// written each time.
const CLIENTS_REMEMBERED: usize = 16;

/// Writes the payloads of one request's events. Reuse it for every event of the request: the
/// `client` object of a sender already written is copied instead of written again.
#[derive(Debug, Default)]
pub struct PayloadWriter {
    /// Each sender written so far (held, so its address cannot be reused by another) and the
    /// range of `client_json` that holds its `client` object.
    clients: Vec<(Arc<ClientInfo>, std::ops::Range<usize>)>,
    client_json: Vec<u8>,
}

impl PayloadWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `event`'s payload to `out`.
    pub fn write(&mut self, event: &Event, out: &mut Vec<u8>) {
        // Every field named: a field added to Event does not compile until it is written.
        let Event {
            schema_version,
            event_id,
            project,
            event_type,
            event_name,
            user_id,
            anonymous_id,
            session_id,
            timestamp,
            timestamp_source,
            client_timestamp,
            received_at,
            page,
            element,
            properties,
            user_properties,
            context,
            acquisition,
            client,
        } = event;
        out.reserve(512);
        out.extend_from_slice(b"{\"schema_version\":");
        write_u64(out, u64::from(*schema_version));
        out.extend_from_slice(b",\"event_id\":");
        write_str(out, event_id.as_str());
        out.extend_from_slice(b",\"project\":");
        write_str(out, project.as_str());
        out.extend_from_slice(b",\"event_type\":");
        write_str(out, event_type.as_str());
        let mut object = Object { out, first: false };
        object.str("event_name", event_name.as_deref());
        object.str("user_id", user_id.as_ref().map(|id| id.as_str()));
        object.str("anonymous_id", anonymous_id.as_ref().map(|id| id.as_str()));
        object.str("session_id", session_id.as_ref().map(|id| id.as_str()));
        object.time("timestamp", Some(*timestamp));
        object.str("timestamp_source", Some(timestamp_source.as_str()));
        object.time("client_timestamp", *client_timestamp);
        object.time("received_at", Some(*received_at));
        if let Some(page) = page {
            object.key("page");
            write_page(object.out, page);
        }
        if let Some(element) = element {
            object.key("element");
            write_element(object.out, element);
        }
        object.raw("properties", properties.as_deref().map(RawValue::get));
        object.raw(
            "user_properties",
            user_properties.as_deref().map(RawValue::get),
        );
        if let Some(context) = context {
            object.key("context");
            write_context(object.out, context);
        }
        if let Some(acquisition) = acquisition {
            object.key("acquisition");
            let mut a = Object::start(object.out);
            for (name, value) in acquisition.fields() {
                a.str(name, value);
            }
            a.end();
        }
        object.key("client");
        self.write_client(client, object.out);
        out.push(b'}');
    }

    fn write_client(&mut self, client: &Arc<ClientInfo>, out: &mut Vec<u8>) {
        if let Some((_, range)) = self.clients.iter().find(|(c, _)| Arc::ptr_eq(c, client)) {
            out.extend_from_slice(&self.client_json[range.clone()]);
            return;
        }
        if self.clients.len() == CLIENTS_REMEMBERED {
            write_client(out, client);
            return;
        }
        let start = self.client_json.len();
        write_client(&mut self.client_json, client);
        let range = start..self.client_json.len();
        out.extend_from_slice(&self.client_json[range.clone()]);
        self.clients.push((Arc::clone(client), range));
    }
}

/// A JSON object's members being written: `"key":value`, comma-separated, absent values left
/// out (serde's `skip_serializing_if = "Option::is_none"`).
struct Object<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl Object<'_> {
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        // Every key is one of this module's literals: no escape needed.
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.key(key);
            write_str(self.out, v);
        }
    }

    fn raw(&mut self, key: &str, json: Option<&str>) {
        if let Some(v) = json {
            self.key(key);
            self.out.extend_from_slice(v.as_bytes());
        }
    }

    fn time(&mut self, key: &str, value: Option<DateTime<Utc>>) {
        if let Some(t) = value {
            self.key(key);
            write_time(self.out, t);
        }
    }

    fn int(&mut self, key: &str, value: Option<i64>) {
        if let Some(v) = value {
            self.key(key);
            if v < 0 {
                self.out.push(b'-');
            }
            write_u64(self.out, v.unsigned_abs());
        }
    }

    fn start(out: &mut Vec<u8>) -> Object<'_> {
        out.push(b'{');
        Object { out, first: true }
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

fn write_page(out: &mut Vec<u8>, page: &Page) {
    let Page {
        url,
        path,
        title,
        referrer,
    } = page;
    let mut o = Object::start(out);
    o.str("url", url.as_deref());
    o.str("path", path.as_deref());
    o.str("title", title.as_deref());
    o.str("referrer", referrer.as_deref());
    o.end();
}

fn write_element(out: &mut Vec<u8>, element: &Element) {
    let Element {
        tag,
        id,
        classes,
        text,
        selector,
        x,
        y,
    } = element;
    let mut o = Object::start(out);
    o.str("tag", tag.as_deref());
    o.str("id", id.as_deref());
    o.str("classes", classes.as_deref());
    o.str("text", text.as_deref());
    o.str("selector", selector.as_deref());
    o.int("x", x.map(i64::from));
    o.int("y", y.map(i64::from));
    o.end();
}

fn write_context(out: &mut Vec<u8>, context: &Context) {
    let Context {
        library,
        screen,
        locale,
        timezone,
    } = context;
    let mut o = Object::start(out);
    if let Some(Library { name, version }) = library {
        o.key("library");
        let mut l = Object::start(o.out);
        l.str("name", name.as_deref());
        l.str("version", version.as_deref());
        l.end();
    }
    if let Some(Screen { width, height }) = screen {
        o.key("screen");
        let mut s = Object::start(o.out);
        s.int("width", width.map(i64::from));
        s.int("height", height.map(i64::from));
        s.end();
    }
    o.str("locale", locale.as_deref());
    o.str("timezone", timezone.as_deref());
    o.end();
}

fn write_client(out: &mut Vec<u8>, client: &ClientInfo) {
    let ClientInfo {
        ip,
        user_agent,
        browser,
        browser_version,
        os,
        device_type,
        country,
        region,
        city,
        bot,
    } = client;
    let mut o = Object::start(out);
    o.str("ip", ip.as_deref());
    o.str("user_agent", user_agent.as_deref());
    o.str("browser", browser.as_deref());
    o.str("browser_version", browser_version.as_deref());
    o.str("os", os.as_deref());
    o.str("device_type", device_type.as_deref());
    o.str("country", country.as_deref());
    o.str("region", region.as_deref());
    o.str("city", city.as_deref());
    if *bot {
        o.key("bot");
        o.out.extend_from_slice(b"true");
    }
    o.end();
}

fn write_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `value` zero-padded to `width` digits (`value` has at most that many).
fn write_padded(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let mut digits = [b'0'; 9];
    for at in (0..width).rev() {
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// A time as chrono's `Serialize` writes it (RFC 3339, `Z`, the fraction in as few of 0, 3, 6
/// or 9 digits as hold it exactly): `"2026-11-29T10:22:06.123Z"`.
fn write_time(out: &mut Vec<u8>, time: DateTime<Utc>) {
    let year = time.year();
    if !(0..=9999).contains(&year) {
        // Outside what an event can hold (crate::time); written the general way.
        let text = serde_json::to_string(&time).unwrap_or_default();
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let (mut second, mut nano) = (time.second(), time.nanosecond());
    if nano >= 1_000_000_000 {
        // A leap second: chrono writes `:60`.
        second += 1;
        nano -= 1_000_000_000;
    }
    out.push(b'"');
    write_padded(out, year as u32, 4);
    out.push(b'-');
    write_padded(out, time.month(), 2);
    out.push(b'-');
    write_padded(out, time.day(), 2);
    out.push(b'T');
    write_padded(out, time.hour(), 2);
    out.push(b':');
    write_padded(out, time.minute(), 2);
    out.push(b':');
    write_padded(out, second, 2);
    if nano != 0 {
        out.push(b'.');
        if nano % 1_000_000 == 0 {
            write_padded(out, nano / 1_000_000, 3);
        } else if nano % 1_000 == 0 {
            write_padded(out, nano / 1_000, 6);
        } else {
            write_padded(out, nano, 9);
        }
    }
    out.extend_from_slice(b"Z\"");
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is zero. Exact for the question "any" (the borrow can only
/// mark bytes above a zero byte).
fn has_zero_byte(word: u64) -> bool {
    word.wrapping_sub(ONES) & !word & HIGHS != 0
}

/// Whether any of the eight bytes of `word` is one JSON strings escape: a control character,
/// `"` or `\`. Exact, as [`has_zero_byte`]; "less than 0x20" is the same test shifted.
fn needs_escape(word: u64) -> bool {
    word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0
        || has_zero_byte(word ^ (ONES * u64::from(b'"')))
        || has_zero_byte(word ^ (ONES * u64::from(b'\\')))
}

/// A JSON string, escaped exactly as serde_json escapes it.
fn write_str(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        if at + 8 <= bytes.len() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            if !needs_escape(u64::from_le_bytes(word)) {
                at += 8;
                continue;
            }
        }
        let end = (at + 8).min(bytes.len());
        while at < end {
            let escape = ESCAPE[usize::from(bytes[at])];
            if escape != 0 {
                out.extend_from_slice(&bytes[copied..at]);
                write_escape(out, escape, bytes[at]);
                copied = at + 1;
            }
            at += 1;
        }
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

fn write_escape(out: &mut Vec<u8>, escape: u8, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if escape == b'u' {
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', escape]);
    }
}

/// serde_json's table: for each byte, 0 when it is written as is, else the letter after the
/// backslash (`u`: `\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::{parse_batch, Limits, ProjectId, RawBody, RequestClock};

    fn serde_str(s: &str) -> Vec<u8> {
        serde_json::to_vec(s).unwrap()
    }

    fn ours(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_str(&mut out, s);
        out
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let every_byte: String = (0u8..=127).map(char::from).collect();
        for s in [
            "",
            "plain",
            "exactly8",
            "sixteen bytes!!!",
            "\"",
            "\\",
            "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{0}i\u{1f}j\u{7f}k",
            "é😀 中文 \u{2028}",
            "0123456789abcdef\"0123456789abcdef\\",
            &every_byte,
            &every_byte.repeat(3)[5..],
        ] {
            assert_eq!(ours(s), serde_str(s), "{s:?}");
        }
    }

    #[test]
    fn the_word_test_finds_every_escaped_byte_in_every_position() {
        for byte in 0u8..=255 {
            for position in 0..8 {
                let mut word = [b'a'; 8];
                word[position] = byte;
                assert_eq!(
                    needs_escape(u64::from_le_bytes(word)),
                    ESCAPE[usize::from(byte)] != 0,
                    "byte {byte:#x} at {position}"
                );
            }
        }
    }

    #[test]
    fn times_are_written_as_chrono_serializes_them() {
        let base = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        for nanos in [
            0,
            1,
            999,
            1_000,
            120_000,
            1_000_000,
            7_000_000,
            123_456_789,
            999_000_000,
            999_999_999,
        ] {
            let t = base.with_nanosecond(nanos).unwrap();
            let mut out = Vec::new();
            write_time(&mut out, t);
            assert_eq!(out, serde_json::to_vec(&t).unwrap(), "{nanos}");
        }
        let leap = Utc
            .with_ymd_and_hms(2016, 12, 31, 23, 59, 59)
            .unwrap()
            .with_nanosecond(1_500_000_000)
            .unwrap();
        for t in [crate::EARLIEST_TIME, crate::LATEST_TIME, leap] {
            let mut out = Vec::new();
            write_time(&mut out, t);
            assert_eq!(out, serde_json::to_vec(&t).unwrap());
        }
    }

    fn events(body: &str) -> Vec<Event> {
        let limits = Limits::default();
        let raw = RawBody::parse(body, &limits).unwrap();
        let received = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap()
            + chrono::TimeDelta::nanoseconds(123_456_789);
        let clock = RequestClock::new(received, raw.sent_at().unwrap(), 60);
        let project = ProjectId::parse("shop-1").unwrap();
        let full = Arc::new(ClientInfo {
            ip: Some("2001:db8::1".to_owned()),
            user_agent: Some("Mozilla/5.0 \"quoted\" \\ agent".to_owned()),
            browser: Some("Chrome".to_owned()),
            browser_version: Some("124.0".to_owned()),
            os: Some("Linux".to_owned()),
            device_type: Some("desktop".to_owned()),
            country: Some("FR".to_owned()),
            region: Some("IDF".to_owned()),
            city: Some("Saint-Denis \"93\"".to_owned()),
            bot: false,
        });
        let out = parse_batch(&raw, &project, &clock, &limits, |agent| match agent {
            Some("Googlebot/2.1") => Arc::new(ClientInfo {
                device_type: Some("bot".to_owned()),
                bot: true,
                ..ClientInfo::default()
            }),
            Some(_) => Arc::default(),
            None => full.clone(),
        });
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        out.accepted
    }

    fn assert_same_as_serde(events: &[Event]) {
        let mut writer = PayloadWriter::new();
        for event in events {
            let mut out = vec![b'x'];
            writer.write(event, &mut out);
            assert_eq!(
                String::from_utf8_lossy(&out[1..]),
                String::from_utf8_lossy(&serde_json::to_vec(event).unwrap())
            );
            let back: Event = serde_json::from_slice(&out[1..]).unwrap();
            assert_eq!(
                serde_json::to_vec(&back).unwrap(),
                serde_json::to_vec(event).unwrap()
            );
        }
    }

    #[test]
    fn payloads_are_the_bytes_serde_writes() {
        let body = r##"{"sent_at":"2026-03-04T05:06:08.5Z","events":[
            {"event_type":"click","user_id":"u1"},
            {"event_id":"e\"2\\","event_type":"Page View","event_name":"Page \u00e9 View\n","anonymous_id":7,
             "session_id":"s\u00e9","timestamp":"2026-03-04T05:06:00.123456Z",
             "page":{"url":"https://shop.example/a?b=\"c\"#d","title":"T\ttab"},
             "element":{"tag":"button","id":"buy","classes":["btn","primary"],"text":"Buy \ud83d\ude00",
                        "selector":"#buy","x":12.6,"y":0},
             "properties":{"a":[1,2,{"b":"\u00e9\\"}],"c":-1.5e3},
             "user_properties":{"plan":"pro"},
             "context":{"library":{"name":"sdk","version":"1.0"},"screen":{"width":1920,"height":1080},
                        "locale":"de-DE","timezone":"Europe/Berlin","user_agent":"Other/1.0"}},
            {"event_type":"x","user_id":"u3","timestamp":1767225600123,"context":{"screen":{"width":0}}},
            {"event_type":"y","user_id":"u4","element":{"x":0,"y":1000000},"context":{"library":{"version":"2"}}},
            {"event_type":"page_view","user_id":"u5","page":{"url":"https://shop.example/?utm_source=News%22letter&utm_medium=email&gclid=abc","referrer":"https://www.google.com/"}},
            {"event_type":"page_view","user_id":"u6","page":{"referrer":"https://t.co/x"},
             "context":{"user_agent":"Googlebot/2.1","campaign":{"source":"twitter","name":"launch","term":""}}}
        ]}"##;
        let events = events(body);
        assert_eq!(events.len(), 6);
        let paid = events[4].acquisition().expect("a page URL");
        assert_eq!(paid.channel.as_str(), "paid_search");
        assert_eq!(paid.campaign.source.as_deref(), Some("News\"letter"));
        let social = events[5].acquisition().expect("a referrer");
        assert_eq!(social.channel.as_str(), "organic_social");
        assert_eq!(social.campaign.name.as_deref(), Some("launch"));
        assert_eq!(social.campaign.term, None);
        assert!(events[5].is_bot() && !events[4].is_bot());
        assert!(events[0].acquisition().is_none());
        assert_same_as_serde(&events);
        // The same sender twice, from the writer's memory the second time.
        assert_same_as_serde(&[events[0].clone(), events[2].clone(), events[0].clone()]);
    }

    #[test]
    fn more_senders_than_remembered_are_still_written() {
        let body = format!(
            "[{}]",
            (0..CLIENTS_REMEMBERED + 4)
                .map(|i| format!(r#"{{"event_type":"click","user_id":"u{i}"}}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let limits = Limits::default();
        let raw = RawBody::parse(&body, &limits).unwrap();
        let clock = RequestClock::new(Utc::now(), None, 60);
        let project = ProjectId::parse("p").unwrap();
        let mut n = 0;
        let out = parse_batch(&raw, &project, &clock, &limits, |_| {
            n += 1;
            Arc::new(ClientInfo {
                ip: Some(format!("10.0.0.{n}")),
                ..ClientInfo::default()
            })
        });
        let mut doubled = out.accepted.clone();
        doubled.extend(out.accepted);
        assert_same_as_serde(&doubled);
    }

    proptest! {
        #[test]
        fn any_string_is_escaped_as_serde_json_escapes_it(s in any::<String>()) {
            prop_assert_eq!(ours(&s), serde_str(&s));
        }

        #[test]
        fn any_ascii_with_controls_is_escaped_as_serde_json_escapes_it(
            bytes in proptest::collection::vec(0u8..128, 0..64)
        ) {
            let s = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(ours(&s), serde_str(&s));
        }

        #[test]
        fn any_page_title_and_properties_round_trip(
            title in "[ -~\\t\\n\"\\\\é😀]{0,40}",
            key in "[a-z\"\\\\]{1,8}",
        ) {
            let body = serde_json::json!({
                "event_type": "page_view",
                "user_id": "u",
                "page": {"title": title, "url": format!("https://x.example/{title}")},
                "properties": {key: title},
            })
            .to_string();
            assert_same_as_serde(&events(&body));
        }
    }
}
