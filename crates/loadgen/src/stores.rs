//! The store baselines: the events of a pre-filled topic (rebuilt from the same seed) written
//! straight into the stores, with no Kafka, no decoding, no dedupe lookups and no derived
//! tables (`--target`):
//!
//! - `both` (raw stores): the worker's multi-row statement into an identical `user_events`
//!   table, one transaction per batch, plus the Redis commands `aggregate.lua` issues for them
//!   (dedupe marks included), one pipeline at a time, as the worker does;
//! - `mysql-insert` (MySQL alone): the same rows, multi-row INSERT, nothing else;
//! - `mysql-load` (MySQL alone): the same rows with `LOAD DATA LOCAL INFILE`, through the
//!   `mariadb` command-line client (sqlx has no LOCAL INFILE);
//! - `redis` (Redis alone): the same aggregate updates, pipelined with several pipelines in
//!   flight, without the per-event dedupe marks.
//!
//! MySQL alone and Redis alone are the limits the worker is measured against: what each store
//! takes on this machine for the same data, on its own.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use clap::{Args, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use insightflow_model::{Event, ProjectId};
use serde_json::json;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{MySql, QueryBuilder};
use tokio::sync::Mutex;

use insightflow_store::keys::Keys;

use crate::events::{validated_events, EventGenerator};
use crate::measure::OutputArgs;

/// The worker's statement size (crates/worker/src/store/mysql.rs ROWS_PER_STATEMENT).
const ROWS_PER_STATEMENT: usize = 500;
/// The worker's events per Redis script call (crates/worker/src/store/redis.rs).
const EVENTS_PER_SCRIPT: usize = 250;
/// How long a baseline waits for a Redis reply before it fails.
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a run writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Raw stores: the worker's INSERT plus the Redis commands with dedupe marks.
    Both,
    /// MySQL alone: multi-row INSERT (--rows-per-statement rows, --batch rows a transaction).
    MysqlInsert,
    /// MySQL alone: LOAD DATA LOCAL INFILE, --batch rows a file, through the mariadb client.
    MysqlLoad,
    /// Redis alone: the aggregate updates, pipelined, without dedupe marks.
    Redis,
}

impl Target {
    fn writes_mysql(self) -> bool {
        matches!(self, Self::Both | Self::MysqlInsert | Self::MysqlLoad)
    }

    fn writes_redis(self) -> bool {
        matches!(self, Self::Both | Self::Redis)
    }
}

#[derive(Args, Debug)]
pub struct StoresArgs {
    #[arg(long, value_enum, default_value = "both")]
    pub target: Target,
    /// A database migrated like the worker's (`worker migrate`), so the table is identical.
    #[arg(long, required_if_eq_any([("target", "both"), ("target", "mysql-insert"), ("target", "mysql-load")]))]
    pub mysql_url: Option<String>,
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,
    /// Redis key prefix (the worker's `redis.key_prefix`).
    #[arg(long, default_value = "loadgen")]
    pub prefix: String,
    #[arg(long, default_value = "default")]
    pub project: String,
    #[arg(long)]
    pub events: u64,
    /// Events per transaction (per file with mysql-load), and per progress mark (the worker's
    /// batch_max_events).
    #[arg(long, default_value_t = 4000)]
    pub batch: usize,
    /// Rows per INSERT statement (the worker's ROWS_PER_STATEMENT).
    #[arg(long, default_value_t = ROWS_PER_STATEMENT)]
    pub rows_per_statement: usize,
    /// Redis alone: pipelines in flight at once on the connection.
    #[arg(long, default_value_t = 4)]
    pub redis_in_flight: usize,
    /// mysql-load: the MySQL command-line client.
    #[arg(long, default_value = "mariadb")]
    pub mysql_client: String,
    /// mysql-load: where the data files are written (removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub work_dir: PathBuf,
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
    let batch = args.batch.max(1);
    let (started, marks) = if args.target == Target::MysqlLoad {
        let url = args.mysql_url.clone().unwrap_or_default();
        let client = MysqlClient::from_url(&url, &args.mysql_client)?;
        let dir = args
            .work_dir
            .join(format!("loadgen-load-{}", std::process::id()));
        let result = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || load_data(&client, &events, batch, &dir)
        })
        .await?;
        let _ = std::fs::remove_dir_all(&dir);
        result?
    } else {
        write_batches(&args, Arc::new(events), batch).await?
    };
    let total = args.events as usize;
    let seconds = marks
        .last()
        .map_or(0.0, |(t, _)| (*t - started).as_secs_f64());
    let (first, last) = tenth_costs(started, &marks, total);
    args.output.emit(json!({
        "target": args.target.to_possible_value().map(|v| v.get_name().to_owned()),
        "events": total,
        "seconds": seconds,
        "events_per_s": total as f64 / seconds.max(1e-9),
        "first_tenth_us_per_event": first,
        "last_tenth_us_per_event": last,
        "lanes": args.lanes,
        "batch": batch,
        "rows_per_statement": args.rows_per_statement.min(MAX_PLACEHOLDERS / COLUMNS),
        "redis_in_flight": args.redis_in_flight,
    }))
}

