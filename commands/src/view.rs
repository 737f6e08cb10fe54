//! The match and player objects exactly as the REST API returns them (contract section 5):
//! stored statistics plus derived values, times as RFC 3339 UTC with milliseconds; and
//! [`stored`], how a whole match object is kept in a cache (Redis, the completed-matches
//! bucket).

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

use crate::event::TimestampMs;
use crate::id::{Label, MatchId, PlayerId};
use crate::key_counts::KeyCounts;
use crate::stats::{MatchStats, MatchStatus, PlayerStats};

/// Formats Unix milliseconds as `2026-01-01T12:00:00.000Z`.
pub fn rfc3339(ms: TimestampMs) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `first_blood` as REST shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirstBloodView {
    /// The killer.
    pub killer_id: PlayerId,
    /// The victim.
    pub victim_id: PlayerId,
    /// RFC 3339.
    pub timestamp: String,
}

/// `GET /api/v1/match-stats/matches/{matchID}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct MatchView {
    pub match_id: MatchId,
    pub status: MatchStatus,
    pub start_time: String,
    pub end_time: Option<String>,
    pub duration_ms: i64,
    pub map_name: Option<Label>,
    pub game_mode: Option<Label>,
    pub max_players: Option<u32>,
    pub current_players: u32,
    pub total_kills: u64,
    pub total_deaths: u64,
    pub total_assists: u64,
    pub total_damage: f64,
    pub total_healing: f64,
    pub first_blood: Option<FirstBloodView>,
    pub event_count: u64,
    pub last_update: String,
    /// Ordered by `player_id`; absent in the active-matches list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player_stats: Option<Vec<PlayerView>>,
}

/// `GET /api/v1/match-stats/matches/{matchID}/players/{playerID}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct PlayerView {
    pub player_id: PlayerId,
    pub player_name: Option<Label>,
    pub team_id: Option<Label>,
    pub online: bool,
    pub kills: u64,
    pub deaths: u64,
    pub assists: u64,
    pub suicides: u64,
    pub score: u64,
    pub damage_dealt: f64,
    pub damage_received: f64,
    pub healing_done: f64,
    pub shots_fired: u64,
    pub shots_hit: u64,
    pub accuracy_pct: f64,
    pub headshots: u64,
    pub longshots: u64,
    pub multikills: u64,
    pub best_multikill: u64,
    pub current_streak: u64,
    pub best_streak: u64,
    pub kd_ratio: f64,
    pub kda: f64,
    pub performance_rating: f64,
    pub playtime_ms: i64,
    pub distance_traveled: f64,
    pub avg_speed: f64,
    pub weapon_used: KeyCounts,
    pub items_used: KeyCounts,
    pub current_x: Option<f64>,
    pub current_y: Option<f64>,
    pub current_z: Option<f64>,
}

impl MatchView {
    /// Renders a match; `players` in `player_id` order, or `None` for list views.
    pub fn render<'a>(
        match_id: MatchId,
        stats: &MatchStats,
        players: Option<impl Iterator<Item = (&'a PlayerId, &'a PlayerStats)>>,
    ) -> Self {
        MatchView {
            match_id,
            status: stats.status,
            start_time: rfc3339(stats.start_time),
            end_time: stats.end_time.map(rfc3339),
            duration_ms: stats.duration_ms(),
            map_name: stats.map_name,
            game_mode: stats.game_mode,
            max_players: stats.max_players,
            current_players: stats.current_players,
            total_kills: stats.total_kills,
            total_deaths: stats.total_deaths,
            total_assists: stats.total_assists,
            total_damage: stats.total_damage,
            total_healing: stats.total_healing,
            first_blood: stats.first_blood.map(|fb| FirstBloodView {
                killer_id: fb.killer_id,
                victim_id: fb.victim_id,
                timestamp: rfc3339(fb.timestamp),
            }),
            event_count: stats.event_count,
            last_update: rfc3339(stats.last_update),
            player_stats: players.map(|players| {
                players
                    .map(|(id, p)| PlayerView::render(*id, p, stats.last_update))
                    .collect()
            }),
        }
    }
}

