//! A leaderboard response (REST and the leaderboard stream): player objects plus `rank`
//! and `value`, serialized straight to bytes.

use match_stats_commands::{PlayerId, PlayerView};
use serde::Serialize;
use serde_json::json;

use crate::error::now;
use crate::leaderboard::{Metric, Ranked};
use crate::read_model::MatchSnapshot;

#[derive(Serialize)]
struct Entry<'a> {
    #[serde(flatten)]
    player: &'a PlayerView,
    rank: usize,
    value: serde_json::Value,
}

/// A leaderboard response, serialized straight to its bytes.
#[derive(Serialize)]
struct LeaderboardBody<'a> {
    match_id: &'a str,
    metric: &'static str,
    limit: usize,
    count: usize,
    players: Vec<Entry<'a>>,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    around: Option<&'a str>,
}

/// A leaderboard response for `ranked` (a slice of the snapshot's standings).
pub fn leaderboard_body(
    snapshot: &MatchSnapshot,
    metric: Metric,
    limit: usize,
    ranked: &[Ranked],
    around: Option<&PlayerId>,
) -> bytes::Bytes {
    let players: Vec<Entry> = ranked
        .iter()
        .filter_map(|r| {
            let player = snapshot.players().get(&r.standing.player_id)?;
            let value = if metric.is_count() {
                json!(r.standing.value as u64)
            } else {
                json!(r.standing.value)
            };
            Some(Entry {
                player,
                rank: r.rank,
                value,
            })
        })
        .collect();
    let body = LeaderboardBody {
        match_id: snapshot.summary.match_id.as_str(),
        metric: metric.as_str(),
        limit,
        count: players.len(),
        players,
        timestamp: now(),
        around: around.map(|p| p.as_str()),
    };
    serde_json::to_vec(&body).expect("views serialize").into()
}
