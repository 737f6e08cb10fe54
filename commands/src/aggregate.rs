//! The match aggregate: folds validated events into statistics (contract sections 3
//! and 4). Pure and synchronous: time comes only from the events.
//!
//! [`Match::handle`] decides (duplicate, `match_closed`, or apply) and applies in one
//! step, returning the [`DeltaEntry`] of what changed. Every mutation of a stored field
//! goes through a [`Recorder`], so the delta and the state cannot disagree.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::Hasher;

use siphasher::sip::SipHasher13;

use crate::delta::{Change, DeltaEntry, Field, FieldValue};
use crate::event::{Event, EventKind, TimestampMs};
use crate::id::{Label, MatchId, PlayerId};
use crate::rejection::{Reason, Rejection};
use crate::stats::{FirstBlood, MatchStats, MatchStatus, PlayerStats};
use crate::view::MatchView;

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
/// Serializable whole (dedup window included) for snapshots.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Match {
    match_id: MatchId,
    stats: MatchStats,
    players: BTreeMap<PlayerId, PlayerState>,
    started_by_match_start: bool,
    recent: DedupWindow,
}

/// A player's statistics and the rule state that is not published.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct PlayerState {
    stats: PlayerStats,
    /// Time of the last non-suicide kill, for multi-kill chains.
    last_kill: Option<TimestampMs>,
    /// Current multi-kill chain length.
    chain: u64,
    /// Latest damage time per attacker since this player's last counted death.
    hits_taken: Vec<(PlayerId, TimestampMs)>,
}

