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

/// Median over records of last-tenth cost / first-tenth cost.
fn growth_of(records: &[&Value]) -> Option<f64> {
    let mut r: Vec<f64> = records
        .iter()
        .filter_map(|x| {
            Some(get(x, "last_tenth_us_per_event")? / get(x, "first_tenth_us_per_event")?)
        })
        .collect();
    median(&mut r)
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

    // Phase 1: ingest.
    let _ = writeln!(
        md,
        "## 1. Ingest throughput (gateway vs raw rdkafka producer, saturation)\n"
    );
    let _ = writeln!(md, "| batch | body | gateway ev/s | raw producer ev/s | gateway / raw | gateway p50 / p99 ms | raw p50 / p99 ms | half-saturation p50 / p99 ms |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    let mut ingest = Vec::new();
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
                "gateway_p50_ms": med(&gw, "latency.p50_ms"), "gateway_p99_ms": med(&gw, "latency.p99_ms"),
                "raw_p50_ms": med(&raw, "latency.p50_ms"), "raw_p99_ms": med(&raw, "latency.p99_ms"),
                "half_rate_events_per_s": med(&half, "events_per_s"),
                "half_p50_ms": med(&half, "latency.p50_ms"), "half_p99_ms": med(&half, "latency.p99_ms"),
                "rounds": gw.len(),
            });
            let _ = writeln!(
                md,
                "| {} | {body} | {} | {} | **{}** | {} / {} | {} / {} | {} / {} (at {} ev/s) |",
                &case[1..],
                fmt(get(&row, "gateway_events_per_s"), 0),
                fmt(get(&row, "raw_events_per_s"), 0),
                fmt(get(&row, "ratio"), 2),
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

    let growth = json!({
        "worker_first_tenth_us_per_event": med(&worker1, "first_tenth_us_per_event"),
        "worker_last_tenth_us_per_event": med(&worker1, "last_tenth_us_per_event"),
        "worker_growth": growth_of(&worker1),
        "raw_first_tenth_us_per_event": med(&raw1, "first_tenth_us_per_event"),
        "raw_last_tenth_us_per_event": med(&raw1, "last_tenth_us_per_event"),
        "raw_growth": growth_of(&raw1),
    });
    let _ = writeln!(md, "\n## 6. Growth: wall time per event, first vs last tenth of the {events}-event drain (1 instance)\n");
    let _ = writeln!(
        md,
        "| | first tenth µs/event | last tenth µs/event | last / first |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    for (who, p) in [("worker", "worker"), ("raw stores", "raw")] {
        let _ = writeln!(
            md,
            "| {who} | {} | {} | **{}** |",
            fmt(get(&growth, &format!("{p}_first_tenth_us_per_event")), 1),
            fmt(get(&growth, &format!("{p}_last_tenth_us_per_event")), 1),
            fmt(get(&growth, &format!("{p}_growth")), 2),
        );
    }
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
    let mut cores: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for r in &cpu {
        if let (Some(during), Some(process), Some(c), Some(w)) = (
            r["during"].as_str(),
            r["process"].as_str(),
            get(r, "cpu_s"),
            get(r, "wall_s"),
        ) {
            if w > 0.0 {
                cores
                    .entry((during.to_owned(), process.to_owned()))
                    .or_default()
                    .push(c / w);
            }
        }
    }
    let _ = writeln!(
        md,
        "\n## Where the CPU went (cores busy, median over rounds; the machine has {})\n",
        meta.get("cpu").and_then(Value::as_str).unwrap_or("?")
    );
    let _ = writeln!(md, "| phase | process | cores busy |");
    let _ = writeln!(md, "|---|---|---|");
    let mut cpu_rows = Vec::new();
    for ((during, process), mut values) in cores {
        let m = median(&mut values);
        let _ = writeln!(md, "| {during} | {process} | {} |", fmt(m, 2));
        cpu_rows.push(json!({"during": during, "process": process, "cores": m}));
    }
    summary.insert("cpu".to_owned(), json!(cpu_rows));

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
