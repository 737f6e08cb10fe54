//! [`Capacity`]: what a replica is sized to hold, and the gauges that say how much of it
//! is in use.

use match_stats_queries::ReadModel;

use crate::metrics as m;

/// What a replica is sized to hold: its memory limit spent on players alone, or on
/// matches alone (README, "Sizing"). Every replica holds every match in its read model.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// Players, if it held nothing else (`CAPACITY_PLAYERS`).
    pub players: u64,
    /// Matches, if they had no players (`CAPACITY_MATCHES`).
    pub matches: u64,
}

impl Capacity {
    /// The share of the memory limit that `matches` holding `players` take.
    pub fn used(&self, matches: usize, players: usize) -> f64 {
        players as f64 / self.players as f64 + matches as f64 / self.matches as f64
    }

    /// Sets the players-held and capacity gauges from the read model (at each scrape of
    /// `/metrics`: one pass over the matches, no lock).
    pub fn publish_gauges(&self, model: &ReadModel) {
        let matches = model.matches();
        let players: usize = matches.values().map(|s| s.player_count()).sum();
        metrics::gauge!(m::PLAYERS_HELD).set(players as f64);
        metrics::gauge!(m::CAPACITY_USED_RATIO).set(self.used(matches.len(), players));
    }
}