impl Match {
    /// A match with no events yet; it exists once [`Match::handle`] applies one.
    pub fn new(match_id: MatchId) -> Self {
        Match {
            match_id,
            stats: MatchStats::default(),
            players: BTreeMap::new(),
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
        self.players.iter().map(|(id, p)| (id, &p.stats))
    }

    /// The match object as REST returns it.
    pub fn view(&self) -> MatchView {
        MatchView::render(self.match_id, &self.stats, Some(self.players()))
    }

    /// Decides and applies one event of this match; `stream_sequence` is carried into
    /// the delta.
    pub fn handle(&mut self, event: &Event, stream_sequence: u64) -> Outcome {
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
        let changes = self.apply(event);
        self.recent.insert(fingerprint);
        Outcome::Applied(DeltaEntry {
            version: self.stats.event_count,
            event_id: event.event_id,
            stream_sequence,
            timestamp: event.timestamp_ms,
            changes,
        })
    }

    fn apply(&mut self, event: &Event) -> Vec<Change> {
        let t = event.timestamp_ms;
        let late = self.stats.status == MatchStatus::Completed;
        // One allocation per applied event: room for the most changes one event makes
        // (a kill with assists and a multi-kill), so pushes never reallocate.
        let mut rec = Recorder {
            changes: Vec::with_capacity(CHANGES_CAPACITY),
        };
        let Match {
            stats,
            players,
            started_by_match_start,
            ..
        } = self;

        let first = stats.event_count == 0;
        rec.add(None, Field::EventCount, &mut stats.event_count, 1);
        if first {
            rec.set(None, Field::StartTime, &mut stats.start_time, t);
        }
        if first || t > stats.last_update {
            rec.set(None, Field::LastUpdate, &mut stats.last_update, t);
        }
        for id in named_players(event) {
            if let Entry::Vacant(slot) = players.entry(id) {
                let player = slot.insert(PlayerState::default());
                rec.set(Some(id), Field::Online, &mut player.stats.online, !late);
                if !late {
                    rec.set(
                        Some(id),
                        Field::OnlineSince,
                        &mut player.stats.online_since,
                        Some(t),
                    );
                    rec.update(
                        None,
                        Field::CurrentPlayers,
                        &mut stats.current_players,
                        |n| n + 1,
                    );
                }
            }
        }
        let pid = event.player_id;

        match &event.kind {
            EventKind::MatchStart {
                map_name,
                game_mode,
                max_players,
            } => {
                if !*started_by_match_start {
                    *started_by_match_start = true;
                    rec.set(None, Field::StartTime, &mut stats.start_time, t);
                }
                if map_name.is_some() {
                    rec.set(None, Field::MapName, &mut stats.map_name, *map_name);
                }
                if game_mode.is_some() {
                    rec.set(None, Field::GameMode, &mut stats.game_mode, *game_mode);
                }
                if max_players.is_some() {
                    rec.set(
                        None,
                        Field::MaxPlayers,
                        &mut stats.max_players,
                        *max_players,
                    );
                }
            }
            EventKind::MatchEnd => {
                rec.set(
                    None,
                    Field::Status,
                    &mut stats.status,
                    MatchStatus::Completed,
                );
                rec.set(None, Field::EndTime, &mut stats.end_time, Some(t));
                for (id, p) in players.iter_mut() {
                    if p.stats.online {
                        go_offline(&mut rec, stats, *id, &mut p.stats, t);
                    }
                }
            }
            EventKind::PlayerJoin {
                player_name,
                team_id,
            } => {
                let id = pid.expect("decode requires player_id");
                let p = &mut player(players, id).stats;
                if !late && !p.online {
                    rec.set(Some(id), Field::Online, &mut p.online, true);
                    rec.set(Some(id), Field::OnlineSince, &mut p.online_since, Some(t));
                    rec.update(
                        None,
                        Field::CurrentPlayers,
                        &mut stats.current_players,
                        |n| n + 1,
                    );
                }
                if player_name.is_some() {
                    rec.set(
                        Some(id),
                        Field::PlayerName,
                        &mut p.player_name,
                        *player_name,
                    );
                }
                if team_id.is_some() {
                    rec.set(Some(id), Field::TeamId, &mut p.team_id, *team_id);
                }
            }
            EventKind::PlayerLeave => {
                let id = pid.expect("decode requires player_id");
                let p = &mut player(players, id).stats;
                if !late && p.online {
                    go_offline(&mut rec, stats, id, p, t);
                }
            }
            EventKind::Kill {
                killer_id,
                victim_id,
                weapon,
                headshot,
                distance,
            } => {
                let (k, v) = (*killer_id, *victim_id);
                if k == v {
                    let victim = player(players, v);
                    rec.add(Some(v), Field::Suicides, &mut victim.stats.suicides, 1);
                    counted_death(&mut rec, stats, v, victim);
                } else {
                    let killer = player(players, k);
                    let s = &mut killer.stats;
                    rec.add(Some(k), Field::Kills, &mut s.kills, 1);
                    if *headshot {
                        rec.add(Some(k), Field::Headshots, &mut s.headshots, 1);
                    }
                    if distance.is_some_and(|d| d >= LONGSHOT_DISTANCE) {
                        rec.add(Some(k), Field::Longshots, &mut s.longshots, 1);
                    }
                    let weapon = weapon.unwrap_or(Label::from(UNKNOWN_WEAPON).expect("short"));
                    rec.bump_key(Some(k), Field::WeaponUsed, &mut s.weapon_used, weapon);
                    rec.add(Some(k), Field::CurrentStreak, &mut s.current_streak, 1);
                    if s.current_streak > s.best_streak {
                        rec.set(
                            Some(k),
                            Field::BestStreak,
                            &mut s.best_streak,
                            s.current_streak,
                        );
                    }
                    let chain = match killer.last_kill {
                        Some(prev) if (0..=MULTIKILL_WINDOW_MS).contains(&(t - prev)) => {
                            killer.chain + 1
                        }
                        _ => 1,
                    };
                    killer.chain = chain;
                    killer.last_kill = Some(t);
                    if chain == 2 {
                        rec.add(Some(k), Field::Multikills, &mut s.multikills, 1);
                    }
                    if chain > s.best_multikill {
                        rec.set(Some(k), Field::BestMultikill, &mut s.best_multikill, chain);
                    }
                    rec.add(None, Field::TotalKills, &mut stats.total_kills, 1);
                    if stats.first_blood.is_none() {
                        let fb = FirstBlood {
                            killer_id: k,
                            victim_id: v,
                            timestamp: t,
                        };
                        rec.set(None, Field::FirstBlood, &mut stats.first_blood, Some(fb));
                    }

                    let hits = std::mem::take(&mut player(players, v).hits_taken);
                    for &(a, hit_at) in &hits {
                        if a != k && a != v && hit_at >= t - ASSIST_WINDOW_MS {
                            let assister = &mut player(players, a).stats;
                            rec.add(Some(a), Field::Assists, &mut assister.assists, 1);
                            rec.add(None, Field::TotalAssists, &mut stats.total_assists, 1);
                        }
                    }
                    let victim = player(players, v);
                    victim.hits_taken = hits; // keep the buffer; counted_death clears it
                    counted_death(&mut rec, stats, v, victim);
                }
            }
            EventKind::Death { cause, killer_id } => {
                let id = pid.expect("decode requires player_id");
                let mirrored = killer_id.is_some_and(|k| k != id);
                if !mirrored {
                    let p = player(players, id);
                    if killer_id == &Some(id) || cause.is_some_and(|c| c.as_str() == "suicide") {
                        rec.add(Some(id), Field::Suicides, &mut p.stats.suicides, 1);
                    }
                    counted_death(&mut rec, stats, id, p);
                }
            }
            EventKind::Damage {
                attacker_id,
                victim_id,
                damage,
                ..
            } => {
                let (a, v) = (*attacker_id, *victim_id);
                if a != v {
                    let s = &mut player(players, a).stats;
                    rec.add_f64(Some(a), Field::DamageDealt, &mut s.damage_dealt, *damage);
                    rec.add(Some(a), Field::ShotsHit, &mut s.shots_hit, 1);
                    rec.add_f64(None, Field::TotalDamage, &mut stats.total_damage, *damage);
                    let hits = &mut player(players, v).hits_taken;
                    match hits.iter_mut().find(|(attacker, _)| *attacker == a) {
                        Some((_, at)) => *at = (*at).max(t),
                        None => hits.push((a, t)),
                    }
                }
                let s = &mut player(players, v).stats;
                rec.add_f64(
                    Some(v),
                    Field::DamageReceived,
                    &mut s.damage_received,
                    *damage,
                );
            }
            EventKind::Position { x, y, z } => {
                let id = pid.expect("decode requires player_id");
                let s = &mut player(players, id).stats;
                if let (Some(px), Some(py), Some(pz)) = (s.current_x, s.current_y, s.current_z) {
                    let step = ((x - px).powi(2) + (y - py).powi(2) + (z - pz).powi(2)).sqrt();
                    if step <= MAX_STEP_DISTANCE {
                        rec.add_f64(
                            Some(id),
                            Field::DistanceTraveled,
                            &mut s.distance_traveled,
                            step,
                        );
                    }
                }
                rec.set(Some(id), Field::CurrentX, &mut s.current_x, Some(*x));
                rec.set(Some(id), Field::CurrentY, &mut s.current_y, Some(*y));
                rec.set(Some(id), Field::CurrentZ, &mut s.current_z, Some(*z));
            }
            EventKind::ItemUse { item, heal_amount } => {
                let id = pid.expect("decode requires player_id");
                let s = &mut player(players, id).stats;
                rec.bump_key(Some(id), Field::ItemsUsed, &mut s.items_used, *item);
                if let Some(heal) = heal_amount {
                    rec.add_f64(Some(id), Field::HealingDone, &mut s.healing_done, *heal);
                    rec.add_f64(None, Field::TotalHealing, &mut stats.total_healing, *heal);
                }
            }
            EventKind::WeaponFire { shots, .. } => {
                let id = pid.expect("decode requires player_id");
                let s = &mut player(players, id).stats;
                rec.add(
                    Some(id),
                    Field::ShotsFired,
                    &mut s.shots_fired,
                    u64::from(*shots),
                );
            }
        }
        rec.changes
    }
}

/// A player already named by the event.
fn player(players: &mut BTreeMap<PlayerId, PlayerState>, id: PlayerId) -> &mut PlayerState {
    players.get_mut(&id).expect("named players exist")
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

/// Closes an online interval at `t` (never negative) and takes the player offline.
fn go_offline(
    rec: &mut Recorder,
    stats: &mut MatchStats,
    id: PlayerId,
    p: &mut PlayerStats,
    t: TimestampMs,
) {
    let since = p.online_since.unwrap_or(t);
    let closed = p.playtime_closed_ms + (t - since).max(0);
    rec.set(
        Some(id),
        Field::PlaytimeClosedMs,
        &mut p.playtime_closed_ms,
        closed,
    );
    rec.set(Some(id), Field::Online, &mut p.online, false);
    rec.set(Some(id), Field::OnlineSince, &mut p.online_since, None);
    rec.update(
        None,
        Field::CurrentPlayers,
        &mut stats.current_players,
        |n| n - 1,
    );
}

/// A counted death: `deaths +1`, streak reset, damage record for assists cleared.
fn counted_death(rec: &mut Recorder, stats: &mut MatchStats, id: PlayerId, p: &mut PlayerState) {
    rec.add(Some(id), Field::Deaths, &mut p.stats.deaths, 1);
    rec.set(
        Some(id),
        Field::CurrentStreak,
        &mut p.stats.current_streak,
        0,
    );
    rec.add(None, Field::TotalDeaths, &mut stats.total_deaths, 1);
    p.hits_taken.clear();
}

/// Changes recorded without reallocating (more than any event but the largest kills
/// makes).
const CHANGES_CAPACITY: usize = 24;

/// Records each stored field's change as it is made.
struct Recorder {
    changes: Vec<Change>,
}

impl Recorder {
    fn set<T>(&mut self, player_id: Option<PlayerId>, field: Field, slot: &mut T, value: T)
    where
        T: PartialEq + Clone + Into<FieldValue>,
    {
        if *slot != value {
            let before = std::mem::replace(slot, value.clone());
            self.changes.push(Change {
                player_id,
                field,
                key: None,
                before: before.into(),
                after: value.into(),
            });
        }
    }

    fn update<T>(
        &mut self,
        player_id: Option<PlayerId>,
        field: Field,
        slot: &mut T,
        f: impl FnOnce(&T) -> T,
    ) where
        T: PartialEq + Clone + Into<FieldValue>,
    {
        let value = f(slot);
        self.set(player_id, field, slot, value);
    }

    fn add(&mut self, player_id: Option<PlayerId>, field: Field, slot: &mut u64, by: u64) {
        self.update(player_id, field, slot, |v| v + by);
    }

    fn add_f64(&mut self, player_id: Option<PlayerId>, field: Field, slot: &mut f64, by: f64) {
        self.update(player_id, field, slot, |v| v + by);
    }

    fn bump_key(
        &mut self,
        player_id: Option<PlayerId>,
        field: Field,
        map: &mut BTreeMap<Label, u64>,
        key: Label,
    ) {
        let count = map.entry(key).or_insert(0);
        *count += 1;
        self.changes.push(Change {
            player_id,
            field,
            key: Some(key),
            before: if *count == 1 {
                FieldValue::Null
            } else {
                (*count - 1).into()
            },
            after: (*count).into(),
        });
    }
}

/// The last [`DEDUP_WINDOW`] applied `event_id`s, as 64-bit SipHash fingerprints with
/// fixed keys (stable across restarts and versions). Two different ids share a
/// fingerprint with a chance of about 1 in 4.5e15 per event.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(from = "VecDeque<u64>", into = "VecDeque<u64>")]
struct DedupWindow {
    order: VecDeque<u64>,
    members: HashSet<u64>,
}

impl From<VecDeque<u64>> for DedupWindow {
    fn from(order: VecDeque<u64>) -> Self {
        let members = order.iter().copied().collect();
        DedupWindow { order, members }
    }
}

impl From<DedupWindow> for VecDeque<u64> {
    fn from(window: DedupWindow) -> Self {
        window.order
    }
}

impl DedupWindow {
    fn fingerprint(event: &Event) -> u64 {
        let mut hasher = SipHasher13::new_with_keys(0x6d61_7463_685f_7374, 0x6174_735f_6465_6475);
        hasher.write(event.event_id.as_str().as_bytes());
        hasher.finish()
    }

    fn contains(&self, fingerprint: u64) -> bool {
        self.members.contains(&fingerprint)
    }

    fn insert(&mut self, fingerprint: u64) {
        if self.order.len() == DEDUP_WINDOW
            && let Some(oldest) = self.order.pop_front()
        {
            self.members.remove(&oldest);
        }
        self.order.push_back(fingerprint);
        self.members.insert(fingerprint);
    }
}

#[cfg(test)]
mod tests {
    //! Each rule of contract section 4 as given (earlier events) / when (one event) /
    //! then (the resulting statistics).
    use super::*;
    use crate::id::{EventId, label};

    const T: TimestampMs = 1_767_225_600_000;

    fn p(id: &str) -> PlayerId {
        PlayerId::parse(id).unwrap()
    }

    fn ev(n: u32, at: TimestampMs, player: Option<&str>, kind: EventKind) -> Event {
        Event {
            event_id: EventId::parse(&format!("e{n}")).unwrap(),
            match_id: MatchId::parse("m").unwrap(),
            player_id: player.map(p),
            timestamp_ms: T + at,
            kind,
        }
    }

    fn kill(k: &str, v: &str) -> EventKind {
        EventKind::Kill {
            killer_id: p(k),
            victim_id: p(v),
            weapon: None,
            headshot: false,
            distance: None,
        }
    }

    fn damage(a: &str, v: &str, d: f64) -> EventKind {
        EventKind::Damage {
            attacker_id: p(a),
            victim_id: p(v),
            damage: d,
            weapon: None,
            hit_location: None,
        }
    }

    fn pos(x: f64) -> EventKind {
        EventKind::Position { x, y: 0.0, z: 0.0 }
    }

    /// Applies `given`, then returns the outcome of `when` and the match.
    fn given_when(given: Vec<Event>, when: Event) -> (Outcome, Match) {
        let mut m = Match::new(MatchId::parse("m").unwrap());
        for (i, e) in given.iter().enumerate() {
            assert!(
                matches!(m.handle(e, i as u64 + 1), Outcome::Applied(_)),
                "given event {i} applies"
            );
        }
        let outcome = m.handle(&when, 1000);
        (outcome, m)
    }

    fn stats<'a>(m: &'a Match, id: &str) -> &'a PlayerStats {
        &m.players[&p(id)].stats
    }

