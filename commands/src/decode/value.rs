//! A borrowed view of a decoded payload: MessagePack read in place (strings are slices of
//! the payload, numbers read where they lie; the root map and the maps directly inside it
//! indexed by the one walk that checks the payload, larger or deeper maps searched in
//! place on each lookup), or a parsed JSON object. The rules in [`super`] read both
//! through this one view, so the two encodings cannot drift apart, and a MessagePack
//! event is decoded without a single heap allocation.

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

/// Most string keys of a map indexed (no event has more than 7); a larger map is searched
/// in place on each lookup.
const INDEXED_KEYS: usize = 16;

/// Most maps a walk indexes: the root map and up to three maps directly inside it (an
/// event has one, `event_data`).
const INDEXED_MAPS: usize = 4;

/// A map's string keys and their values, in order; other keys are left out.
type Entries<'a> = arrayvec::ArrayVec<(&'a str, Value<'a>), INDEXED_KEYS>;

/// What one walk of a payload learnt: its root value and, read on the way, the string
/// keys and values of the root map and of the maps directly inside it, so that looking
/// them up does not walk (and check) their bytes again.
pub struct Walked<'a> {
    root: Value<'a>,
    /// Indexed maps by their body: the maps directly inside the root as the walk met
    /// them, then the root (one place is kept for it).
    indexed: Indexed<'a>,
}

/// The maps a walk indexed, by their body.
type Indexed<'a> = arrayvec::ArrayVec<(&'a [u8], Entries<'a>), INDEXED_MAPS>;

impl<'a> Walked<'a> {
    /// A parsed JSON value: nothing indexed (its objects are maps already).
    pub fn json(value: &'a serde_json::Value) -> Self {
        Walked {
            root: json(value),
            indexed: Indexed::new(),
        }
    }

    /// The root value.
    pub fn root(&self) -> Value<'a> {
        self.root
    }

    /// Lookups in `map`: through its entries when the walk indexed them.
    pub fn index(&self, map: Map<'a>) -> Index<'a, '_> {
        let entries = match map {
            Map::Packed { body, .. } => self
                .indexed
                .iter()
                .find(|(b, _)| std::ptr::eq(*b, body))
                .map(|(_, entries)| entries.as_slice()),
            Map::Json(_) => None,
        };
        Index { map, entries }
    }
}

/// Lookups in one map, through the entries a walk indexed, else in place.
pub struct Index<'a, 'w> {
    map: Map<'a>,
    entries: Option<&'w [(&'a str, Value<'a>)]>,
}

impl<'a> Index<'a, '_> {
    /// The value of a string key, the last one when a key repeats (as in JSON).
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        match self.entries {
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
            Map::Packed { body, len } => {
                let mut rest = body;
                let mut found = None;
                // The payload was walked whole before: reading it again cannot fail.
                for _ in 0..len {
                    let (Ok(k), Ok(v)) = (read(&mut rest, 1, None), read(&mut rest, 1, None))
                    else {
                        break;
                    };
                    if matches!(k, Value::Str(k) if k == key) {
                        found = Some(v);
                    }
                }
                found
            }
            Map::Json(map) => map.get(key).map(json),
        }
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

/// The payload walked once, all of it: every length inside the payload, every string
/// valid UTF-8, nesting within [`MAX_NESTING`], nothing after the value; the root map and
/// the maps directly inside it indexed on the way.
pub fn read_root(payload: &[u8]) -> Result<Walked<'_>, PackError> {
    let mut rest = payload;
    let mut indexed = Indexed::new();
    let root = read(&mut rest, 1, Some(&mut indexed))?;
    if !rest.is_empty() {
        return Err(PackError::Trailing(rest.len()));
    }
    Ok(Walked { root, indexed })
}

/// Reads one value at nesting `depth` (of the containers around it, plus one) and moves
/// `rest` past it, walking (and checking) what a map or array holds; with `indexed`, the
/// entries of the root map and of the maps directly inside it are kept there.
fn read<'a>(
    rest: &mut &'a [u8],
    depth: usize,
    indexed: Option<&mut Indexed<'a>>,
) -> Result<Value<'a>, PackError> {
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
        M::FixMap(_) | M::Map16 | M::Map32 => map(rest, len, depth, indexed)?,
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
        read(rest, depth + 1, None)?;
    }
    Ok(Value::Array)
}

