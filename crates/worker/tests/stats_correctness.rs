//! Every range endpoint against an answer computed independently from the raw `user_events`
//! rows of a generated data set: several users and sessions over 23 days (across the US DST
//! change of 2026-11-01), posted out of order, a fifth of it late (after the rest was
//! applied), read in several time zones.

mod stats_support;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, DurationRound, FixedOffset, NaiveDateTime, Offset, Utc};
use chrono_tz::Tz;
use insightflow_worker::store::DbText;
use serde_json::{json, Value};
use stats_support::{ingest, ok, send, wait_applied};
use support::TestPipeline;

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
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const PAGES: [&str; 5] = ["/", "/pricing", "/products/1", "/products/2", "/blog"];
const ELEMENTS: [(&str, &str); 3] = [("#buy", "Buy"), (".nav a", "Home"), ("#signup", "Sign up")];

fn generate(now: DateTime<Utc>) -> Vec<Value> {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let newest = now - Duration::hours(2);
    let start = now - Duration::days(23);
    let people = [
        "u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "anon-a", "anon-b",
    ];
    let mut events = Vec::new();
    for who in people {
        for day in 0..23 {
            if g.below(10) >= 4 {
                continue;
            }
            let session = format!("s-{who}-{day}");
            let mut t = start + Duration::days(day) + Duration::seconds(g.below(86_400) as i64);
            let mut page = g.pick(&PAGES);
            let mut push = |event_type: &str, t: DateTime<Utc>, extra: Value| {
                if t > newest {
                    return;
                }
                let mut e = json!({
                    "event_id": format!("{who}-{}", events.len()),
                    "event_type": event_type,
                    "session_id": session,
                    "timestamp": t.to_rfc3339(),
                });
                if who.starts_with("anon") {
                    e["anonymous_id"] = json!(who);
                } else {
                    e["user_id"] = json!(who);
                }
                if let (Some(e), Some(extra)) = (e.as_object_mut(), extra.as_object()) {
                    e.extend(extra.clone());
                }
                events.push(e);
            };
            for _ in 0..=g.below(3) {
                page = g.pick(&PAGES);
                push("page_view", t, json!({"page": {"path": page}}));
                t += Duration::seconds(10 + g.below(600) as i64);
                if g.below(2) == 0 {
                    let (selector, text) = ELEMENTS[g.below(3) as usize];
                    push(
                        "click",
                        t,
                        json!({"page": {"path": page},
                        "element": {"selector": selector, "text": text, "x": g.below(1200), "y": g.below(800)}}),
                    );
                    t += Duration::seconds(1 + g.below(30) as i64);
                }
            }
            let sku = format!("sku-{}", g.below(3));
            if g.below(10) < 7 {
                push(
                    "product_view",
                    t,
                    json!({"page": {"path": page}, "properties": {"sku": sku}}),
                );
                t += Duration::seconds(5 + g.below(900) as i64);
                if g.below(10) < 6 {
                    push("cart_add", t, json!({"properties": {"sku": sku}}));
                    t += Duration::seconds(5 + g.below(3000) as i64);
                    if g.below(10) < 6 {
                        let currency = g.pick(&["EUR", "USD"]);
                        let plan = g.pick(&["basic", "pro"]);
                        push(
                            "purchase",
                            t,
                            json!({"properties": {"currency": currency, "plan": plan, "sku": sku}}),
                        );
                    }
                }
            }
        }
    }
    // Out of order: a deterministic shuffle.
    for i in (1..events.len()).rev() {
        let j = g.below(i as u64 + 1) as usize;
        events.swap(i, j);
    }
    events
}

#[derive(Debug, Clone)]
struct Row {
    id: u64,
    event_id: String,
    event_type: String,
    who: String,
    session: Option<String>,
    path: Option<String>,
    selector: Option<String>,
    text: Option<String>,
    x: Option<i32>,
    y: Option<i32>,
    properties: Value,
    at: DateTime<Utc>,
}

type RawRow = (
    u64,
    DbText,
    DbText,
    DbText,
    Option<DbText>,
    Option<DbText>,
    Option<DbText>,
    Option<DbText>,
    Option<i32>,
    Option<i32>,
    Option<DbText>,
    NaiveDateTime,
);

