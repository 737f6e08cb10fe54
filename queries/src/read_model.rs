//! The read model: an immutable [`MatchSnapshot`] per match, all of them in one
//! persistent ordered map published with `arc-swap`. A request does one `load()` and
//! never waits on a lock or on the projector; the projector builds new snapshots from
//! deltas ([`MatchBuilder`]) and publishes them with one `store()` per batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use imbl::OrdMap;
use match_stats_commands::{
    MatchId, MatchStatus, MatchView, PlayerId, PlayerStats, PlayerView, StatDelta,
};
use serde::Serialize;

use crate::leaderboard::{Leaderboards, Metric, Ranked, Top};
use crate::projection::{Lenient, MatchProjection, ProjectionError};

/// One match as of one version: what every route reads.
#[derive(Debug)]
pub struct MatchSnapshot {
    /// The match's version (`event_count`).
    pub version: u64,
    /// The match object without `player_stats` (the active-matches list shape).
    pub summary: MatchView,
    /// Players: their stored fields, rendered as REST objects on first use.
    players: Players,
    /// Standings per metric, sorted on first use.
    leaderboards: Leaderboards,
    body: OnceLock<Bytes>,
}

/// A snapshot's players: what the projection stored (shared with the next snapshots
/// until a player changes), rendered at the snapshot's `last_update` only when a request
/// needs them. Online players' playtime, speed and rating grow with every event of the
/// match: rendering them per request instead of per event keeps the projector's work
/// proportional to what changed.
#[derive(Debug)]
struct Players {
    stats: OrdMap<PlayerId, Arc<PlayerStats>>,
    last_update: i64,
    rendered: OnceLock<OrdMap<PlayerId, Arc<PlayerView>>>,
}

#[derive(Serialize)]
struct FullMatch<'a> {
    #[serde(flatten)]
    summary: &'a MatchView,
    player_stats: Vec<&'a PlayerView>,
}

impl MatchSnapshot {
    /// A snapshot of a whole match object (from Redis or the key-value bucket).
    pub fn from_view(mut view: MatchView) -> Self {
        let mut views = OrdMap::new();
        for p in view.player_stats.take().unwrap_or_default() {
            views.insert(p.player_id, Arc::new(p));
        }
        let rendered = OnceLock::new();
        rendered.get_or_init(|| views);
        MatchSnapshot {
            version: view.event_count,
            summary: view,
            players: Players {
                stats: OrdMap::new(),
                last_update: 0,
                rendered,
            },
            leaderboards: Leaderboards::default(),
            body: OnceLock::new(),
        }
    }

    /// The players as REST objects (rendered on the first call, once per snapshot).
    pub fn players(&self) -> &OrdMap<PlayerId, Arc<PlayerView>> {
        self.players.rendered.get_or_init(|| {
            self.players
                .stats
                .iter()
                .map(|(id, stats)| {
                    let view = PlayerView::render(*id, stats, self.players.last_update);
                    (*id, Arc::new(view))
                })
                .collect()
        })
    }

    /// One player as a REST object: rendered alone unless the snapshot has rendered them
    /// all already (a match of 10,000 players is not rendered for one of them).
    pub fn player(&self, id: &PlayerId) -> Option<Arc<PlayerView>> {
        if let Some(all) = self.players.rendered.get() {
            return all.get(id).cloned();
        }
        let stats = self.players.stats.get(id)?;
        Some(Arc::new(PlayerView::render(
            *id,
            stats,
            self.players.last_update,
        )))
    }

    /// How many players it holds.
    pub fn player_count(&self) -> usize {
        match self.players.rendered.get() {
            Some(all) => all.len(),
            None => self.players.stats.len(),
        }
    }

