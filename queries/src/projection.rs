//! Folding stat deltas into a match's statistics.
//!
//! A delta entry's version must follow the projection's (`version + 1`); entries at or
//! below it are already applied and skipped (redelivery, replay), a gap is an error.

use std::collections::BTreeMap;
use std::sync::Arc;

use match_stats_commands::delta::{Change, Field, FieldValue};
use match_stats_commands::{MatchId, MatchStats, MatchView, PlayerId, PlayerStats, StatDelta};

/// Why a delta could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProjectionError {
    /// A version is missing between the projection and the delta.
    #[error("match {match_id}: version {got} follows {have}; versions in between are missing")]
    Gap {
        /// The match.
        match_id: MatchId,
        /// The projection's version.
        have: u64,
        /// The delta entry's version.
        got: u64,
    },
    /// A change's value has the wrong type for its field.
    #[error("match {match_id}: field {field:?} cannot take {value:?}")]
    BadValue {
        /// The match.
        match_id: MatchId,
        /// The field.
        field: Field,
        /// The value.
        value: Box<FieldValue>,
    },
    /// The delta is for another match.
    #[error("delta for match {got} applied to another match's projection")]
    WrongMatch {
        /// The delta's match.
        got: MatchId,
    },
}

/// One match's statistics as projected from its deltas.
#[derive(Debug, Clone)]
pub struct MatchProjection {
    match_id: MatchId,
    version: u64,
    stats: MatchStats,
    /// Shared with the read model's snapshots (copied on write).
    players: BTreeMap<PlayerId, Arc<PlayerStats>>,
}

impl MatchProjection {
    /// An empty projection (version 0).
    pub fn new(match_id: MatchId) -> Self {
        MatchProjection {
            match_id,
            version: 0,
            stats: MatchStats::default(),
            players: BTreeMap::new(),
        }
    }

    /// The last applied version (the match's `event_count`).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Match-level statistics.
    pub fn stats(&self) -> &MatchStats {
        &self.stats
    }

    /// The match id.
    pub fn match_id(&self) -> MatchId {
        self.match_id
    }

    /// A player's statistics.
    pub fn player(&self, id: &PlayerId) -> Option<&PlayerStats> {
        self.players.get(id).map(Arc::as_ref)
    }

    /// A player's statistics, shared (a snapshot keeps them while the projection moves on).
    pub fn shared_player(&self, id: &PlayerId) -> Option<Arc<PlayerStats>> {
        self.players.get(id).cloned()
    }

    /// Players in `player_id` order.
    pub fn players(&self) -> impl Iterator<Item = (&PlayerId, &PlayerStats)> {
        self.players.iter().map(|(id, p)| (id, p.as_ref()))
    }

    /// The match object as REST returns it.
    pub fn view(&self) -> MatchView {
        MatchView::render(self.match_id, &self.stats, Some(self.players()))
    }

    /// Applies a delta's entries in order; returns how many were new.
    pub fn apply(&mut self, delta: &StatDelta) -> Result<usize, ProjectionError> {
        if delta.match_id != self.match_id {
            return Err(ProjectionError::WrongMatch {
                got: delta.match_id,
            });
        }
        let mut applied = 0;
        for entry in &delta.entries {
            if entry.version <= self.version {
                continue;
            }
            if entry.version != self.version + 1 {
                return Err(ProjectionError::Gap {
                    match_id: self.match_id,
                    have: self.version,
                    got: entry.version,
                });
            }
            for change in &entry.changes {
                self.apply_change(change)?;
            }
            self.version = entry.version;
            applied += 1;
        }
        Ok(applied)
    }

    fn apply_change(&mut self, change: &Change) -> Result<(), ProjectionError> {
        let result = match change.player_id {
            None => change.apply_to_match(&mut self.stats),
            Some(id) => change.apply_to_player(Arc::make_mut(self.players.entry(id).or_default())),
        };
        result.map_err(|bad| ProjectionError::BadValue {
            match_id: self.match_id,
            field: bad.field,
            value: bad.value,
        })
    }
}
