//! The match aggregate: folds validated events into statistics (contract sections 3
//! and 4). Pure and synchronous: time comes only from the events.
//!
//! [`Match::handle`] decides (duplicate, `match_closed`, or apply) and applies in one
//! step, returning the [`DeltaEntry`] of what changed. Applying is a shared prologue
//! (event count, times, the players the event names) and then one rule per event type
//! ([`rules`]). Every mutation of a stored field goes through the [`Recorder`], so the
//! delta and the state cannot disagree; [`DedupWindow`] remembers recent event ids.
//!
//! - `rules`: contract section 4, one function per event type;
//! - `recorder`: stored-field mutations and the changes they record;
//! - `dedup`: the last [`DEDUP_WINDOW`] applied event ids.

mod dedup;
mod players;
mod recorder;
mod rules;
#[cfg(test)]
mod tests;
mod wire;

use crate::delta::{Change, DeltaEntry, Field};
use crate::event::{Event, EventKind, TimestampMs};
use crate::id::{MatchId, PlayerId};
use crate::rejection::{Reason, Rejection};
use crate::stats::{MatchStats, MatchStatus, PlayerStats};
use crate::view::MatchView;

use dedup::DedupWindow;
use players::Players;
use recorder::Recorder;

/// How many recent applied `event_id`s of a match are remembered to drop duplicates.
pub const DEDUP_WINDOW: usize = 4096;
/// Damage at most this long before a kill earns its dealer an assist.
pub const ASSIST_WINDOW_MS: i64 = 10_000;
/// Kills at most this far apart extend a multi-kill chain.
pub const MULTIKILL_WINDOW_MS: i64 = 5_000;
/// A kill from this far or further is a longshot (metres).
pub const LONGSHOT_DISTANCE: f64 = 50.0;
/// A move longer than this is a teleport or respawn and not counted as distance.
pub const MAX_STEP_DISTANCE: f64 = 1_000.0;
/// The `weapon_used` key of a kill without a weapon.
pub const UNKNOWN_WEAPON: &str = "unknown";
/// Most players a match holds: every player it ever named (contract section 3, Limits).
pub const MAX_PLAYERS: usize = 10_000;
/// Most distinct keys of a player's `weapon_used` or `items_used` besides [`OTHER_KEY`].
pub const MAX_KEYS: usize = 64;
/// The key that counts what comes after [`MAX_KEYS`] distinct keys (and a publisher's own
/// `"other"`).
pub const OTHER_KEY: &str = "other";

/// What [`Match::handle`] decided for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied; what it changed.
    Applied(DeltaEntry),
    /// Its `event_id` is among the last [`DEDUP_WINDOW`] applied: dropped.
    Duplicate,
    /// Not applied (only `match_closed` is decided here; the rest in [`crate::decode`]).
    Rejected(Rejection),
}

/// One match: its statistics, its players, and what the rules need to remember.
/// Serializable whole (dedup window included) for snapshots ([`wire`]).
#[derive(Debug, Clone)]
pub struct Match {
    match_id: MatchId,
    stats: MatchStats,
    players: Players,
    started_by_match_start: bool,
    recent: DedupWindow,
}

/// A player's statistics and the rule state that is not published.
#[derive(Debug, Clone, Default)]
struct PlayerState {
    /// Its place in the match's roster.
    slot: u32,
    stats: PlayerStats,
    /// Time of the last non-suicide kill, for multi-kill chains.
    last_kill: Option<TimestampMs>,
    /// Current multi-kill chain length.
    chain: u64,
    /// Latest damage time per attacker (by roster slot: 16 bytes an entry instead of a
    /// 68-byte id) since this player's last counted death.
    hits_taken: Vec<(u32, TimestampMs)>,
}

/// What a rule works on: the match's statistics and players, the event's time, whether
/// the match had already ended, and the recorder of changes.
struct Fold<'a> {
    rec: Recorder,
    stats: &'a mut MatchStats,
    players: &'a mut Players,
    started_by_match_start: &'a mut bool,
    /// The event's timestamp.
    t: TimestampMs,
    /// The match had ended before this event: a late event (no online state changes).
    late: bool,
}

impl Match {
    /// A match with no events yet; it exists once [`Match::handle`] applies one.
    pub fn new(match_id: MatchId) -> Self {
        Match {
            match_id,
            stats: MatchStats::default(),
            players: Players::default(),
            started_by_match_start: false,
            recent: DedupWindow::default(),
        }
    }

    /// The match id.
    pub fn match_id(&self) -> MatchId {
        self.match_id
    }

    /// Match-level statistics.
    pub fn stats(&self) -> &MatchStats {
        &self.stats
    }

    /// Players in `player_id` order.
    pub fn players(&self) -> impl Iterator<Item = (&PlayerId, &PlayerStats)> {
        self.players.by_id().map(|(id, p)| (id, &p.stats))
    }

    /// The match object as REST returns it.
    pub fn view(&self) -> MatchView {
        MatchView::render(self.match_id, &self.stats, Some(self.players()))
    }

    /// The match object without `player_stats`.
    pub fn summary(&self) -> MatchView {
        MatchView::render(self.match_id, &self.stats, None::<std::iter::Empty<_>>)
    }

    /// How many players it holds (every player it ever named).
    pub fn player_count(&self) -> usize {
        self.players.len()
    }

    /// Decides and applies one event of this match; `stream_sequence` is carried into
    /// the delta.
    pub fn handle(&mut self, event: &Event, stream_sequence: u64) -> Outcome {
        self.handle_into(event, stream_sequence, Vec::new())
    }

