//! Bookkeeping around the measured runs: waiting for a drain, the exactly-once count checks,
//! and topic creation and deletion.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use insightflow_store::keys::Keys;
use insightflow_store::redis::{RedisPool, RedisSettings};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;

use crate::measure::{cpu_ticks, OutputArgs};

#[derive(Args, Debug)]
pub struct DrainWaitArgs {
    /// One Redis, or with --redis-cluster the cluster's seed nodes, comma-separated.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,
    /// The workers run against Redis Cluster (their `redis.cluster`).
    #[arg(long)]
    pub redis_cluster: bool,
    #[arg(long)]
    pub prefix: String,
    #[arg(long, default_value = "default")]
    pub project: String,
    /// Events the worker(s) must apply.
    #[arg(long)]
    pub expect: u64,
    /// Worker process ids, for CPU time per event (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    #[arg(long, default_value_t = 1800.0)]
    pub timeout: f64,
    /// Clock ticks per second of /proc/PID/stat (getconf CLK_TCK).
    #[arg(long, default_value_t = 100)]
    pub clk_tck: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn total_cpu(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| cpu_ticks(*p)).sum()
}

/// Drain rate, CPU per event, and wall and CPU time per event over the first and the last tenth
/// of `expect`, from (time, applied, CPU ticks) samples.
///
/// The first sample with progress opens the measured window (consumer-group join and start-up
/// are excluded); the window's first batch is therefore not counted. The window closes at the
/// first sample showing the final count, so a drain that stalls short of the target (a lost
/// event) still gets the rate it had while it progressed.
fn drain_figures(
    fields: &mut serde_json::Value,
    samples: &[(Instant, u64, u64)],
    expect: u64,
    clk_tck: u64,
    with_cpu: bool,
) {
    let Some(&first) = samples.iter().find(|s| s.1 > 0) else {
        return;
    };
    let Some(&last) = samples
        .last()
        .and_then(|l| samples.iter().find(|s| s.1 == l.1))
    else {
        return;
    };
    let (t0, n0, c0) = first;
    let (t1, n1, c1) = last;
    let seconds = (t1 - t0).as_secs_f64();
    let cpu_us =
        |ticks: u64, events: u64| ticks as f64 * 1e6 / clk_tck.max(1) as f64 / events.max(1) as f64;
    fields["seconds"] = json!(seconds);
    fields["events_per_s"] = json!((n1 - n0) as f64 / seconds.max(1e-9));
    if with_cpu {
        fields["cpu_us_per_event"] = json!(cpu_us(c1.saturating_sub(c0), n1 - n0));
    }
    let tenth = expect / 10;
    if tenth == 0 {
        return;
    }
    let crossing = |target: u64| samples.iter().find(|s| s.1 >= target).copied();
    let per_event = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    if let Some((t, n, c)) = crossing(n0 + tenth) {
        fields["first_tenth_us_per_event"] = json!(per_event(t - t0, n - n0));
        if with_cpu {
            fields["first_tenth_cpu_us_per_event"] = json!(cpu_us(c.saturating_sub(c0), n - n0));
        }
    }
    if n1 >= expect {
        if let Some((t, n, c)) = crossing(expect - tenth) {
            fields["last_tenth_us_per_event"] = json!(per_event(t1 - t, n1 - n));
            if with_cpu {
                fields["last_tenth_cpu_us_per_event"] = json!(cpu_us(c1.saturating_sub(c), n1 - n));
            }
        }
    }
}

/// The workers' Redis (one, or a cluster), read with the stores' own client and key layout.
async fn redis_pool(url: &str, cluster: bool, prefix: &str) -> anyhow::Result<RedisPool> {
    let settings = RedisSettings {
        url: url.to_owned(),
        key_prefix: prefix.to_owned(),
        pool_size: 1,
        cluster,
    };
    RedisPool::connect(&settings, 1).await
}