    #[test]
    fn assist_goes_to_damage_dealers_within_ten_seconds_once_per_kill() {
        let given = vec![
            ev(1, 0, Some("a"), damage("a", "v", 10.0)),
            ev(2, 1, Some("a"), damage("a", "v", 10.0)),
            ev(3, 0, Some("old"), damage("old", "v", 10.0)),
            ev(4, 5_000, Some("k"), damage("k", "v", 10.0)),
        ];
        let (_, m) = given_when(given, ev(9, 10_001, Some("k"), kill("k", "v")));
        assert_eq!(stats(&m, "a").assists, 1, "two hits, one assist");
        assert_eq!(
            stats(&m, "old").assists,
            0,
            "10001 ms before the kill is too old"
        );
        assert_eq!(stats(&m, "k").assists, 0, "the killer gets no assist");
        assert_eq!(m.stats().total_assists, 1);
    }

    #[test]
    fn damage_after_the_kill_time_still_counts_and_a_death_clears_the_record() {
        let given = vec![ev(1, 20_000, Some("a"), damage("a", "v", 5.0))];
        let (_, m) = given_when(given.clone(), ev(2, 0, Some("k"), kill("k", "v")));
        assert_eq!(
            stats(&m, "a").assists,
            1,
            "no upper bound: game threads' clocks differ"
        );

        let mut given = given;
        given.push(ev(
            2,
            20_001,
            Some("v"),
            EventKind::Death {
                cause: None,
                killer_id: None,
            },
        ));
        let (_, m) = given_when(given, ev(3, 20_002, Some("k"), kill("k", "v")));
        assert_eq!(
            stats(&m, "a").assists,
            0,
            "the counted death cleared the damage record"
        );
    }

