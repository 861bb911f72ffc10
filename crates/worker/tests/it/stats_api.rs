//! Every stats endpoint against the real pipeline: auth, bad parameters, funnels CRUD, the
//! dashboard's ETag and the live stream.

use crate::support;

use std::time::Duration;

use crate::stats_support::{
    get_with, ingest, ok, pipeline_with_keys, query_value, send, wait_applied,
};
use crate::support::TestPipeline;
use serde_json::json;

fn shop_events() -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    for (n, user) in ["u1", "u2", "u3"].iter().enumerate() {
        let session = format!("s-{user}");
        events.push(json!({"event_id": format!("pv-{user}"), "event_type": "page_view", "user_id": user,
            "session_id": session, "page": {"url": "https://shop.example/pricing", "title": "Pricing"}}));
        events.push(
            json!({"event_id": format!("cl-{user}"), "event_type": "click", "user_id": user,
            "session_id": session, "page": {"url": "https://shop.example/pricing"},
            "element": {"selector": "#buy", "text": "Buy", "x": 10 + n * 60, "y": 20}}),
        );
        events.push(
            json!({"event_id": format!("pr-{user}"), "event_type": "product_view", "user_id": user,
            "session_id": session, "properties": {"sku": "A1"}}),
        );
        if n < 2 {
            events.push(
                json!({"event_id": format!("ca-{user}"), "event_type": "cart_add", "user_id": user,
                "session_id": session, "properties": {"sku": "A1"}}),
            );
        }
        if n == 0 {
            events.push(
                json!({"event_id": format!("pu-{user}"), "event_type": "purchase", "user_id": user,
                "session_id": session, "properties": {"currency": "EUR", "amount": 10},
                "user_properties": {"plan": "pro"}}),
            );
        }
    }
    events
}