impl PlayerView {
    /// Renders a player; `last_update` is the match's, for the open online interval.
    pub fn render(player_id: PlayerId, p: &PlayerStats, last_update: TimestampMs) -> Self {
        PlayerView {
            player_id,
            player_name: p.player_name,
            team_id: p.team_id,
            online: p.online,
            kills: p.kills,
            deaths: p.deaths,
            assists: p.assists,
            suicides: p.suicides,
            score: p.score(),
            damage_dealt: p.damage_dealt,
            damage_received: p.damage_received,
            healing_done: p.healing_done,
            shots_fired: p.shots_fired,
            shots_hit: p.shots_hit,
            accuracy_pct: p.accuracy_pct(),
            headshots: p.headshots,
            longshots: p.longshots,
            multikills: p.multikills,
            best_multikill: p.best_multikill,
            current_streak: p.current_streak,
            best_streak: p.best_streak,
            kd_ratio: p.kd_ratio(),
            kda: p.kda(),
            performance_rating: p.performance_rating(last_update),
            playtime_ms: p.playtime_ms(last_update),
            distance_traveled: p.distance_traveled,
            avg_speed: p.avg_speed(last_update),
            weapon_used: p.weapon_used.clone(),
            items_used: p.items_used.clone(),
            current_x: p.current_x,
            current_y: p.current_y,
            current_z: p.current_z,
        }
    }
}

/// A whole match object as the caches keep it: a tag byte, then its JSON (`J`), or, over
/// [`stored::COMPRESS_OVER`] bytes, an LZ4 block of it with its size prepended (`Z`).
pub mod stored {
    use super::MatchView;

    /// Values larger than this are compressed.
    pub const COMPRESS_OVER: usize = 1024;
    /// Largest match object a stored value may decode to: a match of 10,000 players is
    /// about 30 MB of JSON. A value that claims more is refused before anything is
    /// allocated for it (a cache is not trusted).
    pub const MAX_DECODED_BYTES: usize = 64 << 20;

    const PLAIN: u8 = b'J';
    const LZ4: u8 = b'Z';

    /// Why a stored value could not be read.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("corrupt value: {0}")]
    pub struct Corrupt(pub String);

    /// Encodes a match object.
    pub fn encode(view: &MatchView) -> Vec<u8> {
        encode_json(&serde_json::to_vec(view).expect("views serialize"))
    }

    /// Encodes a match object's JSON.
    pub fn encode_json(json: &[u8]) -> Vec<u8> {
        if json.len() > COMPRESS_OVER {
            let mut out = vec![LZ4];
            out.extend(lz4_flex::compress_prepend_size(json));
            out
        } else {
            let mut out = Vec::with_capacity(json.len() + 1);
            out.push(PLAIN);
            out.extend_from_slice(json);
            out
        }
    }

    /// Decodes what [`encode`] wrote, refusing a value that claims more than
    /// [`MAX_DECODED_BYTES`].
    pub fn decode(value: &[u8]) -> Result<MatchView, Corrupt> {
        let json = match value.split_first() {
            Some((&PLAIN, json)) => std::borrow::Cow::Borrowed(json),
            Some((&LZ4, packed)) => {
                let claimed = packed
                    .get(..4)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                    .ok_or_else(|| Corrupt("no size".into()))?;
                if claimed > MAX_DECODED_BYTES {
                    return Err(Corrupt(format!(
                        "claims {claimed} bytes, over the limit of {MAX_DECODED_BYTES}"
                    )));
                }
                std::borrow::Cow::Owned(
                    lz4_flex::decompress_size_prepended(packed)
                        .map_err(|e| Corrupt(e.to_string()))?,
                )
            }
            _ => return Err(Corrupt("unknown encoding tag".into())),
        };
        serde_json::from_slice(&json).map_err(|e| Corrupt(e.to_string()))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn small_values_stay_plain_and_large_ones_are_compressed() {
            let small = br#"{"a":1}"#;
            assert_eq!(encode_json(small)[0], PLAIN);
            let large = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
            let packed = encode_json(large.as_bytes());
            assert_eq!(packed[0], LZ4);
            assert!(packed.len() < large.len() / 10);
        }

        #[test]
        fn a_value_claiming_a_huge_size_is_refused_before_decompressing() {
            let mut bomb = vec![LZ4];
            bomb.extend(u32::MAX.to_le_bytes());
            bomb.extend([0u8; 16]);
            let error = decode(&bomb).unwrap_err();
            assert!(error.0.contains("over the limit"), "{error}");
        }
    }
}
