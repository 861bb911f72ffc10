//! Test support (feature `test-support`): a private Apache Kafka broker that a test may stop,
//! kill and restart without disturbing any other test. It is the same broker `make deps` runs,
//! started by the same script (scripts/kafka.sh) on a free port with its own data directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/kafka.sh");

/// A broker of this test's own. Killed and its data deleted when dropped.
pub struct PrivateKafka {
    dir: PathBuf,
    port: u16,
}

impl PrivateKafka {
    /// Starts a fresh broker and waits until it answers metadata requests. Panics, saying how
    /// to get one, when it cannot.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port for a private Kafka: {e}"));
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "insightflow-kafka-{}-{port}-{nanos}",
            std::process::id()
        ));
        let broker = Self { dir, port };
        broker.run_script();
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kill -9`: no clean shutdown, nothing flushed beyond what the OS holds.
    pub fn kill(&self) {
        let Some(pid) = self.pid() else { return };
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(&pid) {
            assert!(
                Instant::now() < deadline,
                "the private Kafka (pid {pid}) survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same port and data directory and waits until it
    /// answers. After a `kill`, that includes the controller fencing the dead incarnation.
    pub fn restart(&self) {
        self.run_script();
    }

    fn run_script(&self) {
        let output = Command::new("bash")
            .arg(SCRIPT)
            .arg("start")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
        assert!(
            output.status.success(),
            "could not start a private Kafka with `scripts/kafka.sh start {} {}` (it needs a JDK \
             17+ and Maven, which `make deps` installs):\n{}{}",
            self.dir.display(),
            self.port,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("kafka.pid"))
            .ok()
            .map(|pid| pid.trim().to_owned())
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A live process: present and not a zombie (this machine's init may reap late).
fn alive(pid: &str) -> bool {
    let stat = Path::new("/proc").join(pid).join("stat");
    std::fs::read_to_string(stat).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}
