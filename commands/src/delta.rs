//! Stat deltas: what one applied event changed, for downstream services.
//!
//! A [`StatDelta`] message carries one or more consecutive [`DeltaEntry`]s of one match;
//! each entry is one applied event with the match's `version` (its `event_count` after
//! applying) and the [`Change`]s it made to stored fields (see [`crate::stats`]).
//! Derived values (`kd_ratio`, `score`, `playtime_ms`...) are not sent: they follow from
//! the stored fields by the formulas in [`crate::stats`].
//!
//! Encoding ([`Format`], named in each message's [`FORMAT_HEADER`]): format 2, MessagePack
//! maps with string keys (`rmp_serde::to_vec_named`; the writer writes the same bytes
//! directly, [`StatDeltaRef::to_msgpack`]); or format 3, the same with each entry and each
//! change an array of its fields in order (about 40% fewer bytes). Readers take both
//! ([`StatDelta::from_msgpack`]). An event whose changes would not fit one message is
//! split into parts ([`DeltaEntry::split`]); its version is applied once its last part is.
//!
//! [`Change::apply_to_match`] and [`Change::apply_to_player`] fold a change into the
//! stored statistics: what a consumer of deltas does to hold the same state.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::event::TimestampMs;
use crate::id::{EventId, Label, MatchId, PlayerId};
use crate::stats::{MatchStats, MatchStatus, PlayerStats};
use crate::view::MatchView;

pub use crate::field_value::FieldValue;

mod read;
mod write;

/// The header naming a delta message's [`Format`] (its [`Format::version`]).
pub const FORMAT_HEADER: &str = "Match-Stats-Delta-Version";

/// How a writer encodes delta messages; readers take either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Format 2: every map with string keys, as `rmp_serde::to_vec_named` writes a
    /// [`StatDelta`].
    #[default]
    Named,
    /// Format 3: the delta a map as in format 2, each entry an array
    /// `[version, event_id, stream_sequence, timestamp, changes, part, parts]` and each
    /// change an array `[player_id, field, key, before, after]` (nil for no player or
    /// key), as `rmp_serde` reads the same structs from arrays: about 40% fewer bytes.
    Compact,
}

impl Format {
    /// Its number in the [`FORMAT_HEADER`] header.
    pub const fn version(self) -> u32 {
        match self {
            Format::Named => 2,
            Format::Compact => 3,
        }
    }

    /// The format of a version number, if it is one of these.
    pub const fn from_version(version: u32) -> Option<Format> {
        match version {
            2 => Some(Format::Named),
            3 => Some(Format::Compact),
            _ => None,
        }
    }
}

/// One message on the deltas stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatDelta {
    /// The match.
    pub match_id: MatchId,
    /// Consecutive applied events, oldest first (or one part of one event's changes).
    pub entries: Vec<DeltaEntry>,
    /// The match object without `player_stats` (as the active-matches list shows it),
    /// present on every delta of a completed match: the `match_end` and any late event
    /// after it.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_view: Option<Box<MatchView>>,
}

/// Where a delta message stands in its match's sequence of versions: its last version,
/// and for one part of a version split over several messages, which part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// The last version the message carries.
    pub version: u64,
    /// `Some((part, parts))` for a part of a split version; `None` when it is whole.
    pub part: Option<(u32, u32)>,
}

impl Position {
    /// Whether a message at this position holds everything up to `other`.
    pub fn covers(&self, version: u64, part: Option<u32>) -> bool {
        match (version.cmp(&self.version), part, self.part) {
            (std::cmp::Ordering::Less, _, _) => true,
            (std::cmp::Ordering::Greater, _, _) => false,
            (std::cmp::Ordering::Equal, _, None) => true,
            (std::cmp::Ordering::Equal, None, Some(_)) => false,
            (std::cmp::Ordering::Equal, Some(part), Some((stored, _))) => part <= stored,
        }
    }
}

impl StatDelta {
    /// How many changes its entries carry.
    pub fn change_count(&self) -> usize {
        self.entries.iter().map(|e| e.changes.len()).sum()
    }

