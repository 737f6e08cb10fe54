//! The stored statistics of a match and its players, and the values derived from them
//! (contract section 4, "Derived values").
//!
//! These are the fields that stat deltas carry; both the command side's aggregate and the
//! query side's projections hold them, and `view` renders them. Derived values
//! are methods, computed on demand, so they are never stored out of date.

use crate::event::TimestampMs;
use crate::id::{Label, PlayerId};
use crate::key_counts::KeyCounts;

/// `status` of a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchStatus {
    /// Still receiving events.
    #[default]
    Active,
    /// A `match_end` was applied.
    Completed,
}

impl MatchStatus {
    /// `active` or `completed`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchStatus::Active => "active",
            MatchStatus::Completed => "completed",
        }
    }

    /// The status a text names, if any.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(MatchStatus::Active),
            "completed" => Some(MatchStatus::Completed),
            _ => None,
        }
    }
}

/// The first non-suicide kill of a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FirstBlood {
    /// The killer.
    pub killer_id: PlayerId,
    /// The victim.
    pub victim_id: PlayerId,
    /// When it happened.
    pub timestamp: TimestampMs,
}

/// Match-level statistics (players are held beside them).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct MatchStats {
    /// `active` or `completed`.
    pub status: MatchStatus,
    /// The first `match_start`'s timestamp, else the first applied event's.
    pub start_time: TimestampMs,
    /// The `match_end` timestamp.
    pub end_time: Option<TimestampMs>,
    /// The largest timestamp applied.
    pub last_update: TimestampMs,
    /// From `match_start`.
    pub map_name: Option<Label>,
    /// From `match_start`.
    pub game_mode: Option<Label>,
    /// From `match_start`.
    pub max_players: Option<u32>,
    /// Players online.
    pub current_players: u32,
    /// Non-suicide kills.
    pub total_kills: u64,
    /// Counted deaths.
    pub total_deaths: u64,
    /// Assists.
    pub total_assists: u64,
    /// Sum of `damage_dealt`, added in stream order.
    pub total_damage: f64,
    /// Sum of `heal_amount`, added in stream order.
    pub total_healing: f64,
    /// The first non-suicide kill.
    pub first_blood: Option<FirstBlood>,
    /// Applied events; the match's version.
    pub event_count: u64,
}

impl MatchStats {
    /// `end_time - start_time` when completed, else `last_update - start_time`; never
    /// negative (game clocks may stamp a `match_end` before the `match_start`).
    pub fn duration_ms(&self) -> i64 {
        (self.end_time.unwrap_or(self.last_update) - self.start_time).max(0)
    }
}

/// One player's statistics in one match.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct PlayerStats {
    /// From `player_join`.
    pub player_name: Option<Label>,
    /// From `player_join`.
    pub team_id: Option<Label>,
    /// Online now.
    pub online: bool,
    /// When the open online interval began (while online).
    pub online_since: Option<TimestampMs>,
    /// Sum of closed online intervals; [`PlayerStats::playtime_ms`] adds the open one.
    pub playtime_closed_ms: i64,
    /// Non-suicide kills.
    pub kills: u64,
    /// Counted deaths.
    pub deaths: u64,
    /// Assists.
    pub assists: u64,
    /// Suicides.
    pub suicides: u64,
    /// Damage dealt to others.
    pub damage_dealt: f64,
    /// Damage received, self-inflicted included.
    pub damage_received: f64,
    /// Sum of `heal_amount`.
    pub healing_done: f64,
    /// Sum of `shots`.
    pub shots_fired: u64,
    /// Damage events dealt to others.
    pub shots_hit: u64,
    /// Headshot kills.
    pub headshots: u64,
    /// Kills from 50 m or more.
    pub longshots: u64,
    /// Kill chains that reached 2.
    pub multikills: u64,
    /// Longest kill chain.
    pub best_multikill: u64,
    /// Kills since the last counted death.
    pub current_streak: u64,
    /// Longest streak.
    pub best_streak: u64,
    /// Sum of moves of at most 1000.
    pub distance_traveled: f64,
    /// Kills by weapon (`"unknown"` when none was given).
    pub weapon_used: KeyCounts,
    /// Uses by item.
    pub items_used: KeyCounts,
    /// Last position.
    pub current_x: Option<f64>,
    /// Last position.
    pub current_y: Option<f64>,
    /// Last position.
    pub current_z: Option<f64>,
}

impl PlayerStats {
    /// Closed intervals plus the open one, counted up to the match's `last_update`.
    pub fn playtime_ms(&self, last_update: TimestampMs) -> i64 {
        let open = match (self.online, self.online_since) {
            (true, Some(since)) => (last_update - since).max(0),
            _ => 0,
        };
        self.playtime_closed_ms + open
    }

    /// `kills / deaths`, or `kills` when there is no death.
    pub fn kd_ratio(&self) -> f64 {
        if self.deaths == 0 {
            self.kills as f64
        } else {
            self.kills as f64 / self.deaths as f64
        }
    }

    /// `(kills + assists) / max(deaths, 1)`.
    pub fn kda(&self) -> f64 {
        (self.kills + self.assists) as f64 / self.deaths.max(1) as f64
    }

    /// `min(100, 100 * shots_hit / shots_fired)`, 0 when no shot was fired.
    pub fn accuracy_pct(&self) -> f64 {
        if self.shots_fired == 0 {
            0.0
        } else {
            (100.0 * self.shots_hit as f64 / self.shots_fired as f64).min(100.0)
        }
    }

    /// `100*kills + 50*assists + 25*headshots`.
    pub fn score(&self) -> u64 {
        100 * self.kills + 50 * self.assists + 25 * self.headshots
    }

    /// `distance_traveled / (playtime_ms / 1000)`, 0 when playtime is 0.
    pub fn avg_speed(&self, last_update: TimestampMs) -> f64 {
        let playtime = self.playtime_ms(last_update);
        if playtime <= 0 {
            0.0
        } else {
            self.distance_traveled / (playtime as f64 / 1000.0)
        }
    }

    /// `score * 60000 / max(playtime_ms, 60000)`: score per minute played.
    pub fn performance_rating(&self, last_update: TimestampMs) -> f64 {
        self.score() as f64 * 60_000.0 / self.playtime_ms(last_update).max(60_000) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_follow_the_contract_formulas() {
        let p = PlayerStats {
            kills: 4,
            deaths: 0,
            assists: 2,
            headshots: 1,
            shots_fired: 3,
            shots_hit: 5,
            distance_traveled: 30.0,
            playtime_closed_ms: 30_000,
            ..Default::default()
        };
        assert_eq!(p.kd_ratio(), 4.0, "kills when no death");
        assert_eq!(p.kda(), 6.0);
        assert_eq!(p.accuracy_pct(), 100.0, "capped at 100");
        assert_eq!(p.score(), 400 + 100 + 25);
        assert_eq!(p.avg_speed(0), 1.0);
        assert_eq!(
            p.performance_rating(0),
            525.0,
            "playtime floored at a minute"
        );
        let idle = PlayerStats::default();
        assert_eq!(
            (idle.accuracy_pct(), idle.avg_speed(0), idle.kd_ratio()),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn an_online_player_counts_up_to_last_update_never_negative() {
        let p = PlayerStats {
            online: true,
            online_since: Some(1_000),
            playtime_closed_ms: 500,
            ..Default::default()
        };
        assert_eq!(p.playtime_ms(4_000), 3_500);
        assert_eq!(p.playtime_ms(900), 500);
    }
}
