//! The direct reader against `rmp_serde`, on what writers write and on damaged bytes.

use std::borrow::Cow;

use proptest::prelude::*;
use rmp::encode as mp;

use super::*;
use crate::delta::write::tests::{change, entry, id, message, view};
use crate::delta::{Format, StatDeltaRef};

/// What the fast path alone makes of `bytes`, if anything.
fn fast(bytes: &[u8]) -> Option<StatDelta> {
    Reader { buf: bytes }.delta()
}

/// The two readings agree: the fast path, where it reads the bytes, gives what serde
/// gives (compared as their encodings, so a NaN equals itself).
fn agree(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let Some(read) = fast(bytes) else {
        return Ok(false);
    };
    let serde: StatDelta = rmp_serde::from_slice(bytes)
        .map_err(|e| TestCaseError::fail(format!("serde refuses what the fast path read: {e}")))?;
    prop_assert_eq!(
        rmp_serde::to_vec_named(&read).unwrap(),
        rmp_serde::to_vec_named(&serde).unwrap()
    );
    Ok(true)
}

fn is_first_blood(v: &FieldValue) -> bool {
    matches!(v, FieldValue::FirstBlood(_))
}

proptest! {
    #[test]
    fn what_a_writer_wrote_reads_as_serde_reads_it(
        match_id in id(),
        entries in proptest::collection::vec(entry(), 0..6),
        with_view in any::<bool>(),
        format in format(),
    ) {
        let match_id = MatchId::parse(&match_id).unwrap();
        let view = with_view.then(|| view(match_id));
        let delta = message(match_id, &entries, view.as_ref());
        let bytes = delta.encode(format);
        let took_fast = agree(&bytes)?;
        // The fast path takes every delta but those with a first blood or a match object.
        let unusual = with_view
            || entries.iter().flat_map(|e| &e.changes).any(|c| is_first_blood(&c.before) || is_first_blood(&c.after));
        prop_assert_eq!(took_fast, !unusual);
        let read = StatDelta::from_msgpack(&bytes).unwrap();
        prop_assert_eq!(&rmp_serde::to_vec_named(&read).unwrap(), &delta.to_msgpack());
        prop_assert_eq!(StatDelta::carries_match(&bytes), Some(with_view));
    }

    #[test]
    fn damaged_bytes_read_as_serde_reads_them(
        match_id in id(),
        entries in proptest::collection::vec(entry(), 1..3),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        with_view in any::<bool>(),
        format in format(),
    ) {
        let match_id = MatchId::parse(&match_id).unwrap();
        let view = with_view.then(|| view(match_id));
        let mut bytes = message(match_id, &entries, view.as_ref()).encode(format);
        for (at, byte) in damage {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        agree(&bytes)?;
        // Said not to carry the match object: serde finds none either (or refuses).
        if StatDelta::carries_match(&bytes) == Some(false) {
            prop_assert!(rmp_serde::from_slice::<StatDelta>(&bytes).map_or(true, |d| d.match_view.is_none()));
        }
        // And the public reading is serde's, error or not.
        match (StatDelta::from_msgpack(&bytes), rmp_serde::from_slice::<StatDelta>(&bytes)) {
            (Ok(a), Ok(b)) => prop_assert_eq!(rmp_serde::to_vec_named(&a).unwrap(), rmp_serde::to_vec_named(&b).unwrap()),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "{a:?} against {b:?}"),
        }
    }

    #[test]
    fn a_change_of_any_kind_reads_back(change in change()) {
        let entry = DeltaEntry { version: 1, event_id: EventId::parse("e").unwrap(), stream_sequence: 1, timestamp: 0, changes: vec![change], part: 0, parts: 1 };
        let delta = StatDeltaRef { match_id: MatchId::parse("m").unwrap(), entries: vec![Cow::Owned(entry)], match_view: None };
        agree(&delta.to_msgpack())?;
        agree(&delta.encode(Format::Compact))?;
    }
}

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![Just(Format::Named), Just(Format::Compact)]
}

