//! Stats API load at a fixed rate, and freshness (gateway 2xx -> visible in the stats API).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use clap::Args;
use serde_json::{json, Value};

use crate::events::EventGenerator;
use crate::http_load::{drive, http_client, post_events, LoadArgs, OpResult};
use crate::measure::{Latencies, OutputArgs};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The worker's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub base: String,
    /// `name=path` with `|`-separated alternatives tried in order; the first answering 2xx is
    /// measured. `{project}` is replaced by --project.
    #[arg(long = "endpoint")]
    pub endpoints: Vec<String>,
    /// Also look each name up in the worker's /openapi.json (GET paths containing the name).
    #[arg(long)]
    pub discover: bool,
    #[arg(long, default_value = "default")]
    pub project: String,
    /// Measure `/health` at the same rate first: the HTTP stack's floor, the ratio's baseline.
    #[arg(long)]
    pub health_baseline: bool,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn fill(path: &str, project: &str) -> String {
    let names_project = path.contains("{project");
    let path = path
        .replace("{project}", project)
        .replace("{project_id}", project);
    // Path parameters we cannot know (funnel ids ...) get the seeded default: 1.
    let mut out = String::new();
    let mut rest = path.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => {
                out.push('1');
                rest = &rest[open + close + 1..];
            }
            None => {
                rest = &rest[open..];
                break;
            }
        }
    }
    out.push_str(rest);
    if !out.contains("project=") && !names_project {
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str("project=");
        out.push_str(project);
    }
    out
}

/// GET paths of the worker's OpenAPI document whose path contains `name`.
async fn discover(client: &reqwest::Client, base: &str, name: &str) -> Vec<String> {
    let Ok(response) = client.get(format!("{base}/openapi.json")).send().await else {
        return Vec::new();
    };
    let Ok(doc) = response.json::<Value>().await else {
        return Vec::new();
    };
    let Some(paths) = doc["paths"].as_object() else {
        return Vec::new();
    };
    let needle = name.replace(['_', '-'], "");
    paths
        .iter()
        .filter(|(p, ops)| ops.get("get").is_some() && p.replace(['_', '-'], "").contains(&needle))
        .map(|(p, _)| p.clone())
        .collect()
}