pub async fn drain_wait(args: DrainWaitArgs) -> anyhow::Result<()> {
    let redis = redis_pool(&args.redis_url, args.redis_cluster, &args.prefix).await?;
    let mut conn = redis.pool().get().await?;
    let meta = Keys::new(&args.prefix, &args.project).meta();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.timeout);
    // (time, events applied, the workers' CPU ticks) every 50 ms.
    let mut samples: Vec<(Instant, u64, u64)> = Vec::new();
    let applied = loop {
        let applied: Option<u64> = redis::cmd("HGET")
            .arg(&meta)
            .arg("applied_events")
            .query_async(&mut *conn)
            .await?;
        let applied = applied.unwrap_or(0);
        let now = Instant::now();
        samples.push((now, applied, total_cpu(&args.pids)));
        if applied >= args.expect || now >= deadline {
            break applied;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut fields = json!({
        "expected": args.expect,
        "applied": applied,
        "wall_seconds": started.elapsed().as_secs_f64(),
    });
    drain_figures(
        &mut fields,
        &samples,
        args.expect,
        args.clk_tck,
        !args.pids.is_empty(),
    );
    args.output.emit(fields)?;
    anyhow::ensure!(
        applied >= args.expect,
        "the worker applied {applied} of {} events within {} s",
        args.expect,
        args.timeout
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[arg(long)]
    pub mysql_url: Option<String>,
    #[arg(long)]
    pub redis_url: Option<String>,
    /// `redis_url` names Redis Cluster seed nodes.
    #[arg(long)]
    pub redis_cluster: bool,
    #[arg(long)]
    pub prefix: Option<String>,
    #[arg(long, default_value = "default")]
    pub project: String,
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Also count the messages of this topic (read back, all partitions).
    #[arg(long)]
    pub topic: Option<String>,
    /// What was acknowledged: every store counted must hold exactly this many events (the
    /// topic at least this many: requests that failed after Kafka took their events add more).
    #[arg(long)]
    pub expect: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Counts the records of every partition of `topic` by reading them back, from the beginning to
/// the high watermark the broker reports in its fetch responses.
///
/// Reading the records, not only subtracting watermarks (ListOffsets), proves a consumer can
/// read every acknowledged record; the ListOffsets span is returned too, for the record: on
/// Kafka both agree. (The earlier local broker answered ListOffsets wrongly: docs/BENCHMARKS.md,
/// history.)
fn topic_messages(brokers: &str, topic: &str) -> anyhow::Result<(u64, u64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "insightflow-loadgen-check")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    // Generous timeouts: the check runs right after a saturating load on a 2-core machine.
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(120))?;
    let mut assignment = TopicPartitionList::new();
    let mut unfinished = HashSet::new();
    let mut listed = 0u64;
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(120))?;
            listed += (high - low).max(0) as u64;
            assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            unfinished.insert(p.id());
        }
    }
    anyhow::ensure!(!unfinished.is_empty(), "topic {topic} has no partitions");
    consumer.assign(&assignment)?;
    let stall = Duration::from_secs(120);
    let mut total = 0u64;
    let mut progress = Instant::now();
    while !unfinished.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(_)) => {
                total += 1;
                progress = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                unfinished.remove(&partition);
                progress = Instant::now();
            }
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::ensure!(
                progress.elapsed() < stall,
                "reading {topic} back: no record for {stall:?} after {total}, partitions {unfinished:?} unfinished"
            ),
        }
    }
    Ok((total, listed))
}

pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let mut fields = json!({"expected": args.expect});
    let mut problems = Vec::new();
    if let Some(url) = &args.mysql_url {
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_events WHERE project = ?")
            .bind(&args.project)
            .fetch_one(&pool)
            .await?;
        fields["mysql_user_events"] = json!(rows);
        if rows as u64 != args.expect {
            problems.push(format!(
                "MySQL user_events holds {rows}, expected {}",
                args.expect
            ));
        }
    }
    if let (Some(url), Some(prefix)) = (&args.redis_url, &args.prefix) {
        let redis = redis_pool(url, args.redis_cluster, prefix).await?;
        let mut conn = redis.pool().get().await?;
        let counts: BTreeMap<String, u64> = redis::cmd("HGETALL")
            .arg(Keys::new(prefix, &args.project).events_total())
            .query_async(&mut *conn)
            .await?;
        let total: u64 = counts.values().sum();
        fields["redis_events_total"] = json!(total);
        if total != args.expect {
            problems.push(format!(
                "Redis events total is {total}, expected {}",
                args.expect
            ));
        }
    }
    if let Some(topic) = &args.topic {
        let (brokers, topic) = (args.brokers.clone(), topic.clone());
        let (n, listed) =
            tokio::task::spawn_blocking(move || topic_messages(&brokers, &topic)).await??;
        fields["topic_messages"] = json!(n);
        fields["topic_listed_offsets"] = json!(listed);
        if n < args.expect {
            problems.push(format!(
                "the topic holds {n} messages, fewer than the {} acknowledged",
                args.expect
            ));
        }
        fields["topic_extra"] = json!(n.saturating_sub(args.expect));
    }
    fields["ok"] = json!(problems.is_empty());
    fields["problems"] = json!(problems);
    args.output.emit(fields)?;
    anyhow::ensure!(
        problems.is_empty(),
        "events lost or doubled: {}",
        problems.join("; ")
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(subcommand)]
    pub action: TopicAction,
    #[arg(long, default_value = "127.0.0.1:9092", global = true)]
    pub brokers: String,
}