/// Another encoder's widths: integers in wider forms than needed, a positive number as a
/// signed one, a float as f32, keys in another order, a nil match object.
#[test]
fn other_encoders_widths_and_orders_read_as_serde_reads_them() {
    let mut b = Vec::new();
    mp::write_map_len(&mut b, 3).unwrap();
    mp::write_str(&mut b, "match").unwrap();
    mp::write_nil(&mut b).unwrap();
    mp::write_str(&mut b, "entries").unwrap();
    mp::write_array_len(&mut b, 1).unwrap();
    mp::write_map_len(&mut b, 7).unwrap();
    mp::write_str(&mut b, "parts").unwrap();
    mp::write_u64(&mut b, 2).unwrap();
    mp::write_str(&mut b, "timestamp").unwrap();
    mp::write_i8(&mut b, 5).unwrap();
    mp::write_str(&mut b, "changes").unwrap();
    mp::write_array_len(&mut b, 3).unwrap();
    for (value, player) in [(0, true), (1, false), (2, true)] {
        mp::write_map_len(&mut b, 5).unwrap();
        mp::write_str(&mut b, "after").unwrap();
        match value {
            0 => mp::write_f32(&mut b, 1.5).unwrap(),
            1 => mp::write_u64(&mut b, u64::MAX).unwrap(),
            _ => mp::write_i16(&mut b, -3).unwrap(),
        }
        mp::write_str(&mut b, "field").unwrap();
        mp::write_str(&mut b, "kills").unwrap();
        mp::write_str(&mut b, "key").unwrap();
        mp::write_nil(&mut b).unwrap();
        mp::write_str(&mut b, "player_id").unwrap();
        if player {
            mp::write_str(&mut b, "p-1").unwrap();
        } else {
            mp::write_nil(&mut b).unwrap();
        }
        mp::write_str(&mut b, "before").unwrap();
        mp::write_u32(&mut b, 7).unwrap();
    }
    mp::write_str(&mut b, "version").unwrap();
    mp::write_u16(&mut b, 9).unwrap();
    mp::write_str(&mut b, "event_id").unwrap();
    mp::write_str(&mut b, "e-9").unwrap();
    mp::write_str(&mut b, "stream_sequence").unwrap();
    mp::write_i64(&mut b, 12).unwrap();
    mp::write_str(&mut b, "part").unwrap();
    mp::write_u8(&mut b, 1).unwrap();
    mp::write_str(&mut b, "match_id").unwrap();
    mp::write_str(&mut b, "m-1").unwrap();
    let read = fast(&b).expect("the fast path reads it");
    assert_eq!(
        Ok(read.clone()),
        rmp_serde::from_slice::<StatDelta>(&b).map_err(|e| e.to_string())
    );
    assert_eq!(
        read.entries[0].changes[1].after,
        FieldValue::Float(u64::MAX as f64)
    );
    assert_eq!(read.entries[0].changes[0].after, FieldValue::Float(1.5));
    // An unknown key, a key written as a field index: serde's call, the same result.
    for extra in ["unknown", "entries"] {
        let mut b2 = b.clone();
        b2[0] = 0x84;
        mp::write_str(&mut b2, extra).unwrap();
        mp::write_u8(&mut b2, 1).unwrap();
        assert!(fast(&b2).is_none());
        assert_eq!(
            StatDelta::from_msgpack(&b2).map_err(|e| e.to_string()),
            rmp_serde::from_slice::<StatDelta>(&b2).map_err(|e| e.to_string())
        );
    }
}

#[test]
fn every_field_reads_from_its_name() {
    for &name in crate::delta::write::tests::serde_field_names() {
        assert_eq!(Field::from_name(name).map(Field::name), Some(name));
    }
    assert_eq!(Field::from_name("Kills"), None);
}

/// Integers out of their field's range are serde's to refuse: a negative version, a
/// timestamp past i64, a part past u32.
#[test]
fn integers_out_of_range_read_as_serde_reads_them() {
    type Value = dyn Fn(&mut Vec<u8>);
    let write = |key: &str, value: &Value| {
        let mut b = Vec::new();
        mp::write_map_len(&mut b, 2).unwrap();
        mp::write_str(&mut b, "match_id").unwrap();
        mp::write_str(&mut b, "m").unwrap();
        mp::write_str(&mut b, "entries").unwrap();
        mp::write_array_len(&mut b, 1).unwrap();
        mp::write_map_len(&mut b, 6).unwrap();
        for (k, v) in [
            ("version", 1u64),
            ("stream_sequence", 2),
            ("timestamp", 3),
            ("part", 0),
        ] {
            mp::write_str(&mut b, k).unwrap();
            if k == key {
                value(&mut b);
            } else {
                mp::write_uint(&mut b, v).unwrap();
            }
        }
        mp::write_str(&mut b, "event_id").unwrap();
        mp::write_str(&mut b, "e").unwrap();
        mp::write_str(&mut b, "changes").unwrap();
        mp::write_array_len(&mut b, 0).unwrap();
        b
    };
    let cases: [(&str, &Value); 5] = [
        ("version", &|b| drop(mp::write_sint(b, -1))),
        ("stream_sequence", &|b| drop(mp::write_i64(b, -7))),
        ("timestamp", &|b| drop(mp::write_u64(b, u64::MAX))),
        ("part", &|b| drop(mp::write_u64(b, u64::from(u32::MAX) + 1))),
        ("part", &|b| drop(mp::write_f64(b, 1.0))),
    ];
    for (key, value) in cases {
        let bytes = write(key, value);
        assert!(fast(&bytes).is_none(), "{key}");
        assert!(rmp_serde::from_slice::<StatDelta>(&bytes).is_err(), "{key}");
        assert!(StatDelta::from_msgpack(&bytes).is_err(), "{key}");
    }
    // In range, the same bytes' shape reads on the fast path.
    assert!(fast(&write("part", &|b| drop(mp::write_i8(b, 2)))).is_some());
}
