//! Each rule of contract section 4 as given (earlier events) / when (one event) /
//! then (the resulting statistics).
use super::*;
use crate::delta::FieldValue;
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
    &m.players.get(&p(id)).expect("a player of the match").stats
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

fn join(n: u32, player: &str) -> Event {
    ev(
        n,
        0,
        Some(player),
        EventKind::PlayerJoin {
            player_name: None,
            team_id: None,
        },
    )
}

/// A match already holding `n` players `p0`..`p<n-1>`.
fn match_of(n: usize) -> Match {
    let mut m = Match::new(MatchId::parse("m").unwrap());
    for i in 0..n {
        assert!(matches!(
            m.handle(&join(i as u32, &format!("p{i}")), 1),
            Outcome::Applied(_)
        ));
    }
    m
}

fn reason(outcome: &Outcome) -> Option<Reason> {
    match outcome {
        Outcome::Rejected(r) => Some(r.reason),
        _ => None,
    }
}

#[test]
fn a_match_holds_at_most_ten_thousand_players_and_an_event_past_them_is_rejected_whole() {
    // given 9,999 players
    let mut m = match_of(MAX_PLAYERS - 1);
    // when a kill names two new players
    let outcome = m.handle(&ev(100_000, 1, Some("x"), kill("x", "y")), 2);
    // then it is rejected whole, nobody added
    assert_eq!(reason(&outcome), Some(Reason::LimitExceeded));
    assert_eq!(m.player_count(), MAX_PLAYERS - 1);
    // a kill naming one new player (the 10,000th) and a known one applies
    let outcome = m.handle(&ev(100_001, 1, Some("x"), kill("x", "p0")), 3);
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}");
    assert_eq!(m.player_count(), MAX_PLAYERS);
    // then any event naming a new player is rejected, known players still count
    let outcome = m.handle(&join(100_002, "z"), 4);
    assert_eq!(reason(&outcome), Some(Reason::LimitExceeded));
    let outcome = m.handle(&ev(100_003, 1, Some("x"), kill("x", "p1")), 5);
    assert!(matches!(outcome, Outcome::Applied(_)));
}

#[test]
fn duplicate_then_match_closed_then_limit_exceeded_in_that_order() {
    let mut m = match_of(MAX_PLAYERS);
    let end = ev(50_000, 10, None, EventKind::MatchEnd);
    assert!(matches!(m.handle(&end, 2), Outcome::Applied(_)));
    // a retry of the match_end: a duplicate, though the match is closed
    assert_eq!(m.handle(&end, 3), Outcome::Duplicate);
    // after the end, with a new player: match_closed, though over the limit
    let late = ev(50_001, 11, Some("new"), pos(0.0));
    assert_eq!(reason(&m.handle(&late, 4)), Some(Reason::MatchClosed));
}

fn weapon_kill(n: u32, weapon: &str) -> Event {
    ev(
        n,
        i64::from(n) * 10_000,
        Some("k"),
        EventKind::Kill {
            killer_id: p("k"),
            victim_id: p("v"),
            weapon: label(weapon),
            headshot: false,
            distance: None,
        },
    )
}

#[test]
fn past_sixty_four_weapons_a_new_one_counts_under_other() {
    let mut m = Match::new(MatchId::parse("m").unwrap());
    // given a publisher's own "other" and 64 distinct weapons ("unknown" among them)
    m.handle(&weapon_kill(0, "other"), 1);
    m.handle(&weapon_kill(1, "unknown"), 1);
    for n in 2..65 {
        m.handle(&weapon_kill(n, &format!("w{n}")), 1);
    }
    let weapons = &stats(&m, "k").weapon_used;
    assert_eq!(weapons.len(), 65, "64 keys and other");
    // when a 65th distinct weapon is used, then it counts under other
    m.handle(&weapon_kill(65, "w-new"), 1);
    m.handle(&weapon_kill(66, "w-newer"), 1);
    let weapons = &stats(&m, "k").weapon_used;
    assert_eq!(weapons.len(), 65);
    assert_eq!(weapons[&label("other").unwrap()], 3);
    assert!(!weapons.contains_key(&label("w-new").unwrap()));
    // and a known weapon still counts under its own key
    m.handle(&weapon_kill(67, "w2"), 1);
    assert_eq!(stats(&m, "k").weapon_used[&label("w2").unwrap()], 2);
}

#[test]
fn a_player_named_active_and_a_team_named_completed_are_names() {
    let mut m = Match::new(MatchId::parse("m").unwrap());
    let join = ev(
        1,
        0,
        Some("a"),
        EventKind::PlayerJoin {
            player_name: label("active"),
            team_id: label("completed"),
        },
    );
    let Outcome::Applied(entry) = m.handle(&join, 1) else {
        panic!("applies")
    };
    let delta = crate::StatDelta {
        match_id: m.match_id(),
        entries: vec![entry],
        match_view: None,
    };
    // through MessagePack and back, as a consumer reads it
    let bytes = rmp_serde::to_vec_named(&delta).unwrap();
    let read: crate::StatDelta = rmp_serde::from_slice(&bytes).unwrap();
    let mut player = crate::PlayerStats::default();
    for change in read.entries[0]
        .changes
        .iter()
        .filter(|c| c.player_id.is_some())
    {
        change.apply_to_player(&mut player).expect("a name is text");
    }
    assert_eq!(player.player_name, label("active"));
    assert_eq!(player.team_id, label("completed"));
}