async fn shop() -> TestPipeline {
    let pipeline = TestPipeline::start().await;
    let events = shop_events();
    ingest(&pipeline, &events).await;
    wait_applied(&pipeline, events.len() as u64).await;
    pipeline
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_from_live_data() {
    let p = shop().await;
    for prefix in ["/api/v1", "/api/v1/projects/default"] {
        let q = if prefix == "/api/v1" {
            "project=default&"
        } else {
            ""
        };
        let online = ok(&p, &format!("{prefix}/online?{q}seconds=600")).await;
        assert_eq!(online["online_users"], 3, "{online}");
        let summary = ok(&p, &format!("{prefix}/summary?{q}compare=previous")).await;
        assert_eq!(
            summary["figures"],
            json!({"events": 12, "page_views": 3, "unique_users": 3, "sessions": 3}),
            "{summary}"
        );
        assert_eq!(summary["previous"]["figures"]["events"], 0, "{summary}");
        let counts = ok(&p, &format!("{prefix}/counts?{q}")).await;
        assert_eq!(
            counts["counts"],
            json!({"page_view": 3, "click": 3, "product_view": 3, "cart_add": 2, "purchase": 1}),
            "{counts}"
        );
    }
    let reference = ok(&p, "/api/v1/events/cart_add/count?project=default").await;
    assert_eq!(reference["count"], 2, "{reference}");
    let overall = ok(&p, "/api/v1/stats/?project=default").await;
    assert_eq!(overall["total_events"], 12, "{overall}");
    let one = ok(&p, "/api/v1/stats/click?project=default").await;
    assert_eq!(
        (
            one["total"].as_u64(),
            one["last_60_minutes"].as_u64(),
            one["last_24_hours"].as_u64()
        ),
        (Some(3), Some(3), Some(3)),
        "{one}"
    );

    let first = ok(
        &p,
        "/api/v1/events?project=default&event_type=click&limit=2",
    )
    .await;
    assert_eq!(first["events"].as_array().map(Vec::len), Some(2), "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let second = ok(
        &p,
        &format!("/api/v1/events?project=default&event_type=click&limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(
        second["events"].as_array().map(Vec::len),
        Some(1),
        "{second}"
    );
    assert!(second["next_cursor"].is_null());

    let series = ok(
        &p,
        "/api/v1/timeseries?project=default&bucket=minute&types=click,page_view&tz=Asia/Kolkata",
    )
    .await;
    let buckets = series["buckets"].as_array().expect("buckets");
    assert!(buckets.len() >= 60, "zero buckets are listed: {series}");
    let clicks: i64 = buckets
        .iter()
        .map(|b| b["counts"]["click"].as_i64().unwrap_or(-1))
        .sum();
    assert_eq!(clicks, 3, "{series}");
    assert!(
        buckets[0]["start"]
            .as_str()
            .is_some_and(|s| s.ends_with("+05:30")),
        "{series}"
    );

    for source in ["redis", "mysql"] {
        let hot = ok(
            &p,
            &format!("/api/v1/pages/hot?project=default&source={source}"),
        )
        .await;
        assert_eq!(
            hot["pages"],
            json!([{"path": "/pricing", "views": 3}]),
            "{hot}"
        );
    }
    let breakdown = ok(
        &p,
        "/api/v1/breakdown?project=default&event_type=product_view&by=sku&by2=$page_path",
    )
    .await;
    assert_eq!(
        breakdown["values"],
        json!([{"value": "A1", "value2": null, "events": 3, "unique_users": 3}]),
        "{breakdown}"
    );
    let heatmap = ok(&p, "/api/v1/heatmap?project=default&page=/pricing&cell=100").await;
    assert_eq!(
        heatmap["elements"],
        json!([{"selector": "#buy", "text": "Buy", "clicks": 3, "unique_users": 3}]),
        "{heatmap}"
    );
    assert_eq!(
        heatmap["grid"]["cells"],
        json!([{"x": 0, "y": 0, "clicks": 2}, {"x": 1, "y": 0, "clicks": 1}]),
        "{heatmap}"
    );
    let conversion = ok(
        &p,
        "/api/v1/conversion?project=default&start_event=product_view&end_event=cart_add",
    )
    .await;
    assert_eq!(
        (
            conversion["start_users"].as_u64(),
            conversion["converted_users"].as_u64()
        ),
        (Some(3), Some(2)),
        "{conversion}"
    );

    let user = ok(&p, "/api/v1/users/u1?project=default").await;
    assert_eq!(user["total_events"], 5, "{user}");
    assert_eq!(user["total_sessions"], 1, "{user}");
    assert_eq!(user["properties"], json!({"plan": "pro"}), "{user}");
    let path = ok(&p, "/api/v1/users/u1/events?project=default&limit=10").await;
    let types: Vec<&str> = path["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert_eq!(types.len(), 5, "{path}");
    let (status, _) = p.get("/api/v1/users/nobody?project=default").await;
    assert_eq!(status, 404);
    // The same user with the project in the path: the user is the last segment.
    let in_path = ok(&p, "/api/v1/projects/default/users/u1").await;
    assert_eq!(in_path["total_events"], 5, "{in_path}");
    let events_in_path = ok(&p, "/api/v1/projects/default/users/u1/events?limit=10").await;
    assert_eq!(
        events_in_path["events"].as_array().map(Vec::len),
        Some(5),
        "{events_in_path}"
    );

    let analysis = ok(&p, "/api/v1/funnels/purchase/analysis?project=default").await;
    let users: Vec<u64> = analysis["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["users"].as_u64())
        .collect();
    assert_eq!(users, vec![3, 3, 2, 1], "{analysis}");
    assert_eq!(analysis["steps"][2]["drop_off"], 1, "{analysis}");

    let doc = p
        .http
        .get(format!("{}/openapi.json", p.worker.address))
        .send()
        .await
        .expect("openapi");
    let doc: serde_json::Value = doc.json().await.expect("openapi json");
    assert!(
        doc["paths"]["/api/v1/projects/{project}/funnels/{funnel}/analysis"]["get"].is_object()
    );
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_authenticate_scope_and_rate_limit() {
    let p = pipeline_with_keys(
        &[
            "sk_default_reader=default",
            "sk_other_reader_01=other",
            "sk_slow_reader_0001=default",
            "sk_default_admin_1=default:admin",
            "sk_default_reader_2=default",
        ],
        1,
        2,
    )
    .await;
    let path = "/api/v1/projects/default/online";
    let missing = get_with(&p, path, None, &[]).await;
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert_eq!(missing.body["field"], "authorization");
    let wrong = get_with(&p, path, Some("sk_not_a_key_at_all"), &[]).await;
    assert_eq!(wrong.status, 401);
    let scoped = get_with(&p, path, Some("sk_other_reader_01"), &[]).await;
    assert_eq!(scoped.status, 403, "{}", scoped.body);
    assert_eq!(scoped.body["field"], "project");
    let fine = get_with(&p, path, Some("sk_default_reader"), &[]).await;
    assert_eq!(fine.status, 200, "{}", fine.body);
    // The key's only project is implied when the request names none.
    let implied = get_with(&p, "/api/v1/online", Some("sk_default_reader"), &[]).await;
    assert_eq!(implied.body["project"], "default", "{}", implied.body);

    let mut limited = None;
    for _ in 0..10 {
        let answer = get_with(&p, path, Some("sk_slow_reader_0001"), &[]).await;
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
    }
    let limited = limited.expect("a burst of 2 at 1/s is limited within 10 requests");
    assert!(limited.headers.get("retry-after").is_some());
    assert_eq!(limited.body["error"], "rate_limited");
    // Another key is not affected.
    let other = get_with(
        &p,
        "/api/v1/projects/other/online",
        Some("sk_other_reader_01"),
        &[],
    )
    .await;
    assert_eq!(other.status, 200, "{}", other.body);

    // Funnel writes need the admin scope; reading them does not.
    let funnel = json!({"name": "scoped", "steps": [{"event_type": "page_view"}, {"event_type": "purchase"}]});
    let post = |key: &'static str| {
        p.http
            .post(format!(
                "{}/api/v1/projects/default/funnels",
                p.worker.address
            ))
            .bearer_auth(key)
            .json(&funnel)
            .send()
    };
    // (A key of its own: the first reader spent its burst above.)
    let refused = post("sk_default_reader_2").await.expect("worker answered");
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["field"], "authorization", "{body}");
    let created = post("sk_default_admin_1").await.expect("worker answered");
    assert_eq!(created.status(), 201);
    let listed = get_with(
        &p,
        "/api/v1/projects/default/funnels",
        Some("sk_default_reader_2"),
        &[],
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(
        listed.body.to_string().contains("scoped"),
        "{}",
        listed.body
    );

    // Missing and wrong keys were counted; the rate-limited request too.
    for series in [
        r#"worker_stats_auth_failures_total{reason="missing"} "#,
        r#"worker_stats_auth_failures_total{reason="unknown"} "#,
        r#"worker_stats_refused_total{limit="key_rate"} "#,
    ] {
        let counted = support::counts::metric(&p.worker.address, series).await;
        assert_eq!(counted, Some(1.0), "{series}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_guessing_keys_is_locked_out() {
    let target = support::WorkerTarget::create().await;
    let mut settings = support::worker_settings(&target);
    settings.stats.api_keys = vec!["sk_the_real_key_0001=default".to_owned()];
    settings.stats.failed_auth_per_minute = 5;
    let worker = support::spawn_worker_with(settings, insightflow_worker::Role::Serve).await;
    let http = reqwest::Client::new();
    let get = |key: String| {
        http.get(format!("{}/api/v1/projects/default/online", worker.address))
            .bearer_auth(key)
            .send()
    };
    for n in 0..5 {
        let guess = get(format!("sk_guess_number_{n:04}")).await.unwrap();
        assert_eq!(guess.status(), 401);
    }
    // Locked out, even with the right key: a guess that hits is not even looked at.
    let locked = get("sk_the_real_key_0001".to_owned()).await.unwrap();
    assert_eq!(locked.status(), 429);
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = locked.json().await.unwrap();
    assert_eq!(body["field"], "authorization", "{body}");
    assert_eq!(body["error"], "too_many_failed_authentications", "{body}");
    // The lock-out refills at 5 a minute: one failure's worth is back within 12 s.
    tokio::time::sleep(std::time::Duration::from_secs(13)).await;
    let back = get("sk_the_real_key_0001".to_owned()).await.unwrap();
    assert_eq!(back.status(), 200);
    worker.stop().await;
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_get_a_clear_400() {
    let p = TestPipeline::start().await;
    let cases = [
        ("/api/v1/timeseries?tz=Mars/Olympus", "tz"),
        ("/api/v1/summary?from=2026-11-10&to=2026-11-01", "from"),
        ("/api/v1/summary?from=not-a-time", "from"),
        ("/api/v1/counts?from=2020-01-01&to=2026-01-01", "to"),
        ("/api/v1/events?event_type=click&limit=100000", "limit"),
        ("/api/v1/pages/hot?limit=0", "limit"),
        ("/api/v1/online?seconds=3600", "seconds"),
        ("/api/v1/timeseries?bucket=week", "bucket"),
        (
            "/api/v1/timeseries?bucket=minute&from=2026-01-01&to=2026-03-01",
            "bucket",
        ),
        ("/api/v1/funnels/purchase/analysis?mode=loose", "mode"),
        ("/api/v1/breakdown?event_type=click&by=a%20b", "by"),
        ("/api/v1/breakdown?event_type=click", "by"),
        ("/api/v1/events", "event_type"),
        ("/api/v1/counts?types=%21%21%21", "types"),
        ("/api/v1/heatmap", "page"),
        ("/api/v1/conversion?start_event=a", "end_event"),
        ("/api/v1/users/u1/events?cursor=zzz", "cursor"),
        ("/api/v1/online?project=Bad%20Project", "project"),
        ("/api/v1/summary?compare=sideways", "compare"),
    ];
    // An unknown funnel is not a bad parameter but a missing resource.
    for path in [
        "/api/v1/funnels/no_such_funnel/analysis",
        "/api/v1/funnels/424242",
    ] {
        let (status, body) = p.get(path).await;
        assert_eq!(status, 404, "GET {path}: {body}");
        assert_eq!(body["error"], "not_found", "GET {path}: {body}");
        assert_eq!(body["field"], "funnel", "GET {path}: {body}");
    }
    for (path, field) in cases {
        let (status, body) = p.get(path).await;
        assert_eq!(status, 400, "GET {path}: {body}");
        assert_eq!(body["error"], "invalid_parameter", "GET {path}: {body}");
        assert_eq!(body["field"], field, "GET {path}: {body}");
        assert!(
            body["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "GET {path}: {body}"
        );
    }
    let (status, body) = send(
        &p,
        reqwest::Method::POST,
        "/api/v1/funnels",
        Some(&json!({"name": "x", "steps": [{"event_type": "page_view"}]})),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("steps")),
        "{body}"
    );
    let (status, body) = send(&p, reqwest::Method::POST, "/api/v1/funnels", Some(&json!({"name": "x", "steps": [{"event_type": "a"}, {"event_type": "b"}], "window_seconds": 0}))).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("window_seconds")),
        "{body}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funnels_are_created_read_updated_and_deleted() {
    let p = shop().await;
    let definition = json!({"name": "checkout", "window_seconds": 3600, "order_mode": "strict",
        "steps": [{"event_type": "product_view"}, {"event_type": "cart_add"},
                  {"event_type": "purchase", "property": "currency", "value": "EUR"}]});
    let (status, created) = send(
        &p,
        reqwest::Method::POST,
        "/api/v1/funnels",
        Some(&definition),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().expect("id");
    let (status, dup) = send(
        &p,
        reqwest::Method::POST,
        "/api/v1/funnels",
        Some(&definition),
    )
    .await;
    assert_eq!(
        (status, dup["field"].as_str()),
        (400, Some("name")),
        "{dup}"
    );
    let listed = ok(&p, "/api/v1/funnels").await;
    assert_eq!(
        listed["funnels"].as_array().map(Vec::len),
        Some(2),
        "the seeded one and ours: {listed}"
    );
    let by_name = ok(&p, "/api/v1/funnels/checkout").await;
    assert_eq!(by_name["id"], id);

    let strict = ok(&p, "/api/v1/funnels/checkout/analysis").await;
    let users: Vec<u64> = strict["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["users"].as_u64())
        .collect();
    assert_eq!(users, vec![3, 2, 1], "{strict}");

    let mut changed = definition.clone();
    changed["steps"][2]["value"] = json!("USD");
    let (status, updated) = send(
        &p,
        reqwest::Method::PUT,
        &format!("/api/v1/funnels/{id}"),
        Some(&changed),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    let after = ok(&p, &format!("/api/v1/funnels/{id}/analysis?mode=ordered")).await;
    assert_eq!(after["steps"][2]["users"], 0, "{after}");
    assert_eq!(after["mode"], "ordered");

    let (status, _) = send(
        &p,
        reqwest::Method::DELETE,
        &format!("/api/v1/funnels/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, gone) = p.get(&format!("/api/v1/funnels/{id}")).await;
    assert_eq!(
        (status, gone["field"].as_str()),
        (404, Some("funnel")),
        "{gone}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_dashboard_costs_a_304() {
    let p = shop().await;
    let path = "/api/v1/dashboard?project=default&tz=Europe/Paris";
    let first = get_with(&p, path, None, &[]).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.body["summary"]["figures"]["events"], 12,
        "{}",
        first.body
    );
    assert_eq!(first.body["online"]["online_users"], 3);
    assert_eq!(first.body["hot_pages"]["pages"][0]["path"], "/pricing");
    assert_eq!(first.body["event_counts"]["total"], 12);
    let etag = first
        .headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("etag")
        .to_owned();

    // The ETag names the minute: retry until two requests fall in the same one.
    let not_modified = support::eventually(Duration::from_secs(130), "a 304", || {
        let p = &p;
        async move {
            let fresh = get_with(p, path, None, &[]).await;
            let tag = fresh
                .headers
                .get("etag")
                .and_then(|v| v.to_str().ok())?
                .to_owned();
            let again = get_with(p, path, None, &[("If-None-Match", &tag)]).await;
            (again.status == 304).then_some(tag)
        }
    })
    .await;
    assert!(!not_modified.is_empty());

    // Identical requests within a cache period share one computation: same generated_at.
    support::eventually(
        Duration::from_secs(10),
        "two requests sharing one answer",
        || {
            let p = &p;
            async move {
                let (a, b) =
                    tokio::join!(get_with(p, path, None, &[]), get_with(p, path, None, &[]));
                (a.status == 200 && a.body["generated_at"] == b.body["generated_at"]).then_some(())
            }
        },
    )
    .await;
    // The cache key is the parsed parameters: order, and parameters the endpoint does not
    // know (`&x=1`), do not bypass it.
    let respelled = "/api/v1/dashboard?tz=Europe/Paris&x=1&project=default";
    support::eventually(
        Duration::from_secs(10),
        "a respelled request sharing the answer",
        || {
            let p = &p;
            async move {
                let (a, b) = tokio::join!(
                    get_with(p, path, None, &[]),
                    get_with(p, respelled, None, &[])
                );
                (a.status == 200 && a.body["generated_at"] == b.body["generated_at"]).then_some(())
            }
        },
    )
    .await;

    // New data changes the ETag.
    ingest(&p, &[json!({"event_id": "late-pv", "event_type": "page_view", "user_id": "u9", "page": {"path": "/new"}})]).await;
    wait_applied(&p, 13).await;
    // Identical requests share one answer for a cache period (1 s by default): the new
    // event shows within it, with a new ETag.
    let changed = support::eventually(Duration::from_secs(5), "the new event", || {
        let (p, etag) = (&p, &etag);
        async move {
            let changed = get_with(p, path, None, &[("If-None-Match", etag)]).await;
            (changed.status == 200 && changed.body["summary"]["figures"]["events"] == 13)
                .then_some(changed)
        }
    })
    .await;
    assert_ne!(
        changed.headers.get("etag").and_then(|v| v.to_str().ok()),
        Some(etag.as_str())
    );
    assert!(changed.body["generated_at"].is_string(), "{}", changed.body);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_pushes_updates_every_second() {
    let p = shop().await;
    let response = p
        .http
        .get(format!("{}/api/v1/projects/default/live", p.worker.address))
        .send()
        .await
        .expect("stream opened");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut response = response;
    let mut text = String::new();
    let updates = tokio::time::timeout(Duration::from_secs(30), async {
        while text.matches("event: stats\n").count() < 2 {
            let chunk = response.chunk().await.expect("chunk").expect("stream open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text.clone()
    })
    .await
    .expect("two updates within 30 s");
    let first_data = updates
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let update: serde_json::Value = serde_json::from_str(first_data).expect("JSON update");
    assert_eq!(update["online_users"], 3, "{update}");
    assert_eq!(update["counts"]["click"], 3, "{update}");
    assert!(update["as_of"]["applied_events"].as_u64() >= Some(12));
    drop(response);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_the_stats_api_refuses_to_start_unless_open_on_purpose() {
    let target = support::WorkerTarget::create().await;
    let build = |settings: insightflow_worker::Settings, role: insightflow_worker::Role| async move {
        insightflow_worker::Application::build_with_listener(
            settings,
            role,
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            prometheus::Registry::new(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
    };
    let mut closed = support::worker_settings(&target);
    closed.stats.allow_open = false;
    closed.stats.api_keys.clear();
    for role in [
        insightflow_worker::Role::All,
        insightflow_worker::Role::Serve,
    ] {
        let error = format!(
            "{:#}",
            build(closed.clone(), role)
                .await
                .err()
                .expect("no keys, not open on purpose: refused")
        );
        assert!(error.contains("WORKER__STATS__API_KEYS"), "{error}");
        assert!(error.contains("WORKER__STATS__ALLOW_OPEN=true"), "{error}");
    }
    // A consume-only worker serves no stats: no keys needed.
    let consumer = support::spawn_worker_with(closed, insightflow_worker::Role::Consume).await;
    consumer.stop().await;
    // Open on purpose: it starts, and /ready says so.
    let open = support::spawn_worker_with(
        support::worker_settings(&target),
        insightflow_worker::Role::Serve,
    )
    .await;
    let ready: serde_json::Value = reqwest::get(format!("{}/ready", open.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ready["stats_api"]
            .as_str()
            .is_some_and(|s| s.starts_with("open")),
        "{ready}"
    );
    open.stop().await;
    target.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_worker_needs_no_kafka() {
    let target = support::WorkerTarget::create().await;
    let mut settings = support::worker_settings(&target);
    // Nothing listens there: a consuming worker would not even start.
    settings.kafka.brokers = "127.0.0.1:1".to_owned();
    let worker = support::spawn_worker_with(settings, insightflow_worker::Role::Serve).await;
    let ready = reqwest::get(format!("{}/ready", worker.address))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["kafka"], serde_json::Value::Null, "{body}");
    assert_eq!(body["consumer"], serde_json::Value::Null, "{body}");
    let online = reqwest::get(format!("{}/api/v1/projects/default/online", worker.address))
        .await
        .unwrap();
    assert_eq!(online.status(), 200);
    worker.stop().await;
    target.cleanup().await;
}

/// Unique-user estimates (Redis HyperLogLog) against the users actually sent: 1,200 users this
/// hour, 500 the hour before, 300 of them in both. Each figure must be within three standard
/// errors of the exact count computed here, the range's figure is the union (1,400), not the
/// sum, and every answer says it is an estimate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_user_estimates_are_within_their_error_and_say_so() {
    use chrono::{Duration as Span, Timelike, Utc};
    use std::collections::BTreeSet;

    let p = TestPipeline::start().await;
    let now = Utc::now();
    let this_hour = now.with_minute(0).and_then(|t| t.with_second(0)).unwrap();
    // Inside the current hour and the previous one, never in the future.
    let earlier = this_hour - Span::minutes(30);
    let current = this_hour + (now - this_hour) / 2;
    let mut events = Vec::new();
    let mut hours: [BTreeSet<String>; 2] = Default::default();
    for n in 0..1_400 {
        let user = format!("hll-user-{n}");
        // users 0..1200 this hour, 900..1400 the hour before: 300 in both
        for (slot, (range, at)) in [(0..1_200, current), (900..1_400, earlier)]
            .into_iter()
            .enumerate()
        {
            if range.contains(&n) {
                events.push(
                    json!({"event_id": format!("hll-{slot}-{n}"), "event_type": "click",
                    "user_id": user, "timestamp": at.to_rfc3339()}),
                );
                hours[slot].insert(user.clone());
            }
        }
    }
    ingest(&p, &events).await;
    wait_applied(&p, events.len() as u64).await;
    let exact_union = hours[0].union(&hours[1]).count() as f64;
    let close = |estimate: &serde_json::Value, exact: f64, what: &str| {
        let estimate = estimate
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: no number"));
        assert!(
            (estimate - exact).abs() <= 3.0 * 0.0081 * exact,
            "{what}: estimate {estimate} vs exact {exact}"
        );
    };

    let from = (this_hour - Span::hours(1)).to_rfc3339();
    let path = format!(
        "/api/v1/projects/default/unique-users?from={}&to={}",
        query_value(&from),
        query_value(&now.to_rfc3339())
    );
    let hourly = ok(&p, &path).await;
    assert_eq!(hourly["exact"], false, "{hourly}");
    assert_eq!(hourly["source"], "redis", "{hourly}");
    assert_eq!(hourly["estimate"]["standard_error"], 0.0081, "{hourly}");
    assert_eq!(hourly["bucket"], "hour", "{hourly}");
    close(&hourly["unique_users"], exact_union, "union over two hours");
    let series = hourly["series"].as_array().expect("series");
    assert_eq!(series.len(), 2, "{hourly}");
    close(
        &series[0]["unique_users"],
        hours[1].len() as f64,
        "previous hour",
    );
    close(
        &series[1]["unique_users"],
        hours[0].len() as f64,
        "this hour",
    );

    let daily = ok(&p, &format!("{path}&bucket=day")).await;
    assert_eq!(daily["bucket"], "day", "{daily}");
    close(&daily["unique_users"], exact_union, "union over the days");

    let (status, body) = p
        .get("/api/v1/projects/default/unique-users?bucket=minute")
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("bucket")),
        "{body}"
    );
    let old = (now - Span::days(9)).to_rfc3339();
    let (status, body) = p
        .get(&format!(
            "/api/v1/projects/default/unique-users?from={}",
            query_value(&old)
        ))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("from")),
        "{body}"
    );
}
