//! The rules of contract section 4, one function per event type, each applied after the
//! shared prologue of [`super::Match`] (event count, times, the players it names, who
//! exist by now). Each change goes through the recorder, so it is in the delta.

use super::recorder::Recorder;
use super::{
    ASSIST_WINDOW_MS, Fold, LONGSHOT_DISTANCE, MAX_STEP_DISTANCE, MULTIKILL_WINDOW_MS, PlayerState,
    Players, UNKNOWN_WEAPON,
};
use crate::delta::Field;
use crate::id::{Label, PlayerId};
use crate::stats::{FirstBlood, MatchStats, MatchStatus, PlayerStats};

/// A player the event named (the prologue created every one).
fn player(players: &mut Players, id: PlayerId) -> &mut PlayerState {
    players.get_mut(&id).expect("named players exist")
}

/// `match_start`: the first one sets `start_time`; each sets what it carries.
pub(super) fn match_start(
    f: &mut Fold<'_>,
    map_name: Option<Label>,
    game_mode: Option<Label>,
    max_players: Option<u32>,
) {
    let (rec, stats) = (&mut f.rec, &mut *f.stats);
    if !*f.started_by_match_start {
        *f.started_by_match_start = true;
        rec.set(None, Field::StartTime, &mut stats.start_time, f.t);
    }
    if map_name.is_some() {
        rec.set(None, Field::MapName, &mut stats.map_name, map_name);
    }
    if game_mode.is_some() {
        rec.set(None, Field::GameMode, &mut stats.game_mode, game_mode);
    }
    if max_players.is_some() {
        rec.set(None, Field::MaxPlayers, &mut stats.max_players, max_players);
    }
}

/// `match_end`: completed at its time; every online player's interval closes.
pub(super) fn match_end(f: &mut Fold<'_>) {
    let t = f.t;
    let (rec, stats) = (&mut f.rec, &mut *f.stats);
    rec.set(
        None,
        Field::Status,
        &mut stats.status,
        MatchStatus::Completed,
    );
    rec.set(None, Field::EndTime, &mut stats.end_time, Some(t));
    // In id order, as the changes have always been recorded (a replay's deltas are the
    // same bytes).
    for slot in f.players.slots_by_id() {
        let (id, p) = f.players.at_mut(slot);
        if p.stats.online {
            go_offline(rec, stats, id, &mut p.stats, t);
        }
    }
}

/// `player_join`: online again (unless late); name and team when given.
pub(super) fn player_join(
    f: &mut Fold<'_>,
    id: PlayerId,
    player_name: Option<Label>,
    team_id: Option<Label>,
) {
    let (rec, stats) = (&mut f.rec, &mut *f.stats);
    let p = &mut player(f.players, id).stats;
    if !f.late && !p.online {
        rec.set(Some(id), Field::Online, &mut p.online, true);
        rec.set(Some(id), Field::OnlineSince, &mut p.online_since, Some(f.t));
        rec.update(
            None,
            Field::CurrentPlayers,
            &mut stats.current_players,
            |n| n + 1,
        );
    }
    if player_name.is_some() {
        rec.set(Some(id), Field::PlayerName, &mut p.player_name, player_name);
    }
    if team_id.is_some() {
        rec.set(Some(id), Field::TeamId, &mut p.team_id, team_id);
    }
}

/// `player_leave`: an online player goes offline (unless late).
pub(super) fn player_leave(f: &mut Fold<'_>, id: PlayerId) {
    let p = &mut player(f.players, id).stats;
    if !f.late && p.online {
        go_offline(&mut f.rec, f.stats, id, p, f.t);
    }
}

