//! [`Players`]: a match's players, each at its roster slot (the order the match first
//! named them), found by id through a hash index of slots; in id order wherever order
//! shows (snapshots, views, the changes of a `match_end`).
//!
//! A rule looks up one to three players per event: a hash of the id and one comparison,
//! where an ordered map of 64 players compared 68-byte ids a dozen times. Applying costs a
//! quarter less on a few matches, the same over 1,000, where waiting on memory is the
//! cost (BENCHMARKS.md, "Decode and apply over many matches").

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::PlayerState;
use crate::id::PlayerId;

/// See the module.
#[derive(Debug, Clone, Default)]
pub(super) struct Players {
    /// Ids by slot.
    roster: Vec<PlayerId>,
    /// States by slot.
    states: Vec<PlayerState>,
    /// Slots, by the hash of their id.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl Players {
    /// How many (every player the match ever named).
    pub(super) fn len(&self) -> usize {
        self.roster.len()
    }

    /// A player's slot.
    pub(super) fn slot(&self, id: &PlayerId) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.index
            .find(hash, |&slot| self.roster[slot as usize] == *id)
            .copied()
    }

    fn slot_of(&self, id: &PlayerId) -> Option<usize> {
        self.slot(id).map(|slot| slot as usize)
    }

    /// Whether the match holds `id`.
    pub(super) fn contains(&self, id: &PlayerId) -> bool {
        self.slot_of(id).is_some()
    }

    /// A player's state.
    #[cfg(test)]
    pub(super) fn get(&self, id: &PlayerId) -> Option<&PlayerState> {
        self.slot_of(id).map(|slot| &self.states[slot])
    }

    /// A player's state, to change.
    pub(super) fn get_mut(&mut self, id: &PlayerId) -> Option<&mut PlayerState> {
        self.slot_of(id).map(|slot| &mut self.states[slot])
    }

    /// Adds a player the match does not hold yet at the next slot; its state, to set.
    pub(super) fn push(&mut self, id: PlayerId) -> &mut PlayerState {
        debug_assert!(!self.contains(&id));
        let slot = self.roster.len();
        self.roster.push(id);
        self.states.push(PlayerState {
            slot: slot as u32,
            ..PlayerState::default()
        });
        let (roster, hasher) = (&self.roster, &self.hasher);
        self.index
            .insert_unique(hasher.hash_one(id), slot as u32, |&s| {
                hasher.hash_one(roster[s as usize])
            });
        &mut self.states[slot]
    }

    /// The id at a slot.
    pub(super) fn id(&self, slot: u32) -> PlayerId {
        self.roster[slot as usize]
    }

    /// The ids by slot.
    pub(super) fn roster(&self) -> &[PlayerId] {
        &self.roster
    }

    /// Every slot, in id order.
    pub(super) fn slots_by_id(&self) -> Vec<u32> {
        let mut slots: Vec<u32> = (0..self.roster.len() as u32).collect();
        slots.sort_unstable_by_key(|&slot| self.roster[slot as usize]);
        slots
    }

    /// The id and state at a slot, the state to change.
    pub(super) fn at_mut(&mut self, slot: u32) -> (PlayerId, &mut PlayerState) {
        let slot = slot as usize;
        (self.roster[slot], &mut self.states[slot])
    }

    /// Every player in id order.
    pub(super) fn by_id(&self) -> impl Iterator<Item = (&PlayerId, &PlayerState)> {
        self.slots_by_id()
            .into_iter()
            .map(|slot| (&self.roster[slot as usize], &self.states[slot as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> PlayerId {
        PlayerId::parse(s).unwrap()
    }

    #[test]
    fn players_are_found_by_id_kept_by_slot_and_listed_in_id_order() {
        let mut players = Players::default();
        for (n, name) in ["zed", "amy", "kim", "bob"].into_iter().enumerate() {
            players.push(id(name)).chain = n as u64;
        }
        assert_eq!(players.len(), 4);
        assert!(players.contains(&id("kim")) && !players.contains(&id("ann")));
        assert_eq!(
            players.get(&id("amy")).map(|p| (p.slot, p.chain)),
            Some((1, 1))
        );
        players.get_mut(&id("bob")).unwrap().chain = 9;
        assert_eq!(players.id(3), id("bob"));
        let order: Vec<(&str, u64)> = players
            .by_id()
            .map(|(id, p)| (id.as_str(), p.chain))
            .collect();
        assert_eq!(order, [("amy", 1), ("bob", 9), ("kim", 2), ("zed", 0)]);
        let copy = players.clone();
        assert_eq!(
            copy.get(&id("zed")).map(|p| p.slot),
            Some(0),
            "a clone finds by id too"
        );
    }
}
