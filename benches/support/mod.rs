//! What the benchmarks share: the service binary as a child process (release, started
//! with the given settings and stopped with SIGTERM on drop) and its CPU and memory;
//! pulling from the events stream ([`consume`]); the load the load benchmarks generate
//! ([`feed`]).

pub mod consume;
pub mod feed;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use match_stats_harness::free_port;

/// The service binary as a child process.
pub struct Service {
    child: Child,
    /// Its HTTP base URL.
    pub http: String,
}

impl Service {
    /// Starts it with `env` (on a free HTTP port, logging warnings only), once `/health`
    /// answers.
    pub async fn start(env: &[(&str, String)]) -> Service {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_match-stats"))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_LEVEL", "warn")
            .env("REDIS_ADDR", "")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .spawn()
            .expect("start match-stats");
        let service = Service {
            child,
            http: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..600 {
            if reqwest::get(format!("{}/health", service.http))
                .await
                .is_ok()
            {
                return service;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("match-stats did not start");
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now.
    pub fn rss_bytes(&self) -> u64 {
        status_kib(self.pid(), "VmRSS:")
    }

    /// The peak resident memory so far.
    pub fn hwm_bytes(&self) -> u64 {
        status_kib(self.pid(), "VmHWM:")
    }

    /// User + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A `/proc/<pid>/status` field in bytes.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// User + system CPU seconds of a process (clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A number from the environment variable `name`, `default` when it is unset; anything
/// else stops the benchmark with a message (a typo does not run the defaults unnoticed).
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: a number, not {value:?}")),
        Err(_) => default,
    }
}

/// A comma-separated list of numbers from the environment variable `name`, if it is set;
/// anything else stops the benchmark with a message.
pub fn env_list<T: std::str::FromStr>(name: &str) -> Option<Vec<T>> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: comma-separated numbers, not {value:?}"))
            })
            .collect(),
    )
}

/// How many messages `stream` stores.
pub async fn stored_messages(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> anyhow::Result<u64> {
    Ok(stored(js, stream).await?.messages)
}

/// What `stream` stores (messages, bytes).
pub async fn stored(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> anyhow::Result<async_nats::jetstream::stream::State> {
    // (Getting the stream fetches its info: no second request.)
    Ok(js.get_stream(stream).await?.cached_info().state.clone())
}

/// The CPU that nats-server and one client process use over a run, per event.
pub struct CpuMeter {
    pids: (u32, u32),
    start: (f64, f64),
    started: std::time::Instant,
}

/// CPU microseconds per event: nats-server's and the client's.
#[derive(Clone, Copy)]
pub struct CpuPerEvent {
    pub nats_us: f64,
    pub client_us: f64,
    /// Cores the two kept busy on average (a check: at most the machine's).
    pub cores: f64,
}

impl CpuMeter {
    /// Starts counting nats-server (`nats_pid`) and the client (`client_pid`).
    pub fn start(nats_pid: u32, client_pid: u32) -> Self {
        CpuMeter {
            pids: (nats_pid, client_pid),
            start: (cpu_seconds(nats_pid), cpu_seconds(client_pid)),
            started: std::time::Instant::now(),
        }
    }

    /// What each used since the start, per event of `events`.
    pub fn per_event(&self, events: u64) -> CpuPerEvent {
        let used = |pid, start| cpu_seconds(pid) - start;
        let (nats, client) = (
            used(self.pids.0, self.start.0),
            used(self.pids.1, self.start.1),
        );
        let per_event = |seconds: f64| seconds * 1e6 / events.max(1) as f64;
        CpuPerEvent {
            nats_us: per_event(nats),
            client_us: per_event(client),
            cores: (nats + client) / self.started.elapsed().as_secs_f64(),
        }
    }
}

impl CpuPerEvent {
    /// The mean of two runs.
    pub fn mean(self, other: CpuPerEvent) -> CpuPerEvent {
        CpuPerEvent {
            nats_us: (self.nats_us + other.nats_us) / 2.0,
            client_us: (self.client_us + other.client_us) / 2.0,
            cores: (self.cores + other.cores) / 2.0,
        }
    }
}

impl std::fmt::Display for CpuPerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU {:.1} µs an event: nats-server {:.1}, client {:.1} ({:.2} cores busy)",
            self.nats_us + self.client_us,
            self.nats_us,
            self.client_us,
            self.cores
        )
    }
}
