//! Starting the service in-process against a real NATS server, publishing events, and
//! reading streams back.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage};
use clap::Parser;
use futures::StreamExt;
use match_stats::cli::Cli;
use match_stats::command_side::{IngestCounts, IngestStats};
use match_stats::{App, Config};
use match_stats_harness::{NatsServer, RedisServer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for the service to reach an expected state.
pub const WAIT: Duration = Duration::from_secs(60);

/// The service's settings for a test against `nats` (and `redis`, else none), on a
/// free HTTP port.
pub fn config(nats: &NatsServer, redis: Option<&RedisServer>) -> Config {
    let redis_addr = redis
        .map(|r| format!("127.0.0.1:{}", r.port()))
        .unwrap_or_default();
    let args = [
        "match-stats",
        "--nats-url",
        &nats.url(),
        "--http-addr",
        "127.0.0.1:0",
        "--log-level",
        "warn",
        "--redis-addr",
        &redis_addr,
    ];
    Cli::try_parse_from(args)
        .expect("test settings parse")
        .config
}

/// A running service.
pub struct Service {
    pub http: String,
    pub stats: Arc<IngestStats>,
    pub token: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Builds and runs the service until it is ready.
    pub async fn start(config: Config) -> Service {
        let app = App::build(config).await.expect("service builds");
        let service = Service {
            http: format!("http://{}", app.http_addr()),
            stats: app.stats(),
            token: app.shutdown_token(),
            task: tokio::spawn(app.run_until_stopped()),
        };
        wait_for("service ready", || {
            service
                .stats
                .recovered
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .await;
        service
    }

    /// Its counters.
    pub fn counts(&self) -> IngestCounts {
        self.stats.counts()
    }

    /// Waits until it has processed `n` messages.
    pub async fn wait_received(&self, n: u64) {
        wait_for(&format!("{n} messages processed"), || {
            self.counts().received >= n
        })
        .await;
        assert_eq!(
            self.counts().received,
            n,
            "no more than {n} messages processed"
        );
    }

    /// Graceful stop (SIGTERM's path).
    pub async fn stop(self) {
        self.token.cancel();
        self.task
            .await
            .expect("service task")
            .expect("service stops cleanly");
    }
}

/// Polls `done` until it is true, or panics after [`WAIT`].
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The subject a game server would publish a payload to: `<prefix>.<match_id>`, read
/// here with a plain MessagePack/JSON parser (or `unknown` when it has none).
pub fn subject_for(prefix: &str, payload: &[u8]) -> String {
    let match_id = if payload.trim_ascii_start().starts_with(b"{") {
        serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| {
                v.get("match_id")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            })
    } else {
        rmpv::decode::read_value(&mut &payload[..])
            .ok()
            .and_then(|v| {
                v.as_map()?
                    .iter()
                    .find(|(k, _)| k.as_str() == Some("match_id"))
                    .and_then(|(_, m)| m.as_str().map(str::to_owned))
            })
    };
    let token = match_id
        .filter(|m| {
            !m.is_empty()
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{prefix}.{token}")
}

/// Publishes payloads in order, without `Nats-Msg-Id`, waiting for every ack.
pub async fn publish_all(
    js: &jetstream::Context,
    prefix: &str,
    payloads: impl IntoIterator<Item = &[u8]>,
) {
    let mut acks = Vec::new();
    for payload in payloads {
        let message = PublishMessage::build().payload(payload.to_vec().into());
        acks.push(
            js.send_publish(subject_for(prefix, payload), message)
                .await
                .expect("publish"),
        );
    }
    for ack in acks {
        ack.await.expect("the events stream stores every message");
    }
}

/// Every message of a stream, in order.
pub async fn read_stream(js: &jetstream::Context, name: &str) -> Vec<jetstream::Message> {
    let mut stream = js.get_stream(name).await.expect("stream exists");
    let count = stream.info().await.expect("stream info").state.messages as usize;
    if count == 0 {
        return Vec::new();
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let messages = consumer.messages().await.expect("messages");
    tokio::time::timeout(
        WAIT,
        messages
            .take(count)
            .map(|m| m.expect("message"))
            .collect::<Vec<_>>(),
    )
    .await
    .expect("stream read in time")
}

/// The `match-stats` binary as a child process, for real crashes (`kill -9`) and
/// signals.
pub struct ServiceProcess {
    child: std::process::Child,
    http: String,
}

impl ServiceProcess {
    /// Starts the binary against `nats` and waits until `/ready` says ready.
    pub async fn start(nats: &NatsServer) -> ServiceProcess {
        Self::start_with(nats, &[]).await
    }

    /// Same, with more environment variables.
    pub async fn start_with(nats: &NatsServer, env: &[(&str, String)]) -> ServiceProcess {
        let port = match_stats_harness::free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_match-stats"))
            .env("NATS_URL", nats.url())
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_LEVEL", "warn")
            .env("REDIS_ADDR", "")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start match-stats");
        let process = ServiceProcess {
            child,
            http: format!("http://127.0.0.1:{port}"),
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(response) = reqwest::get(format!("{}/ready", process.http)).await
                && response.status().is_success()
            {
                return process;
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
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = self.child.wait().expect("exit");
        assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
