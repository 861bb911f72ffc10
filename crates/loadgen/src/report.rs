//! Turns the JSON lines of a benchmark run into medians and ratios: `latest.json` and a
//! Markdown table. Ratios are taken per round (each pair ran back to back) and the median of
//! those ratios is quoted, so drift on a shared machine between rounds cancels out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Map, Value};

use crate::measure::median;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run's JSON lines.
    #[arg(long)]
    pub results: PathBuf,
    #[arg(long)]
    pub json_out: PathBuf,
    #[arg(long)]
    pub markdown_out: PathBuf,
    /// `key=value` facts about the run (date, mode, machine ...).
    #[arg(long = "meta")]
    pub meta: Vec<String>,
}

fn get(v: &Value, path: &str) -> Option<f64> {
    path.split('.').try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn is(v: &Value, key: &str, value: &str) -> bool {
    v.get(key).and_then(Value::as_str) == Some(value)
}

fn fmt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.digits$}"))
}

fn med(records: &[&Value], path: &str) -> Option<f64> {
    let mut values: Vec<f64> = records.iter().filter_map(|r| get(r, path)).collect();
    median(&mut values)
}

/// Median over rounds of `a.path / b.path`, pairing records by their `round` tag.
fn ratio(a: &[&Value], b: &[&Value], path: &str) -> Option<f64> {
    let by_round = |rs: &[&Value]| -> BTreeMap<i64, f64> {
        rs.iter()
            .filter_map(|r| Some((r.get("round")?.as_i64()?, get(r, path)?)))
            .collect()
    };
    let (a, b) = (by_round(a), by_round(b));
    let mut ratios: Vec<f64> = a
        .iter()
        .filter_map(|(round, x)| b.get(round).filter(|y| **y > 0.0).map(|y| x / y))
        .collect();
    median(&mut ratios)
}

