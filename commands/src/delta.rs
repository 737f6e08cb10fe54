//! Stat deltas: what one applied event changed, for downstream services.
//!
//! A [`StatDelta`] message carries one or more consecutive [`DeltaEntry`]s of one match;
//! each entry is one applied event with the match's `version` (its `event_count` after
//! applying) and the [`Change`]s it made to stored fields (see [`crate::stats`]).
//! Derived values (`kd_ratio`, `score`, `playtime_ms`...) are not sent: they follow from
//! the stored fields by the formulas in [`crate::stats`].
//!
//! Encoding: MessagePack maps with string keys (`rmp_serde::to_vec_named`).
//!
//! [`Change::apply_to_match`] and [`Change::apply_to_player`] fold a change into the
//! stored statistics: what a consumer of deltas does to hold the same state.

use serde::{Deserialize, Serialize};

use crate::event::TimestampMs;
use crate::id::{EventId, Label, MatchId, PlayerId};
use crate::stats::{FirstBlood, MatchStats, MatchStatus, PlayerStats};
use crate::view::MatchView;

/// One message on the deltas stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatDelta {
    /// The match.
    pub match_id: MatchId,
    /// Consecutive applied events, oldest first.
    pub entries: Vec<DeltaEntry>,
    /// The whole match object (as `GET .../matches/{id}` returns it), present on every
    /// delta of a completed match: the `match_end` and any late event after it.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_view: Option<Box<MatchView>>,
}

impl StatDelta {
    /// The deltas stream's `Nats-Msg-Id`: the same for the same match and versions, so a
    /// replay never publishes a change twice.
    pub fn msg_id(&self) -> String {
        let first = self.entries.first().map_or(0, |e| e.version);
        let last = self.entries.last().map_or(0, |e| e.version);
        if first == last {
            format!("{}:{last}", self.match_id)
        } else {
            format!("{}:{first}-{last}", self.match_id)
        }
    }
}

/// One applied event's effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaEntry {
    /// The match's `event_count` after applying: gapless per match, from 1.
    pub version: u64,
    /// The applied event.
    pub event_id: EventId,
    /// The events stream's sequence of the applied message.
    pub stream_sequence: u64,
    /// The event's `timestamp`, Unix milliseconds.
    pub timestamp: TimestampMs,
    /// What changed, in the order it changed.
    pub changes: Vec<Change>,
}

/// One stored field's change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The player, or `None` (nil) for a match-level field.
    pub player_id: Option<PlayerId>,
    /// The field.
    pub field: Field,
    /// The map key, for `weapon_used` and `items_used`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Label>,
    /// The value before (nil when the player or key did not exist).
    pub before: FieldValue,
    /// The value after.
    pub after: FieldValue,
}

/// A change whose value does not fit its field (or a player field without a player, or
/// the reverse).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field {field:?} cannot take {value:?}")]
pub struct BadValue {
    /// The field.
    pub field: Field,
    /// The value.
    pub value: Box<FieldValue>,
}

impl Change {
    fn bad(&self) -> BadValue {
        BadValue {
            field: self.field,
            value: Box::new(self.after.clone()),
        }
    }

    /// Applies a match-level change (`player_id` nil) to the match's statistics.
    pub fn apply_to_match(&self, m: &mut MatchStats) -> Result<(), BadValue> {
        let bad = || self.bad();
        let v = &self.after;
        match self.field {
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
        Ok(())
    }

    /// Applies a player-level change to that player's statistics.
    pub fn apply_to_player(&self, p: &mut PlayerStats) -> Result<(), BadValue> {
        let bad = || self.bad();
        let v = &self.after;
        match self.field {
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
                let key = self.key.ok_or_else(bad)?;
                let map = if self.field == Field::WeaponUsed {
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

/// A field's value: nil, bool, integer, float, string, status or first blood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// Unknown or absent.
    Null,
    /// `online`.
    Bool(bool),
    /// Counters and times (Unix milliseconds).
    Int(i64),
    /// Sums of numbers and coordinates.
    Float(f64),
    /// `status`.
    Status(MatchStatus),
    /// Names, modes.
    Text(Label),
    /// `first_blood`.
    FirstBlood(FirstBlood),
}

impl From<u64> for FieldValue {
    fn from(v: u64) -> Self {
        FieldValue::Int(v as i64)
    }
}
impl From<i64> for FieldValue {
    fn from(v: i64) -> Self {
        FieldValue::Int(v)
    }
}
impl From<u32> for FieldValue {
    fn from(v: u32) -> Self {
        FieldValue::Int(v.into())
    }
}
impl From<f64> for FieldValue {
    fn from(v: f64) -> Self {
        FieldValue::Float(v)
    }
}
impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        FieldValue::Bool(v)
    }
}
impl From<MatchStatus> for FieldValue {
    fn from(v: MatchStatus) -> Self {
        FieldValue::Status(v)
    }
}
impl From<Label> for FieldValue {
    fn from(v: Label) -> Self {
        FieldValue::Text(v)
    }
}
impl From<FirstBlood> for FieldValue {
    fn from(v: FirstBlood) -> Self {
        FieldValue::FirstBlood(v)
    }
}
impl<T: Into<FieldValue>> From<Option<T>> for FieldValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(FieldValue::Null, Into::into)
    }
}

/// The stored fields a [`Change`] can name; the JSON/MessagePack name is the
/// snake_case of the variant, the same word as in [`crate::stats`] and the REST objects.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    // Match level.
    Status,
    StartTime,
    EndTime,
    LastUpdate,
    MapName,
    GameMode,
    MaxPlayers,
    CurrentPlayers,
    TotalKills,
    TotalDeaths,
    TotalAssists,
    TotalDamage,
    TotalHealing,
    FirstBlood,
    EventCount,
    // Player level.
    PlayerName,
    TeamId,
    Online,
    OnlineSince,
    PlaytimeClosedMs,
    Kills,
    Deaths,
    Assists,
    Suicides,
    DamageDealt,
    DamageReceived,
    HealingDone,
    ShotsFired,
    ShotsHit,
    Headshots,
    Longshots,
    Multikills,
    BestMultikill,
    CurrentStreak,
    BestStreak,
    DistanceTraveled,
    WeaponUsed,
    ItemsUsed,
    CurrentX,
    CurrentY,
    CurrentZ,
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

fn status(v: &FieldValue) -> Option<MatchStatus> {
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
