//! The match-stats service: wires the pure command side (`match_stats_commands`) and the
//! read side (`match_stats_queries`) to NATS JetStream and HTTP.
//!
//! - [`config`]: the settings (environment variables and flags); [`cli`]: the command
//!   line around them;
//! - [`telemetry`]: logs, traces and the Prometheus recorder; [`metrics`]: every series'
//!   name and description;
//! - [`nats`]: the connection, the streams, consumers and buckets, and the partitions;
//! - [`command_side`]: events in, aggregates updated, deltas and dead letters out (one
//!   writer per partition; snapshots, recovery, idle matches, sharing partitions);
//! - [`query_side`]: the projector (deltas → read model) and the Redis cache writer;
//! - [`ops`]: `/health`, `/ready`, `/metrics`, `/system/stats`, pprof (the API routes are
//!   in `match_stats_queries::api`);
//! - [`serve`]: the HTTP server and its connection limits;
//! - [`memory`]: freed memory returned to the system after a burst;
//! - [`retry`]: the one retry idiom (back-off with jitter until it succeeds or stops);
//! - [`runtimes`]: the HTTP servers' runtime, the query side's, and the lower-priority
//!   thread the read model's projection moves to while ingest catches up;
//! - [`app`]: [`App`], the service assembled, with one shutdown path;
//! - [`tools`]: the demo feed and the load generator.

pub mod app;
pub mod cli;
pub mod command_side;
pub mod config;
pub mod handoff;
pub mod history;
pub mod memory;
pub mod metrics;
pub mod nats;
pub mod ops;
pub mod query_side;
pub mod retry;
pub mod runtimes;
pub mod serve;
pub mod telemetry;
pub mod tools;

pub use app::App;
pub use config::Config;
