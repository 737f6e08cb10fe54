//! The [`Recorder`]: every mutation of a stored field, and the [`Change`] it records, in
//! one step, so the delta and the state cannot disagree.

use super::{MAX_KEYS, OTHER_KEY};
use crate::delta::{Change, Field, FieldValue};
use crate::id::{Label, PlayerId};
use crate::key_counts::KeyCounts;

/// Room for the changes of a typical event (a damage or a kill makes 5 to 9): a larger
/// one grows its list, and a list handed back keeps the room it grew to, so in steady
/// state nothing reallocates. (Every list of a batch is held until its deltas are
/// confirmed, so room for the largest event in each would cost megabytes.)
pub const CHANGES_CAPACITY: usize = 10;

/// Records each stored field's change as it is made.
pub(super) struct Recorder {
    changes: Vec<Change>,
}

impl Recorder {
    /// Records into `buffer` (emptied first): a buffer handed back from an earlier
    /// event's delta costs no allocation; an empty one gets room for a typical event's
    /// changes.
    pub(super) fn new(mut buffer: Vec<Change>) -> Self {
        buffer.clear();
        buffer.reserve(CHANGES_CAPACITY);
        Recorder { changes: buffer }
    }

    /// The changes, in the order they were made.
    pub(super) fn into_changes(self) -> Vec<Change> {
        self.changes
    }

    pub(super) fn set<T>(
        &mut self,
        player_id: Option<PlayerId>,
        field: Field,
        slot: &mut T,
        value: T,
    ) where
        T: PartialEq + Clone + Into<FieldValue>,
    {
        if *slot != value {
            let before = std::mem::replace(slot, value.clone());
            self.changes.push(Change {
                player_id,
                field,
                key: None,
                before: before.into(),
                after: value.into(),
            });
        }
    }

    pub(super) fn update<T>(
        &mut self,
        player_id: Option<PlayerId>,
        field: Field,
        slot: &mut T,
        f: impl FnOnce(&T) -> T,
    ) where
        T: PartialEq + Clone + Into<FieldValue>,
    {
        let value = f(slot);
        self.set(player_id, field, slot, value);
    }

    pub(super) fn add(
        &mut self,
        player_id: Option<PlayerId>,
        field: Field,
        slot: &mut u64,
        by: u64,
    ) {
        self.update(player_id, field, slot, |v| v + by);
    }

    pub(super) fn add_f64(
        &mut self,
        player_id: Option<PlayerId>,
        field: Field,
        slot: &mut f64,
        by: f64,
    ) {
        self.update(player_id, field, slot, |v| v + by);
    }

    pub(super) fn bump_key(
        &mut self,
        player_id: Option<PlayerId>,
        field: Field,
        map: &mut KeyCounts,
        key: Label,
    ) {
        // At most MAX_KEYS distinct keys besides "other": a new key past them counts
        // under "other" (contract section 3, Limits).
        let other = Label::from(OTHER_KEY).expect("short");
        let key = if map.contains_key(&key)
            || map.len() - usize::from(map.contains_key(&other)) < MAX_KEYS
        {
            key
        } else {
            other
        };
        let count = map.bump(key);
        self.changes.push(Change {
            player_id,
            field,
            key: Some(key),
            before: if count == 1 {
                FieldValue::Null
            } else {
                (count - 1).into()
            },
            after: count.into(),
        });
    }
}
