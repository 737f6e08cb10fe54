//! The read side of match-stats: read models projected from stat deltas, the shared
//! caches behind them, and the REST API.
//!
//! - [`projection`]: [`MatchProjection`] folds [`StatDelta`](match_stats_commands::StatDelta)
//!   messages, in version order, back into the statistics the command side holds;
//! - [`read_model`]: [`ReadModel`], immutable per-match snapshots published with
//!   `arc-swap`, and the [`MatchBuilder`] that makes them from deltas;
//! - [`leaderboard`]: per-metric standings, sorted on first request per snapshot;
//! - [`cache`]: Redis (version-guarded write-through, circuit breaker, timeouts) and the
//!   completed-matches key-value bucket;
//! - [`api`]: the axum router and handlers of contract section 5, on [`lookup`] (the
//!   tiers a match is found in), [`params`] (validated parameters), [`board`] (the
//!   leaderboard response) and [`error`] (JSON errors);
//! - [`edge`]: CORS, compression, conditional requests, API keys and the rate limit;
//! - [`live`] and [`stream`]: per-match live updates and the Server-Sent Events streams
//!   built on them;
//! - [`metrics`]: the names and descriptions of the read side's Prometheus series.
//!
//! The query side never reaches into the command side's memory: everything it knows
//! arrives on the deltas stream, so it runs on every replica.

pub mod api;
pub mod board;
pub mod cache;
pub mod edge;
pub mod error;
pub mod leaderboard;
pub mod live;
pub mod lookup;
pub mod metrics;
pub mod page;
pub mod params;
pub mod projection;
pub mod read_model;
pub mod stream;

pub use api::{ApiState, router};
pub use projection::{Lenient, MatchProjection, ProjectionError};
pub use read_model::{MatchBuilder, MatchSnapshot, ReadModel};
