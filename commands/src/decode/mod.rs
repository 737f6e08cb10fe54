//! Bytes to a validated [`Event`], or the [`Rejection`] that says why not
//! (contract sections 1 to 3).
//!
//! The payload is a MessagePack map, or a JSON object when its first non-whitespace
//! byte is `{`. Both are read through one borrowed view ([`value::Value`]) and validated
//! by the same code, so the two encodings cannot drift apart; MessagePack is read in
//! place, without a heap allocation. The checks run in this order, and the
//! first failing one names the reason: size, decoding, `event_id`, `match_id`,
//! `event_type`, `timestamp`, `player_id`, then `event_data` key by key.

mod value;

use value::{Index, Map, Value, Walked};

use crate::event::{Event, EventKind, TimestampMs};
use crate::id::{self, EventId, Label, MatchId, PlayerId};
use crate::rejection::{Reason, Rejection};

/// Largest accepted payload, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 16_384;
/// Deepest nesting of maps and arrays (the root map counts as 1) before a payload counts
/// as malformed; the same for MessagePack and JSON. No event needs more than 2.
pub use value::MAX_NESTING;
/// Earliest accepted timestamp: 2000-01-01T00:00:00Z.
pub const MIN_TIMESTAMP_MS: TimestampMs = 946_684_800_000;
/// How far after the stream's stored time a timestamp may be.
pub const MAX_FUTURE_MS: TimestampMs = 5 * 60 * 1000;
/// Largest `damage` and `heal_amount`.
pub const MAX_AMOUNT: f64 = 1_000_000.0;
/// Largest absolute coordinate.
pub const MAX_COORDINATE: f64 = 10_000_000.0;
/// The MessagePack extension type of timestamps.
const TIMESTAMP_EXT: i8 = -1;

type Result<T> = std::result::Result<T, Rejection>;

/// Decodes and validates one payload stored by the stream at `stored_at_ms`.
///
/// `stored_at_ms` is the stream's time, never the service's clock, so a replay decides
/// the same.
pub fn decode(payload: &[u8], stored_at_ms: TimestampMs) -> Result<Event> {
    check_size(payload)?;
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        let json = parse_json(payload)?;
        validate(&Walked::json(&json), stored_at_ms)
    } else {
        let walked = value::read_root(payload)
            .map_err(|e| Rejection::new(Reason::Malformed, format!("invalid MessagePack: {e}")))?;
        validate(&walked, stored_at_ms)
    }
}

/// The rules of contract sections 2 and 3 over either encoding's view.
fn validate(walked: &Walked<'_>, stored_at_ms: TimestampMs) -> Result<Event> {
    let Value::Map(root) = walked.root() else {
        return Err(Rejection::new(
            Reason::Malformed,
            "payload is not a map/object",
        ));
    };
    let fields = Fields {
        map: walked.index(root),
        path: "",
    };

    let event_id =
        EventId::parse(fields.required_str("event_id")?).map_err(|e| invalid("event_id", e))?;
    let match_id =
        MatchId::parse(fields.required_str("match_id")?).map_err(|e| invalid("match_id", e))?;
    let event_type = fields.required_str("event_type")?;
    let timestamp_ms = timestamp(fields.required("timestamp")?, stored_at_ms)?;
    let player_id = fields.optional_id("player_id")?;
    if player_id.is_none() && !matches!(event_type, "match_start" | "match_end") {
        // Checked after the type is known to exist, so an unknown type wins below.
        if crate::event::EVENT_TYPES.contains(&event_type) {
            return Err(missing("player_id"));
        }
    }
    let data = match fields.get("event_data") {
        None => None,
        Some(Value::Map(map)) => Some(map),
        Some(_) => return Err(invalid("event_data", "is not a map")),
    };
    let data = Fields {
        map: walked.index(data.unwrap_or(Map::Packed { body: &[], len: 0 })),
        path: "event_data.",
    };
    let kind = match event_type {
        "match_start" => EventKind::MatchStart {
            map_name: data.optional_label("map_name")?,
            game_mode: data.optional_label("game_mode")?,
            max_players: data.optional_int("max_players", 1, 10_000)?,
        },
        "match_end" => EventKind::MatchEnd,
        "player_join" => EventKind::PlayerJoin {
            player_name: data.optional_label("player_name")?,
            team_id: data.optional_label("team_id")?,
        },
        "player_leave" => EventKind::PlayerLeave,
        "kill" => EventKind::Kill {
            killer_id: data.required_id("killer_id")?,
            victim_id: data.required_id("victim_id")?,
            weapon: data.optional_label("weapon")?,
            headshot: data.optional_bool("headshot")?.unwrap_or(false),
            distance: data.optional_number("distance", 0.0, f64::MAX)?,
        },
        "death" => EventKind::Death {
            cause: data.optional_label("cause")?,
            killer_id: data.optional_id("killer_id")?,
        },
        "damage" => EventKind::Damage {
            attacker_id: data.required_id("attacker_id")?,
            victim_id: data.required_id("victim_id")?,
            damage: data.required_number("damage", 0.0, MAX_AMOUNT)?,
            weapon: data.optional_label("weapon")?,
            hit_location: data.optional_label("hit_location")?,
        },
        "position" => EventKind::Position {
            x: data.required_number("x", -MAX_COORDINATE, MAX_COORDINATE)?,
            y: data.required_number("y", -MAX_COORDINATE, MAX_COORDINATE)?,
            z: data.required_number("z", -MAX_COORDINATE, MAX_COORDINATE)?,
        },
        "item_use" => EventKind::ItemUse {
            item: data.required_label("item")?,
            heal_amount: data.optional_number("heal_amount", 0.0, MAX_AMOUNT)?,
        },
        "weapon_fire" => EventKind::WeaponFire {
            weapon: data.optional_label("weapon")?,
            shots: data.optional_int("shots", 1, 10_000)?.unwrap_or(1),
        },
        other => {
            return Err(Rejection::new(
                Reason::UnknownEventType,
                format!(
                    "event_type {:?} is not one of {:?}",
                    truncate(other),
                    crate::event::EVENT_TYPES
                ),
            ));
        }
    };
    Ok(Event {
        event_id,
        match_id,
        player_id,
        timestamp_ms,
        kind,
    })
}

