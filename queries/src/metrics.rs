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
