//! HTTP load on the gateway, and the drivers every timed load here uses: a closed loop of N
//! concurrent clients (saturation) or an open loop at a fixed rate, whose latencies count from
//! the intended send time so a stalled server cannot hide its queueing (coordinated omission).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use clap::Args;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::json;

use crate::events::EventGenerator;
use crate::measure::{Latencies, OutputArgs};

#[derive(Args, Debug)]
pub struct HttpArgs {
    /// The gateway's event endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080/api/v1/events")]
    pub url: String,
    /// Events per request.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Send bodies gzip-compressed (Content-Encoding: gzip), compressed ahead of time.
    #[arg(long)]
    pub gzip: bool,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Distinct request bodies prepared before the run and sent in turn.
    #[arg(long, default_value_t = 512)]
    pub bodies: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Distinct users the events are spread over.
    #[arg(long, default_value_t = 20_000)]
    pub users: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How hard and how long to push.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Requests per second; 0 = saturation (closed loop of --concurrency clients).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Concurrent clients in saturation mode; the in-flight cap at a fixed rate.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts (counted for acknowledgements, not timed).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
}

/// What one operation did.
pub struct OpResult {
    /// HTTP status, or 0 when the request failed before an answer.
    pub status: u16,
    /// Events the server acknowledged.
    pub events: u64,
}

#[derive(Default)]
pub struct DriveOutcome {
    pub latencies: Option<Latencies>,
    pub ok: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Events acknowledged within the measured window.
    pub measured_events: u64,
    /// Events acknowledged in total, warm-up included (what the stores must hold).
    pub acknowledged_events: u64,
    pub measured_seconds: f64,
    /// Fixed rate only: sends skipped because --concurrency requests were already in flight.
    pub skipped: u64,
}

impl DriveOutcome {
    pub fn fields(&self) -> serde_json::Value {
        let requests: u64 = self.by_status.values().sum();
        let mut fields = json!({
            "requests": requests,
            "ok": self.ok,
            "by_status": self.by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "acknowledged_events": self.acknowledged_events,
            "measured_seconds": self.measured_seconds,
            "events_per_s": self.measured_events as f64 / self.measured_seconds.max(1e-9),
            "skipped": self.skipped,
        });
        if let Some(l) = &self.latencies {
            fields["latency"] = l.summary();
            fields["requests_per_s"] = json!(l.count() as f64 / self.measured_seconds.max(1e-9));
        }
        fields
    }
}

#[derive(Default)]
struct Tally {
    latencies: Option<Latencies>,
    ok: u64,
    by_status: BTreeMap<u16, u64>,
    measured_events: u64,
    acknowledged_events: u64,
}

