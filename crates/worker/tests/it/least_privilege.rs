//! The compose deployment's two MySQL users, as `deploy/mysql/grants.sql` grants them, on the
//! real MariaDB: the migrations run as the migration user; the whole worker (consumer, stats
//! API with funnel writes, retention job, Redis rebuild) runs as the worker user and stores
//! every event; and the worker user is refused DDL and every other database.
//!
//! The grants are applied to a throwaway database and throwaway users (the file's database and
//! user names substituted), all dropped at the end, pass or fail.

// A test panics to fail: unwrapping in its helpers is how it reports.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use crate::support::{
    counts, direct, spawn_ingest, spawn_worker_with, worker_settings, WorkerTarget,
};
use chrono::{TimeDelta, Utc};
use futures::FutureExt;
use insightflow_worker::metrics::WorkerMetrics;
use insightflow_worker::store::mysql::MysqlStore;
use insightflow_worker::store::redis::RedisStore;
use insightflow_worker::{keys, rebuild, retention, Role};
use serde_json::{json, Value};
use sqlx::mysql::{MySqlDatabaseError, MySqlPoolOptions};
use sqlx::MySqlPool;

/// The committed grants: what the compose deployment's MySQL init script applies.
const GRANTS: &str = include_str!("../../../../deploy/mysql/grants.sql");
/// The names grants.sql uses, replaced by this test's throwaway ones.
const GRANTS_DATABASE: &str = "`insightflow`.*";
const GRANTS_WORKER: &str = "'insightflow_worker'@'%'";
const GRANTS_MIGRATE: &str = "'insightflow_migrate'@'%'";

/// Events sent through the gateway.
const SENT: usize = 120;
/// Raw events written 100 days old, for the retention job to delete.
const OLD: usize = 5;

/// MySQL errors that mean "you lack the privilege": database, table, column, and a global
/// privilege (ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR,
/// ER_COLUMNACCESS_DENIED_ERROR, ER_SPECIFIC_ACCESS_DENIED_ERROR).
const ACCESS_DENIED: [u16; 4] = [1044, 1142, 1143, 1227];

/// This run's throwaway database, users and Redis prefix.
#[derive(Clone, Debug)]
struct Names {
    /// host:port of the server (TEST_MYSQL_URL's, default 127.0.0.1:3306).
    server: String,
    /// The database the grants are for (no `_`: a wildcard in database-level grants).
    database: String,
    /// A database neither user has any grant on.
    other_database: String,
    worker: String,
    worker_password: String,
    migrate: String,
    migrate_password: String,
    redis_prefix: String,
}

impl Names {
    fn new() -> Self {
        let id = || uuid::Uuid::new_v4().simple().to_string();
        let run = &id()[..12];
        Self {
            server: support::mysql_host(),
            database: format!("iflp{run}"),
            other_database: format!("iflpother{run}"),
            worker: format!("lpw{run}"),
            worker_password: id(),
            migrate: format!("lpm{run}"),
            migrate_password: id(),
            redis_prefix: support::unique("lp"),
        }
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!(
            "mysql://{user}:{password}@{}/{}",
            self.server, self.database
        )
    }

    fn worker_url(&self) -> String {
        self.url(&self.worker, &self.worker_password)
    }

    fn migrate_url(&self) -> String {
        self.url(&self.migrate, &self.migrate_password)
    }

