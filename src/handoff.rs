//! [`Handoff`]: the deltas this replica published itself, passed in memory from its
//! command side to its projector, so the projector does not decode what it encoded.
//!
//! The deltas stream stays the order and the truth: the projector still reads every
//! message from the stream, and a hand-off only stands in for decoding one. A delta is
//! kept under the stream sequence its publish acknowledgement gave (a duplicate's is not
//! kept: the stream holds the earlier message under that sequence), and taken when the
//! projector reads that sequence. A sequence the projector has already read is refused
//! (its acknowledgement arrived after the projector read it), and reading a sequence drops
//! whatever is kept below it. Bounded by the changes kept: when the projector lags
//! further behind, the publishers keep nothing more and the projector decodes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use match_stats_commands::StatDelta;

/// How many changes the hand-off keeps at most (about 184 bytes each in memory), by
/// default: about 12 MB.
pub const DEFAULT_CAPACITY_CHANGES: usize = 65_536;

/// See the module.
#[derive(Debug)]
pub struct Handoff {
    capacity_changes: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The last stream sequence the projector read.
    read_to: u64,
    /// Kept deltas by stream sequence, all above `read_to`.
    kept: BTreeMap<u64, Arc<StatDelta>>,
    /// The changes they hold.
    changes: usize,
}

fn changes_of(delta: &StatDelta) -> usize {
    weight(delta.change_count())
}

/// What a delta of `changes` changes takes of a hand-off's room: its changes and one for
/// itself.
pub fn weight(changes: usize) -> usize {
    changes + 1
}

impl Default for Handoff {
    fn default() -> Self {
        Handoff::new(DEFAULT_CAPACITY_CHANGES)
    }
}

impl Handoff {
    /// A hand-off keeping at most `capacity_changes` changes (0: none, the projector
    /// decodes everything).
    pub fn new(capacity_changes: usize) -> Self {
        Handoff {
            capacity_changes,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing here can panic midway through an update; a poisoned lock is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many changes the hand-off can still keep ([`weight`]): a publisher copies
    /// no more of its deltas for the projector than that (a copy the hand-off would
    /// refuse is work thrown away).
    pub fn room(&self) -> usize {
        self.capacity_changes.saturating_sub(self.state().changes)
    }

    /// Keeps `delta`, stored at `sequence` of the deltas stream; refused when the
    /// projector has read that far already or there is no room.
    pub fn put(&self, sequence: u64, delta: Arc<StatDelta>) {
        let mut state = self.state();
        let changes = changes_of(&delta);
        if sequence <= state.read_to || state.changes + changes > self.capacity_changes {
            return;
        }
        if let Some(replaced) = state.kept.insert(sequence, delta) {
            state.changes -= changes_of(&replaced);
        }
        state.changes += changes;
    }

    /// The projector reads `sequence`: the delta kept for it, if any; whatever was kept
    /// below it is dropped (it will never be read).
    pub fn take(&self, sequence: u64) -> Option<Arc<StatDelta>> {
        let mut state = self.state();
        state.read_to = state.read_to.max(sequence);
        let mut taken = None;
        while let Some(first) = state.kept.first_entry()
            && *first.key() <= sequence
        {
            let (at, delta) = first.remove_entry();
            state.changes -= changes_of(&delta);
            if at == sequence {
                taken = Some(delta);
            }
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use match_stats_commands::{Change, DeltaEntry, EventId, Field, FieldValue, MatchId};

    fn delta(changes: usize) -> Arc<StatDelta> {
        let change = Change {
            player_id: None,
            field: Field::TotalKills,
            key: None,
            before: FieldValue::Int(0),
            after: FieldValue::Int(1),
        };
        Arc::new(StatDelta {
            match_id: MatchId::parse("m-1").expect("an id"),
            entries: vec![DeltaEntry {
                version: 1,
                event_id: EventId::parse("e-1").expect("an id"),
                stream_sequence: 1,
                timestamp: 0,
                changes: vec![change; changes],
                part: 0,
                parts: 1,
            }],
            match_view: None,
        })
    }

    #[test]
    fn a_kept_delta_is_taken_once_at_its_sequence() {
        let handoff = Handoff::new(100);
        handoff.put(5, delta(2));
        handoff.put(7, delta(2));
        assert!(handoff.take(4).is_none());
        assert_eq!(handoff.take(5).map(|d| d.entries[0].changes.len()), Some(2));
        assert!(handoff.take(5).is_none(), "taken once");
        // 6 passes nothing; 7 is still there.
        assert!(handoff.take(6).is_none());
        assert!(handoff.take(7).is_some());
    }

    #[test]
    fn what_the_projector_passed_is_dropped_and_refused() {
        let handoff = Handoff::new(100);
        handoff.put(3, delta(1));
        assert!(handoff.take(10).is_none(), "3 was passed over");
        assert_eq!(handoff.state().changes, 0, "and dropped");
        // An acknowledgement that arrives after the projector read its sequence.
        handoff.put(9, delta(1));
        assert!(handoff.state().kept.is_empty());
        handoff.put(11, delta(1));
        assert!(handoff.take(11).is_some());
    }

    #[test]
    fn it_keeps_no_more_than_its_capacity() {
        // Each delta counts its changes and one for itself.
        let handoff = Handoff::new(10);
        handoff.put(1, delta(4));
        assert_eq!(handoff.room(), 5);
        handoff.put(2, delta(4));
        assert_eq!(handoff.room(), 0);
        handoff.put(3, delta(1));
        assert!(handoff.take(3).is_none(), "no room for it");
        assert!(Handoff::new(0).state().kept.is_empty());
        assert_eq!(Handoff::new(0).room(), 0);
        // Taking frees room.
        let handoff = Handoff::new(10);
        handoff.put(1, delta(4));
        handoff.put(2, delta(4));
        handoff.take(1);
        assert_eq!(handoff.room(), 5);
    }
}
