//! Where visitors came from, where they are, and whether they are people (issue 19), through
//! the real gateway and worker: UTM fields, click ids, referrers and Segment's
//! `context.campaign` become a channel; client addresses become a country through a small
//! MaxMind database built here; bots (by user agent, or by a configured network) are stored
//! flagged and left out of every figure unless asked for. Every figure is compared with the
//! one computed here from what was sent, with each visit's expected channel and country
//! written out by hand, not derived by the code under test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use mmdb_writer::{Value as Mmdb, Writer};
use serde_json::{json, Value};

use crate::stats_support::{ok, query_value, send as send_stats};
use crate::support::{
    eventually, ingest_settings, kafka_brokers, spawn_ingest_with, spawn_worker_with, stores,
    worker_settings, TestPipeline, WorkerTarget,
};

const BROWSER: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                       (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// One visitor: how they arrived, from where, and what the pipeline must make of it.
struct Visit {
    user: String,
    url: &'static str,
    referrer: Option<&'static str>,
    /// Sent through the Segment API with this `context.campaign` (source, medium, name).
    segment_campaign: Option<(&'static str, &'static str, &'static str)>,
    ip: &'static str,
    user_agent: &'static str,
    /// What the test expects, written out by hand.
    channel: &'static str,
    country: Option<&'static str>,
    bot: bool,
    /// Page views sent (the landing one, then internal ones).
    pages: usize,
}

/// The networks of the test database, and the bots' network.
const PARIS: &str = "192.0.2.10";
const BERLIN: &str = "198.51.100.20";
const NOWHERE: &str = "100.64.0.1";
const MONITOR: &str = "203.0.113.5";

fn visits() -> Vec<Visit> {
    let visit =
        |n: usize, url, referrer, ip, channel, country: Option<&'static str>, pages| Visit {
            user: format!("acq-{n}"),
            url,
            referrer,
            segment_campaign: None,
            ip,
            user_agent: BROWSER,
            channel,
            country,
            bot: false,
            pages,
        };
    let mut visits = vec![
        visit(
            0,
            "https://shop.example/?utm_source=newsletter&utm_medium=email&utm_campaign=spring",
            None,
            PARIS,
            "email",
            Some("FR"),
            3,
        ),
        visit(
            1,
            "https://shop.example/?utm_source=newsletter&utm_medium=email&utm_campaign=spring",
            Some("https://mail.example/"),
            BERLIN,
            "email",
            Some("DE"),
            1,
        ),
        visit(
            2,
            "https://shop.example/shoes?gclid=Cj0KCQ",
            Some("https://www.google.com/"),
            PARIS,
            "paid_search",
            Some("FR"),
            2,
        ),
        visit(
            3,
            "https://shop.example/shoes",
            Some("https://www.google.de/"),
            BERLIN,
            "organic_search",
            Some("DE"),
            1,
        ),
        visit(
            4,
            "https://shop.example/",
            Some("https://t.co/abc"),
            NOWHERE,
            "organic_social",
            None,
            2,
        ),
        visit(
            5,
            "https://shop.example/",
            Some("https://blog.example/post"),
            PARIS,
            "referral",
            Some("FR"),
            1,
        ),
        visit(
            6,
            "https://shop.example/",
            None,
            BERLIN,
            "direct",
            Some("DE"),
            4,
        ),
        visit(7, "https://shop.example/", None, NOWHERE, "direct", None, 1),
    ];
    // Segment traffic: the campaign comes in context.campaign, not in the URL.
    visits.push(Visit {
        segment_campaign: Some(("facebook", "paid-social", "launch")),
        ..visit(
            8,
            "https://shop.example/launch",
            None,
            PARIS,
            "paid_social",
            Some("FR"),
            2,
        )
    });
    // Bots: by user agent (a crawler with a search referrer), by configured network.
    visits.push(Visit {
        user_agent: GOOGLEBOT,
        bot: true,
        ..visit(
            9,
            "https://shop.example/",
            Some("https://www.google.com/"),
            BERLIN,
            "organic_search",
            Some("DE"),
            5,
        )
    });
    visits.push(Visit {
        bot: true,
        ..visit(
            10,
            "https://shop.example/",
            None,
            MONITOR,
            "direct",
            None,
            6,
        )
    });
    visits
}

/// The visits (by number) that end in a purchase: canonical shape only.
const BUYERS: [usize; 4] = [0, 2, 6, 9];

/// The page views of one visit: the landing page (with the campaign and referrer), then
/// internal pages referred by the shop itself, a second apart; then a buyer's purchase.
fn page_views(v: &Visit, n: usize, start: DateTime<Utc>) -> Vec<Value> {
    let purchase = BUYERS.contains(&n).then(|| {
        json!({
            "event_id": format!("{}-buy", v.user),
            "event_type": "purchase",
            "anonymous_id": v.user,
            "timestamp": (start + Duration::seconds((n * 100 + 50) as i64))
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            "page": {"url": "https://shop.example/checkout", "referrer": "https://shop.example/"},
        })
    });
    (0..v.pages)
        .map(|i| {
            let at = (start + Duration::seconds((n * 100 + i) as i64))
                .to_rfc3339_opts(SecondsFormat::Millis, true);
            let (url, referrer) = if i == 0 {
                (v.url.to_owned(), v.referrer.map(str::to_owned))
            } else {
                (
                    format!("https://shop.example/p{i}"),
                    Some("https://shop.example/".to_owned()),
                )
            };
            match v.segment_campaign {
                // analytics.js reads the campaign off the landing URL: later pages have none.
                Some((source, medium, name)) => json!({
                    "type": "page",
                    "messageId": format!("{}-{i}", v.user),
                    "anonymousId": v.user,
                    "timestamp": at,
                    "properties": {"url": url, "referrer": referrer},
                    "context": if i == 0 {
                        json!({"campaign": {"source": source, "medium": medium, "name": name}})
                    } else {
                        json!({})
                    },
                }),
                None => json!({
                    "event_id": format!("{}-{i}", v.user),
                    "event_type": "page_view",
                    "anonymous_id": v.user,
                    "timestamp": at,
                    "page": {"url": url, "referrer": referrer},
                }),
            }
        })
        .chain(purchase)
        .collect()
}

/// A City database: Paris (FR, IDF) and Berlin (DE) networks; nothing for the rest.
fn geo_database(dir: &Path) -> PathBuf {
    let names = |en: &str| Mmdb::map([("en", Mmdb::from(en))]);
    let mut writer = Writer::new("GeoIP2-City");
    for (network, country, region, city) in [
        ("192.0.2.0/24", "FR", "IDF", "Paris"),
        ("198.51.100.0/24", "DE", "BE", "Berlin"),
    ] {
        writer
            .insert_value(
                network.parse::<ipnet::IpNet>().expect("a network"),
                Mmdb::map([
                    ("country", Mmdb::map([("iso_code", Mmdb::from(country))])),
                    (
                        "subdivisions",
                        Mmdb::Array(vec![Mmdb::map([("iso_code", Mmdb::from(region))])]),
                    ),
                    ("city", Mmdb::map([("names", names(city))])),
                ]),
            )
            .expect("a record the writer takes");
    }
    std::fs::create_dir_all(dir).expect("the test's directory");
    let path = dir.join("test-city.mmdb");
    let bytes = writer.to_bytes().expect("the database's bytes");
    std::fs::write(&path, bytes).expect("the database file");
    path
}

/// A pipeline whose gateway locates addresses, believes X-Forwarded-For from the test (it
/// connects from 127.0.0.1), and takes the monitor's network for a bot.
async fn pipeline(geo: &Path) -> TestPipeline {
    let target = WorkerTarget::create().await;
    let worker = spawn_worker_with(worker_settings(&target), insightflow_worker::Role::All).await;
    let mut settings = ingest_settings(&target.topic, &kafka_brokers());
    settings.http.trusted_proxies = vec!["127.0.0.1/32".parse().expect("a network")];
    settings.geo.database = geo.display().to_string();
    settings.bots.ignore_ips = vec!["203.0.113.0/24".parse().expect("a network")];
    // Every visit here comes from one test address: the per-IP limit is not under test.
    settings.rate_limit.per_ip_per_second = 0.0;
    let ingest = spawn_ingest_with(settings).await;
    TestPipeline::of(ingest, worker, target)
}

async fn send(p: &TestPipeline, visit: &Visit, events: Vec<Value>) {
    let (path, body) = match visit.segment_campaign {
        Some(_) => ("/v1/batch", json!({ "batch": events })),
        None => ("/api/v1/events", json!({ "events": events })),
    };
    let response = p
        .http
        .post(format!("{}{path}", p.ingest.address))
        .header("X-Forwarded-For", visit.ip)
        .header("User-Agent", visit.user_agent)
        .json(&body)
        .send()
        .await
        .expect("gateway answered");
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{path}: {answer}");
}

/// A landing page view as stored: distinct id, channel, campaign, click id type, country.
type Landing = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Unique visitors per key, over the visits `keep` admits.
fn visitors_by<K: Ord>(
    visits: &[Visit],
    keep: impl Fn(&Visit) -> bool,
    key: impl Fn(&Visit) -> K,
) -> BTreeMap<K, i64> {
    let mut by: BTreeMap<K, i64> = BTreeMap::new();
    for v in visits.iter().filter(|v| keep(v)) {
        *by.entry(key(v)).or_default() += 1;
    }
    by
}

/// `{value -> unique_users}` (or `{(value, value2) -> ..}`) of a breakdown answer.
fn breakdown_users(answer: &Value) -> BTreeMap<(Option<String>, Option<String>), i64> {
    answer["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no values: {answer}"))
        .iter()
        .map(|v| {
            let text = |x: &Value| x.as_str().map(str::to_owned);
            (
                (text(&v["value"]), text(&v["value2"])),
                v["unique_users"].as_i64().expect("unique_users"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_by_channel_and_country_without_bots() {
    let dir = std::env::temp_dir().join(format!("if-acq-{}", uuid::Uuid::new_v4()));
    let p = pipeline(&geo_database(&dir)).await;
    let visits = visits();
    let start = Utc::now() - Duration::minutes(30);
    for (n, v) in visits.iter().enumerate() {
        send(&p, v, page_views(v, n, start)).await;
    }
    let events_of = |(n, v): (usize, &Visit)| v.pages as i64 + i64::from(BUYERS.contains(&n));
    let all_events: i64 = visits.iter().enumerate().map(events_of).sum();
    let bot_events: i64 = visits
        .iter()
        .enumerate()
        .filter(|(_, v)| v.bot)
        .map(events_of)
        .sum();
    let people_events = all_events - bot_events;
    p.wait_for_events("default", all_events).await;
    let base = "/api/v1/projects/default";
    let range = format!(
        "from={}&to={}",
        query_value(&(start - Duration::minutes(1)).to_rfc3339()),
        query_value(&(Utc::now() + Duration::minutes(1)).to_rfc3339())
    );
    // Redis has applied every people's event (bots never reach it).
    eventually(
        std::time::Duration::from_secs(30),
        "Redis to apply the people's events",
        || async {
            let (status, body) = p.get("/api/v1/stats/events?project=default").await;
            (status == 200 && body["total"].as_i64() == Some(people_events)).then_some(())
        },
    )
    .await;

    // MySQL keeps every event, the bots' flagged, with the acquisition and location columns.
    let pool = p.target.pool().await;
    let (stored, flagged): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), CAST(SUM(is_bot) AS SIGNED) FROM user_events")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((stored, flagged), (all_events, bot_events));
    let landing: Vec<Landing> = sqlx::query_as(
        "SELECT CAST(distinct_id AS CHAR), CAST(channel AS CHAR), CAST(utm_campaign AS CHAR), \
             CAST(click_id_type AS CHAR), CAST(country AS CHAR) FROM user_events \
             WHERE event_id LIKE '%-0' ORDER BY distinct_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let by_user: BTreeMap<&str, _> = landing
        .iter()
        .map(|(user, channel, campaign, click, country)| {
            (user.as_str(), (channel, campaign, click, country))
        })
        .collect();
    for v in &visits {
        let (channel, _, _, country) = by_user[v.user.as_str()];
        assert_eq!(channel.as_deref(), Some(v.channel), "{}", v.user);
        assert_eq!(country.as_deref(), v.country, "{}", v.user);
    }
    assert_eq!(by_user["acq-0"].1.as_deref(), Some("spring"));
    assert_eq!(by_user["acq-8"].1.as_deref(), Some("launch"));
    assert_eq!(by_user["acq-2"].2.as_deref(), Some("gclid"));
    // Later pages are referred by the shop itself.
    let human_buyers = BUYERS.iter().filter(|n| !visits[**n].bot).count() as i64;
    let internal: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM user_events WHERE channel = 'internal' AND is_bot = 0",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        internal,
        visits
            .iter()
            .filter(|v| !v.bot)
            .map(|v| v.pages as i64 - 1)
            .sum::<i64>()
            + human_buyers
    );

    // Visitors by channel, from the landing page views: bots left out.
    let answer = ok(
        &p,
        &format!(
            "{base}/breakdown?{range}&event_type=page_view&by=$channel&filter={}&limit=100",
            query_value("$channel!=internal")
        ),
    )
    .await;
    let expected: BTreeMap<_, _> = visitors_by(&visits, |v| !v.bot, |v| v.channel)
        .into_iter()
        .map(|(channel, n)| ((Some(channel.to_owned()), None), n))
        .collect();
    assert_eq!(breakdown_users(&answer), expected, "{answer}");

    // Visitors by country and channel, every event type.
    let answer = ok(
        &p,
        &format!(
            "{base}/breakdown?{range}&by=$country&by2=$channel&filter={}&limit=100",
            query_value("$channel!=internal")
        ),
    )
    .await;
    let expected: BTreeMap<_, _> = visitors_by(
        &visits,
        |v| !v.bot,
        |v| (v.country.map(str::to_owned), Some(v.channel.to_owned())),
    );
    assert_eq!(breakdown_users(&answer), expected, "{answer}");

    // Filters on the new dimensions.
    let spring = ok(
        &p,
        &format!(
            "{base}/summary?{range}&filter={}",
            query_value("$utm_campaign==spring")
        ),
    )
    .await;
    assert_eq!(spring["figures"]["unique_users"], 2, "{spring}");
    let french = ok(
        &p,
        &format!(
            "{base}/counts?{range}&filter={}",
            query_value("$country==FR")
        ),
    )
    .await;
    let french_events: i64 = visits
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.bot && v.country == Some("FR"))
        .map(events_of)
        .sum();
    assert_eq!(french["total"], french_events, "{french}");

    // Conversion by entry channel: each visitor in the segment of their first page view.
    let answer = ok(
        &p,
        &format!(
            "{base}/conversion?{range}&start_event=page_view&end_event=purchase&by=$channel&by_limit=20"
        ),
    )
    .await;
    let mut expected: BTreeMap<Option<String>, (i64, i64)> = BTreeMap::new();
    for (n, v) in visits.iter().enumerate().filter(|(_, v)| !v.bot) {
        let e = expected.entry(Some(v.channel.to_owned())).or_default();
        e.0 += 1;
        e.1 += i64::from(BUYERS.contains(&n));
    }
    let got: BTreeMap<Option<String>, (i64, i64)> = answer["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|s| {
            (
                s["value"].as_str().map(str::to_owned),
                (
                    s["start_users"].as_i64().unwrap(),
                    s["converted_users"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, expected, "{answer}");
    assert_eq!(answer["converted_users"], human_buyers, "{answer}");

    // By entry channel and country: one segment per pair.
    let answer = ok(
        &p,
        &format!(
            "{base}/conversion?{range}&start_event=page_view&end_event=purchase&by=$channel&by2=$country&by_limit=20"
        ),
    )
    .await;
    let mut expected_pairs: BTreeMap<(Option<String>, Option<String>), (i64, i64)> =
        BTreeMap::new();
    for (n, v) in visits.iter().enumerate().filter(|(_, v)| !v.bot) {
        let key = (Some(v.channel.to_owned()), v.country.map(str::to_owned));
        let e = expected_pairs.entry(key).or_default();
        e.0 += 1;
        e.1 += i64::from(BUYERS.contains(&n));
    }
    let got_pairs: BTreeMap<(Option<String>, Option<String>), (i64, i64)> = answer["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|s| {
            (
                (
                    s["value"].as_str().map(str::to_owned),
                    s["value2"].as_str().map(str::to_owned),
                ),
                (
                    s["start_users"].as_i64().unwrap(),
                    s["converted_users"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got_pairs, expected_pairs, "{answer}");
    assert_eq!(answer["by2"], "$country", "{answer}");

    // The same as a funnel, segmented the same way.
    let (status, created) = send_stats(
        &p,
        reqwest::Method::POST,
        &format!("{base}/funnels"),
        Some(
            &json!({"name": "buy", "steps": [{"event_type": "page_view"},
            {"event_type": "purchase"}], "window_seconds": 86_400}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let funnel = ok(
        &p,
        &format!("{base}/funnels/buy/analysis?{range}&by=$channel&by_limit=20"),
    )
    .await;
    let got_funnel: BTreeMap<Option<String>, (i64, i64)> = funnel["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("{funnel}"))
        .iter()
        .map(|s| {
            (
                s["value"].as_str().map(str::to_owned),
                (
                    s["steps"][0]["users"].as_i64().unwrap(),
                    s["steps"][1]["users"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got_funnel, expected, "{funnel}");

    // A time series per country: each segment holds its country's events, none twice.
    let answer = ok(
        &p,
        &format!("{base}/timeseries?{range}&bucket=minute&by=$country&by_limit=20"),
    )
    .await;
    let got: BTreeMap<Option<String>, i64> = answer["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|s| {
            let total = s["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["total"].as_i64().unwrap())
                .sum();
            (s["value"].as_str().map(str::to_owned), total)
        })
        .collect();
    let mut expected: BTreeMap<Option<String>, i64> = BTreeMap::new();
    for (n, v) in visits.iter().enumerate().filter(|(_, v)| !v.bot) {
        *expected.entry(v.country.map(str::to_owned)).or_default() += events_of((n, v));
    }
    assert_eq!(got, expected, "{answer}");

    // Bots: out of the unfiltered figures (rollups, Redis), in with include_bots=true, alone
    // with $bot==true.
    let summary = ok(&p, &format!("{base}/summary?{range}")).await;
    let people = visits.iter().filter(|v| !v.bot).count();
    assert_eq!(summary["figures"]["unique_users"], people, "{summary}");
    assert_eq!(summary["figures"]["events"], people_events, "{summary}");
    let with_bots = ok(&p, &format!("{base}/counts?{range}&include_bots=true")).await;
    assert_eq!(with_bots["total"], all_events, "{with_bots}");
    let only_bots = ok(
        &p,
        &format!("{base}/counts?{range}&filter={}", query_value("$bot==true")),
    )
    .await;
    assert_eq!(only_bots["total"], bot_events, "{only_bots}");
    let live = ok(&p, "/api/v1/stats/events?project=default").await;
    assert_eq!(
        live["counts"]["page_view"].as_i64(),
        Some(
            visits
                .iter()
                .filter(|v| !v.bot)
                .map(|v| v.pages as i64)
                .sum::<i64>()
        ),
        "Redis counts no bot: {live}"
    );
    let (status, bad) = p
        .get(&format!("{base}/counts?{range}&include_bots=maybe"))
        .await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad.to_string().contains("include_bots"), "{bad}");

    // A Redis rebuild from MySQL replays the people's events only.
    let (mysql, redis, metrics) = stores(&worker_settings(&p.target)).await;
    let rebuilt = insightflow_worker::rebuild::rebuild_now(&mysql, &redis, &metrics)
        .await
        .expect("the rebuild runs");
    assert_eq!(rebuilt.events_replayed as i64, people_events, "{rebuilt:?}");
    let live = ok(&p, "/api/v1/stats/events?project=default").await;
    assert_eq!(live["total"].as_i64(), Some(people_events), "{live}");

    // And the worker counted them.
    let metrics = p
        .http
        .get(format!("{}/metrics", p.worker.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("worker_bot_events_total "))
        .and_then(|v| v.trim().parse::<i64>().ok());
    assert_eq!(counted, Some(bot_events), "worker_bot_events_total");

    p.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
