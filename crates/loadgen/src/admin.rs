//! Bookkeeping around the measured runs: waiting for a drain, the exactly-once count checks,
//! and topic creation and deletion.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use redis::AsyncCommands;
use serde_json::json;

use crate::measure::OutputArgs;

#[derive(Args, Debug)]
pub struct DrainWaitArgs {
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,
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

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn total_cpu(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| cpu_ticks(*p)).sum()
}

pub async fn drain_wait(args: DrainWaitArgs) -> anyhow::Result<()> {
    let client = redis::Client::open(args.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let meta = format!("{}:{}:meta", args.prefix, args.project);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.timeout);
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    let mut cpu_at_first = None;
    let applied = loop {
        let applied: Option<u64> = conn.hget(&meta, "applied_events").await?;
        let applied = applied.unwrap_or(0);
        let now = Instant::now();
        if applied > 0 && cpu_at_first.is_none() {
            cpu_at_first = Some(total_cpu(&args.pids));
        }
        samples.push((now, applied));
        if applied >= args.expect || now >= deadline {
            break applied;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let cpu_at_end = total_cpu(&args.pids);
    // The first sample with progress opens the measured window (consumer-group join and
    // start-up are excluded); the window's first batch is therefore not counted.
    let first = samples.iter().find(|(_, n)| *n > 0).copied();
    // The window closes at the first sample showing the final count, so a drain that stalls
    // short of the target (a lost event) still gets the rate it had while it progressed.
    let last = samples
        .last()
        .and_then(|(_, n)| samples.iter().find(|(_, m)| m == n))
        .copied();
    let crossing = |target: u64| samples.iter().find(|(_, n)| *n >= target).map(|(t, _)| *t);
    let tenth = args.expect / 10;
    let per_event = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    let mut fields = json!({
        "expected": args.expect,
        "applied": applied,
        "wall_seconds": started.elapsed().as_secs_f64(),
    });
    if let (Some((t0, n0)), Some((t1, n1))) = (first, last) {
        let seconds = (t1 - t0).as_secs_f64();
        fields["seconds"] = json!(seconds);
        fields["events_per_s"] = json!((n1 - n0) as f64 / seconds.max(1e-9));
        if let Some(cpu0) = cpu_at_first {
            let ticks = cpu_at_end.saturating_sub(cpu0);
            fields["cpu_us_per_event"] =
                json!(ticks as f64 * 1e6 / args.clk_tck as f64 / (n1 - n0).max(1) as f64);
        }
        if tenth > 0 {
            if let Some(t) = crossing(n0 + tenth) {
                fields["first_tenth_us_per_event"] = json!(per_event(t - t0, tenth));
            }
            if let Some(t) = crossing(args.expect - tenth) {
                if applied >= args.expect {
                    fields["last_tenth_us_per_event"] = json!(per_event(t1 - t, tenth));
                }
            }
        }
    }
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
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let counts: BTreeMap<String, u64> = conn
            .hgetall(format!("{prefix}:{}:events:total", args.project))
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
