//! A borrowed view of a decoded payload: MessagePack read in place (strings are slices of
//! the payload, numbers read where they lie, maps walked again on each lookup), or a
//! parsed JSON object. The rules in [`super`] read both through this one view, so the
//! two encodings cannot drift apart, and a MessagePack event is decoded without a single
//! heap allocation.

use rmp::Marker;

/// Deepest nesting of maps and arrays, the root map counting as 1 (the same limit for
/// MessagePack and JSON; no event needs more than 2).
pub const MAX_NESTING: usize = 32;

/// One value of the payload.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Nil,
    Bool(bool),
    Int(Int),
    F32(f32),
    F64(f64),
    /// Valid UTF-8 (checked for the whole payload before any lookup).
    Str(&'a str),
    Bin,
    Array,
    Map(Map<'a>),
    Ext(i8, &'a [u8]),
}

/// An integer as MessagePack holds it: unsigned, or negative.
#[derive(Debug, Clone, Copy)]
pub enum Int {
    U(u64),
    I(i64),
}

impl Int {
    pub fn as_u64(self) -> Option<u64> {
        match self {
            Int::U(u) => Some(u),
            Int::I(i) => u64::try_from(i).ok(),
        }
    }

    pub fn as_i128(self) -> i128 {
        match self {
            Int::U(u) => u.into(),
            Int::I(i) => i.into(),
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Int::U(u) => u as f64,
            Int::I(i) => i as f64,
        }
    }
}

impl std::fmt::Display for Int {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Int::U(u) => u.fmt(f),
            Int::I(i) => i.fmt(f),
        }
    }
}

/// A map: its entries in MessagePack (`len` pairs at the start of `body`), or a JSON
/// object.
#[derive(Debug, Clone, Copy)]
pub enum Map<'a> {
    Packed { body: &'a [u8], len: u32 },
    Json(&'a serde_json::Map<String, serde_json::Value>),
}

/// Most string keys of a map indexed at once (no event has more than 7); a larger map is
/// searched in place on each lookup.
const INDEXED_KEYS: usize = 16;

/// A map's string keys and their values, read once; other keys are left out.
pub struct Index<'a> {
    map: Map<'a>,
    entries: Option<arrayvec::ArrayVec<(&'a str, Value<'a>), INDEXED_KEYS>>,
}

impl<'a> Index<'a> {
    pub fn new(map: Map<'a>) -> Self {
        let entries = match map {
            Map::Packed { .. } => {
                let mut entries = arrayvec::ArrayVec::new();
                let fits = map
                    .packed_entries()
                    .all(|entry| entries.try_push(entry).is_ok());
                fits.then_some(entries)
            }
            Map::Json(_) => None,
        };
        Index { map, entries }
    }

    /// The value of a string key, the last one when a key repeats (as in JSON).
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        match &self.entries {
            Some(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v),
            None => self.map.get(key),
        }
    }
}

impl<'a> Map<'a> {
    /// The value of a string key, the last one when a key repeats (as in JSON); other
    /// keys are ignored.
    pub fn get(self, key: &str) -> Option<Value<'a>> {
        match self {
            Map::Packed { .. } => self
                .packed_entries()
                .filter(|(k, _)| *k == key)
                .last()
                .map(|(_, v)| v),
            Map::Json(map) => map.get(key).map(json),
        }
    }

    /// A MessagePack map's string keys and their values, in order (none for JSON).
    fn packed_entries(self) -> impl Iterator<Item = (&'a str, Value<'a>)> {
        let (mut rest, len) = match self {
            Map::Packed { body, len } => (body, len),
            Map::Json(_) => (&[][..], 0),
        };
        // The payload was walked whole before: reading it again cannot fail.
        (0..len)
            .map_while(move |_| Some((read(&mut rest, 1).ok()?, read(&mut rest, 1).ok()?)))
            .filter_map(|(k, v)| match k {
                Value::Str(k) => Some((k, v)),
                _ => None,
            })
    }
}

