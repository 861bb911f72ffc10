//! What the stats API should answer, computed from the generated events alone: plain Rust
//! over the input, chrono-tz for local time. Nothing here reads MySQL or Redis.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use super::dataset::Event;

pub fn within(e: &Event, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    e.at >= from && e.at < to
}

pub fn counts_by_type(
    events: &[Event],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for e in events.iter().filter(|e| within(e, from, to)) {
        *counts.entry(e.event_type.to_owned()).or_default() += 1;
    }
    counts
}

/// Events, page views, unique users (user id, else anonymous id) and the sessions that
/// started in the range: a session starts at its earliest event, wherever the others fall.
pub fn figures(events: &[Event], from: DateTime<Utc>, to: DateTime<Utc>) -> Value {
    let inside: Vec<&Event> = events.iter().filter(|e| within(e, from, to)).collect();
    let mut session_start: HashMap<&str, DateTime<Utc>> = HashMap::new();
    for e in events {
        if let Some(s) = &e.session {
            let start = session_start.entry(s.as_str()).or_insert(e.at);
            *start = (*start).min(e.at);
        }
    }
    json!({
        "events": inside.len(),
        "page_views": inside.iter().filter(|e| e.event_type == "page_view").count(),
        "unique_users": inside.iter().map(|e| e.who).collect::<BTreeSet<_>>().len(),
        "sessions": session_start.values().filter(|t| **t >= from && **t < to).count(),
    })
}

/// A local time with its UTC offset (seconds east): the repeated hour of a fall-back is the
/// same wall-clock time with two offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Local {
    pub wall: NaiveDateTime,
    pub offset: i32,
}

impl Local {
    pub fn of(tz: Tz, t: DateTime<Utc>) -> Self {
        let local = t.with_timezone(&tz);
        Self {
            wall: local.naive_local(),
            offset: local.offset().fix().local_minus_utc(),
        }
    }

    /// A bucket label of the API (RFC 3339 with offset).
    pub fn parse(label: &str) -> Self {
        let t = DateTime::parse_from_rfc3339(label)
            .unwrap_or_else(|e| panic!("bucket label {label:?}: {e}"));
        Self {
            wall: t.naive_local(),
            offset: t.offset().local_minus_utc(),
        }
    }

    pub fn instant(&self) -> DateTime<Utc> {
        (self.wall - Duration::seconds(i64::from(self.offset))).and_utc()
    }
}

impl std::fmt::Display for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.offset < 0 { '-' } else { '+' };
        let minutes = self.offset.abs() / 60;
        write!(
            f,
            "{}{sign}{:02}:{:02}",
            self.wall.format("%Y-%m-%dT%H:%M"),
            minutes / 60,
            minutes % 60
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub start: Local,
    pub end: Local,
    pub counts: BTreeMap<String, i64>,
}

impl Bucket {
    pub fn total(&self) -> i64 {
        self.counts.values().sum()
    }

    pub fn hours(&self) -> i64 {
        (self.end.instant() - self.start.instant()).num_hours()
    }
}

fn zeros(types: &[&str]) -> BTreeMap<String, i64> {
    types.iter().map(|t| ((*t).to_owned(), 0)).collect()
}

/// The local hours of `tz` over `[from, to)` (both local hour starts), every one listed. An
/// event belongs to the hour its local wall-clock time truncates to, at its own offset. In
/// the zones tested every local hour lasts 60 minutes (their offsets move by whole hours).
pub fn hourly(
    events: &[Event],
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    types: &[&str],
) -> Vec<Bucket> {
    let mut buckets = Vec::new();
    let mut t = from;
    while t < to {
        let end = t + Duration::hours(1);
        buckets.push(Bucket {
            start: Local::of(tz, t),
            end: Local::of(tz, end),
            counts: zeros(types),
        });
        t = end;
    }
    assert_eq!(t, to, "the range is whole hours");
    for e in events
        .iter()
        .filter(|e| within(e, from, to) && types.contains(&e.event_type))
    {
        let at = Local::of(tz, e.at);
        let start = Local {
            wall: at
                .wall
                .with_minute(0)
                .and_then(|w| w.with_second(0))
                .and_then(|w| w.with_nanosecond(0))
                .expect("hour"),
            offset: at.offset,
        };
        let bucket = buckets
            .iter_mut()
            .find(|b| b.start == start)
            .unwrap_or_else(|| panic!("{} is not a listed hour ({})", start, e.at));
        *bucket.counts.entry(e.event_type.to_owned()).or_default() += 1;
    }
    buckets
}

