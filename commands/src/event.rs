//! A validated game event (contract sections 1 and 2).
//!
//! Built only by `decode`; everything downstream trusts its fields.

use crate::id::{EventId, Label, MatchId, PlayerId};

/// Unix time in milliseconds.
pub type TimestampMs = i64;

/// One event from a game server, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The key for dropping duplicates.
    pub event_id: EventId,
    /// The match the event belongs to.
    pub match_id: MatchId,
    /// The player the event is about; absent only for `match_start` and `match_end`.
    pub player_id: Option<PlayerId>,
    /// When the event happened in the game, truncated to the millisecond.
    pub timestamp_ms: TimestampMs,
    /// The type and its `event_data`.
    pub kind: EventKind,
}

/// The event types of contract section 2, with their `event_data`.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// `match_start`.
    MatchStart {
        /// `map_name`.
        map_name: Option<Label>,
        /// `game_mode`.
        game_mode: Option<Label>,
        /// `max_players`, 1..=10000.
        max_players: Option<u32>,
    },
    /// `match_end`.
    MatchEnd,
    /// `player_join`.
    PlayerJoin {
        /// `player_name`.
        player_name: Option<Label>,
        /// `team_id`.
        team_id: Option<Label>,
    },
    /// `player_leave`.
    PlayerLeave,
    /// `kill`.
    Kill {
        /// `killer_id`.
        killer_id: PlayerId,
        /// `victim_id`.
        victim_id: PlayerId,
        /// `weapon`.
        weapon: Option<Label>,
        /// `headshot`, default false.
        headshot: bool,
        /// `distance` in metres, >= 0.
        distance: Option<f64>,
    },
    /// `death`.
    Death {
        /// `cause`.
        cause: Option<Label>,
        /// `killer_id`.
        killer_id: Option<PlayerId>,
    },
    /// `damage`.
    Damage {
        /// `attacker_id`.
        attacker_id: PlayerId,
        /// `victim_id`.
        victim_id: PlayerId,
        /// `damage`, 0..=1000000.
        damage: f64,
        /// `weapon`.
        weapon: Option<Label>,
        /// `hit_location`.
        hit_location: Option<Label>,
    },
    /// `position`.
    Position {
        /// `x`.
        x: f64,
        /// `y`.
        y: f64,
        /// `z`.
        z: f64,
    },
    /// `item_use`.
    ItemUse {
        /// `item`.
        item: Label,
        /// `heal_amount`, 0..=1000000.
        heal_amount: Option<f64>,
    },
    /// `weapon_fire`.
    WeaponFire {
        /// `weapon`.
        weapon: Option<Label>,
        /// `shots`, 1..=10000, default 1.
        shots: u32,
    },
}

/// The `event_type` strings, as the contract spells them.
pub const EVENT_TYPES: [&str; 10] = [
    "match_start",
    "match_end",
    "player_join",
    "player_leave",
    "kill",
    "death",
    "damage",
    "position",
    "item_use",
    "weapon_fire",
];

impl EventKind {
    /// The contract's `event_type` string.
    pub fn event_type(&self) -> &'static str {
        match self {
            EventKind::MatchStart { .. } => "match_start",
            EventKind::MatchEnd => "match_end",
            EventKind::PlayerJoin { .. } => "player_join",
            EventKind::PlayerLeave => "player_leave",
            EventKind::Kill { .. } => "kill",
            EventKind::Death { .. } => "death",
            EventKind::Damage { .. } => "damage",
            EventKind::Position { .. } => "position",
            EventKind::ItemUse { .. } => "item_use",
            EventKind::WeaponFire { .. } => "weapon_fire",
        }
    }
}
