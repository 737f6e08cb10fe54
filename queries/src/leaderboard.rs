//! Per-match leaderboards, sorted when first asked for.
//!
//! A snapshot sorts a metric's standings (`value desc, player_id asc`) the first time a
//! request needs them and keeps them for the snapshot's life: a match has tens of players,
//! so a sort is microseconds, and nothing is maintained on the ingest path.

use std::sync::OnceLock;

use match_stats_commands::{PlayerId, PlayerView};

/// A leaderboard metric (contract section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `kills`.
    Kills,
    /// `deaths`.
    Deaths,
    /// `assists`.
    Assists,
    /// `score`.
    Score,
    /// `damage` (= `damage_dealt`).
    Damage,
    /// `damage_received`.
    DamageReceived,
    /// `headshots`.
    Headshots,
    /// `kd_ratio`.
    KdRatio,
    /// `kda`.
    Kda,
    /// `accuracy` (= `accuracy_pct`).
    Accuracy,
    /// `healing` (= `healing_done`).
    Healing,
    /// `distance` (= `distance_traveled`).
    Distance,
    /// `best_streak`.
    BestStreak,
    /// `multikills`.
    Multikills,
    /// `playtime` (= `playtime_ms`).
    Playtime,
}

impl Metric {
    /// Its place in [`Metric::ALL`].
    pub fn index(self) -> usize {
        Metric::ALL.iter().position(|m| *m == self).expect("listed")
    }

    /// Every metric, in the contract's order.
    pub const ALL: [Metric; 15] = [
        Metric::Kills,
        Metric::Deaths,
        Metric::Assists,
        Metric::Score,
        Metric::Damage,
        Metric::DamageReceived,
        Metric::Headshots,
        Metric::KdRatio,
        Metric::Kda,
        Metric::Accuracy,
        Metric::Healing,
        Metric::Distance,
        Metric::BestStreak,
        Metric::Multikills,
        Metric::Playtime,
    ];

    /// The name in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Kills => "kills",
            Metric::Deaths => "deaths",
            Metric::Assists => "assists",
            Metric::Score => "score",
            Metric::Damage => "damage",
            Metric::DamageReceived => "damage_received",
            Metric::Headshots => "headshots",
            Metric::KdRatio => "kd_ratio",
            Metric::Kda => "kda",
            Metric::Accuracy => "accuracy",
            Metric::Healing => "healing",
            Metric::Distance => "distance",
            Metric::BestStreak => "best_streak",
            Metric::Multikills => "multikills",
            Metric::Playtime => "playtime",
        }
    }

    /// Parses a URL name.
    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// The player's value of this metric, as the player object shows it.
    pub fn value(self, p: &PlayerView) -> f64 {
        match self {
            Metric::Kills => p.kills as f64,
            Metric::Deaths => p.deaths as f64,
            Metric::Assists => p.assists as f64,
            Metric::Score => p.score as f64,
            Metric::Damage => p.damage_dealt,
            Metric::DamageReceived => p.damage_received,
            Metric::Headshots => p.headshots as f64,
            Metric::KdRatio => p.kd_ratio,
            Metric::Kda => p.kda,
            Metric::Accuracy => p.accuracy_pct,
            Metric::Healing => p.healing_done,
            Metric::Distance => p.distance_traveled,
            Metric::BestStreak => p.best_streak as f64,
            Metric::Multikills => p.multikills as f64,
            Metric::Playtime => p.playtime_ms as f64,
        }
    }

    /// Whether values are whole numbers (rendered as JSON integers).
    pub fn is_count(self) -> bool {
        !matches!(
            self,
            Metric::Damage
                | Metric::DamageReceived
                | Metric::KdRatio
                | Metric::Kda
                | Metric::Accuracy
                | Metric::Healing
                | Metric::Distance
        )
    }
}

/// One player's place: ordered by value descending, then `player_id` ascending.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    /// The metric's value.
    pub value: f64,
    /// The player.
    pub player_id: PlayerId,
}

impl Eq for Standing {}

