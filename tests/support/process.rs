//! The `match-stats` binary as a child process. Its log goes to a file in a temp dir;
//! when a test fails (the process is dropped while the test panics), the log's tail is
//! printed, so a failure in CI shows what each replica did. With
//! `MATCH_STATS_TEST_LOG_DIR` set, every log is kept there whole (`<port>.log`), the
//! killed replicas' too.

use std::io::{BufRead as _, Write as _};
use std::time::Duration;

use match_stats_harness::NatsServer;

use super::WAIT;

/// Lines of a replica's log printed when a test fails.
const LOG_TAIL_LINES: usize = 150;

/// The `match-stats` binary as a child process, for real crashes (`kill -9`) and
/// signals.
pub struct ServiceProcess {
    child: std::process::Child,
    http: String,
    /// Its log file.
    log: std::path::PathBuf,
    /// Holds the log file's temp dir, unless the log is kept.
    _log_dir: Option<tempfile::TempDir>,
}

impl ServiceProcess {
    /// Starts the binary against `nats` and waits until `/ready` says ready.
    pub async fn start(nats: &NatsServer) -> ServiceProcess {
        Self::start_with(nats, &[]).await
    }

    /// Same, with more environment variables.
    pub async fn start_with(nats: &NatsServer, env: &[(&str, String)]) -> ServiceProcess {
        let port = match_stats_harness::free_port();
        let (log_path, log_dir) = match std::env::var_os("MATCH_STATS_TEST_LOG_DIR") {
            Some(dir) => (
                std::path::PathBuf::from(dir).join(format!("{port}.log")),
                None,
            ),
            None => {
                let dir = tempfile::tempdir().expect("log dir");
                (dir.path().join("match-stats.log"), Some(dir))
            }
        };
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_match-stats"))
            .env("NATS_URL", nats.url())
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_LEVEL", "warn")
            .env("REDIS_ADDR", "")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start match-stats");
        let mut process = ServiceProcess {
            child,
            http: format!("http://127.0.0.1:{port}"),
            log: log_path,
            _log_dir: log_dir,
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(response) = reqwest::get(format!("{}/ready", process.http)).await
                && response.status().is_success()
            {
                return process;
            }
            if let Some(status) = process.exited() {
                panic!("match-stats exited ({status}) before it was ready");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "match-stats did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The base URL of its HTTP server.
    pub fn http(&self) -> &str {
        &self.http
    }

    /// What `/ready` reports.
    pub async fn ready(&self) -> serde_json::Value {
        reqwest::get(format!("{}/ready", self.http))
            .await
            .expect("GET /ready")
            .json()
            .await
            .expect("JSON")
    }

    /// The counts `/ready` reports.
    pub async fn counts(&self) -> serde_json::Value {
        self.ready().await["counts"].clone()
    }

    /// Waits until it has processed `n` messages.
    pub async fn wait_received(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let received = self.counts().await["received"].as_u64().unwrap();
            if received >= n {
                assert_eq!(received, n, "no more than {n} messages processed");
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {n} messages ({received} so far)"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/ready` says the read model has caught up.
    pub async fn wait_read_model_caught_up(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let body = self.ready().await;
            if body["read_model_caught_up"] == true {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "read model did not catch up: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    /// SIGKILL: no flush, no final ack.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) {
        self.sigterm();
        let exit = self.child.wait().expect("exit");
        assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit: its status and how long it took.
    pub async fn wait_exit(
        &mut self,
        limit: Duration,
    ) -> Option<(std::process::ExitStatus, Duration)> {
        let started = tokio::time::Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.exited() {
                return Some((status, started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Its resident memory (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// The last lines of its log, to stderr (not captured by the test harness).
    fn print_log_tail(&self) {
        let Ok(file) = std::fs::File::open(&self.log) else {
            return;
        };
        let lines: Vec<String> = std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "--- match-stats at {}: last {} log lines ---",
            self.http,
            tail.len()
        );
        for line in tail {
            let _ = writeln!(err, "{line}");
        }
    }

    /// `/metrics`: every sample of the series `name` whose labels contain `labels`, summed.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.http))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split([' ', '{']).next() == Some(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            self.print_log_tail();
        }
    }
}