    /// The deltas stream's `Nats-Msg-Id`: the same for the same match and versions, so a
    /// replay never publishes a change twice: `<match>:<version>`,
    /// `<match>:<first>-<last>`, or for a part, `<match>:<version>#<part>/<parts>`.
    pub fn msg_id(&self) -> String {
        msg_id(&self.match_id, self.entries.first(), self.entries.last())
    }

    /// The position a `Nats-Msg-Id` written by [`StatDelta::msg_id`] names.
    pub fn position_of(msg_id: &str) -> Option<Position> {
        let (_, tail) = msg_id.rsplit_once(':')?;
        if let Some((version, part)) = tail.split_once('#') {
            let (part, parts) = part.split_once('/')?;
            return Some(Position {
                version: version.parse().ok()?,
                part: Some((part.parse().ok()?, parts.parse().ok()?)),
            });
        }
        let last = tail.rsplit('-').next()?;
        Some(Position {
            version: last.parse().ok()?,
            part: None,
        })
    }
}

/// A [`StatDelta`] over entries the writer keeps: the same encoding, without copying
/// their changes into a message first (the writer's hot path).
#[derive(Debug, Serialize)]
pub struct StatDeltaRef<'a> {
    /// The match.
    pub match_id: MatchId,
    /// Consecutive applied events, oldest first (a part of a split event is owned).
    pub entries: Vec<Cow<'a, DeltaEntry>>,
    /// As [`StatDelta::match_view`].
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_view: Option<&'a MatchView>,
}

impl StatDeltaRef<'_> {
    /// How many changes its entries carry.
    pub fn change_count(&self) -> usize {
        self.entries.iter().map(|e| e.changes.len()).sum()
    }

    /// The same delta, owned: what decoding its encoding gives.
    pub fn to_owned_delta(&self) -> StatDelta {
        StatDelta {
            match_id: self.match_id,
            entries: self.entries.iter().map(|e| e.as_ref().clone()).collect(),
            match_view: self.match_view.map(|view| Box::new(view.clone())),
        }
    }

    /// Its `Nats-Msg-Id`, as [`StatDelta::msg_id`].
    pub fn msg_id(&self) -> String {
        msg_id(
            &self.match_id,
            self.entries.first().map(|e| e.as_ref()),
            self.entries.last().map(|e| e.as_ref()),
        )
    }
}

