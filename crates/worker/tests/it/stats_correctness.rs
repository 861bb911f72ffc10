//! Every range endpoint of the stats API against answers computed from the generated input
//! alone (`correctness_support::expected`: plain Rust and chrono-tz, no store read). The input
//! is seeded and sits on fixed dates around four daylight-saving changes of 2026 (New York and
//! Paris, spring and autumn): the 23- and 25-hour days, the missing and the repeated hour,
//! read in the changing zones and in Kolkata (+05:30). It goes through the real gateway,
//! Kafka and worker, out of order, a fifth of it late (after the rest was applied); a few
//! recent events cover what Redis keeps for recent times only. Every expected figure is
//! checked to be non-zero before it is compared, so no check passes on an empty window.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, DurationRound, NaiveDateTime, Utc};
use chrono_tz::Tz;
use serde_json::json;

use crate::correctness_support::answers::{
    self, buckets_of, nonzero, q, range_of, same_seconds, same_series,
};
use crate::correctness_support::dataset::{
    self, date, utc, Event, Transition, KOLKATA, NEW_YORK, PARIS, SPAN_FROM, SPAN_TO,
};
use crate::correctness_support::expected::{self, midnight, Bucket, Local, Until};
use crate::stats_support::{ingest, ok, query_value, send, wait_applied};
use crate::support::{worker_settings, RedisKind, TestPipeline, WorkerTarget};

const TYPES: [&str; 5] = ["page_view", "click", "product_view", "cart_add", "purchase"];