/// Why a MessagePack payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("it ends inside a value")]
    Truncated,
    #[error("reserved marker 0xc1")]
    Reserved,
    #[error("a string is not valid UTF-8")]
    Utf8,
    #[error("nested deeper than {MAX_NESTING}")]
    TooDeep,
    #[error("{0} bytes after the MessagePack value")]
    Trailing(usize),
}

/// The payload's root value, after walking all of it: every length inside the payload,
/// every string valid UTF-8, nesting within [`MAX_NESTING`], nothing after the value.
pub fn read_root(payload: &[u8]) -> Result<Value<'_>, PackError> {
    let mut rest = payload;
    let value = read(&mut rest, 1)?;
    if !rest.is_empty() {
        return Err(PackError::Trailing(rest.len()));
    }
    Ok(value)
}

/// Reads one value at nesting `depth` (of the containers around it, plus one) and moves
/// `rest` past it, walking (and checking) what a map or array holds.
fn read<'a>(rest: &mut &'a [u8], depth: usize) -> Result<Value<'a>, PackError> {
    use Marker as M;
    let marker = Marker::from_u8(take::<1>(rest)?[0]);
    // The length of a string, binary, array, map or extension, wherever it is written.
    let len: usize = match marker {
        M::FixStr(n) => n.into(),
        M::FixArray(n) | M::FixMap(n) => n.into(),
        M::FixExt1 => 1,
        M::FixExt2 => 2,
        M::FixExt4 => 4,
        M::FixExt8 => 8,
        M::FixExt16 => 16,
        M::Str8 | M::Bin8 | M::Ext8 => take::<1>(rest)?[0].into(),
        M::Str16 | M::Bin16 | M::Array16 | M::Map16 | M::Ext16 => {
            u16::from_be_bytes(take(rest)?).into()
        }
        M::Str32 | M::Bin32 | M::Array32 | M::Map32 | M::Ext32 => {
            usize::try_from(u32::from_be_bytes(take(rest)?)).map_err(|_| PackError::Truncated)?
        }
        _ => 0,
    };
    Ok(match marker {
        M::Null => Value::Nil,
        M::True => Value::Bool(true),
        M::False => Value::Bool(false),
        M::FixPos(n) => Value::Int(Int::U(n.into())),
        M::FixNeg(n) => Value::Int(Int::I(n.into())),
        M::U8 => Value::Int(Int::U(u8::from_be_bytes(take(rest)?).into())),
        M::U16 => Value::Int(Int::U(u16::from_be_bytes(take(rest)?).into())),
        M::U32 => Value::Int(Int::U(u32::from_be_bytes(take(rest)?).into())),
        M::U64 => Value::Int(Int::U(u64::from_be_bytes(take(rest)?))),
        M::I8 => signed(i8::from_be_bytes(take(rest)?).into()),
        M::I16 => signed(i16::from_be_bytes(take(rest)?).into()),
        M::I32 => signed(i32::from_be_bytes(take(rest)?).into()),
        M::I64 => signed(i64::from_be_bytes(take(rest)?)),
        M::F32 => Value::F32(f32::from_be_bytes(take(rest)?)),
        M::F64 => Value::F64(f64::from_be_bytes(take(rest)?)),
        M::FixStr(_) | M::Str8 | M::Str16 | M::Str32 => string(rest, len)?,
        M::Bin8 | M::Bin16 | M::Bin32 => bytes(rest, len).map(|_| Value::Bin)?,
        M::FixArray(_) | M::Array16 | M::Array32 => array(rest, len, depth)?,
        M::FixMap(_) | M::Map16 | M::Map32 => map(rest, len, depth)?,
        M::FixExt1 | M::FixExt2 | M::FixExt4 | M::FixExt8 | M::FixExt16 => ext(rest, len)?,
        M::Ext8 | M::Ext16 | M::Ext32 => ext(rest, len)?,
        M::Reserved => return Err(PackError::Reserved),
    })
}

