//! The service's settings: typed, loaded once at start-up, imported by every part and
//! importing nothing from this crate.
//!
//! Every setting is an environment variable and a command-line flag that overrides it
//! (clap reads both); `match-stats --help` lists them with their defaults. The command
//! line around them is the `cli` module: an invalid value stops start-up with one line
//! naming the setting and exit code 64 (`EX_USAGE`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

/// The service's settings.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// HTTP listen address of the API, /health, /ready and /metrics.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080", value_parser = parse_addr)]
    pub http_addr: SocketAddr,

    /// A second listen address for operators: when set, /metrics and
    /// /debug/pprof/profile are served there only (keep it off the public network).
    #[arg(long, env = "ADMIN_ADDR", value_parser = parse_addr)]
    pub admin_addr: Option<SocketAddr>,

    #[command(flatten)]
    /// Limits of the HTTP server.
    pub http_limits: HttpLimits,

    #[command(flatten)]
    /// What browsers, CDNs and API clients meet: streams, CORS, caching, keys, rate limit.
    pub edge: Edge,

    /// Log filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = parse_log_filter)]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty", value_parser = ["pretty", "json"])]
    pub log_format: String,

    /// OTLP/HTTP endpoint to export traces to (e.g. http://otel-collector:4318); unset:
    /// no export (trace context is still propagated from events to deltas).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// The `service.name` of exported spans (the service version goes beside it as
    /// `service.version`).
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "match-stats")]
    pub otel_service_name: String,

    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    #[command(flatten)]
    /// NATS authentication and TLS.
    pub nats_auth: NatsAuth,

    #[command(flatten)]
    /// Stream, subject, bucket and consumer names, and the partitioning.
    pub streams: StreamNames,

    /// Messages processed per batch (their effects are published together, then acked).
    #[arg(long, env = "BATCH_SIZE", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,

    /// How long a partition waits for its batch to fill once its first message arrived,
    /// while traffic is dense (a catch-up, or live batches of four events or more): a
    /// millisecond coalesces many events into one delta message per match. Sparse live
    /// events never wait; 0 never waits.
    #[arg(long, env = "BATCH_LINGER", default_value = "1ms", value_parser = parse_duration)]
    pub batch_linger: std::time::Duration,

    /// The format the writers publish deltas in (its number goes in each message's
    /// `Match-Stats-Delta-Version` header): 2, maps with string keys (the default, what
    /// every consumer reads); or 3, entries and changes as arrays of their fields (about
    /// 40% fewer bytes on the deltas stream; the service's own readers and
    /// `match_stats_commands::StatDelta` read both). Move every downstream consumer to a
    /// reader of format 3 before choosing it (docs/asyncapi.json).
    #[arg(long, env = "DELTA_FORMAT", default_value = "2", value_parser = parse_delta_format)]
    pub delta_format: match_stats_commands::delta::Format,

    /// Events in flight: delivered by the consumer and not yet acknowledged (its max ack
    /// pending); the bound on the service's buffering.
    #[arg(long, env = "BUFFER_SIZE", default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub buffer_size: i64,

    /// Worker threads of the main async runtime (ingest; the read model too when
    /// `BACKGROUND_WORKERS` is 0, and the cache and history writers when both that and
    /// `BACKGROUND_NICE` are) [default: the machine's CPU count, as the runtime's own
    /// default]
    #[arg(long, env = "WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Worker threads of a runtime of the HTTP servers' own, so that requests do not queue
    /// behind ingest work (0: the HTTP servers share the main runtime).
    #[arg(long, env = "HTTP_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub http_workers: u16,

    /// Worker threads of a runtime of the query side's own (the read model's projector;
    /// the Redis write-through and the history writer too when `BACKGROUND_NICE` is 0,
    /// else they have a lowered thread of their own; 0: the query side shares the main
    /// runtime).
    #[arg(long, env = "BACKGROUND_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub background_workers: u16,

    /// How much lower in CPU priority (niceness, 0 to 19) the read model's projection runs
    /// while ingest catches up (on a thread of its own, started when a partition begins
    /// catching up and stopped when none is, so that the backlog gets the CPU first), and
    /// the Redis write-through and the history writer run always (on a thread of their
    /// own, so that their bursts never hold up the live path); 0: never lower, they run on
    /// the query side's runtime. Needs no privilege: lowering a thread is always allowed.
    #[arg(long, env = "BACKGROUND_NICE", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub background_nice: i32,

    /// How long NATS waits for an ack before redelivering (e.g. 30s).
    #[arg(long, env = "ACK_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,

    /// Serve a CPU profile (pprof protobuf) at /debug/pprof/profile?seconds=N.
    #[arg(long, env = "PPROF_ENABLED", default_value_t = false)]
    pub pprof_enabled: bool,

    /// `/ready` says not ready while more events than this wait in the consumer.
    #[arg(long, env = "READY_MAX_PENDING", default_value_t = 10_000)]
    pub ready_max_pending: u64,

    /// Grace period for in-flight work on SIGTERM/SIGINT (e.g. 10s).
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    /// The shared cache.
    pub cache: CacheConfig,

    #[command(flatten)]
    /// Snapshots, idle matches, retention.
    pub lifecycle: Lifecycle,

    #[command(flatten)]
    /// Match history in PostgreSQL.
    pub history: HistoryConfig,
}

