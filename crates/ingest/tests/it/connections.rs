//! What bounds a client's use of the gateway's connections (`[connections]`), proven with raw
//! TCP clients against the real app: a body sent too slowly gets 408 with a JSON body, a
//! connection that never completes its head gets 408 and is closed, open connections are
//! counted, the connection cap makes further clients wait, and `/metrics` can move to a
//! listener of its own.
//!
//! Timeouts here are functional: each bound is set small and the answer must come within
//! several times it (the machine is shared), never asserted as performance.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic as test failures

use std::time::{Duration, Instant};

use crate::support::TestGateway;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one answer may take before the test gives up: far above every bound set here.
const PATIENCE: Duration = Duration::from_secs(20);

/// An HTTP/1.1 response as read off a raw socket.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (head, then `content-length` bytes of body). Panics when none arrives
/// within [`PATIENCE`].
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> RawResponse {
    let mut buffer = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(response) = parse_response(&buffer) {
                return response;
            }
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            assert!(
                n > 0,
                "the connection closed before a complete response: {:?}",
                String::from_utf8_lossy(&buffer)
            );
            buffer.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .unwrap_or_else(|_| panic!("no response within {PATIENCE:?}"))
}

fn parse_response(buffer: &[u8]) -> Option<RawResponse> {
    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buffer[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let body = buffer.get(end + 4..end + 4 + length)?.to_vec();
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

/// Whether the server closed the connection: reads until EOF (whatever else arrives is
/// discarded); false when it is still open after [`PATIENCE`].
async fn closed_by_server(stream: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut sink = [0u8; 1024];
    let eof = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, eof).await.is_ok()
}

/// Sums the samples of `name` whose labels include every one of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum()
}