/// Writes the events in batches over `--lanes` connections; returns the start and a
/// (completion time, events) mark per batch.
async fn write_batches(
    args: &StoresArgs,
    events: Arc<Vec<Event>>,
    batch: usize,
) -> anyhow::Result<(Instant, Vec<(Instant, usize)>)> {
    let target = args.target;
    let pool = match (&args.mysql_url, target.writes_mysql()) {
        (Some(url), true) => Some(
            MySqlPoolOptions::new()
                .max_connections(args.lanes.max(1) as u32)
                .connect(url)
                .await?,
        ),
        _ => None,
    };
    let redis = redis::Client::open(args.redis_url.as_str())?;
    let batches: Vec<(usize, usize)> = (0..events.len())
        .step_by(batch)
        .map(|s| (s, (s + batch).min(events.len())))
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
        let mut conn = match target.writes_redis() {
            true => Some(redis.get_multiplexed_async_connection().await?),
            false => None,
        };
        if let Some(conn) = conn.as_mut() {
            // The client's 500 ms default is a stall of this busy 2-core machine away.
            conn.set_response_timeout(REDIS_RESPONSE_TIMEOUT);
        }
        let prefix = args.prefix.clone();
        let (rows_per_statement, in_flight) =
            (args.rows_per_statement.max(1), args.redis_in_flight.max(1));
        lanes.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().await.next();
                let Some((from, to)) = next else {
                    return anyhow::Ok(());
                };
                let batch: Vec<&Event> = events[from..to].iter().collect();
                if let Some(pool) = &pool {
                    insert_rows(pool, &batch, rows_per_statement).await?;
                }
                if let Some(conn) = conn.as_mut() {
                    if target == Target::Both {
                        // In the worker's script-sized pieces (store/redis.rs EVENTS_PER_SCRIPT),
                        // one at a time as the worker sends them: one pipeline of a whole
                        // 4,000-event batch is ~80,000 commands, which can outlast the client's
                        // response timeout on a busy machine.
                        for piece in batch.chunks(EVENTS_PER_SCRIPT) {
                            redis_pipeline(&prefix, piece, true)
                                .query_async::<()>(conn)
                                .await?;
                        }
                    } else {
                        // Redis alone: the next pieces are built and sent while Redis works
                        // on the earlier ones.
                        let (batch, prefix) = (&batch, &prefix);
                        futures::stream::iter((0..batch.len()).step_by(EVENTS_PER_SCRIPT))
                            .map(|from| {
                                let to = (from + EVENTS_PER_SCRIPT).min(batch.len());
                                let pipe = redis_pipeline(prefix, &batch[from..to], false);
                                let mut conn = conn.clone();
                                async move { pipe.query_async::<()>(&mut conn).await }
                            })
                            .buffered(in_flight)
                            .try_collect::<Vec<()>>()
                            .await?;
                    }
                }
                progress.lock().await.push((Instant::now(), batch.len()));
            }
        }));
    }
    for lane in lanes {
        lane.await??;
    }
    let marks = progress.lock().await.clone();
    Ok((started, marks))
}