    #[test]
    fn suicide_kill_counts_a_death_and_nothing_else() {
        let given = vec![
            ev(1, 0, Some("v"), kill("v", "x")),
            ev(2, 1, Some("a"), damage("a", "v", 5.0)),
        ];
        let (_, m) = given_when(given, ev(3, 2, Some("v"), kill("v", "v")));
        let v = stats(&m, "v");
        assert_eq!(
            (v.kills, v.deaths, v.suicides, v.current_streak),
            (1, 1, 1, 0)
        );
        assert_eq!(stats(&m, "a").assists, 0);
        assert_eq!((m.stats().total_kills, m.stats().total_deaths), (1, 2));
        assert_eq!(m.stats().first_blood.unwrap().victim_id, p("x"));
    }

    #[test]
    fn mirrored_death_is_applied_but_changes_no_statistic() {
        let given = vec![ev(1, 0, Some("k"), kill("k", "v"))];
        let (outcome, m) = given_when(
            given,
            ev(
                2,
                0,
                Some("v"),
                EventKind::Death {
                    cause: None,
                    killer_id: Some(p("k")),
                },
            ),
        );
        assert!(matches!(outcome, Outcome::Applied(_)));
        assert_eq!(
            (
                stats(&m, "v").deaths,
                m.stats().total_deaths,
                m.stats().event_count
            ),
            (1, 1, 2)
        );
    }