/// Limits of the HTTP server (the public port faces clients that may be slow, many or
/// hostile).
#[derive(Debug, Clone, Args)]
pub struct HttpLimits {
    /// A connection that has not sent a request's headers within this is closed (e.g. 5s).
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub http_header_read_timeout: Duration,
    /// A request that has not been answered within this gets 408 (e.g. 10s).
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_request_timeout: Duration,
    /// Connections open at once; more wait in the listen queue.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_connections: u32,
    /// Requests handled at once, all routes of a server together; more get 503 with
    /// Retry-After at once.
    #[arg(long, env = "HTTP_MAX_CONCURRENT_REQUESTS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_concurrent_requests: u32,
}

/// Match history in PostgreSQL (off without `DATABASE_URL`).
#[derive(Debug, Clone, Args)]
pub struct HistoryConfig {
    /// PostgreSQL URL (e.g. postgres://user:password@host:5432/match_stats?sslmode=require):
    /// completed matches and player lines are written there and history routes answer.
    /// Unset: no history (its routes answer 501).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Matches a player needs to appear on a ratio board across matches (kd_ratio, kda,
    /// accuracy).
    #[arg(long, env = "HISTORY_MIN_MATCHES", default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub history_min_matches: i64,
}

impl HistoryConfig {
    /// The database URL, if history is on (an empty `DATABASE_URL` is off).
    pub fn url(&self) -> Option<&str> {
        self.database_url.as_deref().filter(|u| !u.is_empty())
    }
}

/// What browsers, CDNs and API clients meet.
#[derive(Debug, Clone, Args)]
pub struct Edge {
    /// Server-Sent Events clients this replica streams to at once; more get 503 with
    /// Retry-After.
    #[arg(long, env = "STREAM_MAX_CLIENTS", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub stream_max_clients: u32,
    /// Origins whose pages may read the API (CORS), comma-separated, or * for any.
    /// Empty: no CORS headers (same-origin pages only).
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "*")]
    pub cors_allowed_origins: String,
    /// How long browsers and CDNs may keep a completed match's responses (Cache-Control
    /// max-age); late events can still change a completed match, so keep it short.
    /// Active matches are always revalidated (ETag).
    #[arg(long, env = "COMPLETED_CACHE_MAX_AGE", default_value = "60s", value_parser = parse_duration)]
    pub completed_cache_max_age: Duration,
    /// Read-API keys, comma-separated: when set, /api/ routes need
    /// `Authorization: Bearer <key>` (streams also take `?access_token=<key>`), else 401.
    /// Empty: the API is open.
    #[arg(long, env = "API_KEYS", default_value = "", hide_env_values = true)]
    pub api_keys: String,
    /// Requests per second each client (API key, else address) may make to /api/
    /// routes; more get 429 with Retry-After. 0: no limit.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 0)]
    pub rate_limit_per_second: u32,
    /// Requests a client may make in a burst above its rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_burst: u32,
}