async fn scrape(gateway: &TestGateway, base: &str) -> String {
    let response = gateway
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Scrapes `/metrics` at `base` until `done` holds for `name`'s value; panics with the last
/// value after [`PATIENCE`].
async fn wait_for_metric(
    gateway: &TestGateway,
    base: &str,
    name: &str,
    done: impl Fn(f64) -> bool,
    what: &str,
) -> f64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = metric(&scrape(gateway, base).await, name, &[]);
        if done(value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{name} = {value} after {PATIENCE:?}; expected {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(gateway: &TestGateway) -> TcpStream {
    TcpStream::connect(("127.0.0.1", gateway.port))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_too_slowly_is_answered_408_with_json_and_counted() {
    const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);
    let gateway = TestGateway::spawn(|s| {
        s.connections.request_timeout_ms = REQUEST_TIMEOUT.as_millis().try_into().unwrap();
        s.kafka.delivery_timeout_ms = 1000;
    })
    .await;
    let mut stream = connect(&gateway).await;
    let started = Instant::now();
    stream
        .write_all(
            b"POST /api/v1/events HTTP/1.1\r\nHost: ingest.test\r\n\
              Origin: https://shop.example\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // 10 bytes a second: the whole body would take 100 s.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b"          ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let response = read_response(&mut reader).await;
    let elapsed = started.elapsed();
    assert!(
        closed_by_server(&mut reader).await,
        "the connection stays open after the 408"
    );
    trickle.abort();

    assert_eq!(response.status, 408, "{response:?}");
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["error"], "request_timeout", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("connections.request_timeout_ms"),
        "{body}"
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://shop.example"),
        "a browser script can read the 408: {response:?}"
    );
    assert_eq!(
        response.header("connection"),
        Some("close"),
        "the rest of the body is never read: {response:?}"
    );
    // Not before the deadline (it is the deadline that answered), and within several times it.
    assert!(
        elapsed >= REQUEST_TIMEOUT - Duration::from_millis(50),
        "{elapsed:?}"
    );
    assert!(elapsed < REQUEST_TIMEOUT * 6, "{elapsed:?}");

    let metrics = scrape(&gateway, &gateway.address).await;
    assert_eq!(
        metric(&metrics, "ingest_http_requests_timed_out_total", &[]),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "ingest_http_requests_total",
            &[("route", "/api/v1/events"), ("status", "408")]
        ),
        1.0,
        "the 408 is in the request metrics: {metrics}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_complete_head_is_answered_408_and_closed() {
    const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);
    let gateway = TestGateway::spawn(|s| {
        s.connections.header_timeout_ms = HEADER_TIMEOUT.as_millis().try_into().unwrap();
    })
    .await;
    let started = Instant::now();
    let mut silent = connect(&gateway).await;
    let mut partial = connect(&gateway).await;
    partial
        .write_all(b"POST /api/v1/events HTTP/1.1\r\nHost: ingest.test\r\nContent-Ty")
        .await
        .unwrap();

    // Other clients are served meanwhile.
    let health = gateway
        .http
        .get(gateway.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    for (name, stream) in [("silent", &mut silent), ("partial head", &mut partial)] {
        let response = read_response(stream).await;
        let elapsed = started.elapsed();
        assert_eq!(response.status, 408, "{name}: {response:?}");
        assert!(
            closed_by_server(stream).await,
            "{name}: the connection stays open after its 408"
        );
        assert!(
            elapsed >= HEADER_TIMEOUT - Duration::from_millis(50),
            "{name}: {elapsed:?}"
        );
        assert!(elapsed < HEADER_TIMEOUT * 8, "{name}: {elapsed:?}");
    }
    // Both are counted as connections that never brought a request; the ones that carried
    // /health and the scrapes are not.
    let counted = wait_for_metric(
        &gateway,
        &gateway.address,
        "ingest_http_connections_without_request_total",
        |n| n >= 2.0,
        "the silent and the partial connection",
    )
    .await;
    assert_eq!(counted, 2.0);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_counted_until_they_close() {
    const CONNECTIONS: usize = 6;
    let gateway = TestGateway::spawn(|s| {
        // Idle connections stay open for the whole test; /metrics is read on its own
        // listener, whose connections are not counted.
        s.connections.header_timeout_ms = 120_000;
        s.http.metrics_listen = "127.0.0.1:0".to_owned();
    })
    .await;
    let metrics = gateway.metrics_address.clone().unwrap();
    let gauge = "ingest_http_connections_open";
    wait_for_metric(
        &gateway,
        &metrics,
        gauge,
        |v| v == 0.0,
        "0 before any client",
    )
    .await;

    let mut streams = Vec::new();
    for _ in 0..CONNECTIONS {
        streams.push(connect(&gateway).await);
    }
    let open = wait_for_metric(
        &gateway,
        &metrics,
        gauge,
        |v| v >= CONNECTIONS as f64,
        "every raw connection counted",
    )
    .await;
    assert_eq!(open, CONNECTIONS as f64);
    let max = metric(
        &scrape(&gateway, &metrics).await,
        "ingest_http_connections_max",
        &[],
    );
    assert_eq!(max, 10_000.0);

    drop(streams);
    wait_for_metric(
        &gateway,
        &metrics,
        gauge,
        |v| v == 0.0,
        "0 once the clients closed their connections",
    )
    .await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_metrics_on_its_own_port_and_404_on_the_main_one() {
    let gateway = TestGateway::spawn(|s| s.http.metrics_listen = "127.0.0.1:0".to_owned()).await;
    let metrics = gateway
        .metrics_address
        .clone()
        .expect("Application::metrics_port is set when http.metrics_listen is");
    assert_ne!(metrics, gateway.address);

    let text = scrape(&gateway, &metrics).await;
    for name in [
        "ingest_http_connections_open",
        "ingest_http_connections_max",
        "ingest_http_requests_timed_out_total",
        "ingest_events_accepted_total",
        // The process collector: memory per instance on the operators' dashboard.
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from {text}");
    }

    let main = gateway
        .http
        .get(gateway.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), 404);
    let body: Value = main.json().await.unwrap();
    assert_eq!(body["error"], "not_found", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("http.metrics_listen"),
        "{body}"
    );
    // The main port's other routes are unaffected, and the metrics port serves nothing else.
    let health = gateway
        .http
        .get(gateway.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let elsewhere = gateway
        .http
        .get(format!("{metrics}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
    // The request to the main port's /metrics is counted like any other.
    let text = scrape(&gateway, &metrics).await;
    assert_eq!(
        metric(
            &text,
            "ingest_http_requests_total",
            &[("route", "/metrics"), ("status", "404")]
        ),
        1.0,
        "{text}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_cap_waits_until_one_closes() {
    const CAP: usize = 4;
    let gateway = TestGateway::spawn(|s| {
        s.http.workers = 1;
        s.connections.max_connections = CAP;
        s.connections.header_timeout_ms = 120_000;
        s.http.metrics_listen = "127.0.0.1:0".to_owned();
    })
    .await;
    let metrics = gateway.metrics_address.clone().unwrap();
    let gauge = "ingest_http_connections_open";

    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(connect(&gateway).await);
    }
    wait_for_metric(
        &gateway,
        &metrics,
        gauge,
        |v| v == CAP as f64,
        "the cap reached",
    )
    .await;

    // The kernel completes the handshake (the accept queue), but the gateway does not accept
    // the connection while the cap is reached: the request is not read.
    let mut waiting = connect(&gateway).await;
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nHost: ingest.test\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_secs(2), waiting.read(&mut first)).await;
    assert!(early.is_err(), "answered beyond the cap: {early:?}");
    let text = scrape(&gateway, &metrics).await;
    assert_eq!(metric(&text, gauge, &[]), CAP as f64, "{text}");

    // One client leaves: the waiting connection is accepted and served.
    drop(held.pop());
    let response = read_response(&mut waiting).await;
    assert_eq!(response.status, 200, "{response:?}");
    // Open connections would hold the graceful stop for its whole timeout.
    drop((held, waiting));
    gateway.stop().await;
}
