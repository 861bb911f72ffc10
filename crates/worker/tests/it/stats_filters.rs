//! `filter=` on every endpoint that takes it, against the real pipeline: each figure is
//! compared with the same figure computed here from the events sent, with the clause's rule
//! written out again (`==` any of the values, `!=` none of them or no value at all).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::stats_support::{ingest, ok, query_value, wait_applied};
use crate::support::TestPipeline;

/// One event as sent, with what the filters look at.
struct Sent {
    user: String,
    session: String,
    event_type: &'static str,
    path: &'static str,
    plan: Option<&'static str>,
    city: Option<&'static str>,
    at: DateTime<Utc>,
}

impl Sent {
    fn json(&self, n: usize) -> Value {
        let mut properties = serde_json::Map::new();
        if let Some(plan) = self.plan {
            properties.insert("plan".into(), json!(plan));
        }
        if let Some(city) = self.city {
            properties.insert("address".into(), json!({"city": city}));
        }
        json!({
            "event_id": format!("flt-{n}"),
            "event_type": self.event_type,
            "user_id": self.user,
            "session_id": self.session,
            "timestamp": self.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "page": {"url": format!("https://shop.example{}", self.path)},
            "properties": properties,
        })
    }
}

/// Twelve users over three plans (one with none), two cities (one with none) and three
/// pages: each views a page, clicks, and the pro and team users with even numbers purchase.
fn dataset(start: DateTime<Utc>) -> Vec<Sent> {
    let mut events = Vec::new();
    for u in 0..12_usize {
        let plan = [Some("pro"), Some("free"), Some("team"), None][u % 4];
        let city = [Some("Paris"), Some("Lyon"), None][u % 3];
        let path = ["/a", "/b", "/c"][u % 3];
        let at = |s: i64| start + Duration::seconds(u as i64 * 60 + s);
        let base = |event_type, path, s| Sent {
            user: format!("f{u}"),
            session: format!("fs{u}"),
            event_type,
            path,
            plan,
            city,
            at: at(s),
        };
        events.push(base("page_view", path, 0));
        events.push(base("click", path, 5));
        events.push(base("page_view", "/a", 10));
        if u % 2 == 0 && matches!(plan, Some("pro" | "team")) {
            events.push(base("purchase", "/checkout", 20));
        }
    }
    events
}

fn pro_or_team(e: &Sent) -> bool {
    matches!(e.plan, Some("pro" | "team"))
}

