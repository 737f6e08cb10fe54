//! Stat deltas: what one applied event changed, for downstream services.
//!
//! A [`StatDelta`] message carries one or more consecutive [`DeltaEntry`]s of one match;
//! each entry is one applied event with the match's `version` (its `event_count` after
//! applying) and the [`Change`]s it made to stored fields (see [`crate::stats`]).
//! Derived values (`kd_ratio`, `score`, `playtime_ms`...) are not sent: they follow from
//! the stored fields by the formulas in [`crate::stats`].
//!
//! Encoding: MessagePack maps with string keys (`rmp_serde::to_vec_named`).

use serde::{Deserialize, Serialize};

use crate::event::TimestampMs;
use crate::id::{EventId, Label, MatchId, PlayerId};
use crate::stats::{FirstBlood, MatchStatus};
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
