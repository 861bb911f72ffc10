//! `[privacy]` at the gateway: the client IP carried whole, truncated or not at all, and
//! requests carrying a honoured Global Privacy Control or Do-Not-Track signal answered without
//! their events reaching Kafka.

use crate::support::{read_topic, TestGateway};
use insightflow_ingest::privacy::IpPolicy;
use serde_json::{json, Value};

async fn send(gateway: &TestGateway, id: &str, headers: &[(&str, &str)]) -> Value {
    let mut request = gateway.http.post(gateway.url("/api/v1/events")).json(
        &json!({"events": [{"event_id": id, "event_type": "page_view", "anonymous_id": "a1"}]}),
    );
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the gateway answers");
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_ip_is_stored_as_the_policy_says() {
    for (policy, want) in [
        (IpPolicy::Full, Some("127.0.0.1")),
        (IpPolicy::Truncated, Some("127.0.0.0")),
        (IpPolicy::None, None),
    ] {
        let gateway = TestGateway::spawn(|s| s.privacy.ip = policy).await;
        let report = send(&gateway, "ip-1", &[]).await;
        assert_eq!(report["accepted"], 1, "{report}");
        let records = read_topic(&gateway.topic, 1).await;
        assert_eq!(
            records[0].payload["client"]["ip"].as_str(),
            want,
            "{policy:?}: {}",
            records[0].payload
        );
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honoured_privacy_signals_are_answered_without_collecting() {
    let gateway = TestGateway::spawn(|s| {
        s.privacy.honor_gpc = true;
        s.privacy.honor_dnt = true;
    })
    .await;
    for (id, header) in [("gpc-1", ("Sec-GPC", "1")), ("dnt-1", ("DNT", "1"))] {
        let report = send(&gateway, id, &[header]).await;
        assert_eq!(report["accepted"], 0, "{report}");
        assert_eq!(report["not_collected"], 1, "{report}");
    }
    // Signals off (DNT: 0) or not honoured: collected, and the report has no such field.
    let report = send(&gateway, "kept-1", &[("DNT", "0")]).await;
    assert_eq!(report["accepted"], 1, "{report}");
    assert!(report.get("not_collected").is_none(), "{report}");
    let records = read_topic(&gateway.topic, 1).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].payload["event_id"], "kept-1",
        "only the collected event"
    );
    let metrics = gateway
        .http
        .get(gateway.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for signal in ["gpc", "dnt"] {
        assert!(
            metrics.contains(&format!(
                "ingest_events_not_collected_total{{signal=\"{signal}\"}} 1"
            )),
            "{signal} counted"
        );
    }
    gateway.stop().await;

    let ignoring = TestGateway::spawn(|_| {}).await;
    let report = send(&ignoring, "gpc-ignored", &[("Sec-GPC", "1")]).await;
    assert_eq!(report["accepted"], 1, "not honoured by default: {report}");
    ignoring.stop().await;
}
