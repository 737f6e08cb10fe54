//! One live [`Update`] of a watched match: what changed between two published snapshots,
//! rendered once for all of its clients, and the [`Pending`] changes the projector
//! gathers until it publishes.

use std::collections::BTreeSet;

use bytes::Bytes;
use match_stats_commands::delta::{Change, DeltaEntry, Field};
use match_stats_commands::id::Label;
use match_stats_commands::view::rfc3339;
use match_stats_commands::{MatchId, MatchView, PlayerId, PlayerView, StatDelta};
use serde::Serialize;

use crate::read_model::MatchSnapshot;

/// One line of a match's kill feed, read from an applied event's changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedItem {
    /// The match version the event made.
    pub version: u64,
    /// The event's time (RFC 3339).
    pub timestamp: String,
    /// `kill`, `suicide` or `death` (a death without a killer).
    pub kind: &'static str,
    /// Who killed (for `kill`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killer: Option<PlayerId>,
    /// Who died.
    pub victim: PlayerId,
    /// The killer's weapon (for `kill`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weapon: Option<Label>,
    /// Whether the kill was a headshot.
    pub headshot: bool,
}

impl FeedItem {
    /// The feed line an applied event makes, if it is a kill, suicide or death.
    pub fn of(entry: &DeltaEntry) -> Option<FeedItem> {
        let find =
            |field: Field| -> Option<&Change> { entry.changes.iter().find(|c| c.field == field) };
        let item = |kind, killer, victim| FeedItem {
            version: entry.version,
            timestamp: rfc3339(entry.timestamp),
            kind,
            killer,
            victim,
            weapon: None,
            headshot: false,
        };
        if let Some(kill) = find(Field::Kills) {
            let killer = kill.player_id?;
            let victim = find(Field::Deaths)?.player_id?;
            let weapon = entry
                .changes
                .iter()
                .find(|c| c.field == Field::WeaponUsed && c.player_id == Some(killer))
                .and_then(|c| c.key);
            return Some(FeedItem {
                weapon,
                headshot: find(Field::Headshots).is_some(),
                ..item("kill", Some(killer), victim)
            });
        }
        if let Some(suicide) = find(Field::Suicides) {
            return Some(item("suicide", None, suicide.player_id?));
        }
        let death = find(Field::Deaths)?;
        Some(item("death", None, death.player_id?))
    }
}

/// What changed in a watched match since its last published update.
#[derive(Debug, Default)]
pub struct Pending {
    from: Option<u64>,
    reset: bool,
    players: BTreeSet<PlayerId>,
    feed: Vec<FeedItem>,
}

impl Pending {
    /// Records a delta's entries newer than `before` (the version before applying it).
    pub fn record(&mut self, delta: &StatDelta, before: u64) {
        for entry in delta.entries.iter().filter(|e| e.version > before) {
            self.from = Some(self.from.map_or(entry.version, |f| f.min(entry.version)));
            self.players
                .extend(entry.changes.iter().filter_map(|c| c.player_id));
            self.feed.extend(FeedItem::of(entry));
        }
    }

    /// The match was rebuilt (a gap in its deltas): its clients get a snapshot.
    pub fn reset(&mut self) {
        self.reset = true;
    }

    /// The update that takes a client from the version before the first recorded
    /// change to `snapshot`, rendered once.
    pub fn into_update(self, snapshot: &MatchSnapshot) -> Update {
        let to = snapshot.version;
        let from = self.from.unwrap_or(to);
        let all = snapshot.players();
        let players: Vec<&PlayerView> = self
            .players
            .iter()
            .filter_map(|id| all.get(id).map(|p| p.as_ref()))
            .collect();
        // Online players' playtime, speed and rating move with the match clock, changed
        // or not.
        let clocks: Vec<Clock> = all
            .values()
            .filter(|p| p.online && !self.players.contains(&p.player_id))
            .map(|p| Clock {
                player_id: p.player_id,
                playtime_ms: p.playtime_ms,
                avg_speed: p.avg_speed,
                performance_rating: p.performance_rating,
            })
            .collect();
        let body = DeltaBody {
            match_id: snapshot.summary.match_id,
            version: to,
            from_version: from,
            summary: &snapshot.summary,
            players,
            clocks,
            feed: &self.feed,
        };
        let completed = snapshot.is_completed();
        Update {
            match_id: snapshot.summary.match_id,
            from,
            to,
            reset: self.reset || self.from.is_none(),
            completed,
            delta: serde_json::to_vec(&body).expect("views serialize").into(),
            end: completed.then(|| summary_json(&snapshot.summary)),
        }
    }
}

/// A match summary (the match object without its players) as JSON.
pub fn summary_json(summary: &MatchView) -> Bytes {
    serde_json::to_vec(summary).expect("views serialize").into()
}

/// The values of an unchanged online player that move with the match clock.
#[derive(Serialize)]
struct Clock {
    player_id: PlayerId,
    playtime_ms: i64,
    avg_speed: f64,
    performance_rating: f64,
}

#[derive(Serialize)]
struct DeltaBody<'a> {
    match_id: MatchId,
    version: u64,
    from_version: u64,
    #[serde(rename = "match")]
    summary: &'a MatchView,
    /// Every changed player, whole.
    players: Vec<&'a PlayerView>,
    /// The other online players' clock-driven values.
    clocks: Vec<Clock>,
    feed: &'a [FeedItem],
}

/// What one published snapshot changed, for a watched match's stream clients.
#[derive(Debug)]
pub struct Update {
    /// The match.
    pub match_id: MatchId,
    /// The first version it covers: it applies to a client at `from - 1`.
    pub from: u64,
    /// The version it leads to (the SSE event id).
    pub to: u64,
    /// Whether clients must take a snapshot instead (the match was rebuilt).
    pub reset: bool,
    /// Whether the match is completed at `to`.
    pub completed: bool,
    /// The `delta` event's data: `{match_id, version, from_version, match, players,
    /// clocks, feed}`.
    pub delta: Bytes,
    /// For a completed match, the `end` event's data (the match summary).
    pub end: Option<Bytes>,
}

/// How an update relates to a client that holds version `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Nothing new for it.
    Seen,
    /// It follows on at once: send it.
    Next,
    /// Something is missing in between (or the match was rebuilt): send a snapshot.
    Gap,
}

impl Update {
    /// How it relates to a client at version `at`.
    pub fn fit(&self, at: u64) -> Fit {
        if self.reset {
            return if self.to == at { Fit::Seen } else { Fit::Gap };
        }
        if self.to <= at {
            Fit::Seen
        } else if self.from == at + 1 {
            Fit::Next
        } else {
            Fit::Gap
        }
    }
}
