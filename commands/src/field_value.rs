//! [`FieldValue`]: the value a stat delta's change gives a field, and how it is read
//! back from MessagePack or JSON.

use serde::{Deserialize, Serialize};

use crate::id::Label;
use crate::stats::{FirstBlood, MatchStatus};

/// A field's value: nil, bool, integer, float, text or first blood. Each decodes to one
/// variant only, by its encoded type (see the `Deserialize` below): `status` is text
/// (`"active"`, `"completed"`) that its field interprets, so a player or a team named
/// `active` is text like any other name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// Unknown or absent.
    Null,
    /// `online`.
    Bool(bool),
    /// Counters and times (Unix milliseconds).
    Int(i64),
    /// Sums of numbers and coordinates.
    Float(f64),
    /// Names, modes, and `status` (boxed, like first blood: an inline 64-byte label would
    /// make every value 72 bytes instead of 16, and every change 296 instead of 184;
    /// texts change when a match starts or ends and when a player joins under a new
    /// name).
    Text(Box<Label>),
    /// `first_blood` (boxed: two ids would make every value, and so every change, twice
    /// as large; it changes once a match).
    FirstBlood(Box<FirstBlood>),
}

/// Reads the variant straight from the encoded type (an untagged derive would buffer the
/// value and try each variant in turn, formatting an error for every miss: the costliest
/// part of reading a delta).
impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldValueVisitor)
    }
}

struct FieldValueVisitor;

impl<'de> serde::de::Visitor<'de> for FieldValueVisitor {
    type Value = FieldValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("nil, a bool, a number, a text of at most 64 bytes or a first blood")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<FieldValue, D::Error> {
        FieldValue::deserialize(d)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<FieldValue, E> {
        Ok(FieldValue::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FieldValue, E> {
        Ok(FieldValue::Int(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FieldValue, E> {
        // Past i64 only as a float, as the untagged form read it.
        Ok(i64::try_from(v).map_or(FieldValue::Float(v as f64), FieldValue::Int))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<FieldValue, E> {
        Ok(FieldValue::Float(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FieldValue, E> {
        Label::from(v)
            .map(FieldValue::from)
            .map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<FieldValue, A::Error> {
        FirstBlood::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            .map(FieldValue::from)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<FieldValue, A::Error> {
        FirstBlood::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
            .map(FieldValue::from)
    }
}

impl From<u64> for FieldValue {
    fn from(v: u64) -> Self {
        FieldValue::Int(v as i64)
    }
}
impl From<i64> for FieldValue {
    fn from(v: i64) -> Self {
        FieldValue::Int(v)
    }
}
impl From<u32> for FieldValue {
    fn from(v: u32) -> Self {
        FieldValue::Int(v.into())
    }
}
impl From<f64> for FieldValue {
    fn from(v: f64) -> Self {
        FieldValue::Float(v)
    }
}
impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        FieldValue::Bool(v)
    }
}
impl From<MatchStatus> for FieldValue {
    fn from(v: MatchStatus) -> Self {
        FieldValue::from(Label::from(v.as_str()).expect("short"))
    }
}
impl From<Label> for FieldValue {
    fn from(v: Label) -> Self {
        FieldValue::Text(Box::new(v))
    }
}
impl From<FirstBlood> for FieldValue {
    fn from(v: FirstBlood) -> Self {
        FieldValue::FirstBlood(Box::new(v))
    }
}
impl<T: Into<FieldValue>> From<Option<T>> for FieldValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(FieldValue::Null, Into::into)
    }
}