/// Wall time per event over the first and the last tenth of the events (does the cost grow
/// with the table?), from (completion time, events) marks. With marks coarser than a tenth,
/// each span is widened to whole marks and divided by the events it holds.
pub fn tenth_costs(
    started: Instant,
    marks: &[(Instant, usize)],
    total: usize,
) -> (Option<f64>, Option<f64>) {
    let tenth = total / 10;
    let Some(&(end, _)) = marks.last() else {
        return (None, None);
    };
    if tenth == 0 {
        return (None, None);
    }
    // (time, events done by then), starting with (started, 0).
    let mut done = vec![(started, 0usize)];
    for (t, n) in marks {
        let before = done.last().map_or(0, |d| d.1);
        done.push((*t, before + n));
    }
    let per_event = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    let first = done
        .iter()
        .find(|(_, n)| *n >= tenth)
        .map(|(t, n)| per_event(*t - started, *n));
    let last = done
        .iter()
        .rev()
        .find(|(_, n)| *n <= total - tenth)
        .filter(|(_, n)| *n < total)
        .map(|(t, n)| per_event(end - *t, total - n));
    (first, last)
}

fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

/// The columns both MySQL baselines write, in `COLUMN_LIST` order: the values of the worker's
/// `insert_events`, once, so the INSERT and the LOAD DATA file carry the same rows. Each event
/// also gets its dedupe row (`ID_COLUMN_LIST`), as the worker writes one in `event_ids` before
/// the raw row (`store/dedupe.rs`).
const COLUMN_LIST: &str = "project, event_id, event_type, event_name, user_id, anonymous_id, \
     distinct_id, session_id, page_url, page_path, page_title, referrer, element_tag, element_id, \
     element_classes, element_text, element_selector, click_x, click_y, properties, user_properties, \
     context, user_agent, browser, browser_version, os, device_type, ip, event_time, client_time, \
     timestamp_source, received_at, utm_source, utm_medium, utm_campaign, utm_term, utm_content, \
     click_id_type, click_id, referrer_domain, channel, country, region, city, is_bot";

/// The columns of an event's `event_ids` row the baselines write (its origin is the worker's).
const ID_COLUMN_LIST: &str = "project, event_id, event_time";

/// One column value of a `user_events` row.
enum Column<'a> {
    Text(Option<&'a str>),
    Owned(Option<String>),
    Int(Option<i32>),
    Time(Option<NaiveDateTime>),
}

/// The values of a row: `COLUMN_LIST`'s columns.
const COLUMNS: usize = 45;
/// MySQL's limit on the placeholders of one prepared statement.
const MAX_PLACEHOLDERS: usize = 65_535;

