//! Folding stat deltas into a match's statistics.
//!
//! A delta entry's version must follow the projection's (`version + 1`); entries at or
//! below it are already applied and skipped (redelivery, replay), a gap is an error.

use std::sync::Arc;

use imbl::OrdMap;

use match_stats_commands::delta::{BadValue, Change, Field, FieldValue};
use match_stats_commands::{MatchId, MatchStats, MatchView, PlayerId, PlayerStats, StatDelta};

/// Why a delta could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProjectionError {
    /// A version (or a part of one) is missing between the projection and the delta.
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

/// What [`MatchProjection::apply_lenient`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lenient {
    /// Entries (or parts) applied.
    pub applied: usize,
    /// Versions missing from the deltas, jumped.
    pub skipped_versions: u64,
    /// Changes left out because their value did not fit their field.
    pub bad_changes: usize,
}

/// One match's statistics as projected from its deltas.
#[derive(Debug, Clone)]
pub struct MatchProjection {
    match_id: MatchId,
    version: u64,
    /// The next part of version + 1 to apply (0 unless a split version is half applied).
    next_part: u32,
    stats: MatchStats,
    /// Shared with the read model's snapshots: a persistent map, so a snapshot takes it
    /// whole in O(1) and a later change copies only the nodes and the player it touches.
    players: OrdMap<PlayerId, Arc<PlayerStats>>,
}

impl MatchProjection {
    /// An empty projection (version 0).
    pub fn new(match_id: MatchId) -> Self {
        MatchProjection {
            match_id,
            version: 0,
            next_part: 0,
            stats: MatchStats::default(),
            players: OrdMap::new(),
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

    /// Every player's statistics, shared (a snapshot keeps them while the projection
    /// moves on).
    pub fn shared_players(&self) -> OrdMap<PlayerId, Arc<PlayerStats>> {
        self.players.clone()
    }

    /// Players in `player_id` order.
    pub fn players(&self) -> impl Iterator<Item = (&PlayerId, &PlayerStats)> {
        self.players.iter().map(|(id, p)| (id, p.as_ref()))
    }

    /// The match object as REST returns it.
    pub fn view(&self) -> MatchView {
        MatchView::render(self.match_id, &self.stats, Some(self.players()))
    }

    /// Applies a delta's entries in order; returns how many entries (or parts of one)
    /// were new. A split version is applied part by part; its version counts once its
    /// last part is.
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
            let gap = ProjectionError::Gap {
                match_id: self.match_id,
                have: self.version,
                got: entry.version,
            };
            if entry.version != self.version + 1 {
                return Err(gap);
            }
            if !entry.is_whole() {
                if entry.part < self.next_part {
                    continue;
                }
                if entry.part > self.next_part {
                    return Err(gap);
                }
            } else if self.next_part > 0 {
                return Err(gap);
            }
            self.apply_changes(&entry.changes, Err)
                .map_err(|bad| ProjectionError::BadValue {
                    match_id: self.match_id,
                    field: bad.field,
                    value: bad.value,
                })?;
            if entry.is_whole() || entry.part + 1 == entry.parts {
                self.version = entry.version;
                self.next_part = 0;
            } else {
                self.next_part += 1;
            }
            applied += 1;
        }
        Ok(applied)
    }

    /// Applies what it can, for a re-sync after an error: a missing version (or part) is
    /// jumped and counted, a change whose value does not fit its field is left out and
    /// counted. The projection then follows the stream again.
    pub fn apply_lenient(&mut self, delta: &StatDelta) -> Lenient {
        let mut outcome = Lenient::default();
        if delta.match_id != self.match_id {
            return outcome;
        }
        for entry in &delta.entries {
            if entry.version <= self.version {
                continue;
            }
            if entry.version != self.version + 1
                || (!entry.is_whole() && entry.part != self.next_part)
            {
                outcome.skipped_versions += entry.version - self.version - 1;
                self.version = entry.version - 1;
                self.next_part = if entry.is_whole() { 0 } else { entry.part };
            }
            let _ = self.apply_changes(&entry.changes, |_| {
                outcome.bad_changes += 1;
                Ok(())
            });
            if entry.is_whole() || entry.part + 1 == entry.parts {
                self.version = entry.version;
                self.next_part = 0;
            } else {
                self.next_part += 1;
            }
            outcome.applied += 1;
        }
        outcome
    }

    /// Applies `changes` in order, finding each player once for a run of its changes (an
    /// event's changes come grouped by player). A change whose value does not fit its
    /// field goes to `bad`, which says whether to go on (`Ok`) or stop there (`Err`).
    fn apply_changes(
        &mut self,
        changes: &[Change],
        mut bad: impl FnMut(BadValue) -> Result<(), BadValue>,
    ) -> Result<(), BadValue> {
        for run in changes.chunk_by(|a, b| a.player_id == b.player_id) {
            match run[0].player_id {
                None => {
                    for change in run {
                        change.apply_to_match(&mut self.stats).or_else(&mut bad)?;
                    }
                }
                Some(id) => {
                    let player = Arc::make_mut(self.players.entry(id).or_default());
                    for change in run {
                        change.apply_to_player(player).or_else(&mut bad)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use match_stats_commands::delta::{Change, DeltaEntry, Field, FieldValue};
    use match_stats_commands::{EventId, PlayerId};

    use super::*;

    fn kills(version: u64, players: usize) -> DeltaEntry {
        DeltaEntry {
            version,
            event_id: EventId::parse("e").unwrap(),
            stream_sequence: version,
            timestamp: 0,
            changes: (0..players)
                .map(|i| Change {
                    player_id: Some(PlayerId::parse(&format!("p{i}")).unwrap()),
                    field: Field::Kills,
                    key: None,
                    before: FieldValue::Null,
                    after: FieldValue::Int(version as i64),
                })
                .collect(),
            part: 0,
            parts: 1,
        }
    }

    fn delta(entries: Vec<DeltaEntry>) -> StatDelta {
        StatDelta {
            match_id: MatchId::parse("m").unwrap(),
            entries,
            match_view: None,
        }
    }

    #[test]
    fn a_split_version_counts_once_its_last_part_is_applied_and_a_repeated_part_changes_nothing() {
        let mut p = MatchProjection::new(MatchId::parse("m").unwrap());
        let parts = kills(1, 25).split(10);
        assert_eq!(p.apply(&delta(vec![parts[0].clone()])), Ok(1));
        assert_eq!(p.version(), 0, "half applied");
        assert_eq!(p.apply(&delta(vec![parts[0].clone()])), Ok(0), "a repeat");
        assert_eq!(
            p.apply(&delta(vec![parts[1].clone(), parts[2].clone()])),
            Ok(2)
        );
        assert_eq!(p.version(), 1);
        assert_eq!(p.players().count(), 25);
        assert!(
            matches!(
                p.apply(&delta(vec![kills(2, 30).split(10).remove(1)])),
                Err(ProjectionError::Gap { .. })
            ),
            "a missing first part is a gap"
        );
    }

    #[test]
    fn a_lenient_apply_jumps_a_missing_version_and_goes_on() {
        let mut p = MatchProjection::new(MatchId::parse("m").unwrap());
        assert!(p.apply(&delta(vec![kills(1, 1)])).is_ok());
        let outcome = p.apply_lenient(&delta(vec![kills(3, 1), kills(4, 1)]));
        assert_eq!((outcome.applied, outcome.skipped_versions), (2, 1));
        assert_eq!(p.version(), 4);
        assert_eq!(
            p.apply(&delta(vec![kills(5, 1)])),
            Ok(1),
            "then strict again"
        );
    }
}