/// A pipeline whose worker keeps raw events forever (`retention.raw_event_days = 0`, the
/// documented setting): the data set is older than the default 90 days, and the retention
/// job, which runs at start-up, would delete what it deletes while the events arrive.
async fn start(redis: RedisKind) -> TestPipeline {
    let target = WorkerTarget::create_on(redis).await;
    let mut settings = worker_settings(&target);
    settings.retention.raw_event_days = 0;
    TestPipeline::start_with(target, settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_figure_agrees_with_the_generated_input() {
    every_figure_agrees(RedisKind::Single).await;
}

/// The same figures with the worker on the local Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_figure_agrees_with_the_generated_input_on_a_redis_cluster() {
    every_figure_agrees(RedisKind::Cluster).await;
}

async fn every_figure_agrees(redis: RedisKind) {
    let p = start(redis).await;
    let now = Utc::now();
    let data = dataset::generate(now);
    let wire = |events: &[Event]| events.iter().map(Event::to_json).collect::<Vec<_>>();
    ingest(&p, &wire(&data.events[..data.late_from])).await;
    wait_applied(&p, data.late_from as u64).await;
    ingest(&p, &wire(&data.events[data.late_from..])).await;
    let fresh = dataset::fresh(now);
    ingest(&p, &wire(&fresh)).await;
    let mut events = data.events;
    events.extend(fresh);
    wait_applied(&p, events.len() as u64).await;

    stored_times_are_the_sent_ones(&p, &events).await;
    for t in dataset::transitions() {
        the_change_in_its_own_zone(&p, &events, &t).await;
    }
    days_from_march_to_november(&p, &events).await;
    a_half_hour_zone(&p, &events).await;
    local_times_that_are_missing_or_repeated(&p, &events).await;
    counts_and_summaries(&p, &events).await;
    dashboard_of_the_paris_fall_back(&p, &events).await;
    recent_hot_pages(&p, &events, now).await;
    breakdown_and_heatmap(&p, &events).await;
    conversion_and_funnels(&p, &events).await;
    retention_cohorts(&p, &events, now).await;
    sessions_and_filters(&p, &events).await;
    profile_and_path(&p, &events).await;
    let online = ok(&p, "/api/v1/online?seconds=1800").await;
    assert_eq!(
        online["online_users"], 3,
        "the fresh events' users: {online}"
    );
    p.stop().await;
}

async fn series(
    p: &TestPipeline,
    unit: &str,
    tz: Tz,
    from: &str,
    to: &str,
) -> (Vec<Bucket>, (DateTime<Utc>, DateTime<Utc>)) {
    let body = ok(
        p,
        &format!(
            "/api/v1/timeseries?bucket={unit}&tz={}&from={from}&to={to}&types={}",
            tz.name(),
            TYPES.join(",")
        ),
    )
    .await;
    (buckets_of(&body), range_of(&body))
}

/// The pipeline kept every event, at the instant it was sent, however its time was spelled
/// (UTC, local offset, epoch milliseconds).
async fn stored_times_are_the_sent_ones(p: &TestPipeline, events: &[Event]) {
    let rows: Vec<(String, NaiveDateTime)> = sqlx::query_as(
        "SELECT CAST(event_id AS CHAR), event_time FROM user_events WHERE project = 'default'",
    )
    .fetch_all(&p.target.pool().await)
    .await
    .expect("stored events");
    let stored: HashMap<String, NaiveDateTime> = rows.into_iter().collect();
    assert_eq!(stored.len(), events.len(), "every event stored once");
    for e in events {
        assert_eq!(
            stored.get(&e.id).map(|t| t.and_utc()),
            Some(e.at),
            "{} sent as {}",
            e.id,
            e.to_json()["timestamp"]
        );
    }
}

/// Hours and days of the three local days around a change, read in its zone; the day's
/// summary, counts and hot pages.
async fn the_change_in_its_own_zone(p: &TestPipeline, events: &[Event], t: &Transition) {
    let zone = t.zone;
    // chrono-tz, which labels the expected buckets, agrees with the facts written by hand.
    assert_eq!(midnight(zone, t.date), t.day_start, "{}", t.name);
    assert_eq!(midnight(zone, t.date + Duration::days(1)), t.day_end);
    assert_eq!((t.day_end - t.day_start).num_hours(), t.hours, "{}", t.name);
    let ms = Duration::milliseconds(1);
    assert_eq!(Local::of(zone, t.change - ms).offset, t.offset_before);
    assert_eq!(Local::of(zone, t.change).offset, t.offset_after);

    let (first, last) = t.dates();
    let (from, to) = t.window();
    let (got, covered) = series(p, "hour", zone, &first.to_string(), &last.to_string()).await;
    assert_eq!(
        covered,
        (from, to),
        "{}: local dates read in the zone",
        t.name
    );
    let expected = expected::hourly(events, zone, from, to, &TYPES);
    for (source, buckets) in [("expected", &expected), ("API", &got)] {
        an_hourly_change(t, buckets, source);
    }
    same_series(&format!("hours, {}", t.name), &got, &expected);

    let (got, covered) = series(p, "day", zone, &first.to_string(), &last.to_string()).await;
    assert_eq!(covered, (from, to), "{}", t.name);
    let expected = expected::daily(events, zone, first, last, &TYPES);
    for (source, buckets) in [("expected", &expected), ("API", &got)] {
        let hours: Vec<i64> = buckets.iter().map(Bucket::hours).collect();
        assert_eq!(hours, [24, t.hours, 24], "{source}: days, {}", t.name);
        assert!(
            buckets.iter().all(|b| b.total() > 0),
            "{source}: {buckets:?}"
        );
    }
    same_series(&format!("days, {}", t.name), &got, &expected);

    // The local day: summary (and the previous 23 or 25 hours), counts, hot pages.
    let day = format!(
        "from={}&to={}&tz={}",
        t.date,
        t.date + Duration::days(1),
        zone.name()
    );
    let summary = ok(p, &format!("/api/v1/summary?{day}&compare=previous")).await;
    assert_eq!(range_of(&summary), (t.day_start, t.day_end), "{}", t.name);
    let previous = t.day_start - Duration::hours(t.hours);
    let figures = expected::figures(events, t.day_start, t.day_end);
    let previous_figures = expected::figures(events, previous, t.day_start);
    nonzero(&figures, t.name);
    nonzero(&previous_figures, t.name);
    assert_eq!(summary["figures"], figures, "{}: {summary}", t.name);
    assert_eq!(
        range_of(&summary["previous"]),
        (previous, t.day_start),
        "{summary}"
    );
    assert_eq!(
        summary["previous"]["figures"], previous_figures,
        "{summary}"
    );

    let counts = ok(p, &format!("/api/v1/counts?{day}")).await;
    let by_type = expected::counts_by_type(events, t.day_start, t.day_end);
    assert_eq!(by_type.len(), TYPES.len(), "every type on {}", t.date);
    assert_eq!(counts["counts"], json!(by_type), "{}: {counts}", t.name);

    let top = expected::hot_pages(events, t.day_start, t.day_end, 5);
    assert!(
        top.as_array().is_some_and(|t| !t.is_empty()),
        "pages viewed"
    );
    for source in ["auto", "mysql"] {
        let hot = ok(
            p,
            &format!("/api/v1/pages/hot?{day}&limit=5&source={source}"),
        )
        .await;
        assert_eq!(hot["source"], "mysql", "an old range is read from MySQL");
        assert_eq!(hot["pages"], top, "{}, {source}: {hot}", t.name);
    }
    // Redis keeps hourly rankings for a week: asked for an old range, it must not answer
    // with what it does not hold.
    let (status, body) = p
        .get(&format!("/api/v1/pages/hot?{day}&limit=5&source=redis"))
        .await;
    assert!(
        status == 400 || status == 200 && body["pages"] == top,
        "{}: {status} {body}",
        t.name
    );
}

/// The documented shape of a change in hourly buckets: the changing day has 23 or 25;
/// falling back, the repeated hour is two buckets with the same wall-clock start and their
/// two offsets; springing forward, the missing hour has no bucket and the hour before it
/// ends at 03:00 in the new offset. The hours around the change hold events.
fn an_hourly_change(t: &Transition, buckets: &[Bucket], source: &str) {
    let what = format!("{source}: hours, {}", t.name);
    let on_the_day = buckets
        .iter()
        .filter(|b| b.start.wall.date() == t.date)
        .count();
    assert_eq!(on_the_day as i64, t.hours, "{what}");
    let at = |instant: DateTime<Utc>| {
        buckets
            .iter()
            .find(|b| b.start.instant() == instant)
            .unwrap_or_else(|| panic!("{what}: no bucket starts at {instant}"))
    };
    let (before, after) = (at(t.change - Duration::hours(1)), at(t.change));
    assert!(
        before.total() > 0 && after.total() > 0,
        "{what}: {before:?} {after:?}"
    );
    // Wall-clock times from the written-out offsets, not from chrono-tz.
    let wall = |instant: DateTime<Utc>, offset: i32| {
        (instant + Duration::seconds(i64::from(offset))).naive_utc()
    };
    let hour_before = wall(t.change - Duration::hours(1), t.offset_before);
    assert_eq!(
        before.start,
        Local {
            wall: hour_before,
            offset: t.offset_before
        },
        "{what}"
    );
    assert_eq!(
        after.start,
        Local {
            wall: wall(t.change, t.offset_after),
            offset: t.offset_after
        },
        "{what}"
    );
    assert_eq!(before.end, after.start, "{what}");
    if t.falls_back() {
        assert_eq!(
            before.start.wall, after.start.wall,
            "{what}: the repeated hour"
        );
    } else {
        let missing = wall(t.change, t.offset_before);
        assert!(
            buckets.iter().all(|b| b.start.wall != missing),
            "{what}: {missing} does not exist"
        );
        assert_eq!(after.start.wall, missing + Duration::hours(1), "{what}");
    }
}

/// Days in New York and Paris from March to November: every day listed, 24 hours except the
/// two changes of the zone (23 and 25).
async fn days_from_march_to_november(p: &TestPipeline, events: &[Event]) {
    let (first, last) = (date(SPAN_FROM), date(SPAN_TO));
    for zone in [NEW_YORK, PARIS] {
        let (got, covered) = series(p, "day", zone, SPAN_FROM, SPAN_TO).await;
        assert_eq!(covered, (midnight(zone, first), midnight(zone, last)));
        let expected = expected::daily(events, zone, first, last, &TYPES);
        assert_eq!(expected.len(), 254);
        let changes: BTreeSet<_> = dataset::transitions()
            .into_iter()
            .filter(|t| t.zone == zone)
            .map(|t| (t.date, t.hours))
            .collect();
        for (source, buckets) in [("expected", &expected), ("API", &got)] {
            let odd: BTreeSet<_> = buckets
                .iter()
                .filter(|b| b.hours() != 24)
                .map(|b| (b.start.wall.date(), b.hours()))
                .collect();
            assert_eq!(odd, changes, "{source}: days in {}", zone.name());
        }
        let all = expected::counts_by_type(events, covered.0, covered.1);
        let summed: i64 = expected.iter().map(Bucket::total).sum();
        assert_eq!(summed, all.values().sum::<i64>(), "every event in a day");
        same_series(&format!("days in {}", zone.name()), &got, &expected);
    }
}

/// Kolkata (+05:30, no DST) over New York's fall-back: hours start at :30 UTC, read from the
/// minute rollups.
async fn a_half_hour_zone(p: &TestPipeline, events: &[Event]) {
    let (first, last) = (date("2026-10-31"), date("2026-11-03"));
    let (got, covered) = series(p, "hour", KOLKATA, "2026-10-31", "2026-11-03").await;
    assert_eq!(
        covered,
        (utc("2026-10-30T18:30:00Z"), utc("2026-11-02T18:30:00Z"))
    );
    let expected = expected::hourly(events, KOLKATA, covered.0, covered.1, &TYPES);
    assert_eq!(expected.len(), 72);
    same_series("hours in Kolkata", &got, &expected);
    let (got, _) = series(p, "day", KOLKATA, "2026-10-31", "2026-11-03").await;
    let expected = expected::daily(events, KOLKATA, first, last, &TYPES);
    same_series("days in Kolkata", &got, &expected);
}

/// `from`/`to` as local times that happen twice or never. STATS_API.md does not say which
/// instant these name; the answer must name one of the readings and count over it.
async fn local_times_that_are_missing_or_repeated(p: &TestPipeline, events: &[Event]) {
    for (from, to, readings, to_at) in [
        // 01:30 happens at 05:30Z (EDT) and again at 06:30Z (EST); 02:30 EST is 07:30Z.
        (
            "2026-11-01T01:30",
            "2026-11-01T02:30",
            ("2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"),
            "2026-11-01T07:30:00Z",
        ),
        // 02:30 never happens: read before the change (07:30Z), after it (06:30Z), or as the
        // change itself (07:00Z); 04:00 EDT is 08:00Z.
        (
            "2026-03-08T02:30",
            "2026-03-08T04:00",
            ("2026-03-08T06:30:00Z", "2026-03-08T07:30:00Z"),
            "2026-03-08T08:00:00Z",
        ),
    ] {
        let body = ok(
            p,
            &format!("/api/v1/summary?from={from}&to={to}&tz=America/New_York"),
        )
        .await;
        let (got_from, got_to) = range_of(&body);
        assert_eq!(got_to, utc(to_at), "{to} in New York: {body}");
        assert!(
            (utc(readings.0)..=utc(readings.1)).contains(&got_from),
            "{from} in New York: {body}"
        );
        let figures = expected::figures(events, got_from, got_to);
        assert!(figures["events"].as_u64() > Some(0), "{from}: {figures}");
        assert_eq!(
            body["figures"], figures,
            "{from} read as {got_from}: {body}"
        );
    }
}

/// Counts by type and the summary over the whole fixed span (MySQL rollups and raw events),
/// and the all-time counts (Redis), late events included.
async fn counts_and_summaries(p: &TestPipeline, events: &[Event]) {
    let (from, to) = dataset::span();
    let span = format!("from={SPAN_FROM}&to={SPAN_TO}");
    let counts = ok(p, &format!("/api/v1/counts?{span}")).await;
    let by_type = expected::counts_by_type(events, from, to);
    assert_eq!(by_type.len(), TYPES.len());
    assert_eq!(counts["counts"], json!(by_type), "{counts}");

    let all_time =
        expected::counts_by_type(events, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
    assert!(
        all_time["page_view"] > by_type["page_view"],
        "recent and fresh events too"
    );
    let live = ok(p, "/api/v1/stats/events").await;
    assert_eq!(live["counts"], json!(all_time), "Redis all-time: {live}");

    let summary = ok(p, &format!("/api/v1/summary?{span}&compare=previous")).await;
    let figures = expected::figures(events, from, to);
    nonzero(&figures, "the span");
    assert_eq!(summary["figures"], figures, "{summary}");
    let previous = expected::figures(events, from - (to - from), from);
    assert_eq!(previous["events"], 0, "nothing before March");
    assert_eq!(summary["previous"]["figures"], previous, "{summary}");
}

/// The dashboard of Paris's 25-hour day, hourly in Paris: every part against the input.
async fn dashboard_of_the_paris_fall_back(p: &TestPipeline, events: &[Event]) {
    let t = dataset::transitions()[2];
    assert_eq!(t.date, date("2026-10-25"));
    let body = ok(
        p,
        "/api/v1/dashboard?tz=Europe/Paris&from=2026-10-25&to=2026-10-26&bucket=hour",
    )
    .await;
    assert_eq!(range_of(&body), (t.day_start, t.day_end), "{body}");
    let previous = t.day_start - Duration::hours(25);
    assert_eq!(
        body["summary"]["figures"],
        expected::figures(events, t.day_start, t.day_end),
        "{body}"
    );
    assert_eq!(
        body["summary"]["previous"]["figures"],
        expected::figures(events, previous, t.day_start),
        "{body}"
    );
    let counts = expected::counts_by_type(events, t.day_start, t.day_end);
    assert_eq!(body["event_counts"]["counts"], json!(counts), "{body}");
    assert_eq!(
        body["event_counts"]["total"],
        counts.values().sum::<i64>(),
        "{body}"
    );
    // No types asked for: the types present in the range.
    let present: Vec<&str> = counts.keys().map(String::as_str).collect();
    let expected = expected::hourly(events, PARIS, t.day_start, t.day_end, &present);
    assert_eq!(expected.len(), 25);
    same_series(
        "dashboard hours, Paris",
        &buckets_of(&body["timeseries"]),
        &expected,
    );
    assert_eq!(body["hot_pages"]["source"], "mysql", "{body}");
    assert_eq!(
        body["hot_pages"]["pages"],
        expected::hot_pages(events, t.day_start, t.day_end, 10),
        "{body}"
    );
}

/// Hot pages of the last days: the live Redis rankings and the MySQL rollups agree with the
/// input (these events are recent by construction; the assertion is about recent times).
async fn recent_hot_pages(p: &TestPipeline, events: &[Event], now: DateTime<Utc>) {
    let hour = now.duration_trunc(Duration::hours(1)).expect("hour");
    let (from, to) = (hour - Duration::hours(60), hour - Duration::hours(2));
    let top = expected::hot_pages(events, from, to, 3);
    assert_eq!(top.as_array().map(Vec::len), Some(3), "{top}");
    for (source, answered) in [("auto", "redis"), ("redis", "redis"), ("mysql", "mysql")] {
        let hot = ok(
            p,
            &format!(
                "/api/v1/pages/hot?from={}&to={}&limit=3&source={source}",
                q(from),
                q(to)
            ),
        )
        .await;
        assert_eq!(hot["source"], answered, "{hot}");
        assert_eq!(hot["pages"], top, "{source}: {hot}");
    }
}

async fn breakdown_and_heatmap(p: &TestPipeline, events: &[Event]) {
    let span = dataset::span();
    let ny_fall = dataset::transitions()[3];
    for (range, params) in [
        (span, format!("from={SPAN_FROM}&to={SPAN_TO}")),
        (
            (ny_fall.day_start, ny_fall.day_end),
            "from=2026-11-01&to=2026-11-02&tz=America/New_York".to_owned(),
        ),
    ] {
        let expected = expected::purchases_by_currency_and_plan(events, range.0, range.1);
        assert!(
            expected.as_array().is_some_and(|g| g.len() >= 2),
            "{params}: {expected}"
        );
        let body = ok(
            p,
            &format!(
                "/api/v1/breakdown?event_type=purchase&by=currency&by2=plan&limit=100&{params}"
            ),
        )
        .await;
        assert_eq!(body["values"], expected, "{params}: {body}");
    }
    let (elements, cells) = expected::heatmap(events, "/pricing", 100, span.0, span.1);
    assert!(
        elements.as_array().is_some_and(|e| e.len() == 3),
        "{elements}"
    );
    let body = ok(
        p,
        &format!("/api/v1/heatmap?page=/pricing&cell=100&limit=10&from={SPAN_FROM}&to={SPAN_TO}"),
    )
    .await;
    assert_eq!(body["elements"], elements, "{body}");
    assert_eq!(body["grid"]["cells"], cells, "{body}");
}

async fn conversion_and_funnels(p: &TestPipeline, events: &[Event]) {
    let t = dataset::transitions()[3];
    let steps = [("product_view", None), ("cart_add", None)];
    for (window, until) in [
        (None, Until::RangeEnd),
        (Some(600), Until::Window(Duration::seconds(600))),
    ] {
        let expected = expected::funnel(events, &steps, t.day_start, t.day_end, until, false);
        assert!(
            expected[0].users > expected[1].users && expected[1].users > 0,
            "{expected:?}"
        );
        let window = window.map_or(String::new(), |w| format!("&window_seconds={w}"));
        let body = ok(
            p,
            &format!(
                "/api/v1/conversion?start_event=product_view&end_event=cart_add\
                 &from=2026-11-01&to=2026-11-02&tz=America/New_York{window}"
            ),
        )
        .await;
        assert_eq!(
            (
                body["start_users"].as_u64(),
                body["converted_users"].as_u64()
            ),
            (Some(expected[0].users), Some(expected[1].users)),
            "{window}: {body}"
        );
        same_seconds(
            &body["median_seconds_to_convert"],
            expected[1].median_seconds_from_previous,
            &body,
        );
    }

    // Funnels over each change's three local days: four steps (ordered reaches the end;
    // strict, which wants each step to be the very next event, mostly stops after the
    // entry) and a checkout of three (strict reaches the end).
    let browse: Vec<expected::Step<'_>> = vec![
        ("page_view", None),
        ("product_view", None),
        ("cart_add", None),
        ("purchase", Some(("currency", "EUR"))),
    ];
    let checkout = browse[1..].to_vec();
    let mut completed: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (name, steps) in [("browse", &browse), ("checkout", &checkout)] {
        let definition = json!({"name": name, "window_seconds": 3600, "steps": steps
            .iter()
            .map(|(event_type, filter)| match filter {
                None => json!({"event_type": event_type}),
                Some((property, value)) =>
                    json!({"event_type": event_type, "property": property, "value": value}),
            })
            .collect::<Vec<_>>()});
        let (status, created) = send(
            p,
            reqwest::Method::POST,
            "/api/v1/funnels",
            Some(&definition),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        for t in dataset::transitions() {
            let (first, last) = t.dates();
            let (from, to) = t.window();
            for (mode, strict) in [("ordered", false), ("strict", true)] {
                let until = Until::Window(Duration::seconds(3600));
                let expected = expected::funnel(events, steps, from, to, until, strict);
                assert!(
                    expected[0].users > 0 && expected.windows(2).any(|s| s[0].users > s[1].users),
                    "{name} {mode}, {}: entries and drop-off: {expected:?}",
                    t.name
                );
                *completed.entry((name, mode)).or_default() +=
                    expected.last().map_or(0, |s| s.users);
                let body = ok(
                    p,
                    &format!(
                        "/api/v1/funnels/{name}/analysis?mode={mode}&from={first}&to={last}&tz={}",
                        t.zone.name()
                    ),
                )
                .await;
                assert_eq!(range_of(&body), (from, to), "{body}");
                let got = body["steps"].as_array().expect("steps");
                assert_eq!(got.len(), steps.len(), "{body}");
                for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
                    let what = format!("{name} {mode}, {}, step {k}", t.name);
                    assert_eq!(g["users"].as_u64(), Some(e.users), "{what}: {body}");
                    same_seconds(
                        &g["median_seconds_from_previous"],
                        e.median_seconds_from_previous,
                        g,
                    );
                    same_seconds(
                        &g["median_seconds_from_first"],
                        e.median_seconds_from_first,
                        g,
                    );
                }
            }
        }
    }
    assert!(
        completed[&("browse", "ordered")] > 0 && completed[&("checkout", "strict")] > 0,
        "{completed:?}"
    );
}

/// One user's profile, and their path over the fixed span through the cursor.
/// Session figures over the span, and filtered counts, each against the input.
async fn sessions_and_filters(p: &TestPipeline, events: &[Event]) {
    let (from, to) = dataset::span();
    let span = format!("from={SPAN_FROM}&to={SPAN_TO}");
    let sessions = ok(p, &format!("/api/v1/sessions?{span}&pages=3")).await;
    let want = expected::session_figures(events, from, to, 3);
    assert!(
        want["sessions"].as_u64() > Some(10),
        "the span has sessions: {want}"
    );
    assert!(want["bounces"].as_u64() > Some(0), "and bounces: {want}");
    for (field, value) in want.as_object().expect("an object") {
        assert_eq!(&sessions[field], value, "sessions' {field}: {sessions}");
    }

    let filter = "$page_path==/pricing|/blog";
    let counts = ok(
        p,
        &format!("/api/v1/counts?{span}&filter={}", query_value(filter)),
    )
    .await;
    let mut by_type: BTreeMap<String, i64> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| expected::within(e, from, to) && matches!(e.page, Some("/pricing" | "/blog")))
    {
        *by_type.entry(e.event_type.to_owned()).or_default() += 1;
    }
    assert!(
        by_type.values().sum::<i64>() > 0,
        "the filter matches some events"
    );
    assert_eq!(counts["counts"], json!(by_type), "{counts}");
}

