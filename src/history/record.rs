//! One completed match as history stores it: its object (players included) and how it
//! ended, laid out as the columns the batched writes bind (one array per column, for
//! `UNNEST`).

use chrono::{DateTime, Utc};
use match_stats_commands::{MatchView, PlayerView};

/// A completed match to write.
#[derive(Debug, Clone)]
pub struct MatchRecord {
    /// The match object with `player_stats`.
    pub view: MatchView,
    /// `match_end`, `idle_timeout`, or `None` when not known.
    pub end_reason: Option<&'static str>,
}

fn time(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

impl MatchRecord {
    /// Its version (`event_count`).
    pub fn version(&self) -> i64 {
        self.view.event_count as i64
    }

    /// Its players.
    pub fn players(&self) -> &[PlayerView] {
        self.view.player_stats.as_deref().unwrap_or_default()
    }

    /// When it ended (its `end_time`; its last update if it has none).
    pub fn end_time(&self) -> DateTime<Utc> {
        time(
            self.view
                .end_time
                .as_deref()
                .unwrap_or(&self.view.last_update),
        )
    }

    /// When it started.
    pub fn start_time(&self) -> DateTime<Utc> {
        time(&self.view.start_time)
    }
}

/// The `matches` columns of a batch (each field named as its column).
#[derive(Debug, Default)]
#[allow(missing_docs)]
pub struct MatchColumns {
    pub match_id: Vec<String>,
    pub map_name: Vec<Option<String>>,
    pub game_mode: Vec<Option<String>>,
    pub max_players: Vec<Option<i32>>,
    pub start_time: Vec<DateTime<Utc>>,
    pub end_time: Vec<DateTime<Utc>>,
    pub duration_ms: Vec<i64>,
    pub end_reason: Vec<Option<String>>,
    pub version: Vec<i64>,
    pub player_count: Vec<i32>,
    pub total_kills: Vec<i64>,
    pub total_deaths: Vec<i64>,
    pub total_assists: Vec<i64>,
    pub total_damage: Vec<f64>,
    pub total_healing: Vec<f64>,
    pub first_blood: Vec<Option<serde_json::Value>>,
}

impl MatchColumns {
    /// The columns of `records`.
    pub fn of(records: &[MatchRecord]) -> Self {
        let mut c = MatchColumns::default();
        for r in records {
            let v = &r.view;
            c.match_id.push(v.match_id.to_string());
            c.map_name.push(v.map_name.map(|m| m.to_string()));
            c.game_mode.push(v.game_mode.map(|m| m.to_string()));
            c.max_players.push(v.max_players.map(|m| m as i32));
            c.start_time.push(r.start_time());
            c.end_time.push(r.end_time());
            c.duration_ms.push(v.duration_ms);
            c.end_reason.push(r.end_reason.map(str::to_owned));
            c.version.push(r.version());
            c.player_count.push(r.players().len() as i32);
            c.total_kills.push(v.total_kills as i64);
            c.total_deaths.push(v.total_deaths as i64);
            c.total_assists.push(v.total_assists as i64);
            c.total_damage.push(v.total_damage);
            c.total_healing.push(v.total_healing);
            c.first_blood
                .push(v.first_blood.as_ref().map(|f| serde_json::json!(f)));
        }
        c
    }
}

/// The `match_players` columns of a batch, every stored field and derived value (each
/// field named as its column).
#[derive(Debug, Default)]
#[allow(missing_docs)]
pub struct PlayerColumns {
    pub match_id: Vec<String>,
    pub player_id: Vec<String>,
    pub end_time: Vec<DateTime<Utc>>,
    pub game_mode: Vec<Option<String>>,
    pub map_name: Vec<Option<String>>,
    pub player_name: Vec<Option<String>>,
    pub team_id: Vec<Option<String>>,
    pub kills: Vec<i64>,
    pub deaths: Vec<i64>,
    pub assists: Vec<i64>,
    pub suicides: Vec<i64>,
    pub score: Vec<i64>,
    pub damage_dealt: Vec<f64>,
    pub damage_received: Vec<f64>,
    pub healing_done: Vec<f64>,
    pub shots_fired: Vec<i64>,
    pub shots_hit: Vec<i64>,
    pub accuracy_pct: Vec<f64>,
    pub headshots: Vec<i64>,
    pub longshots: Vec<i64>,
    pub multikills: Vec<i64>,
    pub best_multikill: Vec<i64>,
    pub current_streak: Vec<i64>,
    pub best_streak: Vec<i64>,
    pub kd_ratio: Vec<f64>,
    pub kda: Vec<f64>,
    pub performance_rating: Vec<f64>,
    pub playtime_ms: Vec<i64>,
    pub distance_traveled: Vec<f64>,
    pub avg_speed: Vec<f64>,
    pub weapon_used: Vec<serde_json::Value>,
    pub items_used: Vec<serde_json::Value>,
    pub current_x: Vec<Option<f64>>,
    pub current_y: Vec<Option<f64>>,
    pub current_z: Vec<Option<f64>>,
}

impl PlayerColumns {
    /// The columns of every player of `records`.
    pub fn of(records: &[&MatchRecord]) -> Self {
        let mut c = PlayerColumns::default();
        for r in records {
            let (end, mode, map) = (
                r.end_time(),
                r.view.game_mode.map(|m| m.to_string()),
                r.view.map_name.map(|m| m.to_string()),
            );
            for p in r.players() {
                c.match_id.push(r.view.match_id.to_string());
                c.player_id.push(p.player_id.to_string());
                c.end_time.push(end);
                c.game_mode.push(mode.clone());
                c.map_name.push(map.clone());
                c.player_name.push(p.player_name.map(|n| n.to_string()));
                c.team_id.push(p.team_id.map(|t| t.to_string()));
                c.kills.push(p.kills as i64);
                c.deaths.push(p.deaths as i64);
                c.assists.push(p.assists as i64);
                c.suicides.push(p.suicides as i64);
                c.score.push(p.score as i64);
                c.damage_dealt.push(p.damage_dealt);
                c.damage_received.push(p.damage_received);
                c.healing_done.push(p.healing_done);
                c.shots_fired.push(p.shots_fired as i64);
                c.shots_hit.push(p.shots_hit as i64);
                c.accuracy_pct.push(p.accuracy_pct);
                c.headshots.push(p.headshots as i64);
                c.longshots.push(p.longshots as i64);
                c.multikills.push(p.multikills as i64);
                c.best_multikill.push(p.best_multikill as i64);
                c.current_streak.push(p.current_streak as i64);
                c.best_streak.push(p.best_streak as i64);
                c.kd_ratio.push(p.kd_ratio);
                c.kda.push(p.kda);
                c.performance_rating.push(p.performance_rating);
                c.playtime_ms.push(p.playtime_ms);
                c.distance_traveled.push(p.distance_traveled);
                c.avg_speed.push(p.avg_speed);
                c.weapon_used.push(serde_json::json!(p.weapon_used));
                c.items_used.push(serde_json::json!(p.items_used));
                c.current_x.push(p.current_x);
                c.current_y.push(p.current_y);
                c.current_z.push(p.current_z);
            }
        }
        c
    }
}
