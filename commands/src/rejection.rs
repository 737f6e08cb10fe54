//! Why an event is not applied (contract section 3).

use std::fmt;

/// A rejection reason; [`Reason::as_str`] gives the contract's exact string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not decodable MessagePack/JSON, or not a map/object.
    Malformed,
    /// Payload over 16,384 bytes (`decode::MAX_PAYLOAD_BYTES`).
    TooLarge,
    /// A required key is absent.
    MissingField,
    /// A key has the wrong type or value.
    InvalidField,
    /// `event_type` is not one of the contract's types.
    UnknownEventType,
    /// Before 2000, or more than 5 minutes after the stream stored the message.
    TimestampOutOfRange,
    /// The match has ended and the event is after its end, or it is a second `match_end`.
    MatchClosed,
    /// Applied, the match would hold more than 10,000 (`aggregate::MAX_PLAYERS`) players.
    LimitExceeded,
}

impl Reason {
    /// How many reasons there are.
    pub const COUNT: usize = 8;

    /// Every reason, in the contract's order (`reason as usize` is its index).
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::Malformed,
        Reason::TooLarge,
        Reason::MissingField,
        Reason::InvalidField,
        Reason::UnknownEventType,
        Reason::TimestampOutOfRange,
        Reason::MatchClosed,
        Reason::LimitExceeded,
    ];

    /// The contract's exact string.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::TooLarge => "too_large",
            Reason::MissingField => "missing_field",
            Reason::InvalidField => "invalid_field",
            Reason::UnknownEventType => "unknown_event_type",
            Reason::TimestampOutOfRange => "timestamp_out_of_range",
            Reason::MatchClosed => "match_closed",
            Reason::LimitExceeded => "limit_exceeded",
        }
    }
}

impl std::str::FromStr for Reason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a rejection reason"))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected event: the reason and a human-readable detail for the dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    /// The contract's reason.
    pub reason: Reason,
    /// What exactly was wrong, naming the key.
    pub detail: String,
}

impl Rejection {
    /// A rejection with its detail.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}