/// Snapshots and the match lifecycle.
#[derive(Debug, Clone, Args)]
pub struct Lifecycle {
    /// Snapshot after this many processed events (partition n of P a fraction n/4P sooner,
    /// so partitions do not all snapshot at once).
    #[arg(long, env = "SNAPSHOT_EVERY_EVENTS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every_events: u64,
    /// Snapshot at least this often while events arrive (e.g. 30s; partition n of P a
    /// fraction n/4P sooner).
    #[arg(long, env = "SNAPSHOT_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub snapshot_interval: Duration,
    /// A match with no event for this long is ended with a `match_end` (reason
    /// `idle_timeout`) published to the events stream (e.g. 30m).
    #[arg(long = "match-idle-timeout", env = "MATCH_IDLE_TIMEOUT", value_name = "MATCH_IDLE_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Completed matches leave the command side's memory this long after their last
    /// event (e.g. 24h).
    #[arg(long, env = "COMPLETED_MEMORY_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub completed_memory_retention: Duration,
    /// A partition written here with events waiting and no batch confirmed for this long
    /// is reported stalled (e.g. 30s).
    #[arg(long, env = "PARTITION_STALL_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub partition_stall_after: Duration,
    /// Players this replica is sized to hold if it held nothing else (every replica holds
    /// every match's players in its read model; the default fits the shipped 1 GiB memory
    /// limit, README "Sizing"). With CAPACITY_MATCHES, `match_stats_capacity_used_ratio`
    /// = players / CAPACITY_PLAYERS + matches / CAPACITY_MATCHES, to alert on before
    /// memory runs out. Nothing is refused past it.
    #[arg(long, env = "CAPACITY_PLAYERS", default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub capacity_players: u64,
    /// Matches this replica is sized to hold if they had no players (the cost of a match
    /// itself; see CAPACITY_PLAYERS).
    #[arg(long, env = "CAPACITY_MATCHES", default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub capacity_matches: u64,
    /// Retention of the events stream (e.g. 7d); snapshots must be younger.
    #[arg(long, env = "EVENTS_MAX_AGE", default_value = "7d", value_parser = parse_duration)]
    pub events_max_age: Duration,
}

/// Redis and the completed-matches bucket.
#[derive(Debug, Clone, Args)]
pub struct CacheConfig {
    /// Redis host:port; empty runs on the in-process read model alone.
    #[arg(long, env = "REDIS_ADDR", default_value = "localhost:6379")]
    pub redis_addr: String,
    /// Redis ACL user (with REDIS_PASSWORD); empty: the default user.
    #[arg(long, env = "REDIS_USERNAME", default_value = "")]
    pub redis_username: String,
    /// Redis password (never logged).
    #[arg(
        long,
        env = "REDIS_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub redis_password: String,
    /// Connect to Redis over TLS (any REDIS_TLS_* file implies it).
    #[arg(long, env = "REDIS_TLS", default_value_t = false)]
    pub redis_tls: bool,
    /// CA certificate (PEM) to verify Redis with, instead of the system roots.
    #[arg(long, env = "REDIS_TLS_CA")]
    pub redis_tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for Redis (with REDIS_TLS_KEY).
    #[arg(long, env = "REDIS_TLS_CERT", requires = "redis_tls_key")]
    pub redis_tls_cert: Option<std::path::PathBuf>,
    /// Client key (PEM) for Redis (with REDIS_TLS_CERT).
    #[arg(long, env = "REDIS_TLS_KEY", requires = "redis_tls_cert")]
    pub redis_tls_key: Option<std::path::PathBuf>,
    /// Redis database number.
    #[arg(long, env = "REDIS_DB", default_value_t = 0)]
    pub redis_db: u32,
    /// Prefix of every Redis key.
    #[arg(long, env = "REDIS_PREFIX", default_value = "match_stats:")]
    pub redis_prefix: String,
    /// Bound on every Redis call a request or a probe makes; past it the call counts as
    /// failed (e.g. 50ms).
    #[arg(long, env = "REDIS_TIMEOUT", default_value = "50ms", value_parser = parse_duration)]
    pub redis_timeout: Duration,
    /// Bound on each write-through of a match to Redis (a background write nobody waits
    /// on, on a connection of its own so that requests never queue behind it; e.g. 1s).
    #[arg(long, env = "REDIS_WRITE_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub redis_write_timeout: Duration,
    /// TTL of an active match in Redis, refreshed while it is live (e.g. 10m).
    #[arg(long = "cache-ttl-active", env = "CACHE_TTL_ACTIVE", value_name = "CACHE_TTL_ACTIVE", default_value = "10m", value_parser = parse_duration)]
    pub ttl_active: Duration,
    /// How long completed matches stay queryable (Redis TTL and key-value max age).
    #[arg(long, env = "COMPLETED_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub completed_retention: Duration,
    /// How often changed matches are written through to Redis (e.g. 5s). Every replica
    /// answers from its own read model; Redis serves replicas that lack a match, so a
    /// few seconds old is enough, and each write renders a whole match.
    #[arg(long = "cache-write-interval", env = "CACHE_WRITE_INTERVAL", value_name = "CACHE_WRITE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub write_interval: Duration,
    /// How often every match in memory is written again (repopulates a flushed Redis).
    #[arg(long = "cache-resync-interval", env = "CACHE_RESYNC_INTERVAL", value_name = "CACHE_RESYNC_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub resync_interval: Duration,
}