fn map<'a>(
    rest: &mut &'a [u8],
    len: usize,
    depth: usize,
    mut indexed: Option<&mut Indexed<'a>>,
) -> Result<Value<'a>, PackError> {
    if depth > MAX_NESTING {
        return Err(PackError::TooDeep);
    }
    // The root (depth 1) and the maps directly inside it keep their entries (only the
    // root passes `indexed` on); the root's place is kept for it, so a map inside takes
    // one only while two are left.
    let keep = indexed
        .as_deref()
        .is_some_and(|i| depth == 1 || i.remaining_capacity() > 1);
    let mut entries = keep.then(Entries::new);
    let start = *rest;
    for _ in 0..len {
        let mut inner = indexed.as_deref_mut().filter(|_| depth == 1);
        let key = read(rest, depth + 1, inner.as_deref_mut())?;
        let value = read(rest, depth + 1, inner)?;
        if let (Some(kept), Value::Str(key)) = (&mut entries, key)
            && kept.try_push((key, value)).is_err()
        {
            // Too many keys: this map is searched in place.
            entries = None;
        }
    }
    let body = &start[..start.len() - rest.len()];
    if let (Some(indexed), Some(entries)) = (indexed, entries) {
        // Cannot fail: a place was left for it above.
        let _ = indexed.try_push((body, entries));
    }
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
        let payload = [0x82, 0xa1, b'a', 1, 0xa1, b'a', 2];
        let walked = read_root(&payload).unwrap();
        let Value::Map(map) = walked.root() else {
            panic!("a map");
        };
        assert!(matches!(map.get("a"), Some(Value::Int(Int::U(2)))));
        assert!(matches!(
            walked.index(map).get("a"),
            Some(Value::Int(Int::U(2)))
        ));
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

    /// A map of `n` keys `k0`, `k1`... with values 0, 1..., then `tail` (raw MessagePack
    /// of one more key and value).
    fn map_of(n: u8, tail: &[u8]) -> Vec<u8> {
        let mut out = vec![0xde, 0, n + u8::from(!tail.is_empty())];
        for i in 0..n {
            let key = format!("k{i}");
            out.push(0xa0 | key.len() as u8);
            out.extend(key.bytes());
            out.push(i);
        }
        out.extend(tail);
        out
    }

    /// The value of every key as the walk's index reads it and as a search in place does.
    fn both_ways<'a>(walked: &Walked<'a>, map: Map<'a>, key: &str) -> [Option<u64>; 2] {
        let int = |v: Option<Value<'_>>| match v {
            Some(Value::Int(i)) => i.as_u64(),
            _ => None,
        };
        [int(walked.index(map).get(key)), int(map.get(key))]
    }

    #[test]
    fn the_index_answers_as_a_search_in_place_for_small_large_and_inner_maps() {
        // The root holds 20 keys (too many to index) and "inner", a map of 3 keys with
        // a repeated one: {"k0": 0, ... "k19": 19, "inner": {"k0": 0, "k1": 1, "k0": 7}}.
        let mut inner = map_of(2, &[0xa2, b'k', b'0', 7]);
        inner.splice(0..0, [0xa5, b'i', b'n', b'n', b'e', b'r']);
        let payload = map_of(20, &inner);
        let walked = read_root(&payload).unwrap();
        let Value::Map(root) = walked.root() else {
            panic!("a map");
        };
        for i in 0..20u64 {
            assert_eq!(both_ways(&walked, root, &format!("k{i}")), [Some(i); 2]);
        }
        let Some(Value::Map(inner)) = walked.index(root).get("inner") else {
            panic!("the inner map");
        };
        assert!(
            walked.index(inner).entries.is_some(),
            "the inner map is indexed"
        );
        assert!(
            walked.index(root).entries.is_none(),
            "20 keys are searched in place"
        );
        assert_eq!(both_ways(&walked, inner, "k0"), [Some(7); 2]);
        assert_eq!(both_ways(&walked, inner, "k1"), [Some(1); 2]);
        assert_eq!(both_ways(&walked, inner, "k2"), [None; 2]);
        // A small root is indexed too.
        let payload = map_of(3, &[]);
        let walked = read_root(&payload).unwrap();
        let Value::Map(root) = walked.root() else {
            panic!("a map");
        };
        assert!(walked.index(root).entries.is_some());
        assert_eq!(both_ways(&walked, root, "k2"), [Some(2); 2]);
    }
}