    #[test]
    fn death_by_own_hand_or_cause_suicide_is_a_suicide() {
        let (_, m) = given_when(
            vec![],
            ev(
                1,
                0,
                Some("v"),
                EventKind::Death {
                    cause: label("suicide"),
                    killer_id: None,
                },
            ),
        );
        assert_eq!((stats(&m, "v").deaths, stats(&m, "v").suicides), (1, 1));
        let (_, m) = given_when(
            vec![],
            ev(
                1,
                0,
                Some("v"),
                EventKind::Death {
                    cause: label("fall"),
                    killer_id: Some(p("v")),
                },
            ),
        );
        assert_eq!(stats(&m, "v").suicides, 1);
        let (_, m) = given_when(
            vec![],
            ev(
                1,
                0,
                Some("v"),
                EventKind::Death {
                    cause: label("fall"),
                    killer_id: None,
                },
            ),
        );
        assert_eq!((stats(&m, "v").deaths, stats(&m, "v").suicides), (1, 0));
    }

    #[test]
    fn multikill_chain_needs_kills_at_most_five_seconds_apart_and_not_backwards() {
        let given = vec![
            ev(1, 0, Some("k"), kill("k", "a")),
            ev(2, 5_000, Some("k"), kill("k", "b")),
            ev(3, 10_000, Some("k"), kill("k", "c")),
            ev(4, 9_000, Some("k"), kill("k", "d")),
        ];
        let (_, m) = given_when(given, ev(5, 20_000, Some("k"), kill("k", "e")));
        let k = stats(&m, "k");
        assert_eq!(
            (k.multikills, k.best_multikill),
            (1, 3),
            "chain 1-2-3, then broken backwards, then too late"
        );
        assert_eq!((k.current_streak, k.best_streak), (5, 5));
    }