impl Ord for Standing {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .value
            .total_cmp(&self.value)
            .then_with(|| self.player_id.cmp(&other.player_id))
    }
}

impl PartialOrd for Standing {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A ranked standing: equal values share a rank (1, 2, 2, 4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// 1-based rank.
    pub rank: usize,
    /// 0-based position in the order.
    pub position: usize,
    /// The standing.
    pub standing: Standing,
}

/// Every metric's standings of one match snapshot, sorted on first use. A match has tens
/// of players, so sorting one metric when it is asked for takes microseconds, less than
/// keeping fifteen ordered sets up to date on every change (which the catch-up profile
/// showed costing a seventh of the service's CPU). The fifteen slots themselves are
/// allocated on the first request: most snapshots are never asked for a leaderboard.
#[derive(Debug, Default)]
pub struct Leaderboards {
    sorted: OnceLock<Box<[OnceLock<Vec<Standing>>; 15]>>,
    /// Per metric, its leaderboard's `players` array as JSON for the first limit asked
    /// (what every polling client of the match asks again until the next snapshot).
    tops: OnceLock<Box<[OnceLock<Top>; 15]>>,
}

/// A leaderboard's `players` array, rendered once per snapshot, metric and limit.
#[derive(Debug)]
pub struct Top {
    /// The `limit` it was rendered for.
    pub limit: usize,
    /// How many players it holds.
    pub count: usize,
    /// The JSON array.
    pub players: Box<serde_json::value::RawValue>,
}

impl Leaderboards {
    /// Every standing of a metric among `players`, ranked, from the top (ties share a
    /// rank: 1, 2, 2, 4; then by player id).
    pub fn ranked<'a, I>(&'a self, metric: Metric, players: I) -> impl Iterator<Item = Ranked> + 'a
    where
        I: IntoIterator<Item = &'a PlayerView>,
    {
        let sorted = self.sorted.get_or_init(Box::default)[metric.index()].get_or_init(|| {
            let mut standings: Vec<Standing> = players
                .into_iter()
                .map(|p| Standing {
                    value: metric.value(p),
                    player_id: p.player_id,
                })
                .collect();
            standings.sort_unstable();
            standings
        });
        let mut previous: Option<(f64, usize)> = None;
        sorted.iter().enumerate().map(move |(position, standing)| {
            let rank = match previous {
                Some((value, rank)) if value.total_cmp(&standing.value).is_eq() => rank,
                _ => position + 1,
            };
            previous = Some((standing.value, rank));
            Ranked {
                rank,
                position,
                standing: *standing,
            }
        })
    }

    /// A metric's top `limit` as rendered by `render` the first time this snapshot was
    /// asked for the metric; `None` when that first request asked for another limit (the
    /// caller renders its own, uncached).
    pub fn top(&self, metric: Metric, limit: usize, render: impl FnOnce() -> Top) -> Option<&Top> {
        let top = self.tops.get_or_init(Box::default)[metric.index()].get_or_init(render);
        (top.limit == limit).then_some(top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use match_stats_commands::PlayerStats;

    fn player(id: &str, kills: u64) -> PlayerView {
        let stats = PlayerStats {
            kills,
            ..Default::default()
        };
        PlayerView::render(PlayerId::parse(id).unwrap(), &stats, 0)
    }

    #[test]
    fn ties_share_a_rank_and_order_by_player_id() {
        let players: Vec<PlayerView> = [("d", 1), ("c", 5), ("a", 5), ("b", 9)]
            .into_iter()
            .map(|(id, kills)| player(id, kills))
            .collect();
        let boards = Leaderboards::default();
        let ranked: Vec<_> = boards
            .ranked(Metric::Kills, &players)
            .map(|r| (r.standing.player_id.to_string(), r.rank))
            .collect();
        assert_eq!(
            ranked,
            [("b", 1), ("a", 2), ("c", 2), ("d", 4)].map(|(p, r)| (p.to_owned(), r))
        );
        assert_eq!(Metric::parse("accuracy"), Some(Metric::Accuracy));
        assert_eq!(Metric::parse("Kills"), None);
    }
}
