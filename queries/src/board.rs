//! A leaderboard response (REST and the leaderboard stream): player objects plus `rank`
//! and `value`, serialized straight to bytes.

use match_stats_commands::{PlayerId, PlayerView};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::error::now;
use crate::leaderboard::{Metric, Ranked, Top};
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
    players: &'a RawValue,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    around: Option<&'a str>,
}

/// The response for a metric's top `limit`: its `players` array is ranked and rendered
/// once per snapshot and metric (for the first limit asked) and copied into every response
/// after; `timestamp` is the request's.
pub fn top_body(snapshot: &MatchSnapshot, metric: Metric, limit: usize) -> bytes::Bytes {
    let render = || {
        let ranked: Vec<Ranked> = snapshot.ranked(metric).take(limit).collect();
        rendered(snapshot, metric, limit, &ranked)
    };
    let uncached;
    let top = match snapshot.top(metric, limit, render) {
        Some(top) => top,
        None => {
            uncached = render();
            &uncached
        }
    };
    body(snapshot, metric, limit, top, None)
}

/// The standings of `around` and the `limit` players either side of it, or `None` when
/// the match has no such player.
pub fn around(
    snapshot: &MatchSnapshot,
    metric: Metric,
    limit: usize,
    around: &PlayerId,
) -> Option<Vec<Ranked>> {
    let all: Vec<Ranked> = snapshot.ranked(metric).collect();
    let at = all.iter().position(|r| r.standing.player_id == *around)?;
    Some(all[at.saturating_sub(limit)..(at + limit + 1).min(all.len())].to_vec())
}

/// The response for the players around one (`window`, from [`around`]).
pub fn around_body(
    snapshot: &MatchSnapshot,
    metric: Metric,
    limit: usize,
    window: &[Ranked],
    around: &PlayerId,
) -> bytes::Bytes {
    let players = rendered(snapshot, metric, limit, window);
    body(snapshot, metric, limit, &players, Some(around))
}

fn body(
    snapshot: &MatchSnapshot,
    metric: Metric,
    limit: usize,
    players: &Top,
    around: Option<&PlayerId>,
) -> bytes::Bytes {
    let body = LeaderboardBody {
        match_id: snapshot.summary.match_id.as_str(),
        metric: metric.as_str(),
        limit,
        count: players.count,
        players: &players.players,
        timestamp: now(),
        around: around.map(|p| p.as_str()),
    };
    serde_json::to_vec(&body).expect("views serialize").into()
}

/// `ranked` as a `players` array.
fn rendered(snapshot: &MatchSnapshot, metric: Metric, limit: usize, ranked: &[Ranked]) -> Top {
    let players = entries(snapshot, metric, ranked);
    Top {
        limit,
        count: players.len(),
        players: serde_json::value::to_raw_value(&players).expect("views serialize"),
    }
}

/// The player objects of `ranked`, each with its `rank` and `value`.
fn entries<'a>(snapshot: &'a MatchSnapshot, metric: Metric, ranked: &[Ranked]) -> Vec<Entry<'a>> {
    ranked
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
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use match_stats_commands::{MatchId, MatchStats, MatchView, PlayerStats};

    /// A match of five players with 3, 9, 1, 7 and 5 kills.
    fn snapshot() -> MatchSnapshot {
        let players: Vec<(PlayerId, PlayerStats)> =
            [("p1", 3), ("p2", 9), ("p3", 1), ("p4", 7), ("p5", 5)]
                .into_iter()
                .map(|(id, kills)| {
                    let stats = PlayerStats {
                        kills,
                        ..Default::default()
                    };
                    (PlayerId::parse(id).unwrap(), stats)
                })
                .collect();
        let view = MatchView::render(
            MatchId::parse("m1").unwrap(),
            &MatchStats::default(),
            Some(players.iter().map(|(id, stats)| (id, stats))),
        );
        MatchSnapshot::from_view(view)
    }

    fn body(snapshot: &MatchSnapshot, limit: usize, around: Option<&str>) -> serde_json::Value {
        let bytes = match around {
            None => top_body(snapshot, Metric::Kills, limit),
            Some(pid) => {
                let pid = PlayerId::parse(pid).unwrap();
                let window = super::around(snapshot, Metric::Kills, limit, &pid).unwrap();
                around_body(snapshot, Metric::Kills, limit, &window, &pid)
            }
        };
        serde_json::from_slice(&bytes).unwrap()
    }

    fn players(body: &serde_json::Value) -> Vec<(String, u64, u64)> {
        body["players"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let id = p["player_id"].as_str().unwrap().to_owned();
                (
                    id,
                    p["rank"].as_u64().unwrap(),
                    p["value"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn expected(rows: &[(&str, u64, u64)]) -> Vec<(String, u64, u64)> {
        rows.iter()
            .map(|(id, rank, v)| (id.to_string(), *rank, *v))
            .collect()
    }

    #[test]
    fn the_cached_top_answers_like_a_fresh_render_and_other_limits_render_their_own() {
        let snapshot = snapshot();
        let top3 = expected(&[("p2", 1, 9), ("p4", 2, 7), ("p5", 3, 5)]);
        // The first request renders and caches; the second is served from the cache.
        for _ in 0..2 {
            let b = body(&snapshot, 3, None);
            assert_eq!(players(&b), top3);
            assert_eq!(
                (b["count"].as_u64(), b["limit"].as_u64()),
                (Some(3), Some(3))
            );
            assert_eq!(
                (b["match_id"].as_str(), b["metric"].as_str()),
                (Some("m1"), Some("kills"))
            );
            assert!(
                b["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{b}"
            );
            assert!(b.get("around").is_none());
        }
        // Another limit is not the cached one.
        let b = body(&snapshot, 2, None);
        assert_eq!(players(&b), expected(&[("p2", 1, 9), ("p4", 2, 7)]));
        assert_eq!(b["count"].as_u64(), Some(2));
        // Around a player: its window, never the cached top.
        let b = body(&snapshot, 1, Some("p1"));
        assert_eq!(
            players(&b),
            expected(&[("p5", 3, 5), ("p1", 4, 3), ("p3", 5, 1)])
        );
        assert_eq!(b["around"].as_str(), Some("p1"));
        // And the cached top is still the top 3.
        assert_eq!(players(&body(&snapshot, 3, None)), top3);
    }
}
