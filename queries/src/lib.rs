//! The read side of match-stats: read models projected from stat deltas.
//!
//! - [`projection`]: [`MatchProjection`] folds [`StatDelta`](match_stats_commands::StatDelta)
//!   messages, in version order, back into the statistics the command side holds, and
//!   renders them as the REST objects.
//!
//! The query side never reaches into the command side's memory: everything it knows
//! arrives on the deltas stream, so it can run on any replica.

pub mod projection;

pub use projection::{MatchProjection, ProjectionError};