/// One line per failed check: what it checked and what was wrong.
fn describe_failures(failed: &[&Value]) -> String {
    failed
        .iter()
        .map(|r| {
            let problems: Vec<&str> = r["problems"]
                .as_array()
                .map(|p| p.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!(
                "- {}: {}",
                r["of"].as_str().unwrap_or("?"),
                problems.join("; ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Median over records of `last` / `first` (last-tenth cost over first-tenth cost).
fn growth_of(records: &[&Value], first: &str, last: &str) -> Option<f64> {
    let mut r: Vec<f64> = records
        .iter()
        .filter_map(|x| Some(get(x, last)? / get(x, first)?))
        .collect();
    median(&mut r)
}

/// Per round, the faster of two baselines: `{"round", "events_per_s", "kind"}`.
fn best_per_round(a: &[&Value], b: &[&Value]) -> Vec<Value> {
    let mut best: BTreeMap<i64, Value> = BTreeMap::new();
    for r in a.iter().chain(b) {
        let (Some(round), Some(eps)) = (
            r.get("round").and_then(Value::as_i64),
            get(r, "events_per_s"),
        ) else {
            continue;
        };
        let faster = best
            .get(&round)
            .and_then(|x| get(x, "events_per_s"))
            .is_none_or(|current| eps > current);
        if faster {
            best.insert(
                round,
                json!({"round": round, "events_per_s": eps, "kind": r["kind"]}),
            );
        }
    }
    best.into_values().collect()
}

type Select<'a> = dyn Fn(&str, &dyn Fn(&Value) -> bool) -> Vec<&'a Value> + 'a;

/// The table the report opens with: each subject beside the limit it is measured against (the
/// pipelined bare producer for the gateway, MySQL alone for the worker), the ratios, and the CPU
/// microseconds per event of each process.
fn limits_table<'a>(
    select: &Select<'a>,
    cpu_us: &dyn Fn(&str, &str) -> Option<f64>,
) -> (String, Value) {
    let ingest = |kind: &str, case: &str| {
        select("ingest", &|r| {
            is(r, "kind", kind) && is(r, "case", case) && is(r, "load", "saturation")
        })
    };
    let worker = |kind: &str| select("worker", &|r| is(r, "kind", kind));
    let pipelined = ingest("raw_pipelined", "b50");
    let (raw, gateway, gzip) = (
        ingest("raw", "b50"),
        ingest("gateway", "b50"),
        ingest("gateway_gzip", "b50"),
    );
    let (load, insert, redis) = (
        worker("mysql_load"),
        worker("mysql_insert"),
        worker("redis_alone"),
    );
    let (raw1, worker1) = (worker("raw1"), worker("worker1"));
    let best = best_per_round(&load, &insert);
    let best: Vec<&Value> = best.iter().collect();
    let cpu = |during: &str, processes: &[&str]| -> String {
        processes
            .iter()
            .filter_map(|p| cpu_us(during, p).map(|us| format!("{p} {us:.1}")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let pipelined_client = med(&pipelined, "client_cpu_us_per_event")
        .map(|us| format!("loadgen {us:.1}, "))
        .unwrap_or_default();
    let rows = [
        (
            "bare producer, pipelined (**the ingest limit**)",
            med(&pipelined, "events_per_s"),
            None,
            format!(
                "{pipelined_client}{}",
                cpu("ingest-b50-raw_pipelined", &["broker"])
            ),
        ),
        (
            "bare producer, one batch per request, 32 lanes",
            med(&raw, "events_per_s"),
            ratio(&raw, &pipelined, "events_per_s").map(|x| format!("{x:.2} of pipelined")),
            cpu("ingest-b50-raw", &["broker"]),
        ),
        (
            "gateway, batches of 50, JSON, 32 connections",
            med(&gateway, "events_per_s"),
            ratio(&gateway, &pipelined, "events_per_s").map(|x| format!("**{x:.2}** of pipelined")),
            cpu("ingest-b50-gateway", &["gateway", "broker"]),
        ),
        (
            "gateway, batches of 50, gzip, 32 connections",
            med(&gzip, "events_per_s"),
            ratio(&gzip, &pipelined, "events_per_s").map(|x| format!("{x:.2} of pipelined")),
            cpu("ingest-b50-gateway_gzip", &["gateway", "broker"]),
        ),
        (
            "MySQL alone: LOAD DATA LOCAL INFILE",
            med(&load, "events_per_s"),
            None,
            cpu("drain-mysql_load", &["mysql"]),
        ),
        (
            "MySQL alone: multi-row INSERT",
            med(&insert, "events_per_s"),
            ratio(&insert, &load, "events_per_s").map(|x| format!("{x:.2} of LOAD DATA")),
            cpu("drain-mysql_insert", &["mysql"]),
        ),
        (
            "Redis alone: the aggregate updates, pipelined, no dedupe marks",
            med(&redis, "events_per_s"),
            None,
            cpu("drain-redis_alone", &["redis"]),
        ),
        (
            "raw stores: the worker's INSERT + the Redis commands with dedupe marks",
            med(&raw1, "events_per_s"),
            ratio(&raw1, &best, "events_per_s").map(|x| format!("{x:.2} of MySQL alone")),
            cpu("drain-raw1", &["mysql", "redis"]),
        ),
        (
            "worker, 1 instance, drain",
            med(&worker1, "events_per_s"),
            ratio(&worker1, &best, "events_per_s").map(|x| format!("**{x:.2}** of MySQL alone")),
            cpu("drain-worker1", &["worker1", "mysql", "redis", "broker"]),
        ),
    ];
    let mut md = String::from(
        "## Baselines that are limits (medians; ratios are medians of per-round ratios)\n\n\
         | what | events/s | ratio | CPU µs/event, by process |\n|---|---|---|---|\n",
    );
    let mut table = Vec::new();
    for (what, eps, ratio, cpu) in rows {
        if eps.is_none() {
            continue;
        }
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {cpu} |",
            fmt(eps, 0),
            ratio.as_deref().unwrap_or("")
        );
        table.push(
            json!({"what": what, "events_per_s": eps, "ratio": ratio, "cpu_us_per_event": cpu}),
        );
    }
    let best_kinds: Vec<&str> = best.iter().filter_map(|r| r["kind"].as_str()).collect();
    let growth = growth_of(
        &worker1,
        "first_tenth_us_per_event",
        "last_tenth_us_per_event",
    );
    let cpu_growth = growth_of(
        &worker1,
        "first_tenth_cpu_us_per_event",
        "last_tenth_cpu_us_per_event",
    );
    if !worker1.is_empty() {
        let _ = writeln!(
            md,
            "\nMySQL alone, per round the faster of the two: {}. Worker cost per event, last tenth / \
             first tenth of the drain: wall **{}**, worker CPU **{}**.",
            if best_kinds.is_empty() {
                "n/a".to_owned()
            } else {
                best_kinds.join(", ")
            },
            fmt(growth, 2),
            fmt(cpu_growth, 2),
        );
    }
    md.push('\n');
    let summary = json!({
        "rows": table,
        "gateway_over_pipelined": ratio(&gateway, &pipelined, "events_per_s"),
        "gateway_cpu_us_per_event": cpu_us("ingest-b50-gateway", "gateway"),
        "pipelined_client_cpu_us_per_event": med(&pipelined, "client_cpu_us_per_event"),
        "worker_over_mysql_alone": ratio(&worker1, &best, "events_per_s"),
        "mysql_alone_best_per_round": best_kinds,
        "worker_growth_wall": growth,
        "worker_growth_cpu": cpu_growth,
    });
    (md, summary)
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.results)?;
    let records: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut meta = Map::new();
    for m in &args.meta {
        if let Some((k, v)) = m.split_once('=') {
            meta.insert(k.to_owned(), json!(v));
        }
    }
    let select = |phase: &str, f: &dyn Fn(&Value) -> bool| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| is(r, "phase", phase) && f(r))
            .collect()
    };
    let mut md = String::new();
    let mut summary = Map::new();
    let _ = writeln!(
        md,
        "# InsightFlow benchmark ({})\n\n{}\n",
        meta.get("date").and_then(Value::as_str).unwrap_or("?"),
        meta.iter()
            .map(|(k, v)| format!("- {k}: {}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The limits table goes first; it is written at the end, from every phase's records.
    let limits_at = md.len();
    let cpu_us = |during: &str, process: &str| -> Option<f64> {
        med(
            &select("cpu", &|r| {
                is(r, "during", during) && is(r, "process", process)
            }),
            "us_per_event",
        )
    };

    // Phase 1: ingest.
    let _ = writeln!(
        md,
        "## 1. Ingest throughput (gateway vs raw rdkafka producer, saturation)\n"
    );
    let _ = writeln!(md, "| batch | body | gateway ev/s | raw producer ev/s | gateway / raw | gateway / pipelined | gateway CPU µs/event | gateway p50 / p99 ms | raw p50 / p99 ms | half-saturation p50 / p99 ms |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    let mut ingest = Vec::new();
    // The pipelined producer runs with the batches of 50 only: a request batch does not
    // change it, so every gateway row is compared with it.
    let pipelined = select("ingest", &|r| is(r, "kind", "raw_pipelined"));
    for case in ["b50", "b1"] {
        let raw = select("ingest", &|r| {
            is(r, "case", case) && is(r, "kind", "raw") && is(r, "load", "saturation")
        });
        for (kind, body) in [("gateway", "json"), ("gateway_gzip", "gzip")] {
            let gw = select("ingest", &|r| {
                is(r, "case", case) && is(r, "kind", kind) && is(r, "load", "saturation")
            });
            let half = select("ingest", &|r| {
                is(r, "case", case) && is(r, "kind", kind) && is(r, "load", "half")
            });
            if gw.is_empty() {
                continue;
            }
            let row = json!({
                "case": case, "body": body,
                "gateway_events_per_s": med(&gw, "events_per_s"),
                "raw_events_per_s": med(&raw, "events_per_s"),
                "ratio": ratio(&gw, &raw, "events_per_s"),
                "pipelined_events_per_s": med(&pipelined, "events_per_s"),
                "ratio_to_pipelined": ratio(&gw, &pipelined, "events_per_s"),
                "gateway_cpu_us_per_event": cpu_us(&format!("ingest-{case}-{kind}"), "gateway"),
                "gateway_p50_ms": med(&gw, "latency.p50_ms"), "gateway_p99_ms": med(&gw, "latency.p99_ms"),
                "raw_p50_ms": med(&raw, "latency.p50_ms"), "raw_p99_ms": med(&raw, "latency.p99_ms"),
                "half_rate_events_per_s": med(&half, "events_per_s"),
                "half_p50_ms": med(&half, "latency.p50_ms"), "half_p99_ms": med(&half, "latency.p99_ms"),
                "rounds": gw.len(),
            });
            let _ = writeln!(
                md,
                "| {} | {body} | {} | {} | **{}** | **{}** | {} | {} / {} | {} / {} | {} / {} (at {} ev/s) |",
                &case[1..],
                fmt(get(&row, "gateway_events_per_s"), 0),
                fmt(get(&row, "raw_events_per_s"), 0),
                fmt(get(&row, "ratio"), 2),
                fmt(get(&row, "ratio_to_pipelined"), 2),
                fmt(get(&row, "gateway_cpu_us_per_event"), 1),
                fmt(get(&row, "gateway_p50_ms"), 1),
                fmt(get(&row, "gateway_p99_ms"), 1),
                fmt(get(&row, "raw_p50_ms"), 1),
                fmt(get(&row, "raw_p99_ms"), 1),
                fmt(get(&row, "half_p50_ms"), 1),
                fmt(get(&row, "half_p99_ms"), 1),
                fmt(get(&row, "half_rate_events_per_s"), 0),
            );
            ingest.push(row);
        }
    }
    let _ = writeln!(
        md,
        "\nPipelined bare producer (the limit: queue kept full, acks=all, idempotent, lz4, linger 5 ms): {} ev/s, its own CPU {} µs/event.",
        fmt(med(&pipelined, "events_per_s"), 0),
        fmt(med(&pipelined, "client_cpu_us_per_event"), 2),
    );
    summary.insert("ingest".to_owned(), json!(ingest));

    // Phase 2 and 6: worker drain and growth.
    let w = |kind: &str| select("worker", &|r| is(r, "kind", kind));
    let (raw1, worker1, raw2, worker2) = (w("raw1"), w("worker1"), w("raw2"), w("worker2"));
    let worker = json!({
        "worker1_events_per_s": med(&worker1, "events_per_s"),
        "raw1_events_per_s": med(&raw1, "events_per_s"),
        "ratio1": ratio(&worker1, &raw1, "events_per_s"),
        "worker2_events_per_s": med(&worker2, "events_per_s"),
        "raw2_events_per_s": med(&raw2, "events_per_s"),
        "ratio2": ratio(&worker2, &raw2, "events_per_s"),
        "scaling_2_over_1": ratio(&worker2, &worker1, "events_per_s"),
        "worker1_cpu_us_per_event": med(&worker1, "cpu_us_per_event"),
        "worker2_cpu_us_per_event": med(&worker2, "cpu_us_per_event"),
        "rounds": worker1.len(),
    });
    let events = meta
        .get("events")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    let _ = writeln!(
        md,
        "\n## 2. Worker drain of a pre-filled topic ({events} events) vs raw stores\n"
    );
    let _ = writeln!(
        md,
        "| instances | worker ev/s | raw stores ev/s | worker / raw | worker CPU µs/event |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for (n, a, b, c, cpu) in [
        (
            "1",
            "worker1_events_per_s",
            "raw1_events_per_s",
            "ratio1",
            "worker1_cpu_us_per_event",
        ),
        (
            "2",
            "worker2_events_per_s",
            "raw2_events_per_s",
            "ratio2",
            "worker2_cpu_us_per_event",
        ),
    ] {
        let _ = writeln!(
            md,
            "| {n} | {} | {} | **{}** | {} |",
            fmt(get(&worker, a), 0),
            fmt(get(&worker, b), 0),
            fmt(get(&worker, c), 2),
            fmt(get(&worker, cpu), 0)
        );
    }
    let _ = writeln!(
        md,
        "\n2 instances / 1 instance: **{}**",
        fmt(get(&worker, "scaling_2_over_1"), 2)
    );
    summary.insert("worker".to_owned(), worker);

    let (wall_first, wall_last) = ("first_tenth_us_per_event", "last_tenth_us_per_event");
    let (cpu_first, cpu_last) = (
        "first_tenth_cpu_us_per_event",
        "last_tenth_cpu_us_per_event",
    );
    let growth = json!({
        "worker_first_tenth_us_per_event": med(&worker1, wall_first),
        "worker_last_tenth_us_per_event": med(&worker1, wall_last),
        "worker_growth": growth_of(&worker1, wall_first, wall_last),
        "worker_first_tenth_cpu_us_per_event": med(&worker1, cpu_first),
        "worker_last_tenth_cpu_us_per_event": med(&worker1, cpu_last),
        "worker_cpu_growth": growth_of(&worker1, cpu_first, cpu_last),
        "raw_first_tenth_us_per_event": med(&raw1, wall_first),
        "raw_last_tenth_us_per_event": med(&raw1, wall_last),
        "raw_growth": growth_of(&raw1, wall_first, wall_last),
        "mysql_first_tenth_us_per_event": med(&w("mysql_load"), wall_first),
        "mysql_last_tenth_us_per_event": med(&w("mysql_load"), wall_last),
        "mysql_growth": growth_of(&w("mysql_load"), wall_first, wall_last),
    });
    let _ = writeln!(md, "\n## 6. Growth: wall time per event, first vs last tenth of the {events}-event drain (1 instance)\n");
    let _ = writeln!(
        md,
        "| | first tenth µs/event | last tenth µs/event | last / first |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    for (who, p) in [
        ("worker", "worker"),
        ("raw stores", "raw"),
        ("MySQL alone (LOAD DATA)", "mysql"),
    ] {
        let _ = writeln!(
            md,
            "| {who} | {} | {} | **{}** |",
            fmt(get(&growth, &format!("{p}_first_tenth_us_per_event")), 1),
            fmt(get(&growth, &format!("{p}_last_tenth_us_per_event")), 1),
            fmt(get(&growth, &format!("{p}_growth")), 2),
        );
    }
    let _ = writeln!(
        md,
        "\nWorker CPU per event, first vs last tenth: {} vs {} µs/event, last / first **{}**",
        fmt(get(&growth, "worker_first_tenth_cpu_us_per_event"), 1),
        fmt(get(&growth, "worker_last_tenth_cpu_us_per_event"), 1),
        fmt(get(&growth, "worker_cpu_growth"), 2),
    );
    summary.insert("growth".to_owned(), growth);

    // Phase 3: freshness.
    let fresh = select("freshness", &|_| true);
    let freshness = json!({
        "p50_ms": med(&fresh, "freshness.p50_ms"),
        "p99_ms": med(&fresh, "freshness.p99_ms"),
        "max_ms": med(&fresh, "freshness.max_ms"),
        "markers": med(&fresh, "markers_acknowledged"),
        "background_events_per_s": med(&fresh, "background_events_per_s"),
        "poll_ms": med(&fresh, "poll_ms"),
    });
    let _ = writeln!(
        md,
        "\n## 3. Freshness (gateway 2xx -> visible in the stats API)\n"
    );
    let _ = writeln!(
        md,
        "p50 **{} ms**, p99 **{} ms**, max {} ms ({} marker events under {} ev/s of background load, polled every {} ms)",
        fmt(get(&freshness, "p50_ms"), 0),
        fmt(get(&freshness, "p99_ms"), 0),
        fmt(get(&freshness, "max_ms"), 0),
        fmt(get(&freshness, "markers"), 0),
        fmt(get(&freshness, "background_events_per_s"), 0),
        fmt(get(&freshness, "poll_ms"), 0),
    );
    summary.insert("freshness".to_owned(), freshness);

    // Phase 4: stats API.
    let stats = select("stats", &|_| true);
    let health: Vec<&Value> = stats
        .iter()
        .copied()
        .filter(|r| is(r, "endpoint", "health"))
        .collect();
    let mut names: Vec<String> = stats
        .iter()
        .filter_map(|r| r.get("endpoint")?.as_str().map(str::to_owned))
        .collect();
    names.dedup();
    names.sort();
    names.dedup();
    let _ = writeln!(
        md,
        "\n## 4. Stats API at a fixed rate ({events}-event data set)\n"
    );
    let _ = writeln!(
        md,
        "| endpoint | path | req/s | p50 ms | p99 ms | p99 / health p99 | non-2xx |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    let mut endpoints = Vec::new();
    for name in names {
        let rs: Vec<&Value> = stats
            .iter()
            .copied()
            .filter(|r| is(r, "endpoint", &name))
            .collect();
        let available: Vec<&Value> = rs
            .iter()
            .copied()
            .filter(|r| r["available"] == json!(true))
            .collect();
        if available.is_empty() {
            let note = rs.first().map(|r| r["tried"].clone()).unwrap_or_default();
            let _ = writeln!(md, "| {name} | endpoint not available | | | | | |");
            endpoints.push(json!({"endpoint": name, "available": false, "tried": note}));
            continue;
        }
        let failures: f64 = available
            .iter()
            .map(|r| get(r, "requests").unwrap_or(0.0) - get(r, "ok").unwrap_or(0.0))
            .sum();
        let row = json!({
            "endpoint": name, "available": true,
            "path": available[0]["path"],
            "rate": med(&available, "rate"),
            "p50_ms": med(&available, "latency.p50_ms"),
            "p99_ms": med(&available, "latency.p99_ms"),
            "p99_over_health": ratio(&available, &health, "latency.p99_ms"),
            "non_2xx": failures,
        });
        let rate = get(&row, "rate");
        let _ = writeln!(
            md,
            "| {name} | `{}` | {} | {} | {} | {} | {} |",
            row["path"].as_str().unwrap_or_default(),
            // Below 10 req/s (the funnel's 0.5) a whole number would read 0.
            fmt(rate, usize::from(rate.is_some_and(|r| r < 10.0))),
            fmt(get(&row, "p50_ms"), 2),
            fmt(get(&row, "p99_ms"), 2),
            fmt(get(&row, "p99_over_health"), 2),
            failures
        );
        endpoints.push(row);
    }
    summary.insert("stats".to_owned(), json!(endpoints));

    // Phase 5: memory.
    let memory = select("memory", &|_| true);
    let _ = writeln!(md, "\n## 5. Peak RSS (VmHWM) per phase\n");
    let _ = writeln!(md, "| phase | process | peak RSS MiB |");
    let _ = writeln!(md, "|---|---|---|");
    for r in &memory {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            r["during"].as_str().unwrap_or_default(),
            r["process"].as_str().unwrap_or_default(),
            fmt(get(r, "vmhwm_kb").map(|k| k / 1024.0), 1)
        );
    }
    summary.insert("memory".to_owned(), json!(memory));

    // Which process used how much CPU (cores busy = CPU seconds / wall seconds).
    let cpu = select("cpu", &|_| true);
    let mut cores: BTreeMap<(String, String), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for r in &cpu {
        if let (Some(during), Some(process), Some(c), Some(w)) = (
            r["during"].as_str(),
            r["process"].as_str(),
            get(r, "cpu_s"),
            get(r, "wall_s"),
        ) {
            // Idle bystanders (a store another phase uses) are left out.
            if w > 0.0 && c / w >= 0.005 {
                let entry = cores
                    .entry((during.to_owned(), process.to_owned()))
                    .or_default();
                entry.0.push(c / w);
                entry.1.extend(get(r, "us_per_event"));
            }
        }
    }
    let _ = writeln!(
        md,
        "\n## Where the CPU went (cores busy, median over rounds; the machine has {})\n",
        meta.get("cpu").and_then(Value::as_str).unwrap_or("?")
    );
    let _ = writeln!(md, "| phase | process | cores busy | CPU µs/event |");
    let _ = writeln!(md, "|---|---|---|---|");
    let mut cpu_rows = Vec::new();
    for ((during, process), (mut values, mut per_event)) in cores {
        let (m, us) = (median(&mut values), median(&mut per_event));
        let _ = writeln!(
            md,
            "| {during} | {process} | {} | {} |",
            fmt(m, 2),
            fmt(us, 2)
        );
        cpu_rows
            .push(json!({"during": during, "process": process, "cores": m, "us_per_event": us}));
    }
    summary.insert("cpu".to_owned(), json!(cpu_rows));

    let limits = limits_table(&select, &cpu_us);
    md.insert_str(limits_at, &limits.0);
    summary.insert("limits".to_owned(), limits.1);

    // The exactly-once checks.
    let checks = select("check", &|_| true);
    let failed: Vec<&Value> = checks
        .iter()
        .copied()
        .filter(|r| r["ok"] != json!(true))
        .collect();
    let _ = writeln!(
        md,
        "\n## Exactly-once checks\n\n{} of {} count checks passed{}",
        checks.len() - failed.len(),
        checks.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(". **FAILED**:\n{}", describe_failures(&failed))
        }
    );
    summary.insert(
        "checks_passed".to_owned(),
        json!(checks.len() - failed.len()),
    );
    summary.insert("checks_total".to_owned(), json!(checks.len()));

    let document = json!({"meta": meta, "summary": summary, "records": records});
    std::fs::write(&args.json_out, serde_json::to_string_pretty(&document)?)?;
    std::fs::write(&args.markdown_out, &md)?;
    print!("{md}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_faster_baseline_is_taken_per_round() {
        let load = [
            json!({"round": 1, "kind": "mysql_load", "events_per_s": 30.0}),
            json!({"round": 2, "kind": "mysql_load", "events_per_s": 20.0}),
        ];
        let insert = [
            json!({"round": 1, "kind": "mysql_insert", "events_per_s": 25.0}),
            json!({"round": 2, "kind": "mysql_insert", "events_per_s": 22.0}),
        ];
        let (a, b): (Vec<&Value>, Vec<&Value>) = (load.iter().collect(), insert.iter().collect());
        let best = best_per_round(&a, &b);
        let kinds: Vec<&str> = best.iter().filter_map(|r| r["kind"].as_str()).collect();
        assert_eq!(kinds, ["mysql_load", "mysql_insert"]);
        let worker = [
            json!({"round": 1, "events_per_s": 15.0}),
            json!({"round": 2, "events_per_s": 11.0}),
        ];
        let w: Vec<&Value> = worker.iter().collect();
        let best: Vec<&Value> = best.iter().collect();
        assert_eq!(ratio(&w, &best, "events_per_s"), Some(0.5));
    }
}