fn signed(i: i64) -> Value<'static> {
    match u64::try_from(i) {
        Ok(u) => Value::Int(Int::U(u)),
        Err(_) => Value::Int(Int::I(i)),
    }
}

fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], PackError> {
    let (head, tail) = rest.split_first_chunk::<N>().ok_or(PackError::Truncated)?;
    *rest = tail;
    Ok(*head)
}

fn bytes<'a>(rest: &mut &'a [u8], len: usize) -> Result<&'a [u8], PackError> {
    if rest.len() < len {
        return Err(PackError::Truncated);
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Ok(head)
}

fn string<'a>(rest: &mut &'a [u8], len: usize) -> Result<Value<'a>, PackError> {
    let raw = bytes(rest, len)?;
    std::str::from_utf8(raw)
        .map(Value::Str)
        .map_err(|_| PackError::Utf8)
}

fn ext<'a>(rest: &mut &'a [u8], len: usize) -> Result<Value<'a>, PackError> {
    let kind = take::<1>(rest)?[0] as i8;
    Ok(Value::Ext(kind, bytes(rest, len)?))
}

fn array<'a>(rest: &mut &'a [u8], len: usize, depth: usize) -> Result<Value<'a>, PackError> {
    if depth > MAX_NESTING {
        return Err(PackError::TooDeep);
    }
    for _ in 0..len {
        read(rest, depth + 1)?;
    }
    Ok(Value::Array)
}

fn map<'a>(rest: &mut &'a [u8], len: usize, depth: usize) -> Result<Value<'a>, PackError> {
    if depth > MAX_NESTING {
        return Err(PackError::TooDeep);
    }
    let start = *rest;
    for _ in 0..len {
        read(rest, depth + 1)?;
        read(rest, depth + 1)?;
    }
    let body = &start[..start.len() - rest.len()];
    let len = u32::try_from(len).map_err(|_| PackError::Truncated)?;
    Ok(Value::Map(Map::Packed { body, len }))
}

/// The view of a parsed JSON value.
pub fn json(value: &serde_json::Value) -> Value<'_> {
    match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::Int(Int::U(u)),
            (_, Some(i)) => Value::Int(Int::I(i)),
            _ => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Str(s),
        serde_json::Value::Array(_) => Value::Array,
        serde_json::Value::Object(map) => Value::Map(Map::Json(map)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> Vec<u8> {
        // A map holding `levels - 1` arrays, one inside the other.
        let mut out = vec![0x81, 0xa1, b'x'];
        out.extend(std::iter::repeat_n(0x91, levels - 1));
        out.push(0x01);
        out
    }

    #[test]
    fn nesting_counts_the_root_map_and_stops_past_the_limit() {
        assert!(read_root(&nested(MAX_NESTING)).is_ok());
        assert!(matches!(
            read_root(&nested(MAX_NESTING + 1)),
            Err(PackError::TooDeep)
        ));
    }

    #[test]
    fn a_repeated_key_reads_as_its_last_value_and_bad_bytes_are_errors() {
        // {"a": 1, "a": 2}
        let Value::Map(map) = read_root(&[0x82, 0xa1, b'a', 1, 0xa1, b'a', 2]).unwrap() else {
            panic!("a map");
        };
        assert!(matches!(map.get("a"), Some(Value::Int(Int::U(2)))));
        assert!(map.get("b").is_none());
        assert!(matches!(
            read_root(&[0x81, 0xa1, 0xff, 1]),
            Err(PackError::Utf8)
        ));
        assert!(matches!(
            read_root(&[0x81, 0xa1, b'a']),
            Err(PackError::Truncated)
        ));
        assert!(matches!(
            read_root(&[0xc0, 0xc0]),
            Err(PackError::Trailing(1))
        ));
        assert!(matches!(read_root(&[0xc1]), Err(PackError::Reserved)));
    }
}