impl CacheConfig {
    /// Whether Redis is reached over TLS.
    pub fn uses_tls(&self) -> bool {
        self.redis_tls || self.redis_tls_ca.is_some() || self.redis_tls_cert.is_some()
    }
}

/// How to authenticate to NATS and secure the connection. Secrets are never logged.
#[derive(Debug, Clone, Args)]
pub struct NatsAuth {
    /// NATS user (with NATS_PASSWORD).
    #[arg(long, env = "NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,
    /// NATS password (with NATS_USER).
    #[arg(
        long,
        env = "NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<String>,
    /// NATS token.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true, conflicts_with_all = ["nats_user", "nats_creds"])]
    pub nats_token: Option<String>,
    /// NATS credentials file (NKey seed and user JWT, as `nsc` writes it).
    #[arg(long, env = "NATS_CREDS", conflicts_with = "nats_user")]
    pub nats_creds: Option<std::path::PathBuf>,
    /// CA certificate (PEM) to verify the NATS server with, instead of the system roots.
    #[arg(long, env = "NATS_TLS_CA")]
    pub nats_tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with NATS_TLS_KEY).
    #[arg(long, env = "NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<std::path::PathBuf>,
    /// Client key (PEM) for mutual TLS (with NATS_TLS_CERT).
    #[arg(long, env = "NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<std::path::PathBuf>,
    /// Refuse to connect without TLS.
    #[arg(long, env = "NATS_TLS_REQUIRED", default_value_t = false)]
    pub nats_tls_required: bool,
}

/// Names of the streams, subjects, buckets and consumers (defaults match
/// `nats/streams/*.json`), and the partition count.
#[derive(Debug, Clone, Args)]
pub struct StreamNames {
    /// Events stream name.
    #[arg(long, env = "EVENTS_STREAM", default_value = "MATCH_EVENTS", value_parser = parse_name)]
    pub events_stream: String,
    /// Events subject prefix; game servers publish to `<prefix>.<match_id>`.
    #[arg(long, env = "EVENTS_SUBJECT", default_value = "match_stats.events", value_parser = parse_subject)]
    pub events_subject: String,
    /// Duplicate window of the events stream for `Nats-Msg-Id` (e.g. 2m).
    #[arg(long, env = "EVENTS_DUPLICATE_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub events_duplicate_window: Duration,
    /// Deltas stream name.
    #[arg(long, env = "DELTAS_STREAM", default_value = "MATCH_DELTAS", value_parser = parse_name)]
    pub deltas_stream: String,
    /// Deltas subject prefix; deltas go to `<prefix>.<match_id>`.
    #[arg(long, env = "DELTAS_SUBJECT", default_value = "match_stats.deltas", value_parser = parse_subject)]
    pub deltas_subject: String,
    /// Duplicate window of the deltas stream; a restart's re-published deltas within it
    /// are dropped by NATS (e.g. 1h).
    #[arg(long, env = "DELTAS_DUPLICATE_WINDOW", default_value = "1h", value_parser = parse_duration)]
    pub deltas_duplicate_window: Duration,
    /// Dead-letter stream name.
    #[arg(long, env = "DEAD_LETTER_STREAM", default_value = "MATCH_DEAD_LETTERS", value_parser = parse_name)]
    pub dead_letter_stream: String,
    /// Dead-letter subject prefix; rejected events go to `<prefix>.<reason>`.
    #[arg(long, env = "DEAD_LETTER_SUBJECT", default_value = "match_stats.dead_letters", value_parser = parse_subject)]
    pub dead_letter_subject: String,
    /// Key-value bucket holding completed matches' final objects.
    #[arg(long, env = "COMPLETED_BUCKET", default_value = "match_stats_completed", value_parser = parse_name)]
    pub completed_bucket: String,
    /// Key-value bucket holding the command side's snapshots.
    #[arg(long, env = "SNAPSHOT_BUCKET", default_value = "match_stats_snapshots", value_parser = parse_name)]
    pub snapshot_bucket: String,
    /// Durable consumer name prefix on the events stream: partition `n` of `P` is consumed
    /// by `<name>-<n>-of-<P>`.
    #[arg(long, env = "CONSUMER_NAME", default_value = "match-stats", value_parser = parse_name)]
    pub consumer_name: String,
    /// Partitions of the events stream (P): each match maps to one by a hash of its id (a
    /// stream subject transform), and each partition has one writer among the replicas.
    /// Changing it needs a drain (see README, "Changing the partition count").
    #[arg(long, env = "PARTITIONS", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub partitions: u16,
    /// How long a partition stays with a replica that stopped pulling (killed, cut off)
    /// before NATS pins another one: the failover time (e.g. 10s).
    #[arg(long, env = "PARTITION_PIN_TIMEOUT", value_name = "PARTITION_PIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub pin_timeout: Duration,
    /// Replicas of every stream and bucket in a NATS cluster (1, or 3 in production).
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
}