fn msg_id(match_id: &MatchId, first: Option<&DeltaEntry>, last: Option<&DeltaEntry>) -> String {
    let first = first.map_or(0, |e| e.version);
    match last {
        Some(e) if !e.is_whole() => format!("{match_id}:{}#{}/{}", e.version, e.part, e.parts),
        Some(e) if e.version != first => format!("{match_id}:{first}-{}", e.version),
        _ => format!("{match_id}:{first}"),
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
    /// What changed, in the order it changed (for a part, this part's share).
    pub changes: Vec<Change>,
    /// For an event whose changes are split over several messages: this part, from 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub part: u32,
    /// For an event whose changes are split over several messages: how many parts (1:
    /// the entry is whole).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub parts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn one() -> u32 {
    1
}

impl DeltaEntry {
    /// Whether it carries all of its event's changes.
    pub fn is_whole(&self) -> bool {
        self.parts <= 1
    }

    /// How many parts of at most `max_changes` changes it takes.
    pub fn parts_of(changes: usize, max_changes: usize) -> u32 {
        changes.div_ceil(max_changes.max(1)).max(1) as u32
    }

    /// Splits a whole entry into parts of at most `max_changes` changes, in order (one
    /// part, the entry itself, when it fits). The split depends only on the entry, so
    /// every writer splits it the same way.
    pub fn split(self, max_changes: usize) -> Vec<DeltaEntry> {
        let parts = Self::parts_of(self.changes.len(), max_changes);
        if parts == 1 {
            return vec![self];
        }
        let DeltaEntry {
            version,
            event_id,
            stream_sequence,
            timestamp,
            changes,
            ..
        } = self;
        changes
            .chunks(max_changes)
            .enumerate()
            .map(|(part, changes)| DeltaEntry {
                version,
                event_id,
                stream_sequence,
                timestamp,
                changes: changes.to_vec(),
                part: part as u32,
                parts,
            })
            .collect()
    }
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
                    FieldValue::FirstBlood(fb) => Some(**fb),
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

/// Declares [`Field`] from one list of variants and their names in deltas: serde's
/// names, [`Field::name`] and [`Field::from_name`] all come from it.
macro_rules! fields {
    ($($variant:ident => $name:literal,)*) => {
        /// The stored fields a [`Change`] can name; the JSON/MessagePack name is the
        /// snake_case of the variant, the same word as in [`crate::stats`] and the REST
        /// objects.
        #[allow(missing_docs)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Field {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl Field {
            /// Its name in deltas (and in the REST objects): what serde writes for it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Field::$variant => $name,)*
                }
            }

            /// The field a delta names (see [`Field::name`]).
            pub fn from_name(name: &str) -> Option<Field> {
                match name {
                    $($name => Some(Field::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

fields! {
    // Match level.
    Status => "status",
    StartTime => "start_time",
    EndTime => "end_time",
    LastUpdate => "last_update",
    MapName => "map_name",
    GameMode => "game_mode",
    MaxPlayers => "max_players",
    CurrentPlayers => "current_players",
    TotalKills => "total_kills",
    TotalDeaths => "total_deaths",
    TotalAssists => "total_assists",
    TotalDamage => "total_damage",
    TotalHealing => "total_healing",
    FirstBlood => "first_blood",
    EventCount => "event_count",
    // Player level.
    PlayerName => "player_name",
    TeamId => "team_id",
    Online => "online",
    OnlineSince => "online_since",
    PlaytimeClosedMs => "playtime_closed_ms",
    Kills => "kills",
    Deaths => "deaths",
    Assists => "assists",
    Suicides => "suicides",
    DamageDealt => "damage_dealt",
    DamageReceived => "damage_received",
    HealingDone => "healing_done",
    ShotsFired => "shots_fired",
    ShotsHit => "shots_hit",
    Headshots => "headshots",
    Longshots => "longshots",
    Multikills => "multikills",
    BestMultikill => "best_multikill",
    CurrentStreak => "current_streak",
    BestStreak => "best_streak",
    DistanceTraveled => "distance_traveled",
    WeaponUsed => "weapon_used",
    ItemsUsed => "items_used",
    CurrentX => "current_x",
    CurrentY => "current_y",
    CurrentZ => "current_z",
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
        FieldValue::Text(t) => Some(**t),
        _ => None,
    }
}

fn status(v: &FieldValue) -> Option<MatchStatus> {
    match v {
        FieldValue::Text(s) => MatchStatus::parse(s),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::label;

    #[test]
    fn a_change_stays_small() {
        // Every applied event's change list holds these, written, encoded, copied and
        // dropped per event: a value is a word and a tag (texts boxed), a change two
        // inline ids and two such values.
        assert_eq!(std::mem::size_of::<FieldValue>(), 16);
        let label = std::mem::size_of::<Option<Label>>();
        assert!(
            std::mem::size_of::<Change>() <= 2 * label + 2 * 16 + 8,
            "{}",
            std::mem::size_of::<Change>()
        );
    }

    fn entry(version: u64, changes: usize) -> DeltaEntry {
        DeltaEntry {
            version,
            event_id: EventId::parse("e").unwrap(),
            stream_sequence: version,
            timestamp: 0,
            changes: (0..changes)
                .map(|i| Change {
                    player_id: None,
                    field: Field::EventCount,
                    key: None,
                    before: FieldValue::Int(i as i64),
                    after: FieldValue::Int(i as i64 + 1),
                })
                .collect(),
            part: 0,
            parts: 1,
        }
    }

    #[test]
    fn an_entry_too_large_for_one_message_splits_into_numbered_parts_in_order() {
        let parts = entry(7, 2_501).split(1_000);
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts
                .iter()
                .map(|p| (p.part, p.parts, p.changes.len()))
                .collect::<Vec<_>>(),
            vec![(0, 3, 1_000), (1, 3, 1_000), (2, 3, 501)]
        );
        assert_eq!(
            entry(7, 10).split(1_000).len(),
            1,
            "a small entry stays whole"
        );
    }

    #[test]
    fn a_borrowed_delta_encodes_to_the_same_bytes_and_id() {
        let id = MatchId::parse("m-1").unwrap();
        let stats = crate::stats::MatchStats::default();
        let view = MatchView::render(id, &stats, None::<std::iter::Empty<_>>);
        let (a, b) = (entry(3, 2), entry(4, 1));
        let owned = StatDelta {
            match_id: id,
            entries: vec![a.clone(), b.clone()],
            match_view: Some(Box::new(view.clone())),
        };
        let borrowed = StatDeltaRef {
            match_id: id,
            entries: vec![Cow::Borrowed(&a), Cow::Owned(b)],
            match_view: Some(&view),
        };
        assert_eq!(
            rmp_serde::to_vec_named(&borrowed).unwrap(),
            rmp_serde::to_vec_named(&owned).unwrap()
        );
        assert_eq!(borrowed.msg_id(), owned.msg_id());
        let without = StatDeltaRef {
            match_view: None,
            ..borrowed
        };
        let read: StatDelta =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&without).unwrap()).unwrap();
        assert_eq!(read.match_view, None);
        assert_eq!(read.entries, owned.entries);
    }

    #[test]
    fn a_message_id_names_its_position() {
        let id = MatchId::parse("m-1").unwrap();
        let whole = StatDelta {
            match_id: id,
            entries: vec![entry(3, 1), entry(4, 1)],
            match_view: None,
        };
        assert_eq!(whole.msg_id(), "m-1:3-4");
        let part = StatDelta {
            match_id: id,
            entries: vec![entry(9, 2_000).split(1_000).remove(1)],
            match_view: None,
        };
        assert_eq!(part.msg_id(), "m-1:9#1/2");
        assert_eq!(
            StatDelta::position_of("m-1:9#1/2"),
            Some(Position {
                version: 9,
                part: Some((1, 2))
            })
        );
        assert_eq!(
            StatDelta::position_of("m-1:3-4"),
            Some(Position {
                version: 4,
                part: None
            })
        );
        assert_eq!(
            StatDelta::position_of("m-1:5"),
            Some(Position {
                version: 5,
                part: None
            })
        );
        assert_eq!(StatDelta::position_of("junk"), None);
    }

    #[test]
    fn a_position_covers_what_came_before_it() {
        let half = Position {
            version: 9,
            part: Some((1, 3)),
        };
        assert!(half.covers(8, None) && half.covers(9, Some(0)) && half.covers(9, Some(1)));
        assert!(!half.covers(9, Some(2)) && !half.covers(10, None));
        let whole = Position {
            version: 9,
            part: None,
        };
        assert!(whole.covers(9, None) && whole.covers(9, Some(2)) && !whole.covers(10, Some(0)));
    }

    #[test]
    fn a_status_is_text_read_by_its_field() {
        let change = |after: &str| Change {
            player_id: None,
            field: Field::Status,
            key: None,
            before: FieldValue::Null,
            after: FieldValue::from(label(after).unwrap()),
        };
        let mut stats = MatchStats::default();
        change("completed").apply_to_match(&mut stats).unwrap();
        assert_eq!(stats.status, MatchStatus::Completed);
        assert!(change("paused").apply_to_match(&mut stats).is_err());
        // the MessagePack of a status is the plain string
        let bytes = rmp_serde::to_vec_named(&FieldValue::from(MatchStatus::Active)).unwrap();
        assert_eq!(rmp_serde::from_slice::<String>(&bytes).unwrap(), "active");
    }
}
