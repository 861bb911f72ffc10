//! The generated input: deterministic (a seeded generator, fixed dates) events around four
//! daylight-saving changes, plus a few recent ones for the figures Redis keeps only for recent
//! times, and the facts about those changes written out by hand.

use std::collections::HashSet;

use chrono::{DateTime, Duration, DurationRound, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

pub const NEW_YORK: Tz = chrono_tz::America::New_York;
pub const PARIS: Tz = chrono_tz::Europe::Paris;
pub const KOLKATA: Tz = chrono_tz::Asia::Kolkata;

pub fn utc(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("a time written in the test")
        .with_timezone(&Utc)
}

pub fn date(ymd: &str) -> NaiveDate {
    NaiveDate::parse_from_str(ymd, "%Y-%m-%d").expect("a date written in the test")
}

/// A daylight-saving change and the local day it happens on. The instants are written out
/// from the rules (US: 02:00 local on the second Sunday of March and the first of November;
/// EU: 01:00 UTC on the last Sundays of March and October), not read from chrono-tz, which
/// the expected answers use for local labels: the two must agree.
#[derive(Clone, Copy, Debug)]
pub struct Transition {
    pub name: &'static str,
    pub zone: Tz,
    pub date: NaiveDate,
    /// The local midnights that start and end `date`.
    pub day_start: DateTime<Utc>,
    pub day_end: DateTime<Utc>,
    /// When the offset changes, and the offsets (seconds east of UTC) before and after.
    pub change: DateTime<Utc>,
    pub offset_before: i32,
    pub offset_after: i32,
    /// The day's length in hours: 23 when the clocks spring forward, 25 when they fall back.
    pub hours: i64,
}

impl Transition {
    pub fn falls_back(&self) -> bool {
        self.offset_after < self.offset_before
    }

    /// The three local days around the change, as local dates `[first, last)`, and as
    /// instants (the days before and after last 24 hours).
    pub fn dates(&self) -> (NaiveDate, NaiveDate) {
        (self.date - Duration::days(1), self.date + Duration::days(2))
    }

    pub fn window(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        (
            self.day_start - Duration::days(1),
            self.day_end + Duration::days(1),
        )
    }
}

pub fn transitions() -> [Transition; 4] {
    const HOUR: i32 = 3600;
    [
        Transition {
            name: "New York springs forward (02:00 EST -> 03:00 EDT)",
            zone: NEW_YORK,
            date: date("2026-03-08"),
            day_start: utc("2026-03-08T05:00:00Z"),
            day_end: utc("2026-03-09T04:00:00Z"),
            change: utc("2026-03-08T07:00:00Z"),
            offset_before: -5 * HOUR,
            offset_after: -4 * HOUR,
            hours: 23,
        },
        Transition {
            name: "Paris springs forward (02:00 CET -> 03:00 CEST)",
            zone: PARIS,
            date: date("2026-03-29"),
            day_start: utc("2026-03-28T23:00:00Z"),
            day_end: utc("2026-03-29T22:00:00Z"),
            change: utc("2026-03-29T01:00:00Z"),
            offset_before: HOUR,
            offset_after: 2 * HOUR,
            hours: 23,
        },
        Transition {
            name: "Paris falls back (03:00 CEST -> 02:00 CET)",
            zone: PARIS,
            date: date("2026-10-25"),
            day_start: utc("2026-10-24T22:00:00Z"),
            day_end: utc("2026-10-25T23:00:00Z"),
            change: utc("2026-10-25T01:00:00Z"),
            offset_before: 2 * HOUR,
            offset_after: HOUR,
            hours: 25,
        },
        Transition {
            name: "New York falls back (02:00 EDT -> 01:00 EST)",
            zone: NEW_YORK,
            date: date("2026-11-01"),
            day_start: utc("2026-11-01T04:00:00Z"),
            day_end: utc("2026-11-02T05:00:00Z"),
            change: utc("2026-11-01T06:00:00Z"),
            offset_before: -4 * HOUR,
            offset_after: -5 * HOUR,
            hours: 25,
        },
    ]
}

/// The whole fixed-date part of the data set lies in `[SPAN_FROM, SPAN_TO)` (UTC dates).
pub const SPAN_FROM: &str = "2026-03-01";
pub const SPAN_TO: &str = "2026-11-10";

/// `[SPAN_FROM, SPAN_TO)` as instants.
pub fn span() -> (DateTime<Utc>, DateTime<Utc>) {
    let midnight = |d: &str| date(d).and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    (midnight(SPAN_FROM), midnight(SPAN_TO))
}

pub const PEOPLE: [&str; 10] = [
    "u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "anon-a", "anon-b",
];
/// Sends events at the exact edges of days, hours and changes.
pub const EDGE: &str = "edge";
const PAGES: [&str; 5] = ["/", "/pricing", "/products/1", "/products/2", "/blog"];
const ELEMENTS: [(&str, &str); 3] = [("#buy", "Buy"), (".nav a", "Home"), ("#signup", "Sign up")];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element {
    pub selector: &'static str,
    pub text: &'static str,
    pub x: i64,
    pub y: i64,
}

/// How an event's time is written on the wire: all three must name the same instant.
#[derive(Clone, Copy, Debug)]
pub enum Spelling {
    Utc,
    /// RFC 3339 with the local offset of this zone, as a client there would send it.
    Local(Tz),
    EpochMillis,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub id: String,
    pub event_type: &'static str,
    pub who: &'static str,
    pub session: Option<String>,
    pub at: DateTime<Utc>,
    pub page: Option<&'static str>,
    pub element: Option<Element>,
    pub properties: Value,
    pub spelling: Spelling,
}

impl Event {
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties[name].as_str()
    }

    /// The event as a client posts it to the gateway.
    pub fn to_json(&self) -> Value {
        let timestamp = match self.spelling {
            Spelling::Utc => json!(self.at.to_rfc3339_opts(SecondsFormat::Millis, true)),
            Spelling::Local(zone) => json!(self
                .at
                .with_timezone(&zone)
                .to_rfc3339_opts(SecondsFormat::Millis, false)),
            Spelling::EpochMillis => json!(self.at.timestamp_millis()),
        };
        let mut e = json!({
            "event_id": self.id,
            "event_type": self.event_type,
            "timestamp": timestamp,
        });
        let id_field = if self.who.starts_with("anon") {
            "anonymous_id"
        } else {
            "user_id"
        };
        e[id_field] = json!(self.who);
        if let Some(session) = &self.session {
            e["session_id"] = json!(session);
        }
        if let Some(path) = self.page {
            e["page"] = json!({ "path": path });
        }
        if let Some(el) = self.element {
            e["element"] = json!({"selector": el.selector, "text": el.text, "x": el.x, "y": el.y});
        }
        if !self.properties.is_null() {
            e["properties"] = self.properties.clone();
        }
        e
    }
}