/// `kill`: a suicide is a counted death only; otherwise the killer's kill, streak,
/// chain and weapon, first blood, assists from recent damage, and the victim's death.
pub(super) fn kill(
    f: &mut Fold<'_>,
    k: PlayerId,
    v: PlayerId,
    weapon: Option<Label>,
    headshot: bool,
    distance: Option<f64>,
) {
    let t = f.t;
    let (rec, stats, players) = (&mut f.rec, &mut *f.stats, &mut *f.players);
    if k == v {
        let victim = player(players, v);
        rec.add(Some(v), Field::Suicides, &mut victim.stats.suicides, 1);
        counted_death(rec, stats, v, victim);
        return;
    }
    let killer = player(players, k);
    let s = &mut killer.stats;
    rec.add(Some(k), Field::Kills, &mut s.kills, 1);
    if headshot {
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
        Some(prev) if (0..=MULTIKILL_WINDOW_MS).contains(&(t - prev)) => killer.chain + 1,
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
    for &(slot, hit_at) in &hits {
        let a = players.id(slot);
        if a != k && a != v && hit_at >= t - ASSIST_WINDOW_MS {
            let assister = &mut player(players, a).stats;
            rec.add(Some(a), Field::Assists, &mut assister.assists, 1);
            rec.add(None, Field::TotalAssists, &mut stats.total_assists, 1);
        }
    }
    let victim = player(players, v);
    victim.hits_taken = hits; // keep the buffer; counted_death clears it
    counted_death(rec, stats, v, victim);
}

/// `death`: the victim's copy of a kill (another `killer_id`) changes nothing; else a
/// counted death, a suicide by cause or by own hand.
pub(super) fn death(
    f: &mut Fold<'_>,
    id: PlayerId,
    cause: Option<Label>,
    killer_id: Option<PlayerId>,
) {
    let mirrored = killer_id.is_some_and(|k| k != id);
    if mirrored {
        return;
    }
    let p = player(f.players, id);
    if killer_id == Some(id) || cause.is_some_and(|c| c.as_str() == "suicide") {
        f.rec
            .add(Some(id), Field::Suicides, &mut p.stats.suicides, 1);
    }
    counted_death(&mut f.rec, f.stats, id, p);
}

/// `damage`: dealt (and recorded for assists) when not self-inflicted; always received.
pub(super) fn damage(f: &mut Fold<'_>, a: PlayerId, v: PlayerId, damage: f64) {
    let (t, rec, stats, players) = (f.t, &mut f.rec, &mut *f.stats, &mut *f.players);
    if a != v {
        let attacker = player(players, a);
        let (slot, s) = (attacker.slot, &mut attacker.stats);
        rec.add_f64(Some(a), Field::DamageDealt, &mut s.damage_dealt, damage);
        rec.add(Some(a), Field::ShotsHit, &mut s.shots_hit, 1);
        rec.add_f64(None, Field::TotalDamage, &mut stats.total_damage, damage);
        let hits = &mut player(players, v).hits_taken;
        match hits.iter_mut().find(|(attacker, _)| *attacker == slot) {
            Some((_, at)) => *at = (*at).max(t),
            None => hits.push((slot, t)),
        }
    }
    let s = &mut player(players, v).stats;
    rec.add_f64(
        Some(v),
        Field::DamageReceived,
        &mut s.damage_received,
        damage,
    );
}

/// `position`: the step from the last position counts unless it is a teleport.
pub(super) fn position(f: &mut Fold<'_>, id: PlayerId, [x, y, z]: [f64; 3]) {
    let rec = &mut f.rec;
    let s = &mut player(f.players, id).stats;
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
    rec.set(Some(id), Field::CurrentX, &mut s.current_x, Some(x));
    rec.set(Some(id), Field::CurrentY, &mut s.current_y, Some(y));
    rec.set(Some(id), Field::CurrentZ, &mut s.current_z, Some(z));
}

/// `item_use`: the item's count; healing when given.
pub(super) fn item_use(f: &mut Fold<'_>, id: PlayerId, item: Label, heal_amount: Option<f64>) {
    let (rec, stats) = (&mut f.rec, &mut *f.stats);
    let s = &mut player(f.players, id).stats;
    rec.bump_key(Some(id), Field::ItemsUsed, &mut s.items_used, item);
    if let Some(heal) = heal_amount {
        rec.add_f64(Some(id), Field::HealingDone, &mut s.healing_done, heal);
        rec.add_f64(None, Field::TotalHealing, &mut stats.total_healing, heal);
    }
}

/// `weapon_fire`: shots fired.
pub(super) fn weapon_fire(f: &mut Fold<'_>, id: PlayerId, shots: u32) {
    let s = &mut player(f.players, id).stats;
    f.rec.add(
        Some(id),
        Field::ShotsFired,
        &mut s.shots_fired,
        u64::from(shots),
    );
}

/// Closes an online interval at `t` (never negative) and takes the player offline.
fn go_offline(
    rec: &mut Recorder,
    stats: &mut MatchStats,
    id: PlayerId,
    p: &mut PlayerStats,
    t: i64,
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
