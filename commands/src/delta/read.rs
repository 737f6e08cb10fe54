//! Reading a delta message: the layouts every writer of formats 2 and 3 writes (string
//! keys, or entries and changes as arrays of their fields in order; values of the
//! expected types) read straight from the bytes; anything else (keys as indices, unknown
//! keys, arrays of other lengths, a first blood, the match object, an error) through
//! `rmp_serde`, which decides. Both give the same [`StatDelta`] for the same bytes (the
//! tests compare them on generated deltas and on damaged ones): the fast path only
//! stands in for serde's dispatch, never for its judgement.

use rmp::Marker;

use super::{Change, DeltaEntry, Field, FieldValue, StatDelta};
use crate::id::{EventId, Label, MatchId, PlayerId};

impl StatDelta {
    /// Decodes a delta message (format 2 or 3), as `rmp_serde::from_slice` would.
    pub fn from_msgpack(bytes: &[u8]) -> Result<StatDelta, rmp_serde::decode::Error> {
        match (Reader { buf: bytes }).delta() {
            Some(delta) => Ok(delta),
            None => rmp_serde::from_slice(bytes),
        }
    }

    /// Whether a delta message carries the match object (every delta of a completed
    /// match does), read without building the delta; `None` when the bytes do not say
    /// it plainly (not a map of string keys, damaged): decode them to know.
    pub fn carries_match(bytes: &[u8]) -> Option<bool> {
        let mut reader = Reader { buf: bytes };
        for _ in 0..reader.map_len()? {
            if reader.key()? == b"match" {
                return Some(!reader.nil());
            }
            reader.skip(0)?;
        }
        Some(false)
    }
}

/// How deep [`Reader::skip`] goes into nested values (a delta's are 4 deep).
const MAX_SKIP_DEPTH: usize = 16;