/// Retention cohorts by month in Paris and by week in New York (from the first click), each
/// against the cohorts computed from the input, in the request's time zone.
async fn retention_cohorts(p: &TestPipeline, events: &[Event], now: DateTime<Utc>) {
    let (_, to) = dataset::span();
    for (zone, period, first_day, start_event, return_event) in [
        (PARIS, "month", "2026-03-01", None, None),
        (
            NEW_YORK,
            "week",
            "2026-03-02",
            Some("click"),
            Some("page_view"),
        ),
        (NEW_YORK, "day", "2026-03-06", None, Some("click")),
    ] {
        let mut path = format!(
            "/api/v1/retention?period={period}&tz={}&from={first_day}&to={}",
            zone.name(),
            answers::q(to)
        );
        for (name, value) in [("start_event", start_event), ("return_event", return_event)] {
            if let Some(value) = value {
                path.push_str(&format!("&{name}={value}"));
            }
        }
        if period == "day" {
            // Day cohorts span at most 92 days: the March changes only.
            path = path.replace(&answers::q(to), "2026-04-06");
        }
        let body = ok(p, &path).await;
        let until = if period == "day" {
            expected::midnight(zone, dataset::date("2026-04-06"))
        } else {
            to
        };
        let ask = expected::RetentionAsk {
            tz: zone,
            period,
            first_day: dataset::date(first_day),
            to: until,
            start_event,
            return_event,
        };
        let want = expected::retention(events, &ask, now);
        let got: Vec<serde_json::Value> = body["cohorts"]
            .as_array()
            .unwrap_or_else(|| panic!("cohorts: {body}"))
            .iter()
            .map(|c| json!({"start": c["start"], "users": c["users"], "returned": c["returned"]}))
            .collect();
        assert_eq!(json!(got), want, "{period} in {}: {body}", zone.name());
        let came_back: u64 = got
            .iter()
            .flat_map(|c| c["returned"].as_array().expect("returned").iter().skip(1))
            .map(|n| n.as_u64().unwrap_or(0))
            .sum();
        assert!(
            !got.is_empty() && came_back > 0,
            "the data set has {period} cohorts in which people came back: {body}"
        );
    }
}