async fn raw_rows(p: &TestPipeline) -> Vec<Row> {
    let pool = p.target.pool().await;
    let rows: Vec<RawRow> = sqlx::query_as(
        "SELECT id, event_id, event_type, distinct_id, session_id, page_path, element_selector, \
         element_text, click_x, click_y, CAST(properties AS CHAR), event_time FROM user_events \
         WHERE project = 'default'",
    )
    .fetch_all(&pool)
    .await
    .expect("raw rows");
    rows.into_iter()
        .map(|r| Row {
            id: r.0,
            event_id: r.1 .0,
            event_type: r.2 .0,
            who: r.3 .0,
            session: r.4.map(String::from),
            path: r.5.map(String::from),
            selector: r.6.map(String::from),
            text: r.7.map(String::from),
            x: r.8,
            y: r.9,
            properties: r
                .10
                .and_then(|p| serde_json::from_str(p.as_str()).ok())
                .unwrap_or(Value::Null),
            at: r.11.and_utc(),
        })
        .collect()
}

fn within(r: &Row, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    r.at >= from && r.at < to
}

fn range_of(body: &Value) -> (DateTime<Utc>, DateTime<Utc>) {
    let t = |v: &Value| {
        DateTime::parse_from_rfc3339(v.as_str().expect("time"))
            .expect("rfc3339")
            .with_timezone(&Utc)
    };
    (t(&body["range"]["from"]), t(&body["range"]["to"]))
}

