//! Starting the service in-process or as a process against real servers, publishing
//! events, and reading streams back. Shared by the `it` and `serial` test binaries.

pub mod deltas;
pub mod events;
pub mod process;
pub mod relay;

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

/// How long [`publish_lines`] waits for one send or one ack: a client that stopped
/// answering (seen once in the cluster test, after a node's crash: the test hung with
/// nothing published) is retried, and the test fails after [`WAIT`] instead of hanging.
const PUBLISH_STEP: Duration = Duration::from_secs(10);

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

pub use process::ServiceProcess;

/// Each consumer of a stream: its name, pending, ack pending, redelivered, ack floor.
async fn consumer_states(js: &jetstream::Context, stream: &str) -> Vec<String> {
    use futures::StreamExt;
    let stream = js.get_stream(stream).await.expect("stream");
    let mut names = stream.consumer_names();
    let mut out = Vec::new();
    while let Some(Ok(name)) = names.next().await {
        let Ok(info) = stream
            .get_consumer::<jetstream::consumer::pull::Config>(&name)
            .await
            .map(|c| c.cached_info().clone())
        else {
            continue;
        };
        out.push(format!(
            "{name}: pending {} ack_pending {} redelivered {} ack_floor {} delivered {}",
            info.num_pending,
            info.num_ack_pending,
            info.num_redelivered,
            info.ack_floor.stream_sequence,
            info.delivered.stream_sequence
        ));
    }
    out
}

/// How many messages a stream holds.
pub async fn stored(js: &jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .expect("stream exists")
        .info()
        .await
        .expect("stream info")
        .state
        .messages
}

