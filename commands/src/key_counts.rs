//! [`KeyCounts`]: a player's `weapon_used` or `items_used`, a count per key.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::Label;

/// Counts by key, in key order. A player has a few keys (at most 65, contract section 3),
/// so a sorted vector holds them in exactly the room they need: a `BTreeMap` node takes
/// room for eleven whatever the count, four times the memory for three weapons. It
/// serializes as a map, as a `BTreeMap` would.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyCounts(Vec<(Label, u64)>);

impl KeyCounts {
    /// The count of a key.
    pub fn get(&self, key: &Label) -> Option<u64> {
        self.find(key).ok().map(|i| self.0[i].1)
    }

    /// Whether a key has a count.
    pub fn contains_key(&self, key: &Label) -> bool {
        self.find(key).is_ok()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets a key's count.
    pub fn insert(&mut self, key: Label, count: u64) {
        match self.find(&key) {
            Ok(i) => self.0[i].1 = count,
            Err(i) => self.add(i, key, count),
        }
    }

    /// Adds one to a key's count (a new key starts at 0); the new count.
    pub fn bump(&mut self, key: Label) -> u64 {
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(i) => {
                self.add(i, key, 0);
                i
            }
        };
        self.0[i].1 += 1;
        self.0[i].1
    }

    /// A new key at `i`, growing by one entry: new keys are rare (a player's first kill
    /// with a weapon), and a vector's doubling would leave most of its room unused.
    fn add(&mut self, i: usize, key: Label, count: u64) {
        self.0.reserve_exact(1);
        self.0.insert(i, (key, count));
    }

    /// Keys and counts, in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Label, &u64)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    fn find(&self, key: &Label) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }
}

impl std::ops::Index<&Label> for KeyCounts {
    type Output = u64;

    fn index(&self, key: &Label) -> &u64 {
        let i = self.find(key).expect("a key it holds");
        &self.0[i].1
    }
}

impl FromIterator<(Label, u64)> for KeyCounts {
    fn from_iter<I: IntoIterator<Item = (Label, u64)>>(iter: I) -> Self {
        let mut counts = KeyCounts::default();
        for (key, count) in iter {
            counts.insert(key, count);
        }
        counts
    }
}

impl Serialize for KeyCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, count) in &self.0 {
            map.serialize_entry(key.as_str(), count)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for KeyCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Counts;
        impl<'de> Visitor<'de> for Counts {
            type Value = KeyCounts;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of keys to counts")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<KeyCounts, A::Error> {
                let mut counts = KeyCounts::default();
                while let Some((key, count)) = access.next_entry::<Label, u64>()? {
                    counts.insert(key, count);
                }
                Ok(counts)
            }
        }
        deserializer.deserialize_map(Counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(s: &str) -> Label {
        Label::from(s).unwrap()
    }

    #[test]
    fn keys_stay_sorted_and_serialize_like_a_btree_map() {
        let mut counts = KeyCounts::default();
        for key in ["smg", "ak", "smg", "zz", "ak", "smg"] {
            counts.bump(label(key));
        }
        counts.insert(label("bow"), 7);
        let expected: std::collections::BTreeMap<&str, u64> =
            [("ak", 2), ("bow", 7), ("smg", 3), ("zz", 1)].into();
        assert_eq!(
            serde_json::to_string(&counts).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        assert_eq!(
            rmp_serde::to_vec(&counts).unwrap(),
            rmp_serde::to_vec(&expected).unwrap()
        );
        let back: KeyCounts =
            rmp_serde::from_slice(&rmp_serde::to_vec(&expected).unwrap()).unwrap();
        assert_eq!(back, counts);
        assert_eq!(
            (counts.get(&label("smg")), counts.get(&label("x"))),
            (Some(3), None)
        );
        assert_eq!(counts[&label("bow")], 7);
    }
}