/// The local midnight that starts `day` in `tz` (it exists, once, in the zones tested).
pub fn midnight(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    tz.from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight"))
        .single()
        .unwrap_or_else(|| panic!("{day} has one midnight in {}", tz.name()))
        .with_timezone(&Utc)
}

/// The local days of `tz` from `first` to `last` (exclusive): each from its midnight to the
/// next; an event belongs to its local date.
pub fn daily(
    events: &[Event],
    tz: Tz,
    first: NaiveDate,
    last: NaiveDate,
    types: &[&str],
) -> Vec<Bucket> {
    let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d < last).collect();
    let mut buckets: Vec<Bucket> = days
        .iter()
        .map(|d| Bucket {
            start: Local::of(tz, midnight(tz, *d)),
            end: Local::of(tz, midnight(tz, *d + Duration::days(1))),
            counts: zeros(types),
        })
        .collect();
    for e in events.iter().filter(|e| types.contains(&e.event_type)) {
        if let Ok(i) = days.binary_search(&e.at.with_timezone(&tz).date_naive()) {
            *buckets[i]
                .counts
                .entry(e.event_type.to_owned())
                .or_default() += 1;
        }
    }
    buckets
}

/// Page views by path over `[from, to)`, most viewed first, ties by path.
pub fn hot_pages(events: &[Event], from: DateTime<Utc>, to: DateTime<Utc>, limit: usize) -> Value {
    let mut views: BTreeMap<&str, i64> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.event_type == "page_view" && within(e, from, to))
    {
        *views.entry(e.page.unwrap_or_default()).or_default() += 1;
    }
    let mut top: Vec<(&str, i64)> = views.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    top.truncate(limit);
    top.into_iter()
        .map(|(path, views)| json!({"path": path, "views": views}))
        .collect()
}

/// Purchases by currency and plan: events and distinct users, most first, ties by values.
pub fn purchases_by_currency_and_plan(
    events: &[Event],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Value {
    let mut groups: BTreeMap<(&str, &str), (i64, BTreeSet<&str>)> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.event_type == "purchase" && within(e, from, to))
    {
        let key = (
            e.property("currency").unwrap_or_default(),
            e.property("plan").unwrap_or_default(),
        );
        let group = groups.entry(key).or_default();
        group.0 += 1;
        group.1.insert(e.who);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
    groups
        .into_iter()
        .map(|((currency, plan), (n, users))| {
            json!({"value": currency, "value2": plan, "events": n, "unique_users": users.len()})
        })
        .collect()
}

/// The clicks on `page`: per selector (most clicked first, ties by selector) and on a grid of
/// `cell`-pixel squares (by row, then column).
pub fn heatmap(
    events: &[Event],
    page: &str,
    cell: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> (Value, Value) {
    let mut elements: BTreeMap<&str, (i64, BTreeSet<&str>, &str)> = BTreeMap::new();
    let mut cells: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.event_type == "click" && e.page == Some(page) && within(e, from, to))
    {
        let el = e.element.expect("a click has an element");
        let entry = elements
            .entry(el.selector)
            .or_insert((0, BTreeSet::new(), el.text));
        entry.0 += 1;
        entry.1.insert(e.who);
        *cells.entry((el.y / cell, el.x / cell)).or_default() += 1;
    }
    let mut elements: Vec<_> = elements.into_iter().collect();
    elements.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
    let elements = elements
        .into_iter()
        .map(|(selector, (n, users, text))| {
            json!({"selector": selector, "text": text, "clicks": n, "unique_users": users.len()})
        })
        .collect();
    let cells = cells
        .into_iter()
        .map(|((y, x), n)| json!({"x": x, "y": y, "clicks": n}))
        .collect();
    (elements, cells)
}

/// A funnel step: an event type and perhaps a property that must have a value.
pub type Step<'a> = (&'a str, Option<(&'a str, &'a str)>);

/// How late a step may come after the entry.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    /// Within this long of the entry, the end included.
    Window(Duration),
    /// Before the end of the range.
    RangeEnd,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepFigures {
    pub users: u64,
    pub median_seconds_from_previous: Option<f64>,
    pub median_seconds_from_first: Option<f64>,
}

