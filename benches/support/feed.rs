//! The load both load benchmarks generate and the settings they run the service with:
//! `match-stats loadgen`'s matches (1,000 of 64 players), MessagePack.

use std::time::Duration;

use clap::Parser;
use match_stats::Config;
use match_stats::cli::Cli;
use match_stats::tools::loadgen::LoadArgs;
use match_stats_harness::{NatsServer, RedisServer};

/// Matches the load generator keeps live.
pub const MATCHES: u32 = 1000;
/// Players in each.
pub const PLAYERS: u32 = 64;

/// `REDIS_ADDR` for `redis` (empty: none).
pub fn redis_addr(redis: Option<&RedisServer>) -> String {
    redis.map_or(String::new(), |r| format!("127.0.0.1:{}", r.port()))
}

/// The service's settings against `nats` (and `redis`), logging warnings only.
pub fn config(nats: &NatsServer, redis: Option<&RedisServer>) -> Config {
    let redis = redis_addr(redis);
    Cli::try_parse_from([
        "match-stats",
        "--nats-url",
        &nats.url(),
        "--redis-addr",
        &redis,
        "--log-level",
        "warn",
    ])
    .expect("settings")
    .config
}

/// `events` events (0: for `seconds`) at `rate` a second (0: as fast as possible), the
/// publish-to-copy latency measured when `freshness`.
pub fn load(events: u64, rate: u32, seconds: Option<u64>, freshness: bool) -> LoadArgs {
    load_watching_rest(events, rate, seconds, freshness, None)
}

/// [`load`], publish to visible measured on the REST API at `rest` too.
pub fn load_watching_rest(
    events: u64,
    rate: u32,
    seconds: Option<u64>,
    freshness: bool,
    rest: Option<String>,
) -> LoadArgs {
    LoadArgs {
        matches: MATCHES,
        players: PLAYERS,
        rate,
        events,
        duration: seconds.map(Duration::from_secs),
        events_per_match: 10_000_000,
        no_freshness: !freshness,
        rest,
        json: false,
        samples: None,
    }
}
