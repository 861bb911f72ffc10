//! The worker binary as a separate process, so a test can `kill -9` it: nothing in the
//! process gets to flush, commit or leave its group.

use std::process::{Child, Command, Stdio};

use super::WorkerTarget;

/// A worker process, killed if the test ends (or fails) while it runs: no orphan keeps
/// consuming after its test.
pub struct WorkerProcess {
    child: Child,
    /// Its HTTP address (`/ready`, `/metrics`, the stats API).
    pub address: String,
}

impl WorkerProcess {
    /// Starts `worker` on `target` with the test defaults (100-event batches, offsets committed
    /// every `commit_interval_ms`, a 6 s session timeout: the broker's minimum, so a killed
    /// member is evicted quickly), then `overrides` (`WORKER__...` variables).
    pub fn spawn(
        target: &WorkerTarget,
        commit_interval_ms: u64,
        overrides: &[(&str, &str)],
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port for the worker");
        let mut env: Vec<(String, String)> = [
            ("WORKER__KAFKA__BROKERS", super::kafka_brokers()),
            ("WORKER__KAFKA__TOPIC__NAME", target.topic.clone()),
            (
                "WORKER__KAFKA__DEAD_LETTER_TOPIC",
                format!("{}.dlq", target.topic),
            ),
            ("WORKER__KAFKA__GROUP_ID", target.group_id.clone()),
            ("WORKER__KAFKA__BATCH_MAX_EVENTS", "100".to_owned()),
            (
                "WORKER__KAFKA__AUTO_COMMIT_INTERVAL_MS",
                commit_interval_ms.to_string(),
            ),
            ("WORKER__KAFKA__SESSION_TIMEOUT_MS", "6000".to_owned()),
            ("WORKER__KAFKA__LAG_PROBE_INTERVAL_MS", "500".to_owned()),
            ("WORKER__MYSQL__URL", target.database_url.clone()),
            ("WORKER__REDIS__URL", target.redis.url()),
            (
                "WORKER__REDIS__CLUSTER",
                (target.redis == super::RedisKind::Cluster).to_string(),
            ),
            ("WORKER__REDIS__KEY_PREFIX", target.redis_prefix.clone()),
            ("WORKER__HTTP__PORT", port.to_string()),
            ("WORKER__LOG__LEVEL", "warn".to_owned()),
            ("WORKER__STATS__ALLOW_OPEN", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(
            overrides
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let child = Command::new(env!("CARGO_BIN_EXE_worker"))
            .envs(env)
            .stdout(if std::env::var_os("TEST_CHILD_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the worker binary");
        Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL the worker");
        self.child.wait().expect("reap the worker");
    }

    /// SIGTERM: the worker finishes its batch, commits and exits.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let exit = self.child.wait().expect("reap the worker");
        assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