/// A small deterministic generator (xorshift), so a failing run can be replayed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn millis(&mut self, within: Duration) -> Duration {
        Duration::milliseconds(self.below(within.num_milliseconds() as u64) as i64)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

struct Builder {
    rng: Gen,
    events: Vec<Event>,
    /// One event per user and millisecond, so "ordered by time" needs no tie-break by arrival
    /// (which only MySQL knows).
    taken: HashSet<(&'static str, i64)>,
    sessions: usize,
}

impl Builder {
    fn session(&mut self, who: &str) -> String {
        self.sessions += 1;
        format!("s-{who}-{}", self.sessions)
    }

    #[allow(clippy::too_many_arguments)] // one event's fields
    fn push(
        &mut self,
        who: &'static str,
        session: &str,
        event_type: &'static str,
        mut at: DateTime<Utc>,
        page: Option<&'static str>,
        element: Option<Element>,
        properties: Value,
        zone: Tz,
    ) -> DateTime<Utc> {
        while !self.taken.insert((who, at.timestamp_millis())) {
            at += Duration::milliseconds(1);
        }
        let spelling = match self.rng.below(3) {
            0 => Spelling::Utc,
            1 => Spelling::Local(zone),
            _ => Spelling::EpochMillis,
        };
        self.events.push(Event {
            id: format!("{who}-{}", self.events.len()),
            event_type,
            who,
            session: Some(session.to_owned()),
            at,
            page,
            element,
            properties,
            spelling,
        });
        at
    }

