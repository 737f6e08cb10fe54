//! Properties of the rules over generated event streams: redelivery and restarting from
//! a copy of the state change nothing, statistics never go negative, and how matches
//! interleave does not matter.

use std::collections::BTreeMap;

use match_stats_commands::id::label;
use match_stats_commands::{Event, EventId, EventKind, Match, MatchId, Outcome, PlayerId, decode};
use proptest::prelude::*;

const T0: i64 = 1_767_225_600_000;

fn pid(i: u8) -> PlayerId {
    PlayerId::parse(&format!("p{i}")).unwrap()
}

fn kind() -> impl Strategy<Value = EventKind> {
    let p = || (0u8..6).prop_map(pid);
    prop_oneof![
        1 => (any::<bool>(), 1u32..64).prop_map(|(named, n)| EventKind::MatchStart {
            map_name: named.then(|| label("dust").unwrap()),
            game_mode: None,
            max_players: Some(n),
        }),
        1 => Just(EventKind::MatchEnd),
        3 => Just(EventKind::PlayerJoin { player_name: label("n"), team_id: None }),
        2 => Just(EventKind::PlayerLeave),
        6 => (p(), p(), any::<bool>(), proptest::option::of(0.0f64..200.0)).prop_map(|(k, v, headshot, distance)| {
            EventKind::Kill { killer_id: k, victim_id: v, weapon: None, headshot, distance }
        }),
        2 => (proptest::option::of(p()), any::<bool>()).prop_map(|(killer_id, suicide)| EventKind::Death {
            cause: suicide.then(|| label("suicide").unwrap()),
            killer_id,
        }),
        6 => (p(), p(), 0.0f64..150.0).prop_map(|(a, v, d)| EventKind::Damage {
            attacker_id: a, victim_id: v, damage: d, weapon: None, hit_location: None,
        }),
        6 => (-2000.0f64..2000.0, -2000.0f64..2000.0, -50.0f64..50.0).prop_map(|(x, y, z)| EventKind::Position { x, y, z }),
        2 => (proptest::option::of(0.0f64..100.0)).prop_map(|heal_amount| EventKind::ItemUse { item: label("medkit").unwrap(), heal_amount }),
        3 => (1u32..30).prop_map(|shots| EventKind::WeaponFire { weapon: None, shots }),
    ]
}

/// Events of up to three matches; ids repeat sometimes (publisher retries), times jitter.
fn events() -> impl Strategy<Value = Vec<Event>> {
    proptest::collection::vec((0u8..3, 0u8..6, 0i64..120_000, 0u32..400, kind()), 1..250).prop_map(
        |raw| {
            raw.into_iter()
                .map(|(m, p, dt, id, kind)| Event {
                    event_id: EventId::parse(&format!("e{m}-{id}")).unwrap(),
                    match_id: MatchId::parse(&format!("m{m}")).unwrap(),
                    player_id: Some(pid(p)),
                    timestamp_ms: T0 + dt,
                    kind,
                })
                .collect()
        },
    )
}

type Matches = BTreeMap<MatchId, Match>;

fn fold_into(matches: &mut Matches, events: &[Event]) {
    for (seq, e) in events.iter().enumerate() {
        matches
            .entry(e.match_id)
            .or_insert_with(|| Match::new(e.match_id))
            .handle(e, seq as u64 + 1);
    }
}

fn views(matches: &Matches) -> serde_json::Value {
    serde_json::to_value(matches.values().map(|m| m.view()).collect::<Vec<_>>()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_copy_of_any_prefix_then_the_rest_equals_all(events in events(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(events.len() + 1);
        let mut all = Matches::new();
        fold_into(&mut all, &events);
        let mut prefix = Matches::new();
        fold_into(&mut prefix, &events[..cut]);
        let mut restored = prefix.clone();
        fold_into(&mut restored, &events[cut..]);
        prop_assert_eq!(views(&all), views(&restored));
    }

    #[test]
    fn redelivering_a_prefix_changes_nothing(events in events(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(events.len() + 1);
        let mut once = Matches::new();
        fold_into(&mut once, &events[..cut]);
        let mut twice = once.clone();
        for e in &events[..cut] {
            let outcome = twice.get_mut(&e.match_id).unwrap().handle(e, 0);
            prop_assert!(!matches!(outcome, Outcome::Applied(_)), "redelivered {:?} was applied again", e.event_id);
        }
        prop_assert_eq!(views(&once), views(&twice));
    }

    #[test]
    fn statistics_never_go_negative(events in events()) {
        let mut matches = Matches::new();
        fold_into(&mut matches, &events);
        for m in matches.values() {
            let v = m.view();
            prop_assert!(v.duration_ms >= 0 && v.total_damage >= 0.0 && v.total_healing >= 0.0);
            let players = v.player_stats.unwrap();
            prop_assert_eq!(v.current_players as usize, players.iter().filter(|p| p.online).count());
            for p in players {
                for x in [p.damage_dealt, p.damage_received, p.healing_done, p.distance_traveled, p.accuracy_pct,
                          p.kd_ratio, p.kda, p.avg_speed, p.performance_rating] {
                    prop_assert!(x >= 0.0 && x.is_finite(), "{:?}", p);
                }
                prop_assert!(p.playtime_ms >= 0 && p.accuracy_pct <= 100.0);
                prop_assert!(p.best_streak >= p.current_streak && p.best_multikill <= p.kills);
            }
        }
    }

    #[test]
    fn interleaving_of_matches_does_not_matter(events in events(), order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>())) {
        // Another interleaving that keeps each match's own order.
        let mut queues: BTreeMap<MatchId, Vec<&Event>> = BTreeMap::new();
        for e in &events {
            queues.entry(e.match_id).or_default().push(e);
        }
        let mut cursors: Vec<(MatchId, usize)> = queues.keys().map(|k| (*k, 0)).collect();
        let mut shuffled = Vec::new();
        let mut pick = order;
        while !cursors.is_empty() {
            let i = (pick % cursors.len() as u64) as usize;
            pick = pick.rotate_left(7) ^ 0x9e37_79b9;
            let (id, at) = &mut cursors[i];
            shuffled.push(queues[id][*at].clone());
            *at += 1;
            if *at == queues[id].len() {
                cursors.remove(i);
            }
        }
        let mut a = Matches::new();
        fold_into(&mut a, &events);
        let mut b = Matches::new();
        fold_into(&mut b, &shuffled);
        prop_assert_eq!(views(&a), views(&b));
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode(&bytes, T0);
    }

    #[test]
    fn random_json_ish_payloads_never_panic(s in "\\{[ -~]{0,300}") {
        let _ = decode(s.as_bytes(), T0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A snapshot (MessagePack of the whole aggregate) restored mid-stream decides the
    /// rest exactly as the original: duplicates, closed matches and all.
    #[test]
    fn a_snapshot_restored_mid_stream_equals_the_original(events in events(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(events.len() + 1);
        let mut original = Matches::new();
        fold_into(&mut original, &events[..cut]);
        let mut restored: Matches = original
            .iter()
            .map(|(id, m)| (*id, rmp_serde::from_slice(&rmp_serde::to_vec_named(m).unwrap()).unwrap()))
            .collect();
        // The first part again (redelivered after the snapshot), then the rest.
        fold_into(&mut original, &events);
        fold_into(&mut restored, &events);
        prop_assert_eq!(views(&original), views(&restored));
    }
}
