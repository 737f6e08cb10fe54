//! Formats 2 and 3 written straight with `rmp`'s encoding functions: format 2 byte for
//! byte what `rmp_serde::to_vec_named` writes for a [`StatDeltaRef`] (the tests compare
//! the two on generated deltas and on every delta of the contract's scenarios), without
//! serde's dispatch per field, and with each map key written as a constant; format 3 the
//! same with entries and changes as arrays of their fields. The writer encodes every
//! delta it publishes: its hot path.

use rmp::encode as mp;

use super::{Change, DeltaEntry, FieldValue, Format, StatDeltaRef};
use crate::stats::FirstBlood;

/// A map key as MessagePack writes it: a fixstr (keys are under 32 bytes).
macro_rules! key {
    ($out:expr, $key:literal) => {{
        const KEY: &[u8] = $key.as_bytes();
        const _: () = assert!(KEY.len() < 32, "a fixstr key");
        $out.push(0xa0 | KEY.len() as u8);
        $out.extend_from_slice(KEY);
    }};
}

impl StatDeltaRef<'_> {
    /// Its format-2 encoding: what `rmp_serde::to_vec_named` gives, written directly.
    pub fn to_msgpack(&self) -> Vec<u8> {
        self.encode(Format::Named)
    }

    /// Its encoding in `format`.
    pub fn encode(&self, format: Format) -> Vec<u8> {
        // About 60 bytes a change and 60 an entry in format 2: one allocation for most
        // deltas.
        let mut out = Vec::with_capacity(32 + 64 * (self.change_count() + self.entries.len()));
        write_delta(self, format, &mut out);
        out
    }
}

fn write_delta(delta: &StatDeltaRef<'_>, format: Format, out: &mut Vec<u8>) {
    // Writing into a `Vec` cannot fail: `expect`s below never fire.
    let view = delta.match_view;
    map_len(out, 2 + u32::from(view.is_some()));
    key!(out, "match_id");
    str(out, delta.match_id.as_str());
    key!(out, "entries");
    mp::write_array_len(out, delta.entries.len() as u32).expect("a Vec takes any write");
    for entry in &delta.entries {
        match format {
            Format::Named => write_entry(entry, out),
            Format::Compact => write_entry_array(entry, out),
        }
    }
    if let Some(view) = view {
        key!(out, "match");
        rmp_serde::encode::write_named(out, view).expect("views serialize");
    }
}

fn map_len(out: &mut Vec<u8>, len: u32) {
    mp::write_map_len(out, len).expect("a Vec takes any write");
}

fn str(out: &mut Vec<u8>, s: &str) {
    mp::write_str(out, s).expect("a Vec takes any write");
}

/// A string, or nil for none.
fn str_or_nil(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => str(out, s),
        None => mp::write_nil(out).expect("a Vec takes any write"),
    }
}

fn uint(out: &mut Vec<u8>, n: u64) {
    mp::write_uint(out, n).expect("a Vec takes any write");
}

fn sint(out: &mut Vec<u8>, n: i64) {
    mp::write_sint(out, n).expect("a Vec takes any write");
}

fn write_entry(entry: &DeltaEntry, out: &mut Vec<u8>) {
    // `part` is left out at 0 and `parts` at 1, as their `skip_serializing_if` says.
    let len = 5 + u32::from(entry.part != 0) + u32::from(entry.parts != 1);
    map_len(out, len);
    key!(out, "version");
    uint(out, entry.version);
    key!(out, "event_id");
    str(out, entry.event_id.as_str());
    key!(out, "stream_sequence");
    uint(out, entry.stream_sequence);
    key!(out, "timestamp");
    sint(out, entry.timestamp);
    key!(out, "changes");
    mp::write_array_len(out, entry.changes.len() as u32).expect("a Vec takes any write");
    for change in &entry.changes {
        write_change(change, out);
    }
    if entry.part != 0 {
        key!(out, "part");
        uint(out, entry.part.into());
    }
    if entry.parts != 1 {
        key!(out, "parts");
        uint(out, entry.parts.into());
    }
}

/// An entry as format 3 writes it: `[version, event_id, stream_sequence, timestamp,
/// changes, part, parts]`, each change an array too.
fn write_entry_array(entry: &DeltaEntry, out: &mut Vec<u8>) {
    mp::write_array_len(out, 7).expect("a Vec takes any write");
    uint(out, entry.version);
    str(out, entry.event_id.as_str());
    uint(out, entry.stream_sequence);
    sint(out, entry.timestamp);
    mp::write_array_len(out, entry.changes.len() as u32).expect("a Vec takes any write");
    for change in &entry.changes {
        write_change_array(change, out);
    }
    uint(out, entry.part.into());
    uint(out, entry.parts.into());
}

/// A change as format 3 writes it: `[player_id, field, key, before, after]`.
fn write_change_array(change: &Change, out: &mut Vec<u8>) {
    mp::write_array_len(out, 5).expect("a Vec takes any write");
    str_or_nil(out, change.player_id.as_ref().map(|id| id.as_str()));
    str(out, change.field.name());
    str_or_nil(out, change.key.as_ref().map(|key| key.as_str()));
    write_value(&change.before, out);
    write_value(&change.after, out);
}

fn write_change(change: &Change, out: &mut Vec<u8>) {
    map_len(out, 4 + u32::from(change.key.is_some()));
    key!(out, "player_id");
    str_or_nil(out, change.player_id.as_ref().map(|id| id.as_str()));
    key!(out, "field");
    str(out, change.field.name());
    if let Some(key) = &change.key {
        key!(out, "key");
        str(out, key.as_str());
    }
    key!(out, "before");
    write_value(&change.before, out);
    key!(out, "after");
    write_value(&change.after, out);
}

fn write_value(value: &FieldValue, out: &mut Vec<u8>) {
    match value {
        FieldValue::Null => mp::write_nil(out).expect("a Vec takes any write"),
        FieldValue::Bool(b) => mp::write_bool(out, *b).expect("a Vec takes any write"),
        FieldValue::Int(n) => sint(out, *n),
        FieldValue::Float(f) => mp::write_f64(out, *f).expect("a Vec takes any write"),
        FieldValue::Text(t) => str(out, t.as_str()),
        FieldValue::FirstBlood(fb) => write_first_blood(fb, out),
    }
}

fn write_first_blood(fb: &FirstBlood, out: &mut Vec<u8>) {
    map_len(out, 3);
    key!(out, "killer_id");
    str(out, fb.killer_id.as_str());
    key!(out, "victim_id");
    str(out, fb.victim_id.as_str());
    key!(out, "timestamp");
    sint(out, fb.timestamp);
}

#[cfg(test)]
pub(super) mod tests;