    /// One visit: one to three page views, each perhaps followed by a click, then perhaps a
    /// product view, a cart add and a purchase. Returns the time after its last event.
    fn visit(
        &mut self,
        who: &'static str,
        session: &str,
        mut t: DateTime<Utc>,
        zone: Tz,
    ) -> DateTime<Utc> {
        let mut page = PAGES[0];
        for _ in 0..=self.rng.below(3) {
            page = self.rng.pick(&PAGES);
            t = self.push(
                who,
                session,
                "page_view",
                t,
                Some(page),
                None,
                Value::Null,
                zone,
            );
            t += Duration::seconds(10 + self.rng.below(600) as i64);
            if self.rng.below(2) == 0 {
                let (selector, text) = ELEMENTS[self.rng.below(3) as usize];
                let element = Element {
                    selector,
                    text,
                    x: self.rng.below(1200) as i64,
                    y: self.rng.below(800) as i64,
                };
                t = self.push(
                    who,
                    session,
                    "click",
                    t,
                    Some(page),
                    Some(element),
                    Value::Null,
                    zone,
                );
                t += Duration::seconds(1 + self.rng.below(30) as i64);
            }
        }
        let sku = format!("sku-{}", self.rng.below(3));
        if self.rng.below(10) < 7 {
            t = self.push(
                who,
                session,
                "product_view",
                t,
                Some(page),
                None,
                json!({ "sku": sku }),
                zone,
            );
            t += Duration::seconds(5 + self.rng.below(900) as i64);
            if self.rng.below(10) < 6 {
                t = self.push(
                    who,
                    session,
                    "cart_add",
                    t,
                    None,
                    None,
                    json!({ "sku": sku }),
                    zone,
                );
                t += Duration::seconds(5 + self.rng.below(3000) as i64);
                if self.rng.below(10) < 6 {
                    let currency = self.rng.pick(&["EUR", "USD"]);
                    let plan = self.rng.pick(&["basic", "pro"]);
                    t = self.push(
                        who,
                        session,
                        "purchase",
                        t,
                        None,
                        None,
                        json!({"currency": currency, "plan": plan, "sku": sku}),
                        zone,
                    );
                }
            }
        }
        t + Duration::milliseconds(1)
    }
}

/// The data set, in the order it is sent (shuffled: arrival order must not matter), and
/// the index from which the rest is sent late, after the first part was applied.
pub struct DataSet {
    pub events: Vec<Event>,
    pub late_from: usize,
}

/// Fixed-date events around every change in `transitions()`, and recent ones between 50 and
/// 3 hours before `now`.
pub fn generate(now: DateTime<Utc>) -> DataSet {
    let mut b = Builder {
        rng: Gen(0x9e37_79b9_7f4a_7c15),
        events: Vec::new(),
        taken: HashSet::new(),
        sessions: 0,
    };
    for t in transitions() {
        // Exactly on and one millisecond around each edge, in one session of one user.
        let session = b.session(EDGE);
        let ms = Duration::milliseconds(1);
        let hour = Duration::hours(1);
        for at in [
            t.day_start - ms,
            t.day_start,
            t.change - hour,
            t.change - ms,
            t.change,
            t.change + ms,
            t.change + hour - ms,
            t.change + hour,
            t.day_end - ms,
            t.day_end,
        ] {
            b.push(
                EDGE,
                &session,
                "page_view",
                at,
                Some("/"),
                None,
                Value::Null,
                t.zone,
            );
        }
        // Busy around the change: visits from 100 minutes before to 100 after.
        for who in &PEOPLE[..6] {
            let session = b.session(who);
            let mut at = t.change - Duration::minutes(100) + b.rng.millis(Duration::minutes(40));
            while at < t.change + Duration::minutes(100) {
                at = b.visit(who, &session, at, t.zone);
                at += Duration::seconds(60) + b.rng.millis(Duration::minutes(9));
            }
        }
        // Ordinary days: the day before, the day of the change, the day after.
        let (from, _) = t.window();
        let days = [
            (from, t.day_start),
            (t.day_start, t.day_end),
            (t.day_end, t.day_end + Duration::days(1)),
        ];
        for who in PEOPLE {
            for (start, end) in days {
                if b.rng.below(10) < 6 {
                    let session = b.session(who);
                    let at = start + b.rng.millis(end - start);
                    b.visit(who, &session, at, t.zone);
                }
            }
        }
    }
    // Recent visits, for the hourly rankings Redis keeps for a week.
    let hour = now.duration_trunc(Duration::hours(1)).expect("hour");
    for who in PEOPLE {
        for _ in 0..2 {
            if b.rng.below(10) < 7 {
                let session = b.session(who);
                let at = hour - Duration::hours(50) + b.rng.millis(Duration::hours(45));
                b.visit(who, &session, at, NEW_YORK);
            }
        }
    }
    let mut events = b.events;
    for i in (1..events.len()).rev() {
        let j = b.rng.below(i as u64 + 1) as usize;
        events.swap(i, j);
    }
    let late_from = events.len() * 4 / 5;
    DataSet { events, late_from }
}

/// Three page views at `now` (no session): the users online now.
pub fn fresh(now: DateTime<Utc>) -> Vec<Event> {
    let now = now
        .duration_trunc(Duration::milliseconds(1))
        .expect("millisecond");
    ["u0", "u1", "u2"]
        .into_iter()
        .map(|who| Event {
            id: format!("fresh-{who}"),
            event_type: "page_view",
            who,
            session: None,
            at: now,
            page: Some("/live"),
            element: None,
            properties: Value::Null,
            spelling: Spelling::Utc,
        })
        .collect()
}
