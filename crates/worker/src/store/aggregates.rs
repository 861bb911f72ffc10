//! What a set of events does to the Redis aggregates, as Redis commands: one command per key
//! (and field) whatever the number of events behind it. `aggregate.lua` runs them atomically
//! behind its guards (redis.rs); the keys come from `insightflow_store::keys`, the one layout
//! the stats API reads.
//!
//! Applying the commands built from a chunk of events leaves Redis exactly as applying the
//! events one by one would: counters add up, `GT` sorted-set updates and `HSETGT` keep the
//! greatest time, first-wins fields (`HSETNX`) take the chunk's first event, the recent-path
//! list gets its values pushed in event order.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use deadpool_redis::redis::ToRedisArgs;
use insightflow_store::keys::Keys;

use super::redis::AggregateInput;
use crate::settings::AggregateSettings;

/// Commands for `aggregate.lua`: each is its name, its number of arguments, its arguments.
#[derive(Default)]
pub struct Commands {
    args: Vec<Vec<u8>>,
    count: usize,
}

impl Commands {
    fn push(&mut self, name: &str, args: &[&dyn Arg]) {
        self.args.push(name.as_bytes().to_vec());
        let at = self.args.len();
        self.args.push(Vec::new());
        for arg in args {
            arg.append(&mut self.args);
        }
        self.args[at] = (self.args.len() - at - 1).to_string().into_bytes();
        self.count += 1;
    }

    /// A command with a fixed head (`ZADD key GT`) and a list after it.
    fn push_list<'a, T: ToRedisArgs + 'a>(
        &mut self,
        name: &str,
        head: &[&dyn Arg],
        list: impl IntoIterator<Item = &'a T>,
    ) {
        self.args.push(name.as_bytes().to_vec());
        let at = self.args.len();
        self.args.push(Vec::new());
        for arg in head {
            arg.append(&mut self.args);
        }
        for item in list {
            item.write_redis_args(&mut self.args);
        }
        self.args[at] = (self.args.len() - at - 1).to_string().into_bytes();
        self.count += 1;
    }

