//! How a snapshot value is written: a versioned envelope, so that a record of another
//! version or a corrupt one is recognised as such (and set aside) instead of stopping a
//! partition.
//!
//! A value is `MSS2`, a kind byte, then:
//! - `I`: LZ4 (size prepended) of the MessagePack of `{rules, value}`: the record or
//!   marker inline, with the version of the rules that built it;
//! - `O`: the MessagePack of an [`ObjectRef`]: a record too large for a key-value value,
//!   kept in the records object store (the object holds what `I` would).
//!
//! A value without the magic is the first format (LZ4 of the bare MessagePack, rules 1),
//! still read. Decompression is bounded: a value claiming more than [`MAX_DECODED_BYTES`]
//! is unreadable, not allocated.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The envelope's magic (format 2).
const MAGIC: &[u8; 4] = b"MSS2";
const INLINE: u8 = b'I';
const OBJECT: u8 = b'O';
/// The rules version of values written before rules versions were recorded.
pub const FIRST_RULES: u32 = 1;
/// Records larger than this, encoded, go to the records object store (a key-value value
/// must fit one NATS message).
pub const INLINE_LIMIT: usize = 256 * 1024;
/// Largest record a value may decode to.
pub const MAX_DECODED_BYTES: usize = 512 << 20;

/// A value that cannot be read: junk, another format, or a record that does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable snapshot value: {0}")]
pub struct Unreadable(pub String);

fn unreadable(e: impl std::fmt::Display) -> Unreadable {
    Unreadable(e.to_string())
}

#[derive(Serialize, Deserialize)]
struct Stamped<T> {
    rules: u32,
    value: T,
}

/// Where a large record is: its name in the records object store and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The object's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What a key-value value holds.
#[derive(Debug)]
pub enum Body<T> {
    /// The value itself and the rules version that built it.
    Inline(T, u32),
    /// A reference to the records object store.
    Object(ObjectRef),
}

/// The inline form of a value built by rules version `rules`: what a key holds, or an
/// object holds for a large record.
pub fn encode<T: Serialize>(value: &T, rules: u32) -> Bytes {
    let packed = rmp_serde::to_vec_named(&Stamped { rules, value }).expect("snapshots serialize");
    let mut out = Vec::with_capacity(packed.len() / 2 + 8);
    out.extend_from_slice(MAGIC);
    out.push(INLINE);
    out.extend(lz4_flex::compress_prepend_size(&packed));
    out.into()
}

/// The key-value value pointing at an object.
pub fn encode_ref(object: &ObjectRef) -> Bytes {
    let mut out = MAGIC.to_vec();
    out.push(OBJECT);
    out.extend(rmp_serde::to_vec_named(object).expect("references serialize"));
    out.into()
}

fn decompress(packed: &[u8]) -> Result<Vec<u8>, Unreadable> {
    let claimed = packed
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| Unreadable("too short".into()))?;
    if claimed > MAX_DECODED_BYTES {
        return Err(Unreadable(format!("claims {claimed} bytes")));
    }
    lz4_flex::decompress_size_prepended(packed).map_err(unreadable)
}

/// Reads a key-value value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<Body<T>, Unreadable> {
    match bytes.strip_prefix(MAGIC.as_slice()) {
        Some([INLINE, rest @ ..]) => {
            let stamped: Stamped<T> =
                rmp_serde::from_slice(&decompress(rest)?).map_err(unreadable)?;
            Ok(Body::Inline(stamped.value, stamped.rules))
        }
        Some([OBJECT, rest @ ..]) => Ok(Body::Object(
            rmp_serde::from_slice(rest).map_err(unreadable)?,
        )),
        Some(_) => Err(Unreadable("unknown kind".into())),
        None => {
            let value = rmp_serde::from_slice(&decompress(bytes)?).map_err(unreadable)?;
            Ok(Body::Inline(value, FIRST_RULES))
        }
    }
}

/// Reads an object's content (the inline form).
pub fn decode_inline<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, u32), Unreadable> {
    match decode(bytes)? {
        Body::Inline(value, rules) => Ok((value, rules)),
        Body::Object(_) => Err(Unreadable("an object refers to another".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_reads_back_with_its_rules_version_and_the_first_format_still_reads() {
        let Body::Inline(v, rules) = decode::<Vec<u32>>(&encode(&vec![1, 2, 3], 7)).unwrap() else {
            panic!("inline")
        };
        assert_eq!((v, rules), (vec![1, 2, 3], 7));
        let first = lz4_flex::compress_prepend_size(&rmp_serde::to_vec_named(&vec![4u32]).unwrap());
        let Body::Inline(v, rules) = decode::<Vec<u32>>(&first).unwrap() else {
            panic!("inline")
        };
        assert_eq!((v, rules), (vec![4], FIRST_RULES));
    }

    #[test]
    fn junk_a_foreign_shape_or_a_bomb_is_unreadable() {
        assert!(decode::<Vec<u32>>(b"0123456789").is_err());
        assert!(
            decode::<Vec<u32>>(&encode(&"text", 2)).is_err(),
            "another shape"
        );
        let mut bomb = MAGIC.to_vec();
        bomb.push(INLINE);
        bomb.extend(u32::MAX.to_le_bytes());
        assert!(decode::<Vec<u32>>(&bomb).unwrap_err().0.contains("claims"));
    }

    #[test]
    fn a_reference_reads_back() {
        let r = ObjectRef {
            name: "match.m.9".into(),
            size: 10,
        };
        assert!(matches!(decode::<Vec<u32>>(&encode_ref(&r)).unwrap(), Body::Object(o) if o == r));
    }
}
