//! How a [`Match`] is encoded in snapshots: players by id, each with the ids of the
//! players whose damage it took (`hits_taken: [[id, time], ...]`). In memory those are
//! roster slots ([`super::PlayerState::slot`]); the encoding keeps ids, so snapshots
//! written before slots existed read as before, and slots never leave the process.

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};

use super::players::Players;
use super::{DedupWindow, Match};
use crate::event::TimestampMs;
use crate::id::{MatchId, PlayerId};
use crate::stats::{MatchStats, PlayerStats};

impl Serialize for Match {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Match", 5)?;
        s.serialize_field("match_id", &self.match_id)?;
        s.serialize_field("stats", &self.stats)?;
        s.serialize_field("players", &PlayersOut(self))?;
        s.serialize_field("started_by_match_start", &self.started_by_match_start)?;
        s.serialize_field("recent", &self.recent)?;
        s.end()
    }
}

/// The players map, each player's hits by id.
struct PlayersOut<'a>(&'a Match);

impl Serialize for PlayersOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut map = serializer.serialize_map(Some(m.players.len()))?;
        for (id, p) in m.players.by_id() {
            let out = PlayerOut {
                stats: &p.stats,
                last_kill: p.last_kill,
                chain: p.chain,
                hits_taken: HitsOut {
                    hits: &p.hits_taken,
                    roster: m.players.roster(),
                },
            };
            map.serialize_entry(id, &out)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct PlayerOut<'a> {
    stats: &'a PlayerStats,
    last_kill: Option<TimestampMs>,
    chain: u64,
    hits_taken: HitsOut<'a>,
}

struct HitsOut<'a> {
    hits: &'a [(u32, TimestampMs)],
    roster: &'a [PlayerId],
}

impl Serialize for HitsOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.hits.len()))?;
        for &(slot, at) in self.hits {
            seq.serialize_element(&(self.roster[slot as usize], at))?;
        }
        seq.end()
    }
}

/// The encoded form, read back.
#[derive(Deserialize)]
struct MatchIn {
    match_id: MatchId,
    stats: MatchStats,
    players: BTreeMap<PlayerId, Box<PlayerIn>>,
    started_by_match_start: bool,
    recent: DedupWindow,
}

#[derive(Deserialize)]
struct PlayerIn {
    stats: PlayerStats,
    last_kill: Option<TimestampMs>,
    chain: u64,
    hits_taken: Vec<(PlayerId, TimestampMs)>,
}

impl<'de> Deserialize<'de> for Match {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = MatchIn::deserialize(deserializer)?;
        // Slots in id order, every player placed before any hit names one; a hit by a
        // player the match does not hold is junk.
        let mut players = Players::default();
        for id in wire.players.keys() {
            players.push(*id);
        }
        for (slot, p) in wire.players.into_values().enumerate() {
            let PlayerIn {
                stats,
                last_kill,
                chain,
                hits_taken,
            } = *p;
            let hits_taken = hits_taken
                .iter()
                .map(|(by, at)| {
                    let slot = players.slot(by).ok_or_else(|| {
                        serde::de::Error::custom(format!(
                            "a hit by {by}, who is not a player of the match"
                        ))
                    })?;
                    Ok((slot, *at))
                })
                .collect::<Result<Vec<_>, D::Error>>()?;
            let (_, state) = players.at_mut(slot as u32);
            state.stats = stats;
            state.last_kill = last_kill;
            state.chain = chain;
            state.hits_taken = hits_taken;
        }
        Ok(Match {
            match_id: wire.match_id,
            stats: wire.stats,
            players,
            started_by_match_start: wire.started_by_match_start,
            recent: wire.recent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventKind};
    use crate::id::EventId;

    const T: TimestampMs = 1_767_225_600_000;

    fn p(id: &str) -> PlayerId {
        PlayerId::parse(id).unwrap()
    }

    fn event(n: u32, at: TimestampMs, kind: EventKind) -> Event {
        Event {
            event_id: EventId::parse(&format!("e{n}")).unwrap(),
            match_id: MatchId::parse("m").unwrap(),
            player_id: None,
            timestamp_ms: T + at,
            kind,
        }
    }

    fn damage(a: &str, v: &str) -> EventKind {
        EventKind::Damage {
            attacker_id: p(a),
            victim_id: p(v),
            damage: 5.0,
            weapon: None,
            hit_location: None,
        }
    }

    #[test]
    fn hits_are_encoded_by_id_and_read_back_to_the_same_match() {
        let mut m = Match::new(MatchId::parse("m").unwrap());
        // Named in the order z, v, a: slots that differ from the id order.
        m.handle(&event(1, 0, damage("z", "v")), 1);
        m.handle(&event(2, 1, damage("a", "v")), 2);
        m.handle(&event(3, 2, damage("z", "v")), 3);
        let bytes = rmp_serde::to_vec_named(&m).unwrap();
        let encoded: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            encoded["players"]["v"]["hits_taken"],
            serde_json::json!([["z", T + 2], ["a", T + 1]]),
            "each attacker once, by id, with its latest hit"
        );
        assert_eq!(encoded["players"]["z"]["hits_taken"], serde_json::json!([]));

        let mut read: Match = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            rmp_serde::to_vec_named(&read).unwrap(),
            bytes,
            "read back whole"
        );
        // The hits still work after reading: a kill of v credits both attackers but the
        // killer.
        let kill = EventKind::Kill {
            killer_id: p("k"),
            victim_id: p("v"),
            weapon: None,
            headshot: false,
            distance: None,
        };
        read.handle(&event(4, 3, kill), 4);
        let assists = |id: &str| read.players.get(&p(id)).unwrap().stats.assists;
        assert_eq!((assists("z"), assists("a"), assists("k")), (1, 1, 0));
    }

    #[test]
    fn a_hit_by_someone_who_is_not_a_player_is_unreadable() {
        let mut m = Match::new(MatchId::parse("m").unwrap());
        m.handle(&event(1, 0, damage("z", "v")), 1);
        let mut encoded: serde_json::Value =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&m).unwrap()).unwrap();
        encoded["players"]["v"]["hits_taken"][0][0] = serde_json::json!("ghost");
        let bytes = rmp_serde::to_vec_named(&encoded).unwrap();
        let error = rmp_serde::from_slice::<Match>(&bytes).unwrap_err();
        assert!(error.to_string().contains("ghost"), "{error}");
    }
}