    #[test]
    fn teleport_over_1000_is_not_distance_but_exactly_1000_is() {
        let given = vec![
            ev(1, 0, Some("a"), pos(0.0)),
            ev(2, 1, Some("a"), pos(1000.0)),
        ];
        let (_, m) = given_when(given, ev(3, 2, Some("a"), pos(2000.5)));
        assert_eq!(stats(&m, "a").distance_traveled, 1000.0);
        assert_eq!(stats(&m, "a").current_x, Some(2000.5));
    }

    #[test]
    fn playtime_sums_online_intervals_and_counts_online_players_to_last_update() {
        let given = vec![
            ev(
                1,
                0,
                Some("a"),
                EventKind::PlayerJoin {
                    player_name: label("A"),
                    team_id: None,
                },
            ),
            ev(2, 1_000, Some("a"), EventKind::PlayerLeave),
            ev(3, 1_500, Some("a"), pos(1.0)),
            ev(
                4,
                2_000,
                Some("a"),
                EventKind::PlayerJoin {
                    player_name: None,
                    team_id: label("red"),
                },
            ),
        ];
        let (_, m) = given_when(given, ev(5, 5_000, Some("b"), pos(0.0)));
        let a = stats(&m, "a");
        assert_eq!(
            a.playtime_ms(m.stats().last_update),
            1_000 + 3_000,
            "offline between leave and join"
        );
        assert_eq!((a.player_name, a.team_id), (label("A"), label("red")));
        assert_eq!(m.stats().current_players, 2);
    }

