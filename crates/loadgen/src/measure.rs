//! Shared measurement plumbing: latency histograms, tags and the JSON output line.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Map, Value};

/// Where a measurement goes and what it is labelled with.
#[derive(Args, Clone, Debug)]
pub struct OutputArgs {
    /// `key=value` labels copied into the output object (phase, case, round ...).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Append the JSON line to this file as well as printing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl OutputArgs {
    /// Prints `fields` plus the tags as one JSON line, and appends it to `--out`.
    pub fn emit(&self, fields: Value) -> anyhow::Result<()> {
        let mut object = Map::new();
        for tag in &self.tags {
            let (k, v) = tag
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--tag {tag:?} is not key=value"))?;
            let value = v
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(v));
            object.insert(k.to_owned(), value);
        }
        if let Value::Object(fields) = fields {
            object.extend(fields);
        }
        let line = serde_json::to_string(&Value::Object(object))?;
        println!("{line}");
        if let Some(path) = &self.out {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(file, "{line}")?;
        }
        Ok(())
    }
}

/// Latencies in microseconds, 1 µs to 100 s at 3 significant figures.
pub struct Latencies(Histogram<u64>);

impl Latencies {
    pub fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, 100_000_000, 3).unwrap_or_else(|_| {
                Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"))
            }),
        )
    }

    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.0.saturating_record(us);
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// p50, p90, p99, p99.9 and max in milliseconds.
    pub fn summary(&self) -> Value {
        let ms = |us: u64| us as f64 / 1000.0;
        if self.0.is_empty() {
            return serde_json::json!({"samples": 0});
        }
        serde_json::json!({
            "samples": self.0.len(),
            "p50_ms": ms(self.0.value_at_quantile(0.50)),
            "p90_ms": ms(self.0.value_at_quantile(0.90)),
            "p99_ms": ms(self.0.value_at_quantile(0.99)),
            "p999_ms": ms(self.0.value_at_quantile(0.999)),
            "max_ms": ms(self.0.max()),
            "mean_ms": self.0.mean() / 1000.0,
        })
    }
}

/// utime + stime of a process, in clock ticks (/proc/PID/stat).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds this process has used so far, every thread included.
pub fn own_cpu_seconds(clk_tck: u64) -> Option<f64> {
    cpu_ticks(std::process::id()).map(|t| t as f64 / clk_tck.max(1) as f64)
}

/// Median of a list (the mean of the middle two for even lengths); None when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_lists() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn latencies_report_quantiles_in_milliseconds() {
        let mut l = Latencies::new();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        let p50 = s["p50_ms"].as_f64().unwrap_or_default();
        assert!((49.0..=51.0).contains(&p50), "{s}");
    }
}