fn check_size(payload: &[u8]) -> Result<()> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Rejection::new(
            Reason::TooLarge,
            format!(
                "payload is {} bytes, over the limit of {MAX_PAYLOAD_BYTES}",
                payload.len()
            ),
        ));
    }
    Ok(())
}

/// Parses a JSON payload, after checking its nesting against the same limit as
/// MessagePack's.
fn parse_json(payload: &[u8]) -> Result<serde_json::Value> {
    if json_nesting(payload) > MAX_NESTING {
        return Err(Rejection::new(
            Reason::Malformed,
            format!("JSON nested deeper than {MAX_NESTING}"),
        ));
    }
    serde_json::from_slice(payload)
        .map_err(|e| Rejection::new(Reason::Malformed, format!("invalid JSON: {e}")))
}

/// The deepest nesting of objects and arrays in JSON text (strings skipped), counted
/// before parsing so that the same limit holds for JSON as for MessagePack.
fn json_nesting(text: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The three timestamp forms, truncated to the millisecond, then the range check.
fn timestamp(value: Value<'_>, stored_at_ms: TimestampMs) -> Result<TimestampMs> {
    let out_of_range = |detail: String| Rejection::new(Reason::TimestampOutOfRange, detail);
    let ms: i128 = match value {
        Value::Str(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| {
                invalid(
                    "timestamp",
                    format!("{:?} is not RFC 3339: {e}", truncate(s)),
                )
            })?
            .timestamp_millis()
            .into(),
        Value::Int(i) => i.as_i128(),
        Value::Ext(TIMESTAMP_EXT, bytes) => {
            let (secs, nanos): (i128, u32) = match bytes.len() {
                4 => (u32::from_be_bytes(bytes[..4].try_into().unwrap()).into(), 0),
                8 => {
                    let v = u64::from_be_bytes(bytes[..8].try_into().unwrap());
                    ((v & 0x3_ffff_ffff).into(), (v >> 34) as u32)
                }
                12 => (
                    i64::from_be_bytes(bytes[4..12].try_into().unwrap()).into(),
                    u32::from_be_bytes(bytes[..4].try_into().unwrap()),
                ),
                n => {
                    return Err(invalid(
                        "timestamp",
                        format!("timestamp extension of {n} bytes"),
                    ));
                }
            };
            if nanos >= 1_000_000_000 {
                return Err(invalid(
                    "timestamp",
                    "timestamp extension nanoseconds over 999999999",
                ));
            }
            secs * 1000 + i128::from(nanos / 1_000_000)
        }
        other => {
            return Err(invalid(
                "timestamp",
                format!(
                    "is {}, not an RFC 3339 string, integer milliseconds or a timestamp extension",
                    kind(other)
                ),
            ));
        }
    };
    if ms < i128::from(MIN_TIMESTAMP_MS) {
        return Err(out_of_range(format!(
            "timestamp {ms} ms is before 2000-01-01"
        )));
    }
    if ms > i128::from(stored_at_ms) + i128::from(MAX_FUTURE_MS) {
        return Err(out_of_range(format!(
            "timestamp {ms} ms is more than 5 minutes after the stream stored the message ({stored_at_ms} ms)"
        )));
    }
    Ok(ms as TimestampMs)
}

/// Typed access to the keys of one map; `path` prefixes key names in details.
struct Fields<'a, 'w> {
    map: Index<'a, 'w>,
    path: &'static str,
}

impl<'a> Fields<'a, '_> {
    /// The value of a string key; nil counts as absent, non-string keys are ignored, and
    /// the last of repeated keys wins (as in JSON).
    fn get(&self, key: &str) -> Option<Value<'a>> {
        self.map.get(key).filter(|v| !matches!(v, Value::Nil))
    }

    fn required(&self, key: &str) -> Result<Value<'a>> {
        self.get(key)
            .ok_or_else(|| missing(&format!("{}{key}", self.path)))
    }

    fn str_of(&self, key: &str, value: Value<'a>) -> Result<&'a str> {
        match value {
            Value::Str(s) => Ok(s),
            other => Err(invalid(
                &format!("{}{key}", self.path),
                format!("is {}, not a string", kind(other)),
            )),
        }
    }

    fn required_str(&self, key: &str) -> Result<&'a str> {
        self.str_of(key, self.required(key)?)
    }

    fn id(&self, key: &str, value: Value<'a>) -> Result<PlayerId> {
        PlayerId::parse(self.str_of(key, value)?)
            .map_err(|e| invalid(&format!("{}{key}", self.path), e))
    }

    fn required_id(&self, key: &str) -> Result<PlayerId> {
        self.id(key, self.required(key)?)
    }

    fn optional_id(&self, key: &str) -> Result<Option<PlayerId>> {
        self.get(key).map(|v| self.id(key, v)).transpose()
    }

    fn label(&self, key: &str, value: Value<'a>) -> Result<Label> {
        let s = self.str_of(key, value)?;
        id::label(s).ok_or_else(|| {
            invalid(
                &format!("{}{key}", self.path),
                format!("is {} bytes, over {}", s.len(), id::MAX_LEN),
            )
        })
    }

    fn required_label(&self, key: &str) -> Result<Label> {
        self.label(key, self.required(key)?)
    }

    fn optional_label(&self, key: &str) -> Result<Option<Label>> {
        self.get(key).map(|v| self.label(key, v)).transpose()
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(invalid(
                &format!("{}{key}", self.path),
                format!("is {}, not a bool", kind(other)),
            )),
        }
    }

    fn number(&self, key: &str, value: Value<'_>, min: f64, max: f64) -> Result<f64> {
        let n = match value {
            Value::Int(i) => i.as_f64(),
            Value::F32(f) => f64::from(f),
            Value::F64(f) => f,
            other => {
                return Err(invalid(
                    &format!("{}{key}", self.path),
                    format!("is {}, not a number", kind(other)),
                ));
            }
        };
        if !n.is_finite() || n < min || n > max {
            return Err(invalid(
                &format!("{}{key}", self.path),
                format!("{n} is not a finite number in {min}..={max}"),
            ));
        }
        Ok(n)
    }

    fn required_number(&self, key: &str, min: f64, max: f64) -> Result<f64> {
        self.number(key, self.required(key)?, min, max)
    }

    fn optional_number(&self, key: &str, min: f64, max: f64) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| self.number(key, v, min, max))
            .transpose()
    }

    fn optional_int(&self, key: &str, min: u32, max: u32) -> Result<Option<u32>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let Value::Int(i) = value else {
            return Err(invalid(
                &format!("{}{key}", self.path),
                format!("is {}, not an integer", kind(value)),
            ));
        };
        match i.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(invalid(
                &format!("{}{key}", self.path),
                format!("{i} is not in {min}..={max}"),
            )),
        }
    }
}

fn missing(key: &str) -> Rejection {
    Rejection::new(Reason::MissingField, format!("{key} is required"))
}

fn invalid(key: &str, problem: impl std::fmt::Display) -> Rejection {
    Rejection::new(Reason::InvalidField, format!("{key} {problem}"))
}

fn kind(value: Value<'_>) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bin => "binary (bin), not str",
        Value::Array => "an array",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an extension",
    }
}

/// Keeps details short when a client sends a long string.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_nested_deeper_than_msgpack_allows_is_malformed_like_it() {
        let deep = format!(
            r#"{{"event_id":"e","match_id":"m","event_type":"player_leave","player_id":"p","timestamp":1767225600000,"x":{}1{}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        let rejection = decode(deep.as_bytes(), 1_767_225_600_000).unwrap_err();
        assert_eq!(rejection.reason, Reason::Malformed, "{rejection}");
        let shallow = r#"{"event_id":"e","match_id":"m","event_type":"player_leave","player_id":"p","timestamp":1767225600000,"x":"[[[[{{{{"}"#;
        assert!(
            decode(shallow.as_bytes(), 1_767_225_600_000).is_ok(),
            "brackets in strings do not count"
        );
    }
}