    #[test]
    fn match_end_closes_intervals_then_late_events_count_but_later_ones_are_closed() {
        let given = vec![
            ev(1, 0, Some("a"), pos(0.0)),
            ev(2, 10_000, None, EventKind::MatchEnd),
            ev(3, 9_000, Some("late"), kill("late", "a")),
        ];
        let (outcome, m) = given_when(given.clone(), ev(4, 10_001, Some("a"), pos(1.0)));
        assert!(matches!(
            outcome,
            Outcome::Rejected(Rejection {
                reason: Reason::MatchClosed,
                ..
            })
        ));
        let late = stats(&m, "late");
        assert_eq!(
            (
                late.kills,
                late.online,
                late.playtime_ms(m.stats().last_update)
            ),
            (1, false, 0),
            "named late: offline"
        );
        assert_eq!(stats(&m, "a").playtime_ms(m.stats().last_update), 10_000);
        assert_eq!(
            (
                m.stats().status,
                m.stats().current_players,
                m.stats().duration_ms()
            ),
            (MatchStatus::Completed, 0, 10_000)
        );

        let (outcome, _) = given_when(given.clone(), ev(5, 0, None, EventKind::MatchEnd));
        assert!(
            matches!(
                outcome,
                Outcome::Rejected(Rejection {
                    reason: Reason::MatchClosed,
                    ..
                })
            ),
            "second match_end"
        );
        let (outcome, _) = given_when(given, ev(2, 10_000, None, EventKind::MatchEnd));
        assert_eq!(
            outcome,
            Outcome::Duplicate,
            "a retried match_end is a duplicate, not closed"
        );
    }

    #[test]
    fn start_time_is_the_first_match_start_else_the_first_event() {
        let given = vec![ev(1, 500, Some("a"), pos(0.0))];
        let (_, m) = given_when(
            given.clone(),
            ev(
                2,
                100,
                None,
                EventKind::MatchStart {
                    map_name: label("x"),
                    game_mode: None,
                    max_players: Some(8),
                },
            ),
        );
        assert_eq!(
            (
                m.stats().start_time,
                m.stats().last_update,
                m.stats().max_players
            ),
            (T + 100, T + 500, Some(8))
        );
        let mut given = given;
        given.push(ev(
            2,
            100,
            None,
            EventKind::MatchStart {
                map_name: None,
                game_mode: None,
                max_players: None,
            },
        ));
        let (_, m) = given_when(
            given,
            ev(
                3,
                50,
                None,
                EventKind::MatchStart {
                    map_name: label("y"),
                    game_mode: None,
                    max_players: None,
                },
            ),
        );
        assert_eq!(
            (m.stats().start_time, m.stats().map_name),
            (T + 100, label("y")),
            "only the first sets start_time"
        );
    }

    #[test]
    fn the_duplicate_window_holds_the_last_4096_event_ids() {
        let mut m = Match::new(MatchId::parse("m").unwrap());
        for n in 0..=DEDUP_WINDOW as u32 {
            assert!(matches!(
                m.handle(&ev(n, 0, Some("a"), pos(0.0)), 0),
                Outcome::Applied(_)
            ));
        }
        assert!(
            matches!(
                m.handle(&ev(0, 0, Some("a"), pos(0.0)), 0),
                Outcome::Applied(_)
            ),
            "e0 fell out of the window"
        );
        assert_eq!(
            m.handle(&ev(DEDUP_WINDOW as u32, 0, Some("a"), pos(0.0)), 0),
            Outcome::Duplicate
        );
    }

    #[test]
    fn the_delta_lists_each_change_with_before_and_after() {
        let (outcome, _) = given_when(
            vec![ev(1, 0, Some("k"), kill("k", "v"))],
            ev(2, 10, Some("k"), kill("k", "v")),
        );
        let Outcome::Applied(entry) = outcome else {
            panic!("applied")
        };
        assert_eq!(entry.version, 2);
        let kills = entry
            .changes
            .iter()
            .find(|c| c.field == Field::Kills)
            .unwrap();
        assert_eq!(
            (kills.player_id, &kills.before, &kills.after),
            (Some(p("k")), &FieldValue::Int(1), &FieldValue::Int(2))
        );
        let weapon = entry
            .changes
            .iter()
            .find(|c| c.field == Field::WeaponUsed)
            .unwrap();
        assert_eq!(weapon.key.unwrap().as_str(), UNKNOWN_WEAPON);
        assert!(
            entry
                .changes
                .iter()
                .any(|c| c.field == Field::EventCount && c.player_id.is_none())
        );
    }
}