    pub fn args(&self) -> &[Vec<u8>] {
        &self.args
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The legacy dedupe mark of an event (a rebuild replaying a row stored without origin,
    /// see `keys::Keys::applied_mark`).
    pub fn mark_seen(&mut self, prefix: &str, project: &str, event_id: &str, ttl_seconds: u64) {
        let key = Keys::new(prefix, project).applied_mark(event_id);
        self.push("SET", &[&key, &"1", &"EX", &ttl_seconds]);
    }
}

/// One argument of a command (a `ToRedisArgs` usable as a trait object).
trait Arg {
    fn append(&self, out: &mut Vec<Vec<u8>>);
}

impl<T: ToRedisArgs> Arg for T {
    fn append(&self, out: &mut Vec<Vec<u8>>) {
        self.write_redis_args(out);
    }
}

/// The settings the commands depend on, and the time they are computed at.
pub struct Window<'s> {
    pub prefix: &'s str,
    pub now_ms: i64,
    pub settings: &'s AggregateSettings,
}

/// What the events of one project do.
#[derive(Default)]
struct Project<'a> {
    total: BTreeMap<&'a str, i64>,
    minutes: BTreeMap<(i64, &'a str), i64>,
    hours: BTreeMap<(i64, &'a str), i64>,
    uniques_hour: BTreeMap<i64, BTreeSet<&'a str>>,
    uniques_day: BTreeMap<i64, BTreeSet<&'a str>>,
    online: HashMap<&'a str, i64>,
    pages_total: BTreeMap<&'a str, i64>,
    pages_hour: BTreeMap<(i64, &'a str), i64>,
    pages_day: BTreeMap<(i64, &'a str), i64>,
    /// In order of first appearance (first-wins fields depend on the order of events).
    sessions: Vec<(&'a str, Session<'a>)>,
    session_at: HashMap<&'a str, usize>,
    recent: HashMap<&'a str, Vec<String>>,
    newest_ms: i64,
    events: i64,
}

struct Session<'a> {
    user: &'a str,
    started_ms: i64,
    events: i64,
    /// Events that raised the session's greatest time within the chunk, in order: only these
    /// can move `last_seen_ms` (and `last_path`), whatever Redis holds.
    raises: Vec<(i64, &'a str)>,
}

/// Builds the commands that apply `events` (in their order) to the aggregates.
pub fn commands(events: &[AggregateInput<'_>], window: &Window<'_>, out: &mut Commands) {
    let a = window.settings;
    let now_ms = window.now_ms;
    let now_s = now_ms.div_euclid(1000);
    let online_keep_ms = secs_i64(a.online_keep_seconds) * 1000;
    let session_ttl_s = secs_i64(a.session_ttl_seconds);
    let minute_keep = secs_i64(a.minute_retention_hours) * 3600;
    let hour_keep = secs_i64(a.hour_retention_days) * 86_400;
    let day_keep = secs_i64(a.day_retention_days) * 86_400;
    let path_len = usize::try_from(a.recent_path_length).unwrap_or(usize::MAX);

    let mut projects: BTreeMap<&str, Project<'_>> = BTreeMap::new();
    for e in events {
        let p = projects.entry(e.project).or_default();
        let ts_s = e.ts_ms.div_euclid(1000);
        let (minute, hour, day) = (
            ts_s.div_euclid(60),
            ts_s.div_euclid(3600),
            ts_s.div_euclid(86_400),
        );
        // A late event whose bucket has already expired is counted in MySQL only.
        let minute_live = (minute + 1) * 60 + minute_keep > now_s;
        let hour_live = (hour + 1) * 3600 + hour_keep > now_s;
        let day_live = (day + 1) * 86_400 + day_keep > now_s;
        *p.total.entry(e.event_type).or_default() += 1;
        if minute_live {
            *p.minutes.entry((minute, e.event_type)).or_default() += 1;
        }
        if hour_live {
            *p.hours.entry((hour, e.event_type)).or_default() += 1;
            p.uniques_hour
                .entry(hour)
                .or_default()
                .insert(e.distinct_id);
        }
        if day_live {
            p.uniques_day.entry(day).or_default().insert(e.distinct_id);
        }
        if e.ts_ms > now_ms - online_keep_ms {
            let t = p.online.entry(e.distinct_id).or_insert(e.ts_ms);
            *t = (*t).max(e.ts_ms);
        }
        if !e.path.is_empty() {
            *p.pages_total.entry(e.path).or_default() += 1;
            if hour_live {
                *p.pages_hour.entry((hour, e.path)).or_default() += 1;
            }
            if day_live {
                *p.pages_day.entry((day, e.path)).or_default() += 1;
            }
        }
        if !e.session_id.is_empty() && e.ts_ms > now_ms - session_ttl_s * 1000 {
            let at = *p.session_at.entry(e.session_id).or_insert_with(|| {
                p.sessions.push((
                    e.session_id,
                    Session {
                        user: e.distinct_id,
                        started_ms: e.ts_ms,
                        events: 0,
                        raises: Vec::new(),
                    },
                ));
                p.sessions.len() - 1
            });
            let s = &mut p.sessions[at].1;
            s.events += 1;
            if s.raises.last().is_none_or(|(t, _)| e.ts_ms > *t) {
                s.raises.push((e.ts_ms, e.path));
            }
        }
        p.recent
            .entry(e.distinct_id)
            .or_default()
            .push(format!("{}|{}|{}", e.ts_ms, e.event_type, e.path));
        p.newest_ms = p.newest_ms.max(e.ts_ms);
        p.events += 1;
    }

    for (project, p) in &projects {
        let keys = Keys::new(window.prefix, project);
        let total = keys.events_total();
        for (event_type, n) in &p.total {
            out.push("HINCRBY", &[&total, event_type, n]);
        }
        bucketed(
            out,
            &p.minutes,
            |m| keys.events_minute(m),
            |m| (m + 1) * 60 + minute_keep,
        );
        bucketed(
            out,
            &p.hours,
            |h| keys.events_hour(h),
            |h| (h + 1) * 3600 + hour_keep,
        );
        for (hour, ids) in &p.uniques_hour {
            let key = keys.unique_hour(*hour);
            out.push_list("PFADD", &[&key], ids);
            out.push("EXPIREAT", &[&key, &((hour + 1) * 3600 + hour_keep)]);
        }
        for (day, ids) in &p.uniques_day {
            let key = keys.unique_day(*day);
            out.push_list("PFADD", &[&key], ids);
            out.push("EXPIREAT", &[&key, &((day + 1) * 86_400 + day_keep)]);
        }
        if !p.online.is_empty() {
            let members: Vec<(i64, &str)> = p.online.iter().map(|(id, t)| (*t, *id)).collect();
            out.push_list("ZADD", &[&keys.online(), &"GT"], &members);
        }
        let pages_total = keys.pages_total();
        for (path, n) in &p.pages_total {
            out.push("ZINCRBY", &[&pages_total, n, path]);
        }
        for ((hour, path), n) in &p.pages_hour {
            let key = keys.pages_hour(*hour);
            out.push("ZINCRBY", &[&key, n, path]);
            out.push("EXPIREAT", &[&key, &((hour + 1) * 3600 + hour_keep)]);
        }
        for ((day, path), n) in &p.pages_day {
            let key = keys.pages_day(*day);
            out.push("ZINCRBY", &[&key, n, path]);
            out.push("EXPIREAT", &[&key, &((day + 1) * 86_400 + day_keep)]);
        }
        let mut active: Vec<(i64, &str)> = Vec::with_capacity(p.sessions.len());
        for (id, s) in &p.sessions {
            let key = keys.session(id);
            out.push("HSETNX", &[&key, &"user", &s.user]);
            out.push("HSETNX", &[&key, &"started_ms", &s.started_ms]);
            out.push("HINCRBY", &[&key, &"events", &s.events]);
            for (ts, path) in &s.raises {
                if path.is_empty() {
                    out.push("HSETGT", &[&key, &"last_seen_ms", ts]);
                } else {
                    out.push("HSETGT", &[&key, &"last_seen_ms", ts, &"last_path", path]);
                }
            }
            out.push("EXPIRE", &[&key, &session_ttl_s]);
            let last = s.raises.last().map_or(s.started_ms, |(t, _)| *t);
            active.push((last, id));
        }
        if !active.is_empty() {
            out.push_list("ZADD", &[&keys.sessions_active(), &"GT"], &active);
        }
        for (distinct_id, values) in &p.recent {
            let key = keys.recent_path(distinct_id);
            // Pushed in order, the newest ends first; what LTRIM would drop is not sent.
            let kept = &values[values.len().saturating_sub(path_len)..];
            if kept.is_empty() {
                continue;
            }
            out.push_list("LPUSH", &[&key], kept);
            out.push("LTRIM", &[&key, &0, &(secs_i64(a.recent_path_length) - 1)]);
            out.push(
                "EXPIRE",
                &[&key, &(secs_i64(a.recent_path_ttl_days) * 86_400)],
            );
        }
        let meta = keys.meta();
        out.push("HSETGT", &[&meta, &"newest_event_ms", &p.newest_ms]);
        out.push("HINCRBY", &[&meta, &"applied_events", &p.events]);
        // Keep windowed sets bounded: trim what fell out of the window, expire what went idle.
        let online = keys.online();
        out.push(
            "ZREMRANGEBYSCORE",
            &[&online, &"-inf", &format!("({}", now_ms - online_keep_ms)],
        );
        out.push("PEXPIRE", &[&online, &online_keep_ms]);
        let active = keys.sessions_active();
        out.push(
            "ZREMRANGEBYSCORE",
            &[
                &active,
                &"-inf",
                &format!("({}", now_ms - session_ttl_s * 1000),
            ],
        );
        out.push("EXPIRE", &[&active, &session_ttl_s]);
        // The least viewed beyond the kept number go.
        let keep = secs_i64(a.hot_pages_total_max);
        out.push("ZREMRANGEBYRANK", &[&pages_total, &0, &(-keep - 1)]);
    }
}

/// Counters by (bucket, event type), each bucket's key expiring with its bucket.
fn bucketed(
    out: &mut Commands,
    counts: &BTreeMap<(i64, &str), i64>,
    key: impl Fn(i64) -> String,
    expiry: impl Fn(i64) -> i64,
) {
    let mut current: Option<(i64, String)> = None;
    for ((bucket, event_type), n) in counts {
        if current.as_ref().is_none_or(|(b, _)| b != bucket) {
            if let Some((b, k)) = current.take() {
                out.push("EXPIREAT", &[&k, &expiry(b)]);
            }
            current = Some((*bucket, key(*bucket)));
        }
        if let Some((_, k)) = &current {
            out.push("HINCRBY", &[k, event_type, n]);
        }
    }
    if let Some((b, k)) = current {
        out.push("EXPIREAT", &[&k, &expiry(b)]);
    }
}

/// A setting as a signed number (settings are far below i64::MAX).
fn secs_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX / 1_000_000)
}
