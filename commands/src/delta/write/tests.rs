//! The direct encoder against `rmp_serde`'s, byte for byte.

use std::borrow::Cow;

use proptest::prelude::*;
use serde::Deserialize;

use super::*;
use crate::delta::{Field, StatDelta};
use crate::id::{EventId, Label, MatchId, PlayerId};
use crate::stats::{MatchStats, PlayerStats};
use crate::view::MatchView;

/// Every variant name serde knows for [`Field`], asked from serde itself: the derive
/// hands its list of variants to the deserializer, which this one keeps.
pub(crate) fn serde_field_names() -> &'static [&'static str] {
    struct Names(std::cell::Cell<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for &Names {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("names only"))
        }
        fn deserialize_enum<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(variants);
            Err(serde::de::Error::custom("names only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
            ignored_any
        }
    }
    let names = Names(std::cell::Cell::new(&[]));
    let _ = Field::deserialize(&names);
    names.0.get()
}

fn field(name: &str) -> Field {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).expect("a field name")
}

#[test]
fn every_fields_name_is_the_one_serde_writes() {
    let names = serde_field_names();
    assert_eq!(names.len(), 41, "{names:?}");
    for &name in names {
        let field = field(name);
        assert_eq!(field.name(), name);
        assert_eq!(serde_json::to_value(field).unwrap(), name);
    }
}

pub(crate) fn id() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_-]{1,64}"
}

pub(crate) fn label() -> impl Strategy<Value = Label> {
    // Any text (control characters and multi-byte ones included) of at most 64 bytes.
    "\\PC{0,20}|[\\x00-\\x1f]{0,3}|[a-z]{0,64}"
        .prop_filter_map("at most 64 bytes", |s| Label::from(&s).ok())
}

pub(crate) fn value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        Just(FieldValue::Null),
        any::<bool>().prop_map(FieldValue::Bool),
        any::<i64>().prop_map(FieldValue::Int),
        prop_oneof![-200i64..200, Just(i64::MIN), Just(i64::MAX)].prop_map(FieldValue::Int),
        any::<f64>().prop_map(FieldValue::Float),
        label().prop_map(FieldValue::from),
        (id(), id(), any::<i64>()).prop_map(|(k, v, timestamp)| {
            FieldValue::from(FirstBlood {
                killer_id: PlayerId::parse(&k).unwrap(),
                victim_id: PlayerId::parse(&v).unwrap(),
                timestamp,
            })
        }),
    ]
}

pub(crate) fn change() -> impl Strategy<Value = Change> {
    let names = serde_field_names();
    (
        proptest::option::of(id()),
        0..names.len(),
        proptest::option::of(label()),
        value(),
        value(),
    )
        .prop_map(move |(player, f, key, before, after)| Change {
            player_id: player.map(|p| PlayerId::parse(&p).unwrap()),
            field: field(names[f]),
            key,
            before,
            after,
        })
}

pub(crate) fn entry() -> impl Strategy<Value = DeltaEntry> {
    (
        prop_oneof![0u64..300, any::<u64>()],
        id(),
        any::<u64>(),
        any::<i64>(),
        proptest::collection::vec(change(), 0..12),
        prop_oneof![Just(0u32), 0u32..4, any::<u32>()],
        prop_oneof![Just(1u32), 0u32..4, any::<u32>()],
    )
        .prop_map(
            |(version, event, stream_sequence, timestamp, changes, part, parts)| DeltaEntry {
                version,
                event_id: EventId::parse(&event).unwrap(),
                stream_sequence,
                timestamp,
                changes,
                part,
                parts,
            },
        )
}

pub(crate) fn view(match_id: MatchId) -> MatchView {
    let stats = MatchStats {
        map_name: Label::from("de_dust2").ok(),
        total_kills: 3,
        ..MatchStats::default()
    };
    let players = [(PlayerId::parse("p-1").unwrap(), PlayerStats::default())];
    MatchView::render(
        match_id,
        &stats,
        Some(players.iter().map(|(id, p)| (id, p))),
    )
}

/// A delta message of `match_id` over `entries`, with the match object `view`.
pub(crate) fn message<'a>(
    match_id: MatchId,
    entries: &'a [DeltaEntry],
    view: Option<&'a MatchView>,
) -> StatDeltaRef<'a> {
    StatDeltaRef {
        match_id,
        entries: entries.iter().map(Cow::Borrowed).collect(),
        match_view: view,
    }
}

proptest! {
    #[test]
    fn a_delta_encodes_to_the_bytes_rmp_serde_writes_and_reads_back_from_format_3(
        match_id in id(),
        entries in proptest::collection::vec(entry(), 0..6),
        with_view in any::<bool>(),
    ) {
        let match_id = MatchId::parse(&match_id).unwrap();
        let view = with_view.then(|| view(match_id));
        let delta = message(match_id, &entries, view.as_ref());
        let direct = delta.to_msgpack();
        prop_assert_eq!(&direct, &rmp_serde::to_vec_named(&delta).unwrap());
        // And it reads back as the delta it was (NaN aside, which equals nothing).
        let read: StatDelta = rmp_serde::from_slice(&direct).unwrap();
        let has_nan = entries.iter().flat_map(|e| &e.changes).any(|c| {
            [&c.before, &c.after].iter().any(|v| matches!(v, FieldValue::Float(f) if f.is_nan()))
        });
        if !has_nan {
            prop_assert_eq!(read, delta.to_owned_delta());
        }
        // Format 3: serde reads the structs from its arrays in field order, the same
        // delta (compared as format 2's bytes, so a NaN equals itself), in fewer bytes.
        let compact = delta.encode(Format::Compact);
        let read: StatDelta = rmp_serde::from_slice(&compact).unwrap();
        prop_assert_eq!(&rmp_serde::to_vec_named(&read).unwrap(), &direct);
        if entries.iter().any(|e| !e.changes.is_empty()) {
            prop_assert!(compact.len() < direct.len(), "{} against {}", compact.len(), direct.len());
        }
    }
}
