//! The query side's tasks, on every replica: the [`Projector`] reads the whole deltas
//! stream into the read model (so any replica answers for any match) and marks what it
//! changed as [`Dirty`]; the [`CacheWriter`] writes the latest snapshot of each changed
//! match through to Redis every `CACHE_WRITE_INTERVAL` (coalescing many versions into
//! one write), everything again every `CACHE_RESYNC_INTERVAL` and whenever Redis comes
//! back. The routes themselves are `match_stats_queries::api`.

mod cache_writer;
mod capacity;
mod projector;

use std::collections::BTreeSet;
use std::sync::Mutex;

use match_stats_commands::MatchId;

pub use cache_writer::CacheWriter;
pub use capacity::Capacity;
pub use projector::Projector;
pub(crate) use projector::resync;

/// Matches whose latest snapshot Redis has not seen yet.
#[derive(Debug, Default)]
pub struct Dirty(Mutex<BTreeSet<MatchId>>);

impl Dirty {
    fn extend(&self, ids: impl IntoIterator<Item = MatchId>) {
        self.0.lock().expect("dirty set").extend(ids);
    }

    fn take(&self) -> BTreeSet<MatchId> {
        std::mem::take(&mut *self.0.lock().expect("dirty set"))
    }
}