impl Config {
    /// Worker threads of the main runtime: `WORKERS`, or the machine's CPU count (its
    /// cgroup quota included), as the runtime's own default.
    pub fn runtime_workers(&self) -> usize {
        self.workers.map_or_else(
            || std::thread::available_parallelism().map_or(2, usize::from),
            usize::from,
        )
    }

    /// `NATS_URL` with any `user:password@` replaced by `***@`, for logs and errors.
    pub fn nats_url_redacted(&self) -> String {
        self.nats_url
            .split(',')
            .map(|url| match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}***{}", &url[..scheme + 3], &url[at..])
                }
                _ => url.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl StreamNames {
    /// The events stream's subject filter: what game servers publish to.
    pub fn events_filter(&self) -> String {
        format!("{}.*", self.events_subject)
    }

    /// The default names, as a service started without settings has them (for unit
    /// tests).
    #[cfg(test)]
    pub(crate) fn defaults() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            names: StreamNames,
        }
        Only::parse_from(["test"]).names
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    // Accept Go-style ":8080" as all interfaces.
    let s = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    s.parse()
        .map_err(|e| format!("{e} (expected host:port, e.g. 0.0.0.0:8080 or :8080)"))
}

fn parse_log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("not a log filter: {e} (e.g. info, debug, match_stats=debug,warn)"))
}

/// A delta format by its number: 2 or 3.
fn parse_delta_format(s: &str) -> Result<match_stats_commands::delta::Format, String> {
    s.trim()
        .parse()
        .ok()
        .and_then(match_stats_commands::delta::Format::from_version)
        .ok_or_else(|| format!("{s:?} is not a delta format (2 or 3)"))
}

/// Durations like `500ms`, `30s`, `2m`, `1h30m`, `7d` (humantime's syntax; too large a value is
/// an error).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration (e.g. 500ms, 30s, 2m, 1h30m, 7d): {e}"))
}

fn parse_name(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} must be letters, digits, _ or -"))
    }
}

fn parse_subject(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} must be dot-separated tokens of letters, digits, _ or - (no wildcards)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert!(parse_duration("10").unwrap_err().contains("not a duration"));
        assert!(parse_duration("x").unwrap_err().contains("not a duration"));
        // Too large for a duration: an error, not a panic or a wrap-around.
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn go_style_listen_address_means_all_interfaces() {
        assert_eq!(
            parse_addr(":8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert!(parse_addr("8080").is_err());
    }

    #[test]
    fn subjects_and_names_reject_wildcards_and_dots() {
        assert!(parse_subject("match_stats.events").is_ok());
        assert!(parse_subject("a.*").is_err() && parse_subject("a..b").is_err());
        assert!(parse_name("MATCH_EVENTS").is_ok() && parse_name("a.b").is_err());
    }
}
