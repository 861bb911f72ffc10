//! The gateway answers 503 with Retry-After, promptly, when its Kafka broker goes away: never a
//! 2xx for events Kafka does not hold, never a hang.
//!
//! Runs a private Kafka broker (the one `make deps` runs) on a free port, so killing it
//! disturbs no other test.

// A test panics to fail: unwrapping in its helpers is how it reports.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use insightflow_ingest::{Application, Settings};
use insightflow_runtime::testing::PrivateKafka;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_503_promptly_when_kafka_is_down() {
    let broker = PrivateKafka::start();
    let mut settings = Settings::load().unwrap();
    settings.kafka.brokers = broker.brokers();
    settings.kafka.topic.name = "broker_down_events".to_owned();
    settings.kafka.delivery_timeout_ms = 2000;
    settings.http.workers = 1;
    settings.auth.allow_open = true;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let shutdown = CancellationToken::new();
    let app = Application::build_with_listener(
        settings,
        listener,
        prometheus::Registry::new(),
        shutdown.clone(),
    )
    .await
    .expect("gateway starts while the broker is up");
    let server = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let event = serde_json::json!({"event_type": "click", "user_id": "u1"});

    let up = http
        .post(format!("{address}/api/v1/events"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), 200, "while the broker is up");

    broker.kill();

    // Every answer from now on must be a 503 with Retry-After; the client's 15 s timeout turns
    // a hang into a failure. The first requests may wait out the 2 s delivery timeout; once the
    // broker probe notices, the gateway sheds at once.
    for attempt in 0..3 {
        let response = http
            .post(format!("{address}/api/v1/events"))
            .json(&event)
            .send()
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: the gateway did not answer: {e}"));
        assert_eq!(response.status(), 503, "attempt {attempt}");
        assert!(
            response.headers().contains_key("retry-after"),
            "attempt {attempt}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unavailable", "{body}");
    }
    // The broker probe declares an outage after two failed probes in a row (a single slow
    // answer is not an outage): /ready follows within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = http.get(format!("{address}/ready")).send().await.unwrap();
        if ready.status() == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready still reports ready 20 s into the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And once it has, requests are shed at once instead of waiting out the delivery timeout.
    let started = Instant::now();
    let shed = http
        .post(format!("{address}/api/v1/events"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(shed.status(), 503);
    let body: serde_json::Value = shed.json().await.unwrap();
    assert_eq!(
        body["reason"], "events could not be stored: broker_unavailable",
        "{body}"
    );
    eprintln!("shed in {:?}", started.elapsed());

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
