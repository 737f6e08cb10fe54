//! [`DedupWindow`]: the last [`DEDUP_WINDOW`] applied event ids of a match, to drop
//! duplicates (contract section 3).

use std::collections::VecDeque;
use std::hash::Hasher;

use hashbrown::HashTable;
use siphasher::sip::SipHasher13;

use super::DEDUP_WINDOW;
use crate::event::Event;

/// The last [`DEDUP_WINDOW`] applied `event_id`s, as 64-bit SipHash fingerprints with
/// fixed keys (stable across restarts and versions). Two different ids share a
/// fingerprint with a chance of about 1 in 4.5e15 per event.
///
/// The fingerprints sit in a ring, oldest first; an index of 2-byte ring slots, hashed by
/// the fingerprint itself (already a hash), finds one. A full window takes about 56 KB
/// (a set of the fingerprints beside the ring took twice that).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(from = "VecDeque<u64>", into = "VecDeque<u64>")]
pub(super) struct DedupWindow {
    /// Fingerprints; once [`DEDUP_WINDOW`] long, `oldest` is where the next one goes.
    ring: Vec<u64>,
    oldest: usize,
    /// Ring slots, by fingerprint.
    index: HashTable<u16>,
}

const _: () = assert!(DEDUP_WINDOW <= u16::MAX as usize + 1);

impl From<VecDeque<u64>> for DedupWindow {
    fn from(order: VecDeque<u64>) -> Self {
        let mut window = DedupWindow::default();
        for fingerprint in order {
            window.insert(fingerprint);
        }
        window
    }
}

impl From<DedupWindow> for VecDeque<u64> {
    fn from(window: DedupWindow) -> Self {
        let (newer, older) = window.ring.split_at(window.oldest);
        older.iter().chain(newer).copied().collect()
    }
}

impl DedupWindow {
    pub(super) fn fingerprint(event: &Event) -> u64 {
        let mut hasher = SipHasher13::new_with_keys(0x6d61_7463_685f_7374, 0x6174_735f_6465_6475);
        hasher.write(event.event_id.as_str().as_bytes());
        hasher.finish()
    }

    pub(super) fn contains(&self, fingerprint: u64) -> bool {
        self.index
            .find(fingerprint, |&slot| {
                self.ring[usize::from(slot)] == fingerprint
            })
            .is_some()
    }

    pub(super) fn insert(&mut self, fingerprint: u64) {
        let slot = if self.ring.len() < DEDUP_WINDOW {
            self.ring.push(fingerprint);
            self.ring.len() - 1
        } else {
            let slot = self.oldest;
            let evicted = self.ring[slot];
            if let Ok(entry) = self.index.find_entry(evicted, |&s| usize::from(s) == slot) {
                entry.remove();
            }
            self.ring[slot] = fingerprint;
            self.oldest = (slot + 1) % DEDUP_WINDOW;
            slot
        };
        let ring = &self.ring;
        self.index
            .insert_unique(fingerprint, slot as u16, |&s| ring[usize::from(s)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_holds_exactly_the_last_ids_and_round_trips_oldest_first() {
        let mut window = DedupWindow::default();
        let total = DEDUP_WINDOW as u64 + 1000;
        for n in 0..total {
            window.insert(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        let first_kept = total - DEDUP_WINDOW as u64;
        for n in 0..total {
            assert_eq!(
                window.contains(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                n >= first_kept,
                "id {n}"
            );
        }
        let order: VecDeque<u64> = window.clone().into();
        assert_eq!(order.len(), DEDUP_WINDOW);
        assert_eq!(order[0], first_kept.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let back = DedupWindow::from(order.clone());
        assert_eq!(VecDeque::from(back), order);
    }
}