async fn profile_and_path(p: &TestPipeline, events: &[Event]) {
    let mine: Vec<&Event> = events.iter().filter(|e| e.who == "u3").collect();
    let sessions: BTreeSet<&str> = mine.iter().filter_map(|e| e.session.as_deref()).collect();
    let profile = ok(p, "/api/v1/users/u3").await;
    let seen = |field: &str| utc(profile[field].as_str().unwrap_or_default());
    assert_eq!(
        profile["total_events"].as_u64(),
        Some(mine.len() as u64),
        "{profile}"
    );
    assert_eq!(
        profile["total_sessions"].as_u64(),
        Some(sessions.len() as u64),
        "{profile}"
    );
    assert_eq!(
        Some(seen("first_seen")),
        mine.iter().map(|e| e.at).min(),
        "{profile}"
    );
    assert_eq!(
        Some(seen("last_seen")),
        mine.iter().map(|e| e.at).max(),
        "{profile}"
    );

    let (from, to) = dataset::span();
    let expected: Vec<&str> = expected::path(events, "u3", from, to)
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert!(expected.len() > 7, "more than one page");
    let mut got = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = ok(
            p,
            &format!(
                "/api/v1/users/u3/events?limit=7&from={SPAN_FROM}&to={SPAN_TO}&cursor={cursor}"
            ),
        )
        .await;
        got.extend(
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
    assert_eq!(got, expected);
}
