//! The match-stats service: wires the pure command side (`match_stats_commands`) and the
//! read side (`match_stats_queries`) to NATS JetStream and HTTP.
//!
//! - [`config`]: settings from environment variables and flags;
//! - [`telemetry`]: logs and the Prometheus recorder;
//! - [`streams`]: the JetStream streams and consumer, from the files in `nats/`;
//! - [`command_side`]: the aggregates in memory and the decision for one message;
//! - [`ingest`]: the command side's loop (restore, recover, consume, publish effects,
//!   ack, snapshot, idle matches);
//! - [`snapshots`]: snapshots in a key-value bucket, fenced by compare-and-swap;
//! - [`project`]: the query side's projector (deltas → read model) and cache writer;
//! - [`http`]: `/health`, `/ready`, `/metrics`, `/system/stats` (the API is in queries);
//! - [`app`]: [`App`], the service assembled, with one shutdown path;
//! - [`demo`]: a feed of simulated matches for `make run`.

pub mod app;
pub mod command_side;
pub mod config;
pub mod demo;
pub mod http;
pub mod ingest;
pub mod loadgen;
pub mod project;
pub mod snapshots;
pub mod streams;
pub mod telemetry;

pub use app::App;
pub use config::Config;