fn columns(e: &Event) -> [Column<'_>; COLUMNS] {
    use Column::{Int, Owned, Text, Time};
    let page = e.page();
    let element = e.element();
    let client = e.client();
    let acquisition = e.acquisition();
    let campaign = acquisition.map(|a| &a.campaign);
    let click_id = acquisition.and_then(|a| a.click_id.as_ref());
    [
        Text(Some(e.project().as_str())),
        Text(Some(e.event_id().as_str())),
        Text(Some(e.event_type().as_str())),
        Text(e.event_name()),
        Text(e.user_id().map(|u| u.as_str())),
        Text(e.anonymous_id().map(|a| a.as_str())),
        Text(Some(e.distinct_id())),
        Text(e.session_id().map(|s| s.as_str())),
        Text(page.and_then(|p| p.url.as_deref())),
        Text(page.and_then(|p| p.path.as_deref())),
        Text(page.and_then(|p| p.title.as_deref())),
        Text(page.and_then(|p| p.referrer.as_deref())),
        Text(element.and_then(|x| x.tag.as_deref())),
        Text(element.and_then(|x| x.id.as_deref())),
        Text(element.and_then(|x| x.classes.as_deref())),
        Text(element.and_then(|x| x.text.as_deref())),
        Text(element.and_then(|x| x.selector.as_deref())),
        Int(element.and_then(|x| x.x)),
        Int(element.and_then(|x| x.y)),
        Text(e.properties().map(|p| p.get())),
        Text(e.user_properties().map(|p| p.get())),
        Owned(e.context().and_then(|c| serde_json::to_string(c).ok())),
        Text(client.user_agent.as_deref()),
        Text(client.browser.as_deref()),
        Text(client.browser_version.as_deref()),
        Text(client.os.as_deref()),
        Text(client.device_type.as_deref()),
        Text(client.ip.as_deref()),
        Time(Some(naive(e.timestamp()))),
        Time(e.client_timestamp().map(naive)),
        Text(Some(e.timestamp_source().as_str())),
        Time(Some(naive(e.received_at()))),
        Text(campaign.and_then(|c| c.source.as_deref())),
        Text(campaign.and_then(|c| c.medium.as_deref())),
        Text(campaign.and_then(|c| c.name.as_deref())),
        Text(campaign.and_then(|c| c.term.as_deref())),
        Text(campaign.and_then(|c| c.content.as_deref())),
        Text(click_id.map(|c| c.kind)),
        Text(click_id.map(|c| c.value.as_str())),
        Text(acquisition.and_then(|a| a.referrer_domain.as_deref())),
        Text(acquisition.map(|a| a.channel.as_str())),
        Text(client.country.as_deref()),
        Text(client.region.as_deref()),
        Text(client.city.as_deref()),
        Int(Some(i32::from(e.is_bot()))),
    ]
}