    /// A metric's standings, ranked, from the top.
    pub fn ranked(&self, metric: Metric) -> impl Iterator<Item = Ranked> + '_ {
        self.leaderboards
            .ranked(metric, self.players().values().map(|p| p.as_ref()))
    }

    /// A metric's top `limit` as its leaderboard's `players` JSON, rendered by `render`
    /// once per snapshot and metric (`None`: cached for another limit).
    pub fn top(&self, metric: Metric, limit: usize, render: impl FnOnce() -> Top) -> Option<&Top> {
        self.leaderboards.top(metric, limit, render)
    }

    /// Whether the match has ended.
    pub fn is_completed(&self) -> bool {
        self.summary.status == MatchStatus::Completed
    }

    /// The match object with its players.
    pub fn to_view(&self) -> MatchView {
        let mut view = self.summary.clone();
        view.player_stats = Some(self.players().values().map(|p| (**p).clone()).collect());
        view
    }

    /// The full match object as JSON, rendered once per snapshot.
    pub fn body(&self) -> &Bytes {
        self.body.get_or_init(|| {
            let full = FullMatch {
                summary: &self.summary,
                player_stats: self.players().values().map(|p| p.as_ref()).collect(),
            };
            serde_json::to_vec(&full).expect("views serialize").into()
        })
    }

    /// The full match object as JSON for a writer that needs it once (the Redis
    /// write-through): the body a request rendered, else rendered here and not kept, so a
    /// snapshot nobody asked for holds no rendered copy of its players.
    pub fn render_body(&self) -> Bytes {
        if self.body.get().is_some() || self.players.rendered.get().is_some() {
            return self.body().clone();
        }
        let views: Vec<PlayerView> = self
            .players
            .stats
            .iter()
            .map(|(id, stats)| PlayerView::render(*id, stats, self.players.last_update))
            .collect();
        let full = FullMatch {
            summary: &self.summary,
            player_stats: views.iter().collect(),
        };
        serde_json::to_vec(&full).expect("views serialize").into()
    }
}

/// Every match this replica knows, published atomically.
#[derive(Debug, Default)]
pub struct ReadModel {
    matches: ArcSwap<OrdMap<MatchId, Arc<MatchSnapshot>>>,
    caught_up: AtomicBool,
}

impl ReadModel {
    /// One consistent view of all matches (one `load()`).
    pub fn matches(&self) -> Arc<OrdMap<MatchId, Arc<MatchSnapshot>>> {
        self.matches.load_full()
    }

    /// One match.
    pub fn get(&self, id: &MatchId) -> Option<Arc<MatchSnapshot>> {
        self.matches.load().get(id).cloned()
    }

    /// Publishes new snapshots (one `store()`; readers see all or none of them).
    pub fn publish(&self, snapshots: impl IntoIterator<Item = Arc<MatchSnapshot>>) {
        let mut next = (**self.matches.load()).clone();
        for snapshot in snapshots {
            next.insert(snapshot.summary.match_id, snapshot);
        }
        self.matches.store(Arc::new(next));
    }

    /// Removes matches (completed ones past their retention).
    pub fn remove(&self, ids: &[MatchId]) {
        if ids.is_empty() {
            return;
        }
        let mut next = (**self.matches.load()).clone();
        for id in ids {
            next.remove(id);
        }
        self.matches.store(Arc::new(next));
    }

    /// Whether the projector has read the deltas stream up to where it was at start.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Marks the read model caught up.
    pub fn set_caught_up(&self) {
        self.caught_up.store(true, Ordering::Release);
    }
}

/// The projector's state for one match: its projection, whose players the snapshots
/// share.
#[derive(Debug)]
pub struct MatchBuilder {
    projection: MatchProjection,
}

impl MatchBuilder {
    /// A match with no delta applied yet.
    pub fn new(match_id: MatchId) -> Self {
        MatchBuilder {
            projection: MatchProjection::new(match_id),
        }
    }

    /// The last applied version.
    pub fn version(&self) -> u64 {
        self.projection.version()
    }

    /// Applies a delta (entries already applied are skipped); returns how many were new.
    pub fn apply(&mut self, delta: &StatDelta) -> Result<usize, ProjectionError> {
        self.projection.apply(delta)
    }

    /// Applies what it can (see [`MatchProjection::apply_lenient`]): for a re-sync.
    pub fn apply_lenient(&mut self, delta: &StatDelta) -> Lenient {
        self.projection.apply_lenient(delta)
    }

    /// A snapshot of the current state (the players shared, not copied); rendering waits
    /// for a request.
    pub fn snapshot(&self) -> Arc<MatchSnapshot> {
        let stats = self.projection.stats();
        let summary = MatchView::render(
            self.projection.match_id(),
            stats,
            None::<std::iter::Empty<_>>,
        );
        Arc::new(MatchSnapshot {
            version: self.projection.version(),
            summary,
            players: Players {
                stats: self.projection.shared_players(),
                last_update: stats.last_update,
                rendered: OnceLock::new(),
            },
            leaderboards: Leaderboards::default(),
            body: OnceLock::new(),
        })
    }
}