/// The conservation invariant, through `/system/stats` of the service at `http` (any
/// replica: it shows every partition): per partition and in total, `received = applied +
/// duplicates + rejected` (every reason), the partitions add up to the totals, and
/// `received` equals what the events stream stored. Waits (up to [`WAIT`]) for the
/// figures to reach the stream's count (another replica's partitions show their last
/// snapshot). Returns the totals.
pub async fn assert_conservation(
    http: &str,
    js: &jetstream::Context,
    events_stream: &str,
) -> serde_json::Value {
    let stored = stored(js, events_stream).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let stats = loop {
        let stats: serde_json::Value =
            reqwest::get(format!("{http}/api/v1/match-stats/system/stats"))
                .await
                .expect("GET /system/stats")
                .json()
                .await
                .expect("JSON");
        if stats["events"]["received"].as_u64() == Some(stored) {
            break stats;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "received never reached the {stored} messages the events stream stored: {}\npartitions: {}\nconsumers: {}",
                stats["events"],
                stats["partitions"],
                consumer_states(js, events_stream).await.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Rejected (every reason) and parked: the outcomes besides applied and duplicate.
    let sum = |v: &serde_json::Value| -> u64 {
        let rejected: u64 = v["rejected"]
            .as_object()
            .expect("rejected by reason")
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        rejected + v["parked"].as_u64().expect("parked")
    };
    let events = &stats["events"];
    let total = |key: &str| events[key].as_u64().unwrap();
    assert_eq!(
        total("received"),
        total("processed") + total("duplicates") + sum(events),
        "received = applied + duplicates + rejected + parked: {events}"
    );
    let partitions = stats["partitions"]["figures"]
        .as_array()
        .expect("per-partition figures");
    let mut received = 0;
    for p in partitions {
        let n = |key: &str| p[key].as_u64().unwrap();
        assert_eq!(
            n("received"),
            n("applied") + n("duplicates") + sum(p),
            "partition {}: received = applied + duplicates + rejected + parked: {p}",
            p["partition"]
        );
        received += n("received");
    }
    assert_eq!(
        received, stored,
        "the partitions add up to what the stream stored"
    );
    events.clone()
}

/// The small scenario several times over, each copy with its own match ids (the first
/// character replaced: same length, so every payload keeps its size), interleaved line
/// by line; its expected matches and counts are the contract's, renamed and multiplied.
pub struct Workload {
    /// `(Nats-Msg-Id, payload)` in publishing order.
    pub lines: Vec<(String, Vec<u8>)>,
    /// `{"matches": {id: object}, "counts": {...}}`, like `expected.json`.
    pub expected: serde_json::Value,
}

impl Workload {
    /// Rejections expected, every reason.
    pub fn rejected(&self) -> u64 {
        self.expected["counts"]["rejected"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum()
    }
}

/// Copy `c` of a match id: its first character replaced (same length).
fn renamed(id: &str, c: usize) -> String {
    format!("{}{}", (b'a' + c as u8) as char, &id[1..])
}

/// Replaces every occurrence of `from` by `to` (same length) in `bytes`.
fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

/// The small scenario `copies` times over (see [`Workload`]).
pub fn scenario_copies(copies: usize) -> Workload {
    let scenario = match_stats_harness::contract::scenario("small");
    let ids: Vec<String> = scenario.expected["matches"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut lines = Vec::new();
    for (i, message) in scenario.messages.iter().enumerate() {
        for c in 0..copies {
            let mut payload = message.payload.clone();
            for id in &ids {
                payload = replace_all(&payload, id.as_bytes(), renamed(id, c).as_bytes());
            }
            lines.push((format!("copy{c}-line{i}"), payload));
        }
    }
    let mut matches = serde_json::Map::new();
    for c in 0..copies {
        for id in &ids {
            let mut want = scenario.expected["matches"][id].clone();
            want["match_id"] = serde_json::Value::String(renamed(id, c));
            matches.insert(renamed(id, c), want);
        }
    }
    let e = &scenario.expected["counts"];
    let times = |v: &serde_json::Value| serde_json::json!(v.as_u64().unwrap() * copies as u64);
    let rejected: serde_json::Map<String, serde_json::Value> = e["rejected"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(reason, n)| (reason.clone(), times(n)))
        .collect();
    Workload {
        lines,
        expected: serde_json::json!({
            "matches": matches,
            "counts": {
                "published": times(&e["published"]),
                "applied": times(&e["applied"]),
                "duplicates": times(&e["duplicates"]),
                "rejected": rejected,
            },
        }),
    }
}

/// Publishes lines in order with their `Nats-Msg-Id` (on the subject naming the match in
/// each payload), 100 at a time; after a failure, again one by one from the first
/// unconfirmed line (the ids drop what was stored).
pub async fn publish_lines(js: &jetstream::Context, lines: &[(String, Vec<u8>)]) {
    for chunk in lines.chunks(100) {
        let mut acks = Vec::new();
        for (id, payload) in chunk {
            acks.push(send_line(js, id, payload).await);
        }
        let mut first_failed = None;
        for (i, ack) in acks.into_iter().enumerate() {
            let stored = match ack {
                Some(ack) => confirmed(ack).await,
                None => false,
            };
            if !stored && first_failed.is_none() {
                first_failed = Some(i);
            }
        }
        let Some(first) = first_failed else { continue };
        for (id, payload) in &chunk[first..] {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                if let Some(ack) = send_line(js, id, payload).await
                    && confirmed(ack).await
                {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the stream stores {id}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Sends one line with its `Nats-Msg-Id`; `None` if the send failed or took over
/// [`PUBLISH_STEP`].
async fn send_line(
    js: &jetstream::Context,
    id: &str,
    payload: &[u8],
) -> Option<jetstream::context::PublishAckFuture> {
    let message = PublishMessage::build()
        .payload(payload.to_vec().into())
        .message_id(id);
    let send = js.send_publish(subject_for("match_stats.events", payload), message);
    tokio::time::timeout(PUBLISH_STEP, send).await.ok()?.ok()
}

/// Whether the stream acknowledged a send within [`PUBLISH_STEP`].
async fn confirmed(ack: jetstream::context::PublishAckFuture) -> bool {
    matches!(tokio::time::timeout(PUBLISH_STEP, ack).await, Ok(Ok(_)))
}

/// A core kept busy by a spinning thread until dropped: the CPU contention of a shared
/// node.
pub struct BusyCore(Arc<std::sync::atomic::AtomicBool>);

impl BusyCore {
    /// Starts spinning.
    pub fn start() -> BusyCore {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinning = stop.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !spinning.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        });
        BusyCore(stop)
    }
}

impl Drop for BusyCore {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Asserts the decided counts of `/system/stats` `events` equal the expected ones.
pub fn assert_counts_equal(events: &serde_json::Value, expected: &serde_json::Value) {
    let e = &expected["counts"];
    assert_eq!(events["processed"], e["applied"], "applied: {events}");
    assert_eq!(
        events["duplicates"], e["duplicates"],
        "duplicates: {events}"
    );
    for (reason, n) in events["rejected"].as_object().unwrap() {
        let want = e["rejected"]
            .get(reason)
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        assert_eq!(n.as_u64(), Some(want), "rejected as {reason}: {events}");
    }
}

/// Tests that load the CPU or kill processes (the cluster, conservation and exact-count
/// tests) hold this while they run, so that they run one at a time (lighter tests still
/// run beside them).
pub async fn one_heavy_test_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

/// Waits until the JSON answer of `url` satisfies `done` (within [`WAIT`]).
pub async fn wait_for_json(url: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(response) = reqwest::get(url).await
            && let Ok(body) = response.json::<serde_json::Value>().await
            && done(&body)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the history database holds `n` matches.
pub async fn wait_history_matches(pool: &sqlx::PgPool, n: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM matches")
            .fetch_one(pool)
            .await
            .unwrap_or(0);
        if stored == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history holds {stored} of {n} matches"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