    /// grants.sql's statements for this run's database and users.
    fn grants(&self) -> Vec<String> {
        assert!(
            !GRANTS.to_uppercase().contains("IDENTIFIED"),
            "deploy/mysql/grants.sql must hold no passwords"
        );
        let without_comments: Vec<&str> = GRANTS
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect();
        let statements: Vec<String> = without_comments
            .join("\n")
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.replace(GRANTS_DATABASE, &format!("`{}`.*", self.database))
                    .replace(GRANTS_WORKER, &format!("'{}'@'%'", self.worker))
                    .replace(GRANTS_MIGRATE, &format!("'{}'@'%'", self.migrate))
            })
            .collect();
        for statement in &statements {
            assert!(
                statement.starts_with("GRANT ") && !statement.contains("insightflow"),
                "deploy/mysql/grants.sql holds a statement this test cannot aim at its throwaway \
                 database and users (it substitutes {GRANTS_DATABASE}, {GRANTS_WORKER} and \
                 {GRANTS_MIGRATE}): {statement}"
            );
        }
        for user in [&self.worker, &self.migrate] {
            assert!(
                statements.iter().any(|s| s.contains(&format!("'{user}'@"))),
                "deploy/mysql/grants.sql grants nothing to one of its users: {statements:?}"
            );
        }
        statements
    }
}

/// The server as root, or a failure that says how to start it.
async fn root_pool() -> MySqlPool {
    let url = support::mysql_server();
    MySqlPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to MariaDB as root at {url}: {e}. Start the local services with \
                 `scripts/deps.sh` (make deps), or point TEST_MYSQL_URL at a running server."
            )
        })
}

async fn run(pool: &MySqlPool, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("`{sql}`: {e}"));
}

fn mysql_error_number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()
        .and_then(|db| db.try_downcast_ref::<MySqlDatabaseError>())
        .map(MySqlDatabaseError::number)
}

/// `sql` fails because `who` lacks a privilege (not because it is malformed).
async fn assert_refused(pool: &MySqlPool, who: &str, sql: &str) {
    match sqlx::raw_sql(sql).execute(pool).await {
        Ok(_) => panic!("{who} ran `{sql}`: it must be refused"),
        Err(e) => assert!(
            mysql_error_number(&e).is_some_and(|n| ACCESS_DENIED.contains(&n)),
            "{who}: `{sql}` failed, but not for lack of a privilege: {e}"
        ),
    }
}

async fn user_pool(url: &str) -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect as a test user: {e}"))
}

/// Root creates the users (as deploy/mysql/create-users.sh does, with test passwords), applies
/// grants.sql, and makes a database neither user may touch.
async fn create_users(root: &MySqlPool, names: &Names) {
    let grants = names.grants();
    for (user, password) in [
        (&names.worker, &names.worker_password),
        (&names.migrate, &names.migrate_password),
    ] {
        run(
            root,
            &format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"),
        )
        .await;
    }
    for statement in &grants {
        run(root, statement).await;
    }
    let other = &names.other_database;
    run(root, &format!("CREATE DATABASE `{other}`")).await;
    run(root, &format!("CREATE TABLE `{other}`.secrets (id INT)")).await;
    run(root, &format!("INSERT INTO `{other}`.secrets VALUES (1)")).await;
}

async fn cleanup(root: &MySqlPool, names: &Names) {
    for sql in [
        format!("DROP DATABASE IF EXISTS `{}`", names.database),
        format!("DROP DATABASE IF EXISTS `{}`", names.other_database),
        format!("DROP USER IF EXISTS '{}'@'%'", names.worker),
        format!("DROP USER IF EXISTS '{}'@'%'", names.migrate),
    ] {
        if let Err(e) = sqlx::raw_sql(&sql).execute(root).await {
            eprintln!("cleanup: `{sql}`: {e}");
        }
    }
    let target = worker_target(names);
    let mut redis = target.redis().await;
    let keys = support::keys_with_prefix(&mut redis, &names.redis_prefix).await;
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut redis)
            .await
            .expect("delete the test's Redis keys");
    }
}

/// The worker's target: its database reached as the worker user.
fn worker_target(names: &Names) -> WorkerTarget {
    WorkerTarget {
        topic: format!("{}_events", names.redis_prefix),
        group_id: format!("{}_group", names.redis_prefix),
        database_url: names.worker_url(),
        redis_prefix: names.redis_prefix.clone(),
        redis: support::RedisKind::Single,
    }
}

