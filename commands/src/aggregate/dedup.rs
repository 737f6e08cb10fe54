//! [`DedupWindow`]: the last [`DEDUP_WINDOW`] applied event ids of a match, to drop
//! duplicates (contract section 3).

use std::collections::{HashSet, VecDeque};
use std::hash::Hasher;

use siphasher::sip::SipHasher13;

use super::DEDUP_WINDOW;
use crate::event::Event;

/// The last [`DEDUP_WINDOW`] applied `event_id`s, as 64-bit SipHash fingerprints with
/// fixed keys (stable across restarts and versions). Two different ids share a
/// fingerprint with a chance of about 1 in 4.5e15 per event.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(from = "VecDeque<u64>", into = "VecDeque<u64>")]
pub(super) struct DedupWindow {
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
    pub(super) fn fingerprint(event: &Event) -> u64 {
        let mut hasher = SipHasher13::new_with_keys(0x6d61_7463_685f_7374, 0x6174_735f_6465_6475);
        hasher.write(event.event_id.as_str().as_bytes());
        hasher.finish()
    }

    pub(super) fn contains(&self, fingerprint: u64) -> bool {
        self.members.contains(&fingerprint)
    }

    pub(super) fn insert(&mut self, fingerprint: u64) {
        if self.order.len() == DEDUP_WINDOW
            && let Some(oldest) = self.order.pop_front()
        {
            self.members.remove(&oldest);
        }
        self.order.push_back(fingerprint);
        self.members.insert(fingerprint);
    }
}