    /// [`Match::handle`], recording the changes into `buffer` (emptied first; it becomes
    /// the entry's change list): handing back the change lists of published deltas makes
    /// applying an event allocation-free.
    pub fn handle_into(
        &mut self,
        event: &Event,
        stream_sequence: u64,
        buffer: Vec<Change>,
    ) -> Outcome {
        debug_assert_eq!(event.match_id, self.match_id);
        let fingerprint = DedupWindow::fingerprint(event);
        if self.recent.contains(fingerprint) {
            return Outcome::Duplicate;
        }
        if let (MatchStatus::Completed, Some(end)) = (self.stats.status, self.stats.end_time) {
            if matches!(event.kind, EventKind::MatchEnd) {
                return Outcome::Rejected(Rejection::new(
                    Reason::MatchClosed,
                    format!("match {} has already ended", self.match_id),
                ));
            }
            if event.timestamp_ms > end {
                return Outcome::Rejected(Rejection::new(
                    Reason::MatchClosed,
                    format!(
                        "match {} ended at {end} ms; event at {} ms",
                        self.match_id, event.timestamp_ms
                    ),
                ));
            }
        }
        let new_players = self.new_players(event);
        if self.players.len() + new_players > MAX_PLAYERS {
            return Outcome::Rejected(Rejection::new(
                Reason::LimitExceeded,
                format!(
                    "match {} holds {} players; this event names {new_players} more, over the limit of {MAX_PLAYERS}",
                    self.match_id,
                    self.players.len()
                ),
            ));
        }
        let changes = self.apply(event, buffer);
        self.recent.insert(fingerprint);
        Outcome::Applied(DeltaEntry {
            version: self.stats.event_count,
            event_id: event.event_id,
            stream_sequence,
            timestamp: event.timestamp_ms,
            changes,
            part: 0,
            parts: 1,
        })
    }

    /// How many players the event names that the match does not hold yet.
    fn new_players(&self, event: &Event) -> usize {
        let mut seen = [None; 3];
        let mut new = 0;
        for (i, id) in named_players(event).enumerate() {
            if !self.players.contains(&id) && !seen.contains(&Some(id)) {
                new += 1;
            }
            seen[i] = Some(id);
        }
        new
    }

    /// The shared prologue (event count, times, the players the event names), then the
    /// event type's rule.
    fn apply(&mut self, event: &Event, buffer: Vec<Change>) -> Vec<Change> {
        let late = self.stats.status == MatchStatus::Completed;
        let mut f = Fold {
            rec: Recorder::new(buffer),
            stats: &mut self.stats,
            players: &mut self.players,
            started_by_match_start: &mut self.started_by_match_start,
            t: event.timestamp_ms,
            late,
        };
        let t = f.t;
        let first = f.stats.event_count == 0;
        f.rec
            .add(None, Field::EventCount, &mut f.stats.event_count, 1);
        if first {
            f.rec
                .set(None, Field::StartTime, &mut f.stats.start_time, t);
        }
        if first || t > f.stats.last_update {
            f.rec
                .set(None, Field::LastUpdate, &mut f.stats.last_update, t);
        }
        for id in named_players(event) {
            if !f.players.contains(&id) {
                let player = f.players.push(id);
                f.rec
                    .set(Some(id), Field::Online, &mut player.stats.online, !late);
                if !late {
                    f.rec.set(
                        Some(id),
                        Field::OnlineSince,
                        &mut player.stats.online_since,
                        Some(t),
                    );
                    f.rec.update(
                        None,
                        Field::CurrentPlayers,
                        &mut f.stats.current_players,
                        |n| n + 1,
                    );
                }
            }
        }
        // Decoding guarantees a player_id for every type but match_start and match_end.
        let pid = || event.player_id.expect("decode requires player_id");
        match &event.kind {
            EventKind::MatchStart {
                map_name,
                game_mode,
                max_players,
            } => rules::match_start(&mut f, *map_name, *game_mode, *max_players),
            EventKind::MatchEnd => rules::match_end(&mut f),
            EventKind::PlayerJoin {
                player_name,
                team_id,
            } => rules::player_join(&mut f, pid(), *player_name, *team_id),
            EventKind::PlayerLeave => rules::player_leave(&mut f, pid()),
            EventKind::Kill {
                killer_id,
                victim_id,
                weapon,
                headshot,
                distance,
            } => rules::kill(
                &mut f, *killer_id, *victim_id, *weapon, *headshot, *distance,
            ),
            EventKind::Death { cause, killer_id } => {
                rules::death(&mut f, pid(), *cause, *killer_id)
            }
            EventKind::Damage {
                attacker_id,
                victim_id,
                damage,
                ..
            } => rules::damage(&mut f, *attacker_id, *victim_id, *damage),
            EventKind::Position { x, y, z } => rules::position(&mut f, pid(), [*x, *y, *z]),
            EventKind::ItemUse { item, heal_amount } => {
                rules::item_use(&mut f, pid(), *item, *heal_amount)
            }
            EventKind::WeaponFire { shots, .. } => rules::weapon_fire(&mut f, pid(), *shots),
        }
        f.rec.into_changes()
    }
}

/// Every player an event names: `player_id`, then `killer_id`/`victim_id`/`attacker_id`
/// (a `death`'s `killer_id` names no player).
fn named_players(event: &Event) -> impl Iterator<Item = PlayerId> {
    let (a, b) = match &event.kind {
        EventKind::Kill {
            killer_id,
            victim_id,
            ..
        } => (Some(*killer_id), Some(*victim_id)),
        EventKind::Damage {
            attacker_id,
            victim_id,
            ..
        } => (Some(*attacker_id), Some(*victim_id)),
        _ => (None, None),
    };
    [event.player_id, a, b].into_iter().flatten()
}