/// A stats API request to the worker; returns status and JSON.
async fn call(
    http: &reqwest::Client,
    worker: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = http.request(method.clone(), format!("{worker}{path}"));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Every stats endpoint that reads MySQL, and the funnel writes (INSERT, UPDATE, DELETE on
/// funnel_configs), answer as they should on the worker user's grants: a missing privilege
/// would be a 503.
async fn exercise_stats_api(worker: &str) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let get = reqwest::Method::GET;
    let (status, counts) = call(
        &http,
        worker,
        get.clone(),
        "/api/v1/stats/events?project=default",
        None,
    )
    .await;
    assert_eq!(
        (status, counts["total"].as_u64()),
        (200, Some(SENT as u64)),
        "{counts}"
    );
    for path in [
        "/api/v1/summary?project=default&compare=previous",
        "/api/v1/counts?project=default",
        "/api/v1/events?project=default&event_type=click&limit=5",
        "/api/v1/timeseries?project=default&bucket=minute",
        "/api/v1/pages/hot?project=default&source=mysql",
        "/api/v1/breakdown?project=default&event_type=page_view&by=n",
        "/api/v1/heatmap?project=default&page=/p/1",
        "/api/v1/conversion?project=default&start_event=page_view&end_event=purchase",
        "/api/v1/users/user-1?project=default",
        "/api/v1/users/user-1/events?project=default&limit=10",
        "/api/v1/dashboard?project=default",
        "/api/v1/stats/?project=default",
        "/api/v1/stats/click?project=default",
        "/api/v1/funnels?project=default",
        "/api/v1/funnels/purchase/analysis?project=default",
    ] {
        let (status, body) = call(&http, worker, get.clone(), path, None).await;
        assert_eq!(status, 200, "GET {path} as the worker user: {body}");
    }

    let definition = json!({"name": "least_privilege", "window_seconds": 3600,
        "order_mode": "ordered",
        "steps": [{"event_type": "page_view"}, {"event_type": "purchase"}]});
    let (status, created) = call(
        &http,
        worker,
        reqwest::Method::POST,
        "/api/v1/funnels?project=default",
        Some(&definition),
    )
    .await;
    assert_eq!(status, 201, "create a funnel (INSERT): {created}");
    let id = created["id"].as_u64().expect("the new funnel's id");
    let mut changed = definition.clone();
    changed["window_seconds"] = json!(7200);
    let (status, updated) = call(
        &http,
        worker,
        reqwest::Method::PUT,
        &format!("/api/v1/funnels/{id}?project=default"),
        Some(&changed),
    )
    .await;
    assert_eq!(status, 200, "change a funnel (UPDATE): {updated}");
    let (status, deleted) = call(
        &http,
        worker,
        reqwest::Method::DELETE,
        &format!("/api/v1/funnels/{id}?project=default"),
        None,
    )
    .await;
    assert_eq!(status, 200, "delete a funnel (DELETE): {deleted}");
}

/// `n` events 100 days old, written through the worker's store (the consumer's path).
async fn write_old_events(mysql: &MysqlStore, n: usize) {
    let now = Utc::now();
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"event_id": format!("old-{i}"), "event_type": "page_view",
                "user_id": format!("old-user-{i}"),
                "timestamp": (now - TimeDelta::days(100)).to_rfc3339()})
        })
        .collect();
    let events = direct::validated(&events, now);
    let accepted = direct::sourced(&events, "written-directly", 0);
    assert_eq!(mysql.write(&accepted).await.unwrap().inserted, n);
}