fn not_free_on_a_or_b(e: &Sent) -> bool {
    e.plan != Some("free") && matches!(e.path, "/a" | "/b")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_count_only_the_matching_events_on_every_endpoint() {
    let p = TestPipeline::start().await;
    let start = Utc::now() - Duration::minutes(40);
    let sent = dataset(start);
    let bodies: Vec<Value> = sent.iter().enumerate().map(|(n, e)| e.json(n)).collect();
    ingest(&p, &bodies).await;
    wait_applied(&p, bodies.len() as u64).await;
    let range = format!(
        "from={}&to={}",
        query_value(&(start - Duration::minutes(5)).to_rfc3339()),
        query_value(&Utc::now().to_rfc3339())
    );
    let base = "/api/v1/projects/default";

    // counts
    let filter = "plan==pro|team";
    let counts = ok(
        &p,
        &format!("{base}/counts?{range}&filter={}", query_value(filter)),
    )
    .await;
    let mut expected: BTreeMap<&str, i64> = BTreeMap::new();
    for e in sent.iter().filter(|e| pro_or_team(e)) {
        *expected.entry(e.event_type).or_default() += 1;
    }
    assert_eq!(counts["counts"], json!(expected), "{counts}");
    assert_eq!(counts["filter"], filter, "{counts}");
    let unfiltered = ok(&p, &format!("{base}/counts?{range}")).await;
    assert_eq!(unfiltered["total"], sent.len(), "{unfiltered}");
    assert!(unfiltered.get("filter").is_none(), "{unfiltered}");

    // summary: `!=` keeps events without a plan
    let filter = "plan!=free;$page_path==/a|/b";
    let summary = ok(
        &p,
        &format!("{base}/summary?{range}&filter={}", query_value(filter)),
    )
    .await;
    let matching: Vec<&Sent> = sent.iter().filter(|e| not_free_on_a_or_b(e)).collect();
    let users: BTreeSet<&str> = matching.iter().map(|e| e.user.as_str()).collect();
    let sessions: BTreeSet<&str> = matching.iter().map(|e| e.session.as_str()).collect();
    assert_eq!(
        summary["figures"],
        json!({
            "events": matching.len(),
            "page_views": matching.iter().filter(|e| e.event_type == "page_view").count(),
            "unique_users": users.len(),
            "sessions": sessions.len(),
        }),
        "{summary}"
    );

    // time series: every matching event in some bucket, none twice
    let series = ok(
        &p,
        &format!(
            "{base}/timeseries?bucket=minute&{range}&filter={}",
            query_value(filter)
        ),
    )
    .await;
    let total: i64 = series["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| b["total"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(total, matching.len() as i64, "{series}");

    // hot pages, from the raw page views
    let filter = "plan==pro|team";
    let hot = ok(
        &p,
        &format!("{base}/pages/hot?{range}&filter={}", query_value(filter)),
    )
    .await;
    let mut views: BTreeMap<&str, i64> = BTreeMap::new();
    for e in sent
        .iter()
        .filter(|e| pro_or_team(e) && e.event_type == "page_view")
    {
        *views.entry(e.path).or_default() += 1;
    }
    let got: BTreeMap<String, i64> = hot["pages"]
        .as_array()
        .expect("pages")
        .iter()
        .map(|page| {
            (
                page["path"].as_str().unwrap_or("").to_owned(),
                page["views"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let views: BTreeMap<String, i64> = views.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    assert_eq!(got, views, "{hot}");
    assert_eq!(hot["source"], "mysql", "{hot}");

    // breakdown of clicks by page, of users in Paris (a nested property)
    let filter = "address.city==Paris";
    let breakdown = ok(
        &p,
        &format!(
            "{base}/breakdown?event_type=click&by=$page_path&{range}&filter={}",
            query_value(filter)
        ),
    )
    .await;
    let mut clicks: BTreeMap<String, i64> = BTreeMap::new();
    for e in sent
        .iter()
        .filter(|e| e.city == Some("Paris") && e.event_type == "click")
    {
        *clicks.entry(e.path.to_owned()).or_default() += 1;
    }
    let got: BTreeMap<String, i64> = breakdown["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap_or("").to_owned(),
                v["events"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(got, clicks, "{breakdown}");

    // conversion: page view then purchase, both matching
    let filter = "plan!=team";
    let conversion = ok(
        &p,
        &format!(
            "{base}/conversion?start_event=page_view&end_event=purchase&{range}&filter={}",
            query_value(filter)
        ),
    )
    .await;
    let kept = |e: &&Sent| e.plan != Some("team");
    let viewers: BTreeSet<&str> = sent
        .iter()
        .filter(kept)
        .filter(|e| e.event_type == "page_view")
        .map(|e| e.user.as_str())
        .collect();
    let buyers: BTreeSet<&str> = sent
        .iter()
        .filter(kept)
        .filter(|e| e.event_type == "purchase")
        .map(|e| e.user.as_str())
        .collect();
    assert_eq!(conversion["start_users"], viewers.len(), "{conversion}");
    assert_eq!(
        conversion["converted_users"],
        viewers.intersection(&buyers).count(),
        "{conversion}"
    );

    // refusals name the field
    for (path, field) in [
        (
            format!("{base}/counts?filter={}", query_value("$nope==1")),
            "filter",
        ),
        (
            format!("{base}/counts?filter={}", query_value("plan")),
            "filter",
        ),
        (
            format!(
                "{base}/pages/hot?source=redis&filter={}",
                query_value("plan==pro")
            ),
            "source",
        ),
    ] {
        let (status, body) = p.get(&path).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some(field)),
            "{path}: {body}"
        );
    }
}