/// The worker's `insert_events` statement, `rows_per_statement` rows at a time, in one
/// transaction.
async fn insert_rows(
    pool: &sqlx::MySqlPool,
    events: &[&Event],
    rows_per_statement: usize,
) -> anyhow::Result<()> {
    // A statement holds at most MAX_PLACEHOLDERS values: with the worker's 500 rows a
    // statement that is far off, but a baseline asked for more rows gets as many as fit.
    let rows_per_statement = rows_per_statement.min(MAX_PLACEHOLDERS / COLUMNS);
    let mut tx = pool.begin().await?;
    for chunk in events.chunks(rows_per_statement) {
        let mut ids =
            QueryBuilder::<MySql>::new(format!("INSERT INTO event_ids ({ID_COLUMN_LIST}) "));
        ids.push_values(chunk, |mut row, e| {
            row.push_bind(e.project().as_str())
                .push_bind(e.event_id().as_str())
                .push_bind(naive(e.timestamp()));
        });
        ids.build().execute(&mut *tx).await?;
        let mut q = QueryBuilder::<MySql>::new(format!("INSERT INTO user_events ({COLUMN_LIST}) "));
        q.push_values(chunk, |mut row, e| {
            for column in columns(e) {
                match column {
                    Column::Text(v) => row.push_bind(v),
                    Column::Owned(v) => row.push_bind(v),
                    Column::Int(v) => row.push_bind(v),
                    Column::Time(v) => row.push_bind(v),
                };
            }
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// How to run the MySQL command-line client against a `mysql://user:password@host:port/db` URL.
struct MysqlClient {
    program: String,
    args: Vec<String>,
    password: Option<String>,
}

impl MysqlClient {
    fn from_url(url: &str, program: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url)?;
        let database = url.path().trim_start_matches('/');
        anyhow::ensure!(!database.is_empty(), "the MySQL URL names no database");
        let mut args = vec![
            format!("--host={}", url.host_str().unwrap_or("127.0.0.1")),
            format!("--port={}", url.port().unwrap_or(3306)),
            "--protocol=TCP".to_owned(),
            "--local-infile=1".to_owned(),
            // Flush every result as it comes, so progress marks are timed as they happen.
            "--unbuffered".to_owned(),
            "--batch".to_owned(),
            "--skip-column-names".to_owned(),
        ];
        if !url.username().is_empty() {
            args.push(format!("--user={}", url.username()));
        }
        args.push(format!("--database={database}"));
        Ok(Self {
            program: program.to_owned(),
            args,
            password: url.password().map(str::to_owned),
        })
    }
}

/// MySQL alone with LOAD DATA: writes the rows as LOAD DATA's default text format, `batch` rows
/// a file (untimed), then times one client session loading them in turn, each file one
/// autocommitted statement. After each file the session prints the rows loaded so far and the
/// statement's warning count: a progress mark, and a check, since LOCAL turns errors (a
/// duplicate key, a value that does not fit) into warnings.
fn load_data(
    client: &MysqlClient,
    events: &[Event],
    batch: usize,
    dir: &Path,
) -> anyhow::Result<(Instant, Vec<(Instant, usize)>)> {
    std::fs::create_dir_all(dir)?;
    let mut script = String::new();
    let mut loaded = 0usize;
    for (i, chunk) in events.chunks(batch).enumerate() {
        let path = dir.join(format!("rows-{i:06}.tsv"));
        let ids_path = dir.join(format!("ids-{i:06}.tsv"));
        let mut text = String::with_capacity(chunk.len() * 1024);
        let mut ids = String::with_capacity(chunk.len() * 80);
        for e in chunk {
            tsv_row(&mut text, e);
            escape_into(&mut ids, e.project().as_str());
            ids.push('\t');
            escape_into(&mut ids, e.event_id().as_str());
            let _ = writeln!(
                ids,
                "\t{}",
                naive(e.timestamp()).format("%Y-%m-%d %H:%M:%S%.6f")
            );
        }
        std::fs::write(&path, text)?;
        std::fs::write(&ids_path, ids)?;
        let usable = |p: &Path| -> anyhow::Result<String> {
            p.to_str()
                .filter(|p| !p.contains(['\'', '\\']))
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("unusable work directory {dir:?}"))
        };
        let (path, ids_path) = (usable(&path)?, usable(&ids_path)?);
        loaded += chunk.len();
        // The dedupe rows first, as the worker writes them; both loads' warnings counted.
        let _ = writeln!(
            script,
            "LOAD DATA LOCAL INFILE '{ids_path}' INTO TABLE event_ids CHARACTER SET utf8mb4 ({ID_COLUMN_LIST});\n\
             SET @ids_warnings = @@warning_count;\n\
             LOAD DATA LOCAL INFILE '{path}' INTO TABLE user_events CHARACTER SET utf8mb4 ({COLUMN_LIST});\n\
             SELECT {loaded}, @ids_warnings + @@warning_count;"
        );
    }
    let script_path = dir.join("load.sql");
    std::fs::write(&script_path, script)?;
    let mut command = Command::new(&client.program);
    command
        .args(&client.args)
        .stdin(std::fs::File::open(&script_path)?)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(password) = &client.password {
        command.env("MYSQL_PWD", password);
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", client.program))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut marks = Vec::new();
    let mut done = 0usize;
    let mut problems = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let now = Instant::now();
        let mut fields = line.split('\t');
        let (Some(Ok(total)), Some(Ok(warnings))) = (
            fields.next().map(str::parse::<usize>),
            fields.next().map(str::parse::<u64>),
        ) else {
            problems.push(format!("unexpected output {line:?}"));
            continue;
        };
        if warnings > 0 {
            problems.push(format!("{warnings} warnings loading rows up to {total}"));
        }
        marks.push((now, total - done));
        done = total;
    }
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed ({}): {}",
        client.program,
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    anyhow::ensure!(problems.is_empty(), "LOAD DATA: {}", problems.join("; "));
    anyhow::ensure!(
        done == events.len(),
        "loaded {done} of {} rows",
        events.len()
    );
    Ok((started, marks))
}

/// One row in LOAD DATA's default format: tab-separated, newline-terminated, `\N` for NULL,
/// backslash escapes for the separators.
fn tsv_row(out: &mut String, e: &Event) {
    for (i, column) in columns(e).into_iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match column {
            Column::Text(None) | Column::Owned(None) | Column::Int(None) | Column::Time(None) => {
                out.push_str("\\N");
            }
            Column::Text(Some(v)) => escape_into(out, v),
            Column::Owned(Some(v)) => escape_into(out, &v),
            Column::Int(Some(v)) => {
                let _ = write!(out, "{v}");
            }
            // Microseconds, as a bound parameter carries them; the column keeps milliseconds.
            Column::Time(Some(v)) => {
                let _ = write!(out, "{}", v.format("%Y-%m-%d %H:%M:%S%.6f"));
            }
        }
    }
    out.push('\n');
}

fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
}