async fn event_count(pool: &MySqlPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM user_events")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn least_privilege(names: &Names) {
    // The migration user creates the database and applies every migration...
    let mut migrate_settings = worker_settings(&worker_target(names)).mysql;
    migrate_settings.url = names.migrate_url();
    MysqlStore::migrate(&migrate_settings)
        .await
        .expect("the migrations run as the migration user");
    // ...and may change the schema: the statements refused to the worker below are valid.
    let migrate = user_pool(&names.migrate_url()).await;
    for sql in [
        "CREATE TABLE lp_probe (id INT)",
        "ALTER TABLE lp_probe ADD COLUMN n INT",
        "CREATE INDEX ix_lp_probe ON lp_probe (n)",
        "TRUNCATE TABLE lp_probe",
        "DROP TABLE lp_probe",
    ] {
        run(&migrate, sql).await;
    }
    let other = format!("`{}`.secrets", names.other_database);
    assert_refused(
        &migrate,
        "the migration user",
        &format!("SELECT * FROM {other}"),
    )
    .await;

    // The whole worker, as the worker user: gateway -> Kafka -> consumer -> MySQL + Redis.
    let target = worker_target(names);
    let settings = worker_settings(&target);
    let worker = spawn_worker_with(settings.clone(), Role::All).await;
    let ingest = spawn_ingest(&target.topic).await;
    counts::send(&ingest, counts::events(0, SENT, 7)).await;
    counts::wait_for_both(&target, SENT as i64).await;
    counts::assert_exactly_once(&target, SENT as i64).await;
    exercise_stats_api(&worker.address).await;
    ingest.stop().await;
    worker.stop().await;

    // The retention job (DELETE) and a Redis rebuild (a snapshot read), as the worker user.
    let mysql = MysqlStore::connect(&settings.mysql).await.unwrap();
    let redis = RedisStore::connect(&settings.redis, &settings.aggregates)
        .await
        .unwrap();
    let metrics = WorkerMetrics::register(&prometheus::Registry::new()).unwrap();
    write_old_events(&mysql, OLD).await;
    assert_eq!(event_count(mysql.pool()).await, (SENT + OLD) as i64);
    // The worker's own retention job ran at start-up (nothing was old then) and holds the
    // interval's lock: free it, the worker is stopped.
    let mut conn = target.redis().await;
    let _: () = redis::cmd("DEL")
        .arg(keys::retention_lock(&names.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut retention_settings = settings.retention.clone();
    retention_settings.raw_event_days = 90;
    retention_settings.chunk_rows = 2; // several DELETE statements
    let ran = retention::run_once(
        &retention_settings,
        &mysql,
        &redis,
        &metrics,
        Duration::from_secs(60),
    )
    .await
    .expect("the retention job runs as the worker user");
    assert!(ran, "the retention job took its lock");
    assert_eq!(
        event_count(mysql.pool()).await,
        SENT as i64,
        "the retention job deleted the {OLD} old events"
    );
    let rebuilt = rebuild::rebuild_now(&mysql, &redis, &metrics)
        .await
        .expect("rebuild-redis runs as the worker user");
    assert_eq!(rebuilt.events_replayed, SENT as u64, "{rebuilt:?}");

    // No DDL, no other database, for the worker user.
    let pool = user_pool(&names.worker_url()).await;
    for sql in [
        "DROP TABLE user_events".to_owned(),
        "CREATE TABLE lp_probe (id INT)".to_owned(),
        "ALTER TABLE users ADD COLUMN lp_probe INT".to_owned(),
        "CREATE INDEX ix_lp_probe ON users (first_seen)".to_owned(),
        "TRUNCATE TABLE sessions".to_owned(),
        format!("DROP DATABASE `{}`", names.database),
        format!("CREATE DATABASE `{}x`", names.database),
        format!("SELECT * FROM {other}"),
        format!("INSERT INTO {other} VALUES (2)"),
        format!("USE `{}`", names.other_database),
        "SELECT COUNT(*) FROM mysql.user".to_owned(),
    ] {
        assert_refused(&pool, "the worker user", &sql).await;
    }
    assert_eq!(
        event_count(&pool).await,
        SENT as i64,
        "user_events is still there, whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_on_its_own_grants_and_is_refused_ddl_and_other_databases() {
    support::require_services();
    let root = root_pool().await;
    let names = Names::new();
    let outcome = AssertUnwindSafe(async {
        create_users(&root, &names).await;
        least_privilege(&names).await;
    })
    .catch_unwind()
    .await;
    cleanup(&root, &names).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
