//! Match history and player careers in PostgreSQL, on when `DATABASE_URL` is set.
//!
//! - [`writer`]: the history writer, a pinned durable consumer of the deltas stream that
//!   writes every completed match and its players' final lines;
//! - [`backfill`]: a first start fills history from the completed-matches bucket;
//! - [`store`]: the tables (migrations embedded from `migrations/`) and the batched,
//!   version-guarded writes; erasing a player;
//! - [`record`]: a completed match laid out as columns;
//! - [`routes`]: a player's matches, their career and boards across matches (501 without
//!   a database).

pub mod backfill;
pub mod record;
pub mod routes;
pub mod store;
pub mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::json;

use crate::metrics as m;

/// The writer's figures, for `/ready`, `/system/stats` and the metrics.
#[derive(Debug, Default)]
pub struct HistoryStats {
    matches: AtomicU64,
    players: AtomicU64,
    lag: AtomicU64,
    backfilling: AtomicBool,
    backfill_total: AtomicU64,
    backfill_done: AtomicU64,
}

impl HistoryStats {
    /// `matches` written (newer than stored) with `players` lines.
    pub fn written(&self, matches: u64, players: u64) {
        self.matches.fetch_add(matches, Ordering::Relaxed);
        self.players.fetch_add(players, Ordering::Relaxed);
    }

    /// Deltas waiting in (or delivered and not yet acknowledged by) the history consumer.
    pub fn set_lag(&self, lag: u64) {
        self.lag.store(lag, Ordering::Relaxed);
        metrics::gauge!(m::HISTORY_LAG).set(lag as f64);
    }

    /// A backfill of `total` matches began.
    pub fn backfill_started(&self, total: u64) {
        self.backfilling.store(true, Ordering::Relaxed);
        self.backfill_total.store(total, Ordering::Relaxed);
    }

    /// `done` matches backfilled.
    pub fn backfill_progress(&self, done: u64) {
        self.backfill_done.store(done, Ordering::Relaxed);
        metrics::gauge!(m::HISTORY_BACKFILL_DONE).set(done as f64);
    }

    /// The backfill ended.
    pub fn backfill_finished(&self) {
        self.backfilling.store(false, Ordering::Relaxed);
    }

    /// `{enabled, lag, matches_written, player_lines_written, backfill}`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "enabled": true,
            "lag": self.lag.load(Ordering::Relaxed),
            "matches_written": self.matches.load(Ordering::Relaxed),
            "player_lines_written": self.players.load(Ordering::Relaxed),
            "backfill": {
                "running": self.backfilling.load(Ordering::Relaxed),
                "done": self.backfill_done.load(Ordering::Relaxed),
                "total": self.backfill_total.load(Ordering::Relaxed),
            },
        })
    }
}