/// The writes `aggregate.lua` makes for each event, as plain pipelined commands (the
/// script's conditional reads left out: they are what the script adds), with or without the
/// per-event dedupe mark.
fn redis_pipeline(prefix: &str, events: &[&Event], dedupe_marks: bool) -> redis::Pipeline {
    let now_ms = Utc::now().timestamp_millis();
    let now_s = now_ms / 1000;
    let mut pipe = redis::pipe();
    let mut projects = std::collections::BTreeSet::new();
    for e in events {
        let keys = Keys::new(prefix, e.project().as_str());
        let ts_ms = e.timestamp().timestamp_millis();
        let ts_s = ts_ms / 1000;
        let (minute, hour, day) = (ts_s / 60, ts_s / 3600, ts_s / 86_400);
        let minute_expiry = (minute + 1) * 60 + MINUTE_KEEP_S;
        let hour_expiry = (hour + 1) * 3600 + HOUR_KEEP_S;
        let day_expiry = (day + 1) * 86_400 + DAY_KEEP_S;
        let event_type = e.event_type().as_str();
        let distinct = e.distinct_id();
        if dedupe_marks {
            pipe.cmd("SET")
                .arg(keys.applied_mark(e.event_id().as_str()))
                .arg("1")
                .arg("NX")
                .arg("EX")
                .arg(DEDUPE_TTL_S)
                .ignore();
        }
        pipe.hincr(keys.events_total(), event_type, 1).ignore();
        if minute_expiry > now_s {
            let k = keys.events_minute(minute);
            pipe.hincr(&k, event_type, 1).ignore();
            pipe.expire_at(&k, minute_expiry).ignore();
        }
        if hour_expiry > now_s {
            let k = keys.events_hour(hour);
            pipe.hincr(&k, event_type, 1).ignore();
            pipe.expire_at(&k, hour_expiry).ignore();
            let k = keys.unique_hour(hour);
            pipe.pfadd(&k, distinct).ignore();
            pipe.expire_at(&k, hour_expiry).ignore();
        }
        if day_expiry > now_s {
            let k = keys.unique_day(day);
            pipe.pfadd(&k, distinct).ignore();
            pipe.expire_at(&k, day_expiry).ignore();
        }
        if ts_ms > now_ms - ONLINE_KEEP_MS {
            pipe.cmd("ZADD")
                .arg(keys.online())
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
            pipe.zincr(keys.pages_total(), path, 1).ignore();
            let k = keys.pages_hour(hour);
            pipe.zincr(&k, path, 1).ignore();
            pipe.expire_at(&k, hour_expiry).ignore();
            let k = keys.pages_day(day);
            pipe.zincr(&k, path, 1).ignore();
            pipe.expire_at(&k, day_expiry).ignore();
        }
        if let Some(session) = e.session_id() {
            if ts_ms > now_ms - SESSION_TTL_S * 1000 {
                let k = keys.session(session.as_str());
                pipe.hset_nx(&k, "user", distinct).ignore();
                pipe.hset_nx(&k, "started_ms", ts_ms).ignore();
                pipe.hincr(&k, "events", 1).ignore();
                pipe.hset(&k, "last_seen_ms", ts_ms).ignore();
                if !path.is_empty() {
                    pipe.hset(&k, "last_path", path).ignore();
                }
                pipe.expire(&k, SESSION_TTL_S).ignore();
                pipe.cmd("ZADD")
                    .arg(keys.sessions_active())
                    .arg("GT")
                    .arg(ts_ms)
                    .arg(session.as_str())
                    .ignore();
            }
        }
        let recent = keys.recent_path(distinct);
        pipe.lpush(&recent, format!("{ts_ms}|{event_type}|{path}"))
            .ignore();
        pipe.ltrim(&recent, 0, (PATH_LEN - 1) as isize).ignore();
        pipe.expire(&recent, PATH_TTL_S).ignore();
        pipe.hset(keys.meta(), "newest_event_ms", ts_ms).ignore();
        pipe.hincr(keys.meta(), "applied_events", 1).ignore();
        projects.insert(e.project().as_str());
    }
    for project in projects {
        let keys = Keys::new(prefix, project);
        let online = keys.online();
        pipe.zrembyscore(&online, "-inf", format!("({}", now_ms - ONLINE_KEEP_MS))
            .ignore();
        pipe.pexpire(&online, ONLINE_KEEP_MS).ignore();
        let active = keys.sessions_active();
        pipe.zrembyscore(
            &active,
            "-inf",
            format!("({}", now_ms - SESSION_TTL_S * 1000),
        )
        .ignore();
        pipe.expire(&active, SESSION_TTL_S).ignore();
        pipe.hset(keys.positions(), "raw/0", events.len()).ignore();
    }
    pipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenth_costs_widen_to_whole_marks() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 100 events in marks of 10 every 10 ms, the last mark slower (30 ms).
        let mut marks: Vec<(Instant, usize)> = (1..=9).map(|i| (at(10 * i), 10)).collect();
        marks.push((at(120), 10));
        let (first, last) = tenth_costs(t0, &marks, 100);
        assert_eq!(first.map(f64::round), Some(1000.0));
        assert_eq!(last.map(f64::round), Some(3000.0));
        // Two marks of 50: each tenth is measured over the 50 events of its mark.
        let (first, last) = tenth_costs(t0, &[(at(50), 50), (at(150), 50)], 100);
        assert_eq!(first.map(f64::round), Some(1000.0));
        assert_eq!(last.map(f64::round), Some(2000.0));
    }

    #[test]
    fn load_data_text_escapes_separators_and_writes_null() {
        let mut out = String::new();
        escape_into(&mut out, "a\tb\nc\\d\re\0f");
        assert_eq!(out, "a\\tb\\nc\\\\d\\re\\0f");
    }

    #[test]
    fn a_load_data_row_has_every_column_once() {
        let now = Utc::now();
        let project = ProjectId::parse("default").expect("valid project");
        let body = EventGenerator::new(3, 50, true).batch_body(20, now);
        for e in validated_events(&body, &project, now).expect("valid events") {
            let mut row = String::new();
            tsv_row(&mut row, &e);
            assert!(row.ends_with('\n') && !row[..row.len() - 1].contains('\n'));
            let fields: Vec<&str> = row.trim_end_matches('\n').split('\t').collect();
            assert_eq!(fields.len(), COLUMN_LIST.split(',').count());
            assert_eq!(fields[1], e.event_id().as_str());
            assert_eq!(fields[6], e.distinct_id());
            // The anonymous id of an identified user, and the user id of an anonymous one,
            // are NULL.
            assert!(fields[4] == "\\N" || fields[5] == "\\N");
        }
    }
}