fn q(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Local-bucket counts keyed by (local start, offset) from a time-series answer.
fn series_counts(body: &Value, event_type: &str) -> BTreeMap<(NaiveDateTime, i32), i64> {
    body["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| {
            let start: DateTime<FixedOffset> =
                DateTime::parse_from_rfc3339(b["start"].as_str().expect("start")).expect("start");
            (
                (start.naive_local(), start.offset().local_minus_utc()),
                b["counts"][event_type].as_i64().expect("count"),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn expected_series(
    rows: &[Row],
    event_type: &str,
    tz: Tz,
    unit: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> BTreeMap<(NaiveDateTime, i32), i64> {
    let mut counts = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.event_type == event_type && within(r, from, to))
    {
        let local = r.at.with_timezone(&tz);
        let naive = local.naive_local();
        let key = match unit {
            "day" => {
                // The day bucket starts at the local day's first instant.
                let midnight = naive.date().and_hms_opt(0, 0, 0).expect("midnight");
                let start = (0..180)
                    .find_map(|m| {
                        use chrono::TimeZone;
                        tz.from_local_datetime(&(midnight + Duration::minutes(m)))
                            .earliest()
                    })
                    .expect("day start");
                (start.naive_local(), start.offset().fix().local_minus_utc())
            }
            _ => (
                naive.duration_trunc(Duration::hours(1)).expect("hour"),
                local.offset().fix().local_minus_utc(),
            ),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
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

/// Funnel figures computed directly: per user, the earliest entry in range, then each step
/// as the first later match (ordered) or the very next event (strict) within the window.
fn expected_funnel(
    rows: &[Row],
    steps: &[(&str, Option<(&str, &str)>)],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    window: Duration,
    strict: bool,
) -> Vec<(u64, Option<f64>)> {
    let mut by_user: HashMap<&str, Vec<&Row>> = HashMap::new();
    for r in rows {
        by_user.entry(r.who.as_str()).or_default().push(r);
    }
    let matches = |r: &Row, k: usize| {
        let (t, filter) = steps[k];
        r.event_type == t
            && filter.is_none_or(|(prop, value)| r.properties[prop].as_str() == Some(value))
    };
    let mut users = vec![0u64; steps.len()];
    let mut gaps: Vec<Vec<f64>> = vec![Vec::new(); steps.len()];
    for events in by_user.values_mut() {
        events.sort_by_key(|r| (r.at, r.id));
        let Some(entry) = events
            .iter()
            .position(|r| matches(r, 0) && within(r, from, to))
        else {
            continue;
        };
        let deadline = events[entry].at + window;
        users[0] += 1;
        let mut at = entry;
        for k in 1..steps.len() {
            let rest = &events[at + 1..];
            let candidates = if strict {
                &rest[..rest.len().min(1)]
            } else {
                rest
            };
            let Some(offset) = candidates
                .iter()
                .position(|r| matches(r, k) && r.at <= deadline)
            else {
                break;
            };
            let next = at + 1 + offset;
            users[k] += 1;
            gaps[k].push((events[next].at - events[at].at).num_milliseconds() as f64 / 1000.0);
            at = next;
        }
    }
    users
        .into_iter()
        .zip(gaps)
        .map(|(u, g)| (u, median(g)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_figure_agrees_with_the_raw_events() {
    let p = TestPipeline::start().await;
    let now = Utc::now();
    let events = generate(now);
    let late_from = events.len() * 4 / 5;
    ingest(&p, &events[..late_from]).await;
    wait_applied(&p, late_from as u64).await;
    // Late: older events arriving after newer ones were applied.
    ingest(&p, &events[late_from..]).await;
    let fresh: Vec<Value> = ["u0", "u1", "u2"]
        .iter()
        .map(|u| json!({"event_id": format!("fresh-{u}"), "event_type": "page_view", "user_id": u, "page": {"path": "/live"}}))
        .collect();
    ingest(&p, &fresh).await;
    let total = (events.len() + fresh.len()) as u64;
    wait_applied(&p, total).await;
    let rows = raw_rows(&p).await;
    assert_eq!(rows.len() as u64, total);

    let to_all = now.duration_trunc(Duration::hours(1)).expect("hour") + Duration::hours(2);
    let from_all = to_all - Duration::days(25);
    let all = format!("from={}&to={}", q(from_all), q(to_all));

    // Counts by type: MySQL rollups over a range, and Redis all-time counters (late included).
    let mut by_type: BTreeMap<String, i64> = BTreeMap::new();
    for r in &rows {
        *by_type.entry(r.event_type.clone()).or_default() += 1;
    }
    let counts = ok(&p, &format!("/api/v1/counts?{all}")).await;
    assert_eq!(counts["counts"], json!(by_type), "{counts}");
    let live = ok(&p, "/api/v1/stats/events").await;
    assert_eq!(
        live["counts"],
        json!(by_type),
        "Redis agrees with MySQL: {live}"
    );

    // Summary and the previous period.
    let to10 = to_all;
    let from10 = to_all - Duration::days(10);
    let figures = |from: DateTime<Utc>, to: DateTime<Utc>| {
        let inside: Vec<&Row> = rows.iter().filter(|r| within(r, from, to)).collect();
        let mut session_start: HashMap<&str, DateTime<Utc>> = HashMap::new();
        for r in &rows {
            if let Some(s) = &r.session {
                let e = session_start.entry(s.as_str()).or_insert(r.at);
                *e = (*e).min(r.at);
            }
        }
        json!({
            "events": inside.len(),
            "page_views": inside.iter().filter(|r| r.event_type == "page_view").count(),
            "unique_users": inside.iter().map(|r| r.who.as_str()).collect::<BTreeSet<_>>().len(),
            "sessions": session_start.values().filter(|t| **t >= from && **t < to).count(),
        })
    };
    let summary = ok(
        &p,
        &format!(
            "/api/v1/summary?from={}&to={}&compare=previous",
            q(from10),
            q(to10)
        ),
    )
    .await;
    assert_eq!(summary["figures"], figures(from10, to10), "{summary}");
    assert_eq!(
        summary["previous"]["figures"],
        figures(from10 - Duration::days(10), from10),
        "{summary}"
    );
    let dashboard = ok(
        &p,
        &format!("/api/v1/dashboard?from={}&to={}", q(from10), q(to10)),
    )
    .await;
    assert_eq!(
        dashboard["summary"]["figures"], summary["figures"],
        "{dashboard}"
    );

    // Time series: days in New York (the 25-hour 2026-11-01 included), hours in New York
    // around the change, hours in Kolkata (+05:30).
    let ny: Tz = "America/New_York".parse().expect("zone");
    let kolkata: Tz = "Asia/Kolkata".parse().expect("zone");
    for (tz, unit, from, to) in [
        (ny, "day", from_all, to_all),
        (ny, "hour", "2026-10-31T04:00:00Z", "2026-11-03T05:00:00Z").into_times(),
        (kolkata, "hour", to_all - Duration::days(3), to_all),
    ] {
        let body = ok(
            &p,
            &format!(
                "/api/v1/timeseries?bucket={unit}&tz={}&from={}&to={}&types=page_view,purchase",
                tz.name(),
                q(from),
                q(to)
            ),
        )
        .await;
        let (covered_from, covered_to) = range_of(&body);
        for event_type in ["page_view", "purchase"] {
            assert_eq!(
                series_counts(&body, event_type),
                expected_series(&rows, event_type, tz, unit, covered_from, covered_to),
                "{event_type} per {unit} in {}",
                tz.name()
            );
        }
        let buckets = body["buckets"].as_array().expect("buckets");
        let span = (covered_to - covered_from).num_hours();
        let expected_buckets = if unit == "day" {
            None
        } else {
            Some(span as usize)
        };
        if let Some(n) = expected_buckets {
            assert_eq!(buckets.len(), n, "every hour is a bucket, zeros included");
        }
        if tz == ny && unit == "hour" {
            let nov1 = buckets
                .iter()
                .filter(|b| {
                    b["start"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("2026-11-01"))
                })
                .count();
            assert_eq!(nov1, 25, "2026-11-01 has 25 hours in New York");
        }
    }

    // Hot pages: the live Redis ranking and the MySQL rollups give the same top 3.
    let from5 = to_all - Duration::days(5);
    let mut views: BTreeMap<&str, i64> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.event_type == "page_view" && within(r, from5, to_all))
    {
        *views
            .entry(r.path.as_deref().unwrap_or_default())
            .or_default() += 1;
    }
    let mut top: Vec<(&str, i64)> = views.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    top.truncate(3);
    let top: Vec<Value> = top
        .into_iter()
        .map(|(path, views)| json!({"path": path, "views": views}))
        .collect();
    for source in ["auto", "redis", "mysql"] {
        let hot = ok(
            &p,
            &format!(
                "/api/v1/pages/hot?from={}&to={}&limit=3&source={source}",
                q(from5),
                q(to_all)
            ),
        )
        .await;
        assert_eq!(hot["pages"], json!(top), "{source}: {hot}");
    }

    // Breakdown of purchases by currency and plan.
    let mut groups: BTreeMap<(String, String), (i64, BTreeSet<&str>)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.event_type == "purchase") {
        let key = (
            r.properties["currency"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            r.properties["plan"].as_str().unwrap_or_default().to_owned(),
        );
        let g = groups.entry(key).or_default();
        g.0 += 1;
        g.1.insert(r.who.as_str());
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
    let expected: Vec<Value> = groups
        .iter()
        .map(|((c, plan), (n, users))| json!({"value": c, "value2": plan, "events": n, "unique_users": users.len()}))
        .collect();
    let breakdown = ok(
        &p,
        &format!("/api/v1/breakdown?event_type=purchase&by=currency&by2=plan&limit=100&{all}"),
    )
    .await;
    assert_eq!(breakdown["values"], json!(expected), "{breakdown}");

    // Heatmap of /pricing.
    let clicks: Vec<&Row> = rows
        .iter()
        .filter(|r| r.event_type == "click" && r.path.as_deref() == Some("/pricing"))
        .collect();
    let mut elements: BTreeMap<&str, (i64, BTreeSet<&str>, &str)> = BTreeMap::new();
    let mut cells: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for r in &clicks {
        let e = elements
            .entry(r.selector.as_deref().unwrap_or_default())
            .or_insert((0, BTreeSet::new(), r.text.as_deref().unwrap_or_default()));
        e.0 += 1;
        e.1.insert(r.who.as_str());
        if let (Some(x), Some(y)) = (r.x, r.y) {
            *cells
                .entry((i64::from(y) / 100, i64::from(x) / 100))
                .or_default() += 1;
        }
    }
    let mut elements: Vec<_> = elements.into_iter().collect();
    elements.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
    let elements: Vec<Value> = elements
        .into_iter()
        .map(|(selector, (n, users, text))| json!({"selector": selector, "text": text, "clicks": n, "unique_users": users.len()}))
        .collect();
    let cells: Vec<Value> = cells
        .into_iter()
        .map(|((y, x), n)| json!({"x": x, "y": y, "clicks": n}))
        .collect();
    let heatmap = ok(
        &p,
        &format!("/api/v1/heatmap?page=/pricing&cell=100&limit=10&{all}"),
    )
    .await;
    assert_eq!(heatmap["elements"], json!(elements), "{heatmap}");
    assert_eq!(heatmap["grid"]["cells"], json!(cells), "{heatmap}");

    // Conversion product_view -> cart_add over the last 10 days (B before `to`).
    let conv = expected_funnel(
        &rows,
        &[("product_view", None), ("cart_add", None)],
        from10,
        to10,
        Duration::days(400),
        false,
    );
    let conversion = ok(
        &p,
        &format!(
            "/api/v1/conversion?start_event=product_view&end_event=cart_add&from={}&to={}",
            q(from10),
            q(to10)
        ),
    )
    .await;
    assert_eq!(
        (
            conversion["start_users"].as_u64(),
            conversion["converted_users"].as_u64()
        ),
        (Some(conv[0].0), Some(conv[1].0)),
        "{conversion}"
    );

    // Funnels, ordered and strict, with a property filter on the last step.
    let definition = json!({"name": "generated", "window_seconds": 3600, "steps": [
        {"event_type": "page_view"}, {"event_type": "product_view"}, {"event_type": "cart_add"},
        {"event_type": "purchase", "property": "currency", "value": "EUR"}]});
    let (status, created) = send(
        &p,
        reqwest::Method::POST,
        "/api/v1/funnels",
        Some(&definition),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let from14 = to_all - Duration::days(14);
    let steps = [
        ("page_view", None),
        ("product_view", None),
        ("cart_add", None),
        ("purchase", Some(("currency", "EUR"))),
    ];
    for (mode, strict) in [("ordered", false), ("strict", true)] {
        let expected = expected_funnel(
            &rows,
            &steps,
            from14,
            to_all,
            Duration::seconds(3600),
            strict,
        );
        let body = ok(
            &p,
            &format!(
                "/api/v1/funnels/generated/analysis?mode={mode}&from={}&to={}",
                q(from14),
                q(to_all)
            ),
        )
        .await;
        let got: Vec<(u64, Option<f64>)> = body["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| {
                (
                    s["users"].as_u64().expect("users"),
                    s["median_seconds_from_previous"].as_f64(),
                )
            })
            .collect();
        assert_eq!(got, expected, "{mode}: {body}");
        assert!(
            expected[0].0 > expected[1].0,
            "the data set exercises drop-off"
        );
    }

    // A user's profile and full path through the cursor.
    let mine: Vec<&Row> = {
        let mut v: Vec<&Row> = rows.iter().filter(|r| r.who == "u3").collect();
        v.sort_by_key(|r| std::cmp::Reverse((r.at, r.id)));
        v
    };
    let profile = ok(&p, "/api/v1/users/u3").await;
    assert_eq!(
        profile["total_events"].as_u64(),
        Some(mine.len() as u64),
        "{profile}"
    );
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = ok(
            &p,
            &format!("/api/v1/users/u3/events?limit=7&cursor={cursor}"),
        )
        .await;
        seen.extend(
            page["events"]
                .as_array()
                .expect("events")
                .iter()
                .filter_map(|e| e["event_id"].as_str().map(str::to_owned)),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let expected_ids: Vec<String> = mine.iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(seen, expected_ids);

    // Online now: exactly the users of the fresh events (the generated ones are older).
    let online = ok(&p, "/api/v1/online?seconds=1800").await;
    assert_eq!(online["online_users"], 3, "{online}");
    p.stop().await;
}

trait IntoTimes {
    fn into_times(self) -> (Tz, &'static str, DateTime<Utc>, DateTime<Utc>);
}

impl IntoTimes for (Tz, &'static str, &'static str, &'static str) {
    fn into_times(self) -> (Tz, &'static str, DateTime<Utc>, DateTime<Utc>) {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
        (self.0, self.1, t(self.2), t(self.3))
    }
}
