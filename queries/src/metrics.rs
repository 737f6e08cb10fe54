//! The read side's Prometheus series: their names, and their descriptions (HELP), which
//! the service registers once at start (with its own, in the binary's `metrics` module).

/// Lookups by cache level and result.
pub const CACHE_REQUESTS: &str = "match_stats_cache_requests_total";
/// Hit ratio per cache level (the original service's name).
pub const CACHE_HIT_RATIO: &str = "match_stats_cache_hit_ratio";
/// HTTP requests by route template, method and status.
pub const HTTP_REQUESTS: &str = "match_stats_http_requests_total";
/// HTTP request latency by route template.
pub const HTTP_REQUEST_DURATION: &str = "match_stats_http_request_duration_seconds";

/// Stream clients connected to this replica.
pub const STREAM_CLIENTS: &str = "match_stats_stream_clients";
/// Streams opened, by kind (match, leaderboard).
pub const STREAMS_OPENED: &str = "match_stats_streams_opened_total";
/// Streams refused because the replica had its maximum of clients.
pub const STREAMS_REFUSED: &str = "match_stats_streams_refused_total";
/// Snapshots sent to stream clients in place of what they missed.
pub const STREAM_RESNAPSHOTS: &str = "match_stats_stream_resnapshots_total";
/// Matches with a live channel (watched now or within a minute).
pub const STREAM_CHANNELS: &str = "match_stats_stream_channels";
/// Requests refused by the per-client rate limit.
pub const RATE_LIMITED: &str = "match_stats_http_rate_limited_total";
/// Requests refused for a missing or unknown API key.
pub const UNAUTHORIZED: &str = "match_stats_http_unauthorized_total";
/// Conditional requests answered 304.
pub const NOT_MODIFIED: &str = "match_stats_http_not_modified_total";

/// `(name, kind, HELP)` of every series this crate records.
pub const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (
        CACHE_REQUESTS,
        Kind::Counter,
        "Match lookups by cache level (memory, redis, kv) and result (hit, miss).",
    ),
    (
        CACHE_HIT_RATIO,
        Kind::Gauge,
        "Share of lookups answered by each cache level since start.",
    ),
    (
        HTTP_REQUESTS,
        Kind::Counter,
        "HTTP requests by route template, method and status.",
    ),
    (
        HTTP_REQUEST_DURATION,
        Kind::Histogram,
        "HTTP request latency in seconds, by route template.",
    ),
    (
        STREAM_CLIENTS,
        Kind::Gauge,
        "Server-Sent Events clients connected to this replica.",
    ),
    (
        STREAMS_OPENED,
        Kind::Counter,
        "Server-Sent Events streams opened, by stream (match, leaderboard).",
    ),
    (
        STREAMS_REFUSED,
        Kind::Counter,
        "Streams refused with 503 because this replica had STREAM_MAX_CLIENTS clients.",
    ),
    (
        STREAM_RESNAPSHOTS,
        Kind::Counter,
        "Snapshots sent to stream clients in place of updates they missed (a slow client, a gap).",
    ),
    (
        STREAM_CHANNELS,
        Kind::Gauge,
        "Matches with a live channel: watched now, or within the last minute.",
    ),
    (
        RATE_LIMITED,
        Kind::Counter,
        "Requests refused with 429 by the per-client rate limit.",
    ),
    (
        UNAUTHORIZED,
        Kind::Counter,
        "Requests refused with 401 for a missing or unknown API key.",
    ),
    (
        NOT_MODIFIED,
        Kind::Counter,
        "Conditional requests answered 304 Not Modified.",
    ),
];

/// A Prometheus series type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// Registers each description with the installed recorder.
pub fn describe(descriptions: &[(&'static str, Kind, &'static str)]) {
    for &(name, kind, help) in descriptions {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}
