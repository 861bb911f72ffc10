//! The raw-stores baseline: the events of a pre-filled topic (rebuilt from the same seed),
//! inserted with the worker's multi-row statement into an identical `user_events` table, one
//! transaction per batch, plus the Redis commands `aggregate.lua` issues for them, pipelined.
//! No Kafka, no decoding, no dedupe lookups, no derived tables: the most these two stores
//! take on this machine for the same rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use clap::Args;
use insightflow_model::{Event, ProjectId};
use serde_json::json;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{MySql, QueryBuilder};
use tokio::sync::Mutex;

use crate::events::{validated_events, EventGenerator};
use crate::measure::OutputArgs;

/// The worker's statement size (crates/worker/src/store/mysql.rs ROWS_PER_STATEMENT).
const ROWS_PER_STATEMENT: usize = 500;
/// The worker's events per Redis script call (crates/worker/src/store/redis.rs).
const EVENTS_PER_SCRIPT: usize = 250;

#[derive(Args, Debug)]
pub struct StoresArgs {
    /// A database migrated like the worker's (`worker migrate`), so the table is identical.
    #[arg(long)]
    pub mysql_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,
    #[arg(long)]
    pub prefix: String,
    #[arg(long, default_value = "default")]
    pub project: String,
    #[arg(long)]
    pub events: u64,
    /// Events per transaction and per Redis pipeline (the worker's batch_max_events).
    #[arg(long, default_value_t = 4000)]
    pub batch: usize,
    /// Batches written concurrently (one per worker instance compared against).
    #[arg(long, default_value_t = 1)]
    pub lanes: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 20_000)]
    pub users: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The worker's aggregate settings (crates/worker/config/default.toml).
const DEDUPE_TTL_S: i64 = 604_800;
const ONLINE_KEEP_MS: i64 = 1_800_000;
const SESSION_TTL_S: i64 = 1800;
const MINUTE_KEEP_S: i64 = 25 * 3600;
const HOUR_KEEP_S: i64 = 8 * 86_400;
const DAY_KEEP_S: i64 = 35 * 86_400;
const PATH_LEN: i64 = 50;
const PATH_TTL_S: i64 = 7 * 86_400;

pub async fn run(args: StoresArgs) -> anyhow::Result<()> {
    let project = ProjectId::parse(args.project.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Generate first, as the topic already holds its events before the worker starts.
    let mut generator = EventGenerator::new(args.seed, args.users, true);
    let mut events = Vec::with_capacity(args.events as usize);
    let mut made = 0u64;
    while made < args.events {
        let n = (args.events - made).min(500) as usize;
        let now = Utc::now();
        events.extend(validated_events(
            &generator.batch_body(n, now),
            &project,
            now,
        )?);
        made += n as u64;
    }
    let pool = MySqlPoolOptions::new()
        .max_connections(args.lanes.max(1) as u32)
        .connect(&args.mysql_url)
        .await?;
    let redis = redis::Client::open(args.redis_url.as_str())?;
    let events = Arc::new(events);
    let batches: Vec<(usize, usize)> = (0..events.len())
        .step_by(args.batch.max(1))
        .map(|s| (s, (s + args.batch.max(1)).min(events.len())))
        .collect();
    let queue = Arc::new(Mutex::new(batches.into_iter()));
    let progress = Arc::new(Mutex::new(Vec::<(Instant, usize)>::new()));
    let started = Instant::now();
    let mut lanes = Vec::new();
    for _ in 0..args.lanes.max(1) {
        let (pool, events, queue, progress) = (
            pool.clone(),
            events.clone(),
            queue.clone(),
            progress.clone(),
        );
        let mut conn = redis.get_multiplexed_async_connection().await?;
        let prefix = args.prefix.clone();
        lanes.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().await.next();
                let Some((from, to)) = next else {
                    return anyhow::Ok(());
                };
                let batch: Vec<&Event> = events[from..to].iter().collect();
                insert_rows(&pool, &batch).await?;
                // In the worker's script-sized pieces (store/redis.rs EVENTS_PER_SCRIPT): one
                // pipeline of a whole 4,000-event batch is ~80,000 commands, which can outlast
                // the client's response timeout on a busy machine.
                for piece in batch.chunks(EVENTS_PER_SCRIPT) {
                    apply_redis(&mut conn, &prefix, piece).await?;
                }
                progress.lock().await.push((Instant::now(), batch.len()));
            }
        }));
    }
    for lane in lanes {
        lane.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = events.len();
    let marks = progress.lock().await.clone();
    let (first, last) = tenth_costs(started, &marks, total);
    args.output.emit(json!({
        "events": total,
        "seconds": seconds,
        "events_per_s": total as f64 / seconds,
        "first_tenth_us_per_event": first,
        "last_tenth_us_per_event": last,
        "lanes": args.lanes,
        "batch": args.batch,
    }))
}

