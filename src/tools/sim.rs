//! A simulated match, as a game server plays it: a `match_start`, every player's join,
//! then positions, shots, damage, kills with their mirrored deaths, items and teleports
//! in a fixed mix, and a `match_end`. Used by the demo feed, the load generator and the
//! benchmarks.

use rand::RngExt;
use serde_json::{Value, json};

/// One simulated match: produces its events in order (also used by the benchmarks).
pub struct SimMatch {
    id: String,
    players: Vec<(String, [f64; 3], bool)>,
    next_event: u64,
    remaining: u32,
}

impl SimMatch {
    /// Match `demo-<run_id>-<n>` of `players` players, ending after `events` events.
    pub fn new(run_id: &str, n: u32, players: u32, events: u32) -> Self {
        let id = format!("demo-{run_id}-{n:03}");
        let players = (0..players)
            .map(|p| (format!("{id}-p{p:02}"), [0.0; 3], false))
            .collect();
        SimMatch {
            id,
            players,
            next_event: 0,
            remaining: events,
        }
    }

    fn event(&mut self, event_type: &str, player: Option<&str>, data: Value) -> (String, Vec<u8>) {
        self.next_event += 1;
        let event_id = format!("{}-e{:06}", self.id, self.next_event);
        let mut event = json!({
            "event_id": event_id,
            "match_id": self.id,
            "event_type": event_type,
            "timestamp": chrono::Utc::now().timestamp_millis(),
            "event_data": data,
        });
        if let Some(player) = player {
            event["player_id"] = json!(player);
        }
        let payload = rmp_serde::to_vec_named(&event).expect("events serialize");
        (event_id, payload)
    }

    /// The match id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next event of this match as `(event_id, MessagePack payload)`, or `None` once
    /// it has ended.
    pub fn next(&mut self, rng: &mut impl rand::Rng) -> Option<(String, Vec<u8>)> {
        if self.next_event == 0 {
            return Some(self.event(
                "match_start",
                None,
                json!({"map_name": "neon_city", "game_mode": "team_deathmatch", "max_players": self.players.len()}),
            ));
        }
        if let Some(i) = self.players.iter().position(|p| !p.2) {
            self.players[i].2 = true;
            let (id, team) = (
                self.players[i].0.clone(),
                if i % 2 == 0 { "red" } else { "blue" },
            );
            return Some(self.event(
                "player_join",
                Some(&id),
                json!({"player_name": format!("Player {i}"), "team_id": team}),
            ));
        }
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        if self.remaining == 0 {
            return Some(self.event("match_end", None, json!({})));
        }
        let n = self.players.len();
        let a = rng.random_range(0..n);
        let b = (a + rng.random_range(1..n)) % n;
        let (pa, pb) = (self.players[a].0.clone(), self.players[b].0.clone());
        let weapon = ["rifle", "smg", "shotgun", "sniper", "pistol"][rng.random_range(0..5)];
        let roll = rng.random_range(0..100);
        Some(match roll {
            0..40 => {
                let pos = &mut self.players[a].1;
                for c in pos.iter_mut() {
                    *c += rng.random_range(-3.0..3.0);
                }
                let [x, y, z] = *pos;
                self.event("position", Some(&pa), json!({"x": x, "y": y, "z": z}))
            }
            40..60 => self.event("weapon_fire", Some(&pa), json!({"weapon": weapon, "shots": rng.random_range(1..6)})),
            60..82 => self.event(
                "damage",
                Some(&pa),
                json!({"attacker_id": pa, "victim_id": pb, "damage": rng.random_range(5.0..40.0), "weapon": weapon}),
            ),
            82..92 => self.event(
                "kill",
                Some(&pa),
                json!({"killer_id": pa, "victim_id": pb, "weapon": weapon, "headshot": rng.random_bool(0.25), "distance": rng.random_range(1.0..120.0)}),
            ),
            92..97 => self.event(
                "item_use",
                Some(&pa),
                json!({"item": "medkit", "heal_amount": rng.random_range(10.0..50.0)}),
            ),
            97..98 => self.event("death", Some(&pb), json!({"cause": "fall"})),
            _ => self.event("position", Some(&pb), json!({"x": 5000.0, "y": 0.0, "z": 0.0})),
        })
    }
}