/// Per user: the entry is the earliest first-step event in `[from, to)`; each later step is
/// the first matching event after the previous one (`strict`: the user's very next event
/// must match), in time.
pub fn funnel(
    events: &[Event],
    steps: &[Step<'_>],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    until: Until,
    strict: bool,
) -> Vec<StepFigures> {
    let mut by_user: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in events {
        by_user.entry(e.who).or_default().push(e);
    }
    let matches = |e: &Event, k: usize| {
        let (event_type, filter) = steps[k];
        e.event_type == event_type
            && filter.is_none_or(|(name, value)| e.property(name) == Some(value))
    };
    let mut users = vec![0u64; steps.len()];
    let mut from_previous: Vec<Vec<f64>> = vec![Vec::new(); steps.len()];
    let mut from_first: Vec<Vec<f64>> = vec![Vec::new(); steps.len()];
    let seconds = |a: DateTime<Utc>, b: DateTime<Utc>| (a - b).num_milliseconds() as f64 / 1000.0;
    for mine in by_user.values_mut() {
        mine.sort_by_key(|e| e.at);
        let Some(entry) = mine
            .iter()
            .position(|e| matches(e, 0) && within(e, from, to))
        else {
            continue;
        };
        let start = mine[entry].at;
        let in_time = |e: &Event| match until {
            Until::Window(w) => e.at <= start + w,
            Until::RangeEnd => e.at < to,
        };
        users[0] += 1;
        let mut at = entry;
        for k in 1..steps.len() {
            let rest = &mine[at + 1..];
            let candidates = if strict {
                &rest[..rest.len().min(1)]
            } else {
                rest
            };
            let Some(offset) = candidates.iter().position(|e| matches(e, k) && in_time(e)) else {
                break;
            };
            let next = at + 1 + offset;
            users[k] += 1;
            from_previous[k].push(seconds(mine[next].at, mine[at].at));
            from_first[k].push(seconds(mine[next].at, start));
            at = next;
        }
    }
    (0..steps.len())
        .map(|k| StepFigures {
            users: users[k],
            median_seconds_from_previous: median(std::mem::take(&mut from_previous[k])),
            median_seconds_from_first: median(std::mem::take(&mut from_first[k])),
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 0 {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    })
}

/// A user's events in `[from, to)`, newest first.
pub fn path<'a>(
    events: &'a [Event],
    who: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<&'a Event> {
    let mut mine: Vec<&Event> = events
        .iter()
        .filter(|e| e.who == who && within(e, from, to))
        .collect();
    mine.sort_by_key(|e| std::cmp::Reverse(e.at));
    mine
}

/// Retention cohorts as `GET /retention` should give them, from the input alone: each person
/// starts at their first event (of `start_event`, when given) if that lies in
/// `[midnight(first_day), to)`; their cohort is the local `period` holding it ("day", "week"
/// from Monday, "month" from the 1st); they come back in period k when they have an event (of
/// `return_event`, when given) in the k-th local period after. Periods run to the one holding
/// `now`.
/// What a retention request asks, as the expected computation reads it.
pub struct RetentionAsk<'a> {
    pub tz: Tz,
    pub period: &'a str,
    pub first_day: NaiveDate,
    pub to: DateTime<Utc>,
    pub start_event: Option<&'a str>,
    pub return_event: Option<&'a str>,
}

