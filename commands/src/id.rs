//! Ids and short labels, parsed once at the edge.
//!
//! An id is 1 to 64 characters from `A-Z a-z 0-9 _ -` (contract section 1): ids end up in
//! NATS subjects and Redis keys, so nothing else is allowed. A label is any string of at
//! most 64 bytes (weapon, item, names). Both live inline, so holding one never allocates.

use std::fmt;

use arrayvec::ArrayString;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Longest id or label, in bytes.
pub const MAX_LEN: usize = 64;

/// A string of at most [`MAX_LEN`] bytes, stored inline.
pub type Label = ArrayString<MAX_LEN>;

/// Why a string is not an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty string.
    #[error("is empty")]
    Empty,
    /// Over 64 characters.
    #[error("is longer than {MAX_LEN} characters")]
    TooLong,
    /// A character outside `A-Z a-z 0-9 _ -`.
    #[error("has a character outside A-Z a-z 0-9 _ -")]
    BadCharacter,
}

/// Parses a label: any string of at most [`MAX_LEN`] bytes.
pub fn label(s: &str) -> Option<Label> {
    Label::from(s).ok()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(ArrayString<MAX_LEN>);

        impl $name {
            /// Parses and validates an id.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                if s.is_empty() {
                    return Err(IdError::Empty);
                }
                if s.len() > MAX_LEN {
                    return Err(IdError::TooLong);
                }
                if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                    return Err(IdError::BadCharacter);
                }
                Ok(Self(ArrayString::from(s).expect("length checked above")))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&s).map_err(|e| de::Error::custom(format!("id {s:?} {e}")))
            }
        }
    };
}

id_type!(
    /// Identifies an event; the key for dropping duplicates.
    EventId
);
id_type!(
    /// Identifies a match; a token of NATS subjects and Redis keys.
    MatchId
);
id_type!(
    /// Identifies a player within a match.
    PlayerId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuid_and_word_characters() {
        assert!(MatchId::parse("9b2f3c1e-0d6a-4c3e-9f57-1a2b3c4d5e6f").is_ok());
        assert!(PlayerId::parse("player_01-A").is_ok());
        assert!(PlayerId::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_what_breaks_subjects_and_keys() {
        assert_eq!(PlayerId::parse(""), Err(IdError::Empty));
        assert_eq!(PlayerId::parse(&"a".repeat(65)), Err(IdError::TooLong));
        for bad in ["a.b", "a b", "a*", "a>", "é", "a:b"] {
            assert_eq!(PlayerId::parse(bad), Err(IdError::BadCharacter), "{bad}");
        }
    }
}