/// An integer as MessagePack stored it: unsigned, or signed.
enum Int {
    U(u64),
    I(i64),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn marker(&mut self) -> Option<Marker> {
        let (&byte, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(Marker::from_u8(byte))
    }

    fn peek(&self) -> Option<Marker> {
        self.buf.first().map(|&b| Marker::from_u8(b))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn be<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn len(&mut self, marker: Marker) -> Option<usize> {
        Some(match marker {
            Marker::U8 => u8::from_be_bytes(self.be()?).into(),
            Marker::U16 => u16::from_be_bytes(self.be()?).into(),
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    fn map_len(&mut self) -> Option<usize> {
        match self.marker()? {
            Marker::FixMap(n) => Some(n.into()),
            Marker::Map16 => self.len(Marker::U16),
            Marker::Map32 => self.len(Marker::U32),
            _ => None,
        }
    }

    fn array_len(&mut self) -> Option<usize> {
        match self.marker()? {
            Marker::FixArray(n) => Some(n.into()),
            Marker::Array16 => self.len(Marker::U16),
            Marker::Array32 => self.len(Marker::U32),
            _ => None,
        }
    }

    /// A string's bytes, not checked as UTF-8: a map key, compared with the known ones.
    fn key(&mut self) -> Option<&'a [u8]> {
        let len = match self.marker()? {
            Marker::FixStr(n) => n.into(),
            Marker::Str8 => self.len(Marker::U8)?,
            Marker::Str16 => self.len(Marker::U16)?,
            Marker::Str32 => self.len(Marker::U32)?,
            _ => return None,
        };
        self.take(len)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.key()?).ok()
    }

    fn nil(&mut self) -> bool {
        if self.peek() == Some(Marker::Null) {
            self.buf = &self.buf[1..];
            return true;
        }
        false
    }

    /// An array, each item read by `item`.
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let len = self.array_len()?;
        // No more room than the bytes left could fill: a damaged length allocates nothing.
        let mut list = Vec::with_capacity(len.min(self.buf.len()));
        for _ in 0..len {
            list.push(item(self)?);
        }
        Some(list)
    }

    /// Nil as `None`, anything else read by `value`, as serde reads an `Option`.
    fn nil_or<T>(&mut self, value: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.nil() {
            return Some(None);
        }
        value(self).map(Some)
    }

    fn int(&mut self) -> Option<Int> {
        Some(match self.marker()? {
            Marker::FixPos(n) => Int::U(n.into()),
            Marker::FixNeg(n) => Int::I(n.into()),
            Marker::U8 => Int::U(u8::from_be_bytes(self.be()?).into()),
            Marker::U16 => Int::U(u16::from_be_bytes(self.be()?).into()),
            Marker::U32 => Int::U(u32::from_be_bytes(self.be()?).into()),
            Marker::U64 => Int::U(u64::from_be_bytes(self.be()?)),
            Marker::I8 => Int::I(i8::from_be_bytes(self.be()?).into()),
            Marker::I16 => Int::I(i16::from_be_bytes(self.be()?).into()),
            Marker::I32 => Int::I(i32::from_be_bytes(self.be()?).into()),
            Marker::I64 => Int::I(i64::from_be_bytes(self.be()?)),
            _ => return None,
        })
    }

    /// As serde reads a `u64`: any integer in range.
    fn u64(&mut self) -> Option<u64> {
        match self.int()? {
            Int::U(n) => Some(n),
            Int::I(n) => u64::try_from(n).ok(),
        }
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.u64()?).ok()
    }

    fn i64(&mut self) -> Option<i64> {
        match self.int()? {
            Int::U(n) => i64::try_from(n).ok(),
            Int::I(n) => Some(n),
        }
    }

    fn delta(mut self) -> Option<StatDelta> {
        let (mut match_id, mut entries, mut view_seen) = (None, None, false);
        for _ in 0..self.map_len()? {
            match self.key()? {
                b"match_id" if match_id.is_none() => {
                    match_id = Some(MatchId::parse(self.str()?).ok()?)
                }
                b"entries" if entries.is_none() => entries = Some(self.list(Self::entry)?),
                // Only a nil match object here; one that is there goes through serde.
                b"match" if !view_seen && self.nil() => view_seen = true,
                _ => return None,
            }
        }
        // Trailing bytes, or a field missing: serde says what it makes of them.
        if !self.buf.is_empty() {
            return None;
        }
        Some(StatDelta {
            match_id: match_id?,
            entries: entries?,
            match_view: None,
        })
    }

    fn is_array(&self) -> bool {
        matches!(
            self.peek(),
            Some(Marker::FixArray(_) | Marker::Array16 | Marker::Array32)
        )
    }

    fn entry(&mut self) -> Option<DeltaEntry> {
        if self.is_array() {
            return self.entry_array();
        }
        let (mut version, mut event_id, mut stream_sequence, mut timestamp) =
            (None, None, None, None);
        let (mut changes, mut part, mut parts) = (None, None, None);
        for _ in 0..self.map_len()? {
            match self.key()? {
                b"version" if version.is_none() => version = Some(self.u64()?),
                b"event_id" if event_id.is_none() => {
                    event_id = Some(EventId::parse(self.str()?).ok()?)
                }
                b"stream_sequence" if stream_sequence.is_none() => {
                    stream_sequence = Some(self.u64()?)
                }
                b"timestamp" if timestamp.is_none() => timestamp = Some(self.i64()?),
                b"changes" if changes.is_none() => changes = Some(self.list(Self::change)?),
                b"part" if part.is_none() => part = Some(self.u32()?),
                b"parts" if parts.is_none() => parts = Some(self.u32()?),
                _ => return None,
            }
        }
        Some(DeltaEntry {
            version: version?,
            event_id: event_id?,
            stream_sequence: stream_sequence?,
            timestamp: timestamp?,
            changes: changes?,
            part: part.unwrap_or(0),
            parts: parts.unwrap_or(1),
        })
    }

    /// An entry as format 3 writes it, its seven fields in order (fewer or more go
    /// through serde).
    fn entry_array(&mut self) -> Option<DeltaEntry> {
        if self.array_len()? != 7 {
            return None;
        }
        // A struct's fields are evaluated in the order written: the array's order.
        Some(DeltaEntry {
            version: self.u64()?,
            event_id: EventId::parse(self.str()?).ok()?,
            stream_sequence: self.u64()?,
            timestamp: self.i64()?,
            changes: self.list(Self::change)?,
            part: self.u32()?,
            parts: self.u32()?,
        })
    }

    fn change(&mut self) -> Option<Change> {
        if self.is_array() {
            return self.change_array();
        }
        let (mut player_id, mut field, mut key) = (None, None, None);
        let (mut before, mut after) = (None, None);
        for _ in 0..self.map_len()? {
            match self.key()? {
                b"player_id" if player_id.is_none() => {
                    player_id = Some(self.nil_or(|r| PlayerId::parse(r.str()?).ok())?)
                }
                b"field" if field.is_none() => field = Some(Field::from_name(self.str()?)?),
                b"key" if key.is_none() => key = Some(self.nil_or(|r| Label::from(r.str()?).ok())?),
                b"before" if before.is_none() => before = Some(self.value()?),
                b"after" if after.is_none() => after = Some(self.value()?),
                _ => return None,
            }
        }
        Some(Change {
            player_id: player_id.flatten(),
            field: field?,
            key: key.flatten(),
            before: before?,
            after: after?,
        })
    }

    /// A change as format 3 writes it, its five fields in order (fewer or more go through
    /// serde).
    fn change_array(&mut self) -> Option<Change> {
        if self.array_len()? != 5 {
            return None;
        }
        Some(Change {
            player_id: self.nil_or(|r| PlayerId::parse(r.str()?).ok())?,
            field: Field::from_name(self.str()?)?,
            key: self.nil_or(|r| Label::from(r.str()?).ok())?,
            before: self.value()?,
            after: self.value()?,
        })
    }

    /// A value as [`FieldValue`]'s `Deserialize` reads it (a first blood, a map, goes
    /// through serde).
    fn value(&mut self) -> Option<FieldValue> {
        Some(match self.peek()? {
            Marker::Null => {
                self.nil();
                FieldValue::Null
            }
            Marker::True | Marker::False => FieldValue::Bool(self.marker()? == Marker::True),
            Marker::F32 => FieldValue::Float(f32::from_be_bytes(self.be_after_marker()?).into()),
            Marker::F64 => FieldValue::Float(f64::from_be_bytes(self.be_after_marker()?)),
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                FieldValue::from(Label::from(self.str()?).ok()?)
            }
            _ => match self.int()? {
                // Past i64 only as a float, as the `Deserialize` reads it.
                Int::U(n) => i64::try_from(n).map_or(FieldValue::Float(n as f64), FieldValue::Int),
                Int::I(n) => FieldValue::Int(n),
            },
        })
    }