pub async fn run_stats(args: StatsArgs) -> anyhow::Result<()> {
    let client = http_client(args.load.concurrency)?;
    let mut targets: Vec<(String, Vec<String>)> = Vec::new();
    if args.health_baseline {
        targets.push(("health".to_owned(), vec!["/health".to_owned()]));
    }
    for spec in &args.endpoints {
        let (name, paths) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--endpoint {spec:?} is not name=path"))?;
        let mut candidates: Vec<String> =
            paths.split('|').map(|p| fill(p, &args.project)).collect();
        if args.discover {
            for p in discover(&client, &args.base, name).await {
                let p = fill(&p, &args.project);
                if !candidates.contains(&p) {
                    candidates.push(p);
                }
            }
        }
        targets.push((name.to_owned(), candidates));
    }
    for (name, candidates) in targets {
        let mut chosen = None;
        let mut tried = Vec::new();
        for path in &candidates {
            match client.get(format!("{}{path}", args.base)).send().await {
                Ok(r) if r.status().is_success() => {
                    chosen = Some(path.clone());
                    break;
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: String = r
                        .text()
                        .await
                        .unwrap_or_default()
                        .chars()
                        .take(160)
                        .collect();
                    tried.push(format!("{path} -> {status} {body}"));
                }
                Err(e) => tried.push(format!("{path} -> {e}")),
            }
        }
        let Some(path) = chosen else {
            args.output.emit(json!({
                "endpoint": name,
                "available": false,
                "note": "endpoint not available",
                "tried": tried,
            }))?;
            continue;
        };
        let url = Arc::new(format!("{}{path}", args.base));
        let c = client.clone();
        let outcome = drive(&args.load, move |_| {
            let (client, url) = (c.clone(), url.clone());
            async move {
                match client.get(url.as_str()).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        OpResult { status, events: 0 }
                    }
                    Err(_) => OpResult {
                        status: 0,
                        events: 0,
                    },
                }
            }
        })
        .await;
        let mut fields = outcome.fields();
        fields["endpoint"] = json!(name);
        fields["available"] = json!(true);
        fields["path"] = json!(path);
        fields["rate"] = json!(args.load.rate);
        args.output.emit(fields)?;
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct FreshnessArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080/api/v1/events")]
    pub ingest_url: String,
    /// The stats endpoint listing event counts by type.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8081/api/v1/stats/events?project=default"
    )]
    pub stats_url: String,
    /// Background requests per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Events per background request.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Marker events per second: each has its own event type, so its arrival in the counts is
    /// exact.
    #[arg(long, default_value_t = 20.0)]
    pub markers_per_s: f64,
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// How often the stats API is polled, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub poll_ms: u64,
    /// How long to wait for late markers after the load stops.
    #[arg(long, default_value_t = 30.0)]
    pub settle: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn run_freshness(args: FreshnessArgs) -> anyhow::Result<()> {
    let client = http_client(64)?;
    let mut generator = EventGenerator::new(args.seed, 20_000, false);
    let now = Utc::now();
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..256)
            .map(|_| Bytes::from(generator.batch_body(args.batch, now)))
            .collect(),
    );
    let run = format!("f{}", now.timestamp_millis() % 1_000_000);
    let acked_at: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let seen_at: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Poller: records when each marker type first shows up in the counts.
    let poller = {
        let (client, url, seen_at, stop) = (
            client.clone(),
            args.stats_url.clone(),
            seen_at.clone(),
            stop.clone(),
        );
        let poll = Duration::from_millis(args.poll_ms.max(1));
        let prefix = format!("bench_{run}_");
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(poll);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                interval.tick().await;
                let Ok(r) = client.get(&url).send().await else {
                    continue;
                };
                let at = Instant::now();
                let Ok(v) = r.json::<Value>().await else {
                    continue;
                };
                if let Some(counts) = v["counts"].as_object() {
                    if let Ok(mut seen) = seen_at.lock() {
                        for k in counts.keys().filter(|k| k.starts_with(&prefix)) {
                            seen.entry(k.clone()).or_insert(at);
                        }
                    }
                }
            }
        })
    };

    let background_load = LoadArgs {
        rate: args.rate,
        concurrency: 64,
        duration: args.duration,
        warmup: 0.0,
    };
    let marker_load = LoadArgs {
        rate: args.markers_per_s,
        concurrency: 64,
        duration: args.duration,
        warmup: 0.0,
    };
    let (c, url) = (client.clone(), Arc::new(args.ingest_url.clone()));
    let background = tokio::spawn({
        let (bodies, url) = (bodies.clone(), url.clone());
        async move {
            drive(&background_load, move |seq| {
                let (client, url, bodies) = (c.clone(), url.clone(), bodies.clone());
                async move {
                    post_events(
                        &client,
                        &url,
                        bodies[seq as usize % bodies.len()].clone(),
                        false,
                    )
                    .await
                }
            })
            .await
        }
    });
    let (c, acked) = (client.clone(), acked_at.clone());
    let marker_run = run.clone();
    let markers = drive(&marker_load, move |seq| {
        let (client, url, acked) = (c.clone(), url.clone(), acked.clone());
        let event_type = format!("bench_{marker_run}_{seq}");
        async move {
            let body = json!({"events": [{"event_type": event_type, "user_id": format!("marker_{}", seq % 50)}]});
            let result = post_events(
                &client,
                &url,
                Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
                false,
            )
            .await;
            if (200..300).contains(&result.status) {
                if let Ok(mut acked) = acked.lock() {
                    acked.insert(event_type, Instant::now());
                }
            }
            result
        }
    })
    .await;
    let background = background.await?;
    // Let the worker catch up on the last markers.
    let deadline = Instant::now() + Duration::from_secs_f64(args.settle);
    loop {
        let done = {
            let acked = acked_at.lock().map(|a| a.len()).unwrap_or(0);
            let seen = seen_at.lock().map(|s| s.len()).unwrap_or(0);
            seen >= acked
        };
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = poller.await;

    let mut latencies = Latencies::new();
    let mut missing = 0;
    let acked = acked_at.lock().map(|a| a.clone()).unwrap_or_default();
    let seen = seen_at.lock().map(|s| s.clone()).unwrap_or_default();
    for (marker, at) in &acked {
        match seen.get(marker) {
            // The worker can apply an event before the gateway's answer reaches the client.
            Some(visible) => latencies.record(visible.saturating_duration_since(*at)),
            None => missing += 1,
        }
    }
    args.output.emit(json!({
        "markers_acknowledged": acked.len(),
        "markers_not_visible": missing,
        "freshness": latencies.summary(),
        "poll_ms": args.poll_ms,
        "background_events_per_s": background.acknowledged_events as f64 / args.duration,
        "acknowledged_events": background.acknowledged_events + markers.acknowledged_events,
        "background_by_status": background.by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
    }))?;
    anyhow::ensure!(
        missing == 0,
        "{missing} acknowledged marker events never became visible"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_get_the_project_and_placeholder_ids() {
        assert_eq!(
            fill("/api/v1/stats/online", "p"),
            "/api/v1/stats/online?project=p"
        );
        assert_eq!(
            fill("/api/v1/projects/{project}/dashboard", "p"),
            "/api/v1/projects/p/dashboard"
        );
        assert_eq!(
            fill("/api/v1/funnels/{id}/analysis?from=x", "p"),
            "/api/v1/funnels/1/analysis?from=x&project=p"
        );
    }
}