impl Tally {
    fn add(&mut self, result: &OpResult, latency: Duration, measured: bool) {
        *self.by_status.entry(result.status).or_default() += 1;
        let ok = (200..300).contains(&result.status);
        if ok {
            self.ok += 1;
            self.acknowledged_events += result.events;
        }
        if measured {
            self.latencies
                .get_or_insert_with(Latencies::new)
                .record(latency);
            if ok {
                self.measured_events += result.events;
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        if let Some(l) = other.latencies {
            self.latencies.get_or_insert_with(Latencies::new).merge(&l);
        }
        self.ok += other.ok;
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        self.measured_events += other.measured_events;
        self.acknowledged_events += other.acknowledged_events;
    }
}

/// Runs `op(sequence number)` under the load described by `load`.
pub async fn drive<F, Fut>(load: &LoadArgs, op: F) -> DriveOutcome
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = OpResult> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(load.warmup);
    let end = measure_from + Duration::from_secs_f64(load.duration);
    let sequence = Arc::new(AtomicU64::new(0));
    let mut total = Tally::default();
    let mut skipped = 0;
    if load.rate <= 0.0 {
        let mut clients = Vec::new();
        for _ in 0..load.concurrency.max(1) {
            let (op, sequence) = (op.clone(), sequence.clone());
            clients.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        return tally;
                    }
                    let result = op(sequence.fetch_add(1, Ordering::Relaxed)).await;
                    tally.add(&result, sent.elapsed(), sent >= measure_from);
                }
            }));
        }
        for client in clients {
            if let Ok(tally) = client.await {
                total.merge(tally);
            }
        }
    } else {
        let shared = Arc::new(Mutex::new(Tally::default()));
        let in_flight = Arc::new(tokio::sync::Semaphore::new(load.concurrency.max(1)));
        let interval = Duration::from_secs_f64(1.0 / load.rate);
        let mut tasks = Vec::new();
        let mut n: u32 = 0;
        loop {
            let intended = start + interval * n;
            n += 1;
            if intended >= end {
                break;
            }
            tokio::time::sleep_until(intended.into()).await;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                skipped += 1;
                continue;
            };
            let (op, shared) = (op.clone(), shared.clone());
            let seq = sequence.fetch_add(1, Ordering::Relaxed);
            tasks.push(tokio::spawn(async move {
                let result = op(seq).await;
                let latency = intended.elapsed();
                if let Ok(mut tally) = shared.lock() {
                    tally.add(&result, latency, intended >= measure_from);
                }
                drop(permit);
            }));
            if tasks.len() > 4096 {
                tasks.retain(|t| !t.is_finished());
            }
        }
        for task in tasks {
            let _ = task.await;
        }
        let taken = shared.lock().map(|mut t| std::mem::take(&mut *t));
        if let Ok(tally) = taken {
            total = tally;
        }
    }
    DriveOutcome {
        latencies: total.latencies,
        ok: total.ok,
        by_status: total.by_status,
        measured_events: total.measured_events,
        acknowledged_events: total.acknowledged_events,
        measured_seconds: load.duration,
        skipped,
    }
}

pub fn http_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(1))
        .timeout(Duration::from_secs(30))
        .user_agent("insightflow-loadgen/0.1")
        .build()?)
}

/// Posts one body; the acknowledged count is the response's `accepted`.
pub async fn post_events(client: &reqwest::Client, url: &str, body: Bytes, gzip: bool) -> OpResult {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let events = match response.json::<serde_json::Value>().await {
                Ok(v) => v["accepted"].as_u64().unwrap_or(0),
                Err(_) => 0,
            };
            OpResult { status, events }
        }
        Err(_) => OpResult {
            status: 0,
            events: 0,
        },
    }
}

pub fn gzip(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::default());
    encoder.write_all(body)?;
    Ok(encoder.finish()?)
}

pub async fn run(args: HttpArgs) -> anyhow::Result<()> {
    let mut generator = EventGenerator::new(args.seed, args.users, false);
    let now = Utc::now();
    let mut plain_bytes = 0;
    let mut bodies = Vec::with_capacity(args.bodies);
    for _ in 0..args.bodies.max(1) {
        let body = generator.batch_body(args.batch, now);
        plain_bytes += body.len();
        bodies.push(Bytes::from(if args.gzip { gzip(&body)? } else { body }));
    }
    let wire_bytes: usize = bodies.iter().map(Bytes::len).sum();
    let bodies = Arc::new(bodies);
    let client = http_client(args.load.concurrency)?;
    let (url, gzip) = (Arc::new(args.url.clone()), args.gzip);
    let outcome = drive(&args.load, move |seq| {
        let (client, url, bodies) = (client.clone(), url.clone(), bodies.clone());
        async move {
            let body = bodies[(seq as usize) % bodies.len()].clone();
            post_events(&client, &url, body, gzip).await
        }
    })
    .await;
    let mut fields = outcome.fields();
    fields["batch"] = json!(args.batch);
    fields["gzip"] = json!(args.gzip);
    fields["rate"] = json!(args.load.rate);
    fields["concurrency"] = json!(args.load.concurrency);
    fields["event_bytes_avg"] =
        json!(plain_bytes as f64 / (args.bodies.max(1) * args.batch) as f64);
    fields["wire_bytes_per_request_avg"] = json!(wire_bytes as f64 / args.bodies.max(1) as f64);
    args.output.emit(fields)
}
