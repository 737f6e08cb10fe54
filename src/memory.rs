//! Giving freed memory back to the system.
//!
//! mimalloc keeps the pages a thread's heap frees for that heap, and a block freed from
//! another thread (a batch decoded on one runtime thread, dropped on another) goes back
//! only when its owner next allocates from that page. After a burst (a catch-up of a
//! million events) that memory stays resident although nothing uses it. So each runtime
//! thread collects its heap when it runs out of work ([`on_thread_park`], installed by the
//! binary), at most every [`COLLECT_INTERVAL`], and once more after each
//! [`return_freed_soon`] (the read model caught up after a replay of the deltas).
//!
//! The collection is the allocator's gentle one (`mi_collect(false)`: free pages and
//! deferred frees, purged after the allocator's own delay): 0.7-3.2 ms on average, 12 ms
//! at most, measured. A forced one took 6.5-11 ms on average and up to 47 ms of a thread;
//! forced at most once a second (fourth round) it slowed a three-replica cluster on two
//! cores. RSS after a 1,000,000-event catch-up of 1,000 matches x 64 players, 2 s after:
//! 233-257 MiB without, 214-243 MiB with (BENCHMARKS.md, "Seventh round").

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often at most a runtime thread collects its heap without being asked.
pub const COLLECT_INTERVAL: Duration = Duration::from_secs(10);

/// Bumped by [`return_freed_soon`]: a thread that has not collected since collects.
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Asks every runtime thread to return its free pages the next time it runs out of work:
/// called when a burst of work that allocated a lot is over.
pub fn return_freed_soon() {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
}

/// The runtime's `on_thread_park` hook: collects this thread's heap when asked to since
/// its last collection, or when [`COLLECT_INTERVAL`] has passed since it.
pub fn on_thread_park() {
    #[cfg(not(feature = "heap-profile"))]
    {
        use std::cell::Cell;
        use std::time::Instant;
        // (requests seen, when) of this thread's last collection.
        thread_local!(static LAST: Cell<(u64, Option<Instant>)> = const { Cell::new((0, None)) });
        let requests = REQUESTS.load(Ordering::Relaxed);
        let (seen, at) = LAST.get();
        let now = Instant::now();
        let due = at.is_none_or(|at| now.duration_since(at) >= COLLECT_INTERVAL);
        if requests == seen && !due {
            return;
        }
        LAST.set((requests, Some(now)));
        collect();
        metrics::histogram!(crate::metrics::MEMORY_COLLECTION_SECONDS)
            .record(now.elapsed().as_secs_f64());
    }
}

/// Returns the calling thread's free pages (and the arenas' expired ones) to the system.
#[cfg(not(feature = "heap-profile"))]
#[allow(unsafe_code)] // the one FFI call of the service; see SAFETY
fn collect() {
    // SAFETY: `mi_collect` takes no pointers; it only walks the calling thread's own heap
    // and the allocator's arenas under their own locks.
    unsafe { libmimalloc_sys::mi_collect(false) };
}
