//! Folding stat deltas into a match's statistics.
//!
//! A delta entry's version must follow the projection's (`version + 1`); entries at or
//! below it are already applied and skipped (redelivery, replay), a gap is an error.

use std::collections::BTreeMap;
use std::sync::Arc;

use match_stats_commands::delta::{Change, Field, FieldValue};
use match_stats_commands::id::Label;
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
        let bad = || ProjectionError::BadValue {
            match_id: self.match_id,
            field: change.field,
            value: Box::new(change.after.clone()),
        };
        let v = &change.after;
        let Some(player_id) = change.player_id else {
            let m = &mut self.stats;
            match change.field {
                Field::Status => m.status = status(v).ok_or_else(bad)?,
                Field::StartTime => m.start_time = int(v).ok_or_else(bad)?,
                Field::EndTime => m.end_time = opt(v, int).ok_or_else(bad)?,
                Field::LastUpdate => m.last_update = int(v).ok_or_else(bad)?,
                Field::MapName => m.map_name = opt(v, text).ok_or_else(bad)?,
                Field::GameMode => m.game_mode = opt(v, text).ok_or_else(bad)?,
                Field::MaxPlayers => m.max_players = opt(v, int).ok_or_else(bad)?.map(|n| n as u32),
                Field::CurrentPlayers => m.current_players = int(v).ok_or_else(bad)? as u32,
                Field::TotalKills => m.total_kills = count(v).ok_or_else(bad)?,
                Field::TotalDeaths => m.total_deaths = count(v).ok_or_else(bad)?,
                Field::TotalAssists => m.total_assists = count(v).ok_or_else(bad)?,
                Field::TotalDamage => m.total_damage = float(v).ok_or_else(bad)?,
                Field::TotalHealing => m.total_healing = float(v).ok_or_else(bad)?,
                Field::FirstBlood => {
                    m.first_blood = opt(v, |v| match v {
                        FieldValue::FirstBlood(fb) => Some(*fb),
                        _ => None,
                    })
                    .ok_or_else(bad)?
                }
                Field::EventCount => m.event_count = count(v).ok_or_else(bad)?,
                _ => return Err(bad()),
            }
            return Ok(());
        };
        let p = Arc::make_mut(self.players.entry(player_id).or_default());
        match change.field {
            Field::PlayerName => p.player_name = opt(v, text).ok_or_else(bad)?,
            Field::TeamId => p.team_id = opt(v, text).ok_or_else(bad)?,
            Field::Online => p.online = matches!(v, FieldValue::Bool(true)),
            Field::OnlineSince => p.online_since = opt(v, int).ok_or_else(bad)?,
            Field::PlaytimeClosedMs => p.playtime_closed_ms = int(v).ok_or_else(bad)?,
            Field::Kills => p.kills = count(v).ok_or_else(bad)?,
            Field::Deaths => p.deaths = count(v).ok_or_else(bad)?,
            Field::Assists => p.assists = count(v).ok_or_else(bad)?,
            Field::Suicides => p.suicides = count(v).ok_or_else(bad)?,
            Field::DamageDealt => p.damage_dealt = float(v).ok_or_else(bad)?,
            Field::DamageReceived => p.damage_received = float(v).ok_or_else(bad)?,
            Field::HealingDone => p.healing_done = float(v).ok_or_else(bad)?,
            Field::ShotsFired => p.shots_fired = count(v).ok_or_else(bad)?,
            Field::ShotsHit => p.shots_hit = count(v).ok_or_else(bad)?,
            Field::Headshots => p.headshots = count(v).ok_or_else(bad)?,
            Field::Longshots => p.longshots = count(v).ok_or_else(bad)?,
            Field::Multikills => p.multikills = count(v).ok_or_else(bad)?,
            Field::BestMultikill => p.best_multikill = count(v).ok_or_else(bad)?,
            Field::CurrentStreak => p.current_streak = count(v).ok_or_else(bad)?,
            Field::BestStreak => p.best_streak = count(v).ok_or_else(bad)?,
            Field::DistanceTraveled => p.distance_traveled = float(v).ok_or_else(bad)?,
            Field::WeaponUsed | Field::ItemsUsed => {
                let key = change.key.ok_or_else(bad)?;
                let map = if change.field == Field::WeaponUsed {
                    &mut p.weapon_used
                } else {
                    &mut p.items_used
                };
                map.insert(key, count(v).ok_or_else(bad)?);
            }
            Field::CurrentX => p.current_x = opt(v, float).ok_or_else(bad)?,
            Field::CurrentY => p.current_y = opt(v, float).ok_or_else(bad)?,
            Field::CurrentZ => p.current_z = opt(v, float).ok_or_else(bad)?,
            _ => return Err(bad()),
        }
        Ok(())
    }
}

fn int(v: &FieldValue) -> Option<i64> {
    match v {
        FieldValue::Int(i) => Some(*i),
        _ => None,
    }
}

fn count(v: &FieldValue) -> Option<u64> {
    int(v).and_then(|i| u64::try_from(i).ok())
}

/// Floats, and integers (a MessagePack encoder may write a whole float as an int).
fn float(v: &FieldValue) -> Option<f64> {
    match v {
        FieldValue::Float(f) => Some(*f),
        FieldValue::Int(i) => Some(*i as f64),
        _ => None,
    }
}

fn text(v: &FieldValue) -> Option<Label> {
    match v {
        FieldValue::Text(t) => Some(*t),
        _ => None,
    }
}

fn status(v: &FieldValue) -> Option<match_stats_commands::MatchStatus> {
    match v {
        FieldValue::Status(s) => Some(*s),
        _ => None,
    }
}

/// `Some(None)` for nil, `Some(Some(x))` for a value of the right type, `None` otherwise.
fn opt<T>(v: &FieldValue, f: impl Fn(&FieldValue) -> Option<T>) -> Option<Option<T>> {
    match v {
        FieldValue::Null => Some(None),
        other => f(other).map(Some),
    }
}