    /// Passes over one value of any type.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_SKIP_DEPTH {
            return None;
        }
        let (bytes, items) = match self.marker()? {
            Marker::Null | Marker::True | Marker::False => (0, 0),
            Marker::FixPos(_) | Marker::FixNeg(_) => (0, 0),
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(n) => (n.into(), 0),
            Marker::Str8 | Marker::Bin8 => (self.len(Marker::U8)?, 0),
            Marker::Str16 | Marker::Bin16 => (self.len(Marker::U16)?, 0),
            Marker::Str32 | Marker::Bin32 => (self.len(Marker::U32)?, 0),
            Marker::FixArray(n) => (0, n.into()),
            Marker::Array16 => (0, self.len(Marker::U16)?),
            Marker::Array32 => (0, self.len(Marker::U32)?),
            Marker::FixMap(n) => (0, 2 * usize::from(n)),
            Marker::Map16 => (0, 2 * self.len(Marker::U16)?),
            Marker::Map32 => (0, 2 * self.len(Marker::U32)?),
            // An extension: its type byte and its data.
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (self.len(Marker::U8)? + 1, 0),
            Marker::Ext16 => (self.len(Marker::U16)? + 1, 0),
            Marker::Ext32 => (self.len(Marker::U32)? + 1, 0),
            Marker::Reserved => return None,
        };
        self.take(bytes)?;
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Some(())
    }

    fn be_after_marker<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.marker()?;
        self.be()
    }
}

#[cfg(test)]
mod tests;