#[derive(Subcommand, Debug)]
pub enum TopicAction {
    Create {
        name: String,
        #[arg(long, default_value_t = 8)]
        partitions: i32,
    },
    Delete {
        names: Vec<String>,
    },
}

pub async fn topic(args: TopicArgs) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()?;
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(120)))
        .request_timeout(Some(Duration::from_secs(180)));
    match args.action {
        TopicAction::Create { name, partitions } => {
            let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
            for result in admin.create_topics([&topic], &options).await? {
                if let Err((name, code)) = result {
                    if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                        anyhow::bail!("cannot create topic {name}: {code}");
                    }
                }
            }
        }
        TopicAction::Delete { names } => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            for result in admin.delete_topics(&names, &options).await? {
                if let Err((name, code)) = result {
                    eprintln!("cannot delete topic {name}: {code}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_figures_time_the_window_and_both_tenths() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Nothing until 1 s (the join), then 1,000 events a second for 10 s with 1 tick
        // (10 ms of CPU at 100 ticks/s) per 100 events, except a slower, costlier last second.
        let mut samples = vec![(t0, 0, 0), (at(500), 0, 5)];
        for s in 1..=9 {
            samples.push((at(1000 * s), 1000 * (s - 1) + 100, 10 * (s - 1) + 1 + 5));
        }
        samples.push((at(11_000), 9100, 86));
        samples.push((at(13_000), 10_000, 110));
        let mut fields = json!({});
        drain_figures(&mut fields, &samples, 10_000, 100, true);
        let f = |k: &str| fields[k].as_f64().unwrap_or(f64::NAN);
        assert!((f("seconds") - 12.0).abs() < 1e-9, "{fields}");
        assert!((f("events_per_s") - 9900.0 / 12.0).abs() < 1e-6, "{fields}");
        // First tenth: from 100 applied (1 s) to the first sample at >= 1,100 (2 s).
        assert!(
            (f("first_tenth_us_per_event") - 1000.0).abs() < 1e-6,
            "{fields}"
        );
        assert!(
            (f("first_tenth_cpu_us_per_event") - 100.0).abs() < 1e-6,
            "{fields}"
        );
        // Last tenth: from the first sample at >= 9,000 (9,100 at 11 s) to the end (13 s).
        assert!(
            (f("last_tenth_us_per_event") - 2e6 / 900.0).abs() < 1e-6,
            "{fields}"
        );
        assert!(
            (f("last_tenth_cpu_us_per_event") - 0.24e6 / 900.0).abs() < 1e-6,
            "{fields}"
        );
    }

    #[test]
    fn a_drain_that_stalls_has_no_last_tenth() {
        let t0 = Instant::now();
        let samples = vec![
            (t0, 100, 0),
            (t0 + Duration::from_secs(1), 500, 10),
            (t0 + Duration::from_secs(2), 500, 10),
        ];
        let mut fields = json!({});
        drain_figures(&mut fields, &samples, 1000, 100, false);
        assert!(fields.get("last_tenth_us_per_event").is_none(), "{fields}");
        assert!(fields.get("cpu_us_per_event").is_none(), "{fields}");
        assert_eq!(fields["events_per_s"].as_f64(), Some(400.0));
    }
}