pub fn retention(events: &[Event], ask: &RetentionAsk<'_>, now: DateTime<Utc>) -> Value {
    use chrono::{Datelike, Weekday};
    let RetentionAsk {
        tz,
        period,
        first_day,
        to,
        start_event,
        return_event,
    } = *ask;
    let named = |t: DateTime<Utc>| {
        let date = t.with_timezone(&tz).date_naive();
        match period {
            "day" => date,
            "week" => date.week(Weekday::Mon).first_day(),
            "month" => NaiveDate::from_ymd_opt(date.year(), date.month(), 1).expect("a 1st"),
            other => panic!("no period {other}"),
        }
    };
    let between = |a: NaiveDate, b: NaiveDate| -> i64 {
        match period {
            "day" => (b - a).num_days(),
            "week" => (b - a).num_days() / 7,
            _ => i64::from(b.year() * 12 + b.month() as i32 - a.year() * 12 - a.month() as i32),
        }
    };
    let from = midnight(tz, first_day);
    let mut first: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| start_event.is_none_or(|t| e.event_type == t))
    {
        let at = first.entry(e.who).or_insert(e.at);
        *at = (*at).min(e.at);
    }
    let mut cohorts: BTreeMap<NaiveDate, BTreeMap<&str, BTreeSet<i64>>> = BTreeMap::new();
    for (who, at) in first.iter().filter(|(_, at)| **at >= from && **at < to) {
        cohorts
            .entry(named(*at))
            .or_default()
            .insert(who, BTreeSet::new());
    }
    for members in cohorts.values_mut() {
        for e in events
            .iter()
            .filter(|e| return_event.is_none_or(|t| e.event_type == t))
        {
            if let Some(back) = members.get_mut(e.who) {
                back.insert(e.at.timestamp_millis());
            }
        }
    }
    let current = named(now);
    let list: Vec<Value> = cohorts
        .into_iter()
        .map(|(start, members)| {
            let periods = between(start, current) as usize + 1;
            let mut returned = vec![0_usize; periods];
            for times in members.values() {
                let ks: BTreeSet<i64> = times
                    .iter()
                    .map(|ms| {
                        between(
                            start,
                            named(DateTime::from_timestamp_millis(*ms).expect("ms")),
                        )
                    })
                    .filter(|k| *k >= 0)
                    .collect();
                for k in ks {
                    returned[k as usize] += 1;
                }
            }
            json!({"start": start.to_string(), "users": members.len(), "returned": returned})
        })
        .collect();
    Value::Array(list)
}

/// The session figures of `/sessions` from the input alone: the sessions that started in
/// `[from, to)`, single-event ones bouncing, durations last minus first event (the lower
/// median), their page views wherever they fall, and the top `pages` entry and exit pages
/// (first and last page view), ties by path.
pub fn session_figures(
    events: &[Event],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    pages: usize,
) -> Value {
    let mut sessions: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in events {
        if let Some(s) = &e.session {
            sessions.entry(s.as_str()).or_default().push(e);
        }
    }
    sessions.retain(|_, es| {
        es.iter()
            .map(|e| e.at)
            .min()
            .is_some_and(|t| t >= from && t < to)
    });
    let n = sessions.len();
    let (mut bounces, mut views, mut durations_ms) = (0, 0, Vec::new());
    let (mut entries, mut exits): (BTreeMap<&str, i64>, BTreeMap<&str, i64>) = Default::default();
    for es in sessions.values_mut() {
        es.sort_by_key(|e| e.at);
        let (first, last) = (es[0].at, es[es.len() - 1].at);
        durations_ms.push((last - first).num_milliseconds());
        bounces += usize::from(es.len() == 1);
        let page_views: Vec<&&Event> = es.iter().filter(|e| e.event_type == "page_view").collect();
        assert!(
            page_views.windows(2).all(|w| w[0].at < w[1].at),
            "the data set has no two page views of a session at the same instant"
        );
        views += page_views.len();
        if let (Some(f), Some(l)) = (page_views.first(), page_views.last()) {
            *entries.entry(f.page.unwrap_or("")).or_default() += 1;
            *exits.entry(l.page.unwrap_or("")).or_default() += 1;
        }
    }
    durations_ms.sort_unstable();
    let top = |counts: BTreeMap<&str, i64>| {
        let mut listed: Vec<(&str, i64)> = counts.into_iter().collect();
        listed.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        listed.truncate(pages);
        listed
            .into_iter()
            .map(|(path, sessions)| json!({"path": path, "sessions": sessions}))
            .collect::<Vec<_>>()
    };
    let rounded = |x: f64, places: i32| (x * 10_f64.powi(places)).round() / 10_f64.powi(places);
    let total_ms: i64 = durations_ms.iter().sum();
    json!({
        "sessions": n,
        "bounces": bounces,
        "bounce_rate": if n == 0 { 0.0 } else { rounded(bounces as f64 / n as f64, 4) },
        "average_duration_seconds": (n > 0).then(|| (total_ms / n as i64) as f64 / 1000.0),
        "median_duration_seconds": durations_ms.get(n.saturating_sub(1) / 2).map(|ms| *ms as f64 / 1000.0),
        "page_views": views,
        "pages_per_session": if n == 0 { 0.0 } else { rounded(views as f64 / n as f64, 2) },
        "entry_pages": top(entries),
        "exit_pages": top(exits),
    })
}
