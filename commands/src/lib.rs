//! The write side of match-stats, as a pure library: no I/O, no clocks, no async.
//!
//! - [`decode`]: payload bytes to a validated [`Event`] or a [`Rejection`] (contract
//!   sections 1 to 3);
//! - [`aggregate`]: the [`Match`] aggregate that folds events into statistics
//!   (section 4), dropping duplicates and closing ended matches;
//! - [`stats`]: the stored statistics and the derived values;
//! - [`delta`]: the [`StatDelta`] messages that tell downstream services what changed;
//! - [`view`]: the match and player objects as the REST API returns them, and how a
//!   cache stores one;
//! - [`encode`]: events the service writes itself (an idle match's `match_end`);
//! - [`id`]: validated ids and short labels; [`key_counts`]: counts by weapon or item.
//!
//! The service binary feeds it messages in stream order; time comes only from the
//! events and the stream's stored time, so replaying a stream decides the same.

/// The version of the rules that decide events (contract sections 3 and 4), carried by
/// every snapshot record: 1 before the contract's limits; 2 with them (10,000 players a
/// match, 64 weapon and item keys a player) and with the subject naming the match.
pub const RULES_VERSION: u32 = 2;

pub mod aggregate;
pub mod decode;
pub mod delta;
pub mod encode;
pub mod event;
mod field_value;
pub mod id;
pub mod key_counts;
pub mod rejection;
pub mod stats;
pub mod view;

pub use aggregate::{DEDUP_WINDOW, Match, Outcome};
pub use decode::decode;
pub use delta::{Change, DeltaEntry, Field, FieldValue, StatDelta, StatDeltaRef};
pub use event::{Event, EventKind, TimestampMs};
pub use id::{EventId, MatchId, PlayerId};
pub use key_counts::KeyCounts;
pub use rejection::{Reason, Rejection};
pub use stats::{MatchStats, MatchStatus, PlayerStats};
pub use view::{MatchView, PlayerView};