/// Wall time per event over the first and the last tenth of the events (does the cost grow
/// with the table?), from (completion time, events) marks.
pub fn tenth_costs(
    started: Instant,
    marks: &[(Instant, usize)],
    total: usize,
) -> (Option<f64>, Option<f64>) {
    let tenth = total / 10;
    if tenth == 0 {
        return (None, None);
    }
    let at = |target: usize| -> Option<Instant> {
        let mut done = 0;
        for (t, n) in marks {
            done += n;
            if done >= target {
                return Some(*t);
            }
        }
        None
    };
    let first_end = at(tenth);
    let last_start = at(total - tenth);
    let end = marks.last().map(|(t, _)| *t);
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / tenth as f64;
    (
        first_end.map(|t| per_event(t - started)),
        last_start.zip(end).map(|(a, b)| per_event(b - a)),
    )
}

fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

/// The worker's `insert_events` statement, 500 rows at a time, in one transaction.
async fn insert_rows(pool: &sqlx::MySqlPool, events: &[&Event]) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO user_events (project, event_id, event_type, event_name, user_id, anonymous_id, \
             distinct_id, session_id, page_url, page_path, page_title, referrer, element_tag, element_id, \
             element_classes, element_text, element_selector, click_x, click_y, properties, user_properties, \
             context, user_agent, browser, browser_version, os, device_type, ip, event_time, client_time, \
             timestamp_source, received_at) ",
        );
        q.push_values(chunk, |mut row, e| {
            let page = e.page();
            let element = e.element();
            let client = e.client();
            row.push_bind(e.project().as_str())
                .push_bind(e.event_id().as_str())
                .push_bind(e.event_type().as_str())
                .push_bind(e.event_name())
                .push_bind(e.user_id().map(|u| u.as_str()))
                .push_bind(e.anonymous_id().map(|a| a.as_str()))
                .push_bind(e.distinct_id())
                .push_bind(e.session_id().map(|s| s.as_str()))
                .push_bind(page.and_then(|p| p.url.as_deref()))
                .push_bind(page.and_then(|p| p.path.as_deref()))
                .push_bind(page.and_then(|p| p.title.as_deref()))
                .push_bind(page.and_then(|p| p.referrer.as_deref()))
                .push_bind(element.and_then(|x| x.tag.as_deref()))
                .push_bind(element.and_then(|x| x.id.as_deref()))
                .push_bind(element.and_then(|x| x.classes.as_deref()))
                .push_bind(element.and_then(|x| x.text.as_deref()))
                .push_bind(element.and_then(|x| x.selector.as_deref()))
                .push_bind(element.and_then(|x| x.x))
                .push_bind(element.and_then(|x| x.y))
                .push_bind(e.properties().map(|p| p.get()))
                .push_bind(e.user_properties().map(|p| p.get()))
                .push_bind(e.context().and_then(|c| serde_json::to_string(c).ok()))
                .push_bind(client.user_agent.as_deref())
                .push_bind(client.browser.as_deref())
                .push_bind(client.browser_version.as_deref())
                .push_bind(client.os.as_deref())
                .push_bind(client.device_type.as_deref())
                .push_bind(client.ip.as_deref())
                .push_bind(naive(e.timestamp()))
                .push_bind(e.client_timestamp().map(naive))
                .push_bind(e.timestamp_source().as_str())
                .push_bind(naive(e.received_at()));
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The writes `aggregate.lua` makes for each event, as plain pipelined commands (the
/// script's conditional reads left out: they are what the script adds).
async fn apply_redis(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    events: &[&Event],
) -> anyhow::Result<()> {
    let now_ms = Utc::now().timestamp_millis();
    let now_s = now_ms / 1000;
    let mut pipe = redis::pipe();
    let mut bases = std::collections::BTreeSet::new();
    for e in events {
        let base = format!("{prefix}:{}:", e.project().as_str());
        let ts_ms = e.timestamp().timestamp_millis();
        let ts_s = ts_ms / 1000;
        let (minute, hour, day) = (ts_s / 60, ts_s / 3600, ts_s / 86_400);
        let minute_expiry = (minute + 1) * 60 + MINUTE_KEEP_S;
        let hour_expiry = (hour + 1) * 3600 + HOUR_KEEP_S;
        let day_expiry = (day + 1) * 86_400 + DAY_KEEP_S;
        let event_type = e.event_type().as_str();
        let distinct = e.distinct_id();
        pipe.cmd("SET")
            .arg(format!("{base}seen:{}", e.event_id().as_str()))
            .arg("1")
            .arg("NX")
            .arg("EX")
            .arg(DEDUPE_TTL_S)
            .ignore();
        pipe.hincr(format!("{base}events:total"), event_type, 1)
            .ignore();
        if minute_expiry > now_s {
            let k = format!("{base}events:m:{minute}");
            pipe.hincr(&k, event_type, 1).ignore();
            pipe.expire_at(&k, minute_expiry).ignore();
        }
        if hour_expiry > now_s {
            let k = format!("{base}events:h:{hour}");
            pipe.hincr(&k, event_type, 1).ignore();
            pipe.expire_at(&k, hour_expiry).ignore();
            let k = format!("{base}uniq:h:{hour}");
            pipe.sadd(&k, distinct).ignore();
            pipe.expire_at(&k, hour_expiry).ignore();
        }
        if day_expiry > now_s {
            let k = format!("{base}uniq:d:{day}");
            pipe.sadd(&k, distinct).ignore();
            pipe.expire_at(&k, day_expiry).ignore();
        }
        if ts_ms > now_ms - ONLINE_KEEP_MS {
            pipe.cmd("ZADD")
                .arg(format!("{base}online"))
                .arg("GT")
                .arg(ts_ms)
                .arg(distinct)
                .ignore();
        }
        let path = if e.event_type().is("page_view") {
            e.page().and_then(|p| p.path.as_deref()).unwrap_or("")
        } else {
            ""
        };
        if !path.is_empty() {
            pipe.zincr(format!("{base}pages:total"), path, 1).ignore();
            let k = format!("{base}pages:h:{hour}");
            pipe.zincr(&k, path, 1).ignore();
            pipe.expire_at(&k, hour_expiry).ignore();
            let k = format!("{base}pages:d:{day}");
            pipe.zincr(&k, path, 1).ignore();
            pipe.expire_at(&k, day_expiry).ignore();
        }
        if let Some(session) = e.session_id() {
            if ts_ms > now_ms - SESSION_TTL_S * 1000 {
                let k = format!("{base}session:{}", session.as_str());
                pipe.hset_nx(&k, "user", distinct).ignore();
                pipe.hset_nx(&k, "started_ms", ts_ms).ignore();
                pipe.hincr(&k, "events", 1).ignore();
                pipe.hset(&k, "last_seen_ms", ts_ms).ignore();
                if !path.is_empty() {
                    pipe.hset(&k, "last_path", path).ignore();
                }
                pipe.expire(&k, SESSION_TTL_S).ignore();
                pipe.cmd("ZADD")
                    .arg(format!("{base}sessions:active"))
                    .arg("GT")
                    .arg(ts_ms)
                    .arg(session.as_str())
                    .ignore();
            }
        }
        let recent = format!("{base}path:{distinct}");
        pipe.lpush(&recent, format!("{ts_ms}|{event_type}|{path}"))
            .ignore();
        pipe.ltrim(&recent, 0, (PATH_LEN - 1) as isize).ignore();
        pipe.expire(&recent, PATH_TTL_S).ignore();
        pipe.hset(format!("{base}meta"), "newest_event_ms", ts_ms)
            .ignore();
        pipe.hincr(format!("{base}meta"), "applied_events", 1)
            .ignore();
        bases.insert(base);
    }
    for base in bases {
        let online = format!("{base}online");
        pipe.zrembyscore(&online, "-inf", format!("({}", now_ms - ONLINE_KEEP_MS))
            .ignore();
        pipe.pexpire(&online, ONLINE_KEEP_MS).ignore();
        let active = format!("{base}sessions:active");
        pipe.zrembyscore(
            &active,
            "-inf",
            format!("({}", now_ms - SESSION_TTL_S * 1000),
        )
        .ignore();
        pipe.expire(&active, SESSION_TTL_S).ignore();
    }
    pipe.hset(format!("{prefix}:positions"), "raw/0", events.len())
        .ignore();
    pipe.query_async::<()>(conn).await?;
    Ok(())
}
