//! Giving freed memory back to the system.
//!
//! mimalloc keeps the pages a thread's heap frees for that heap, and a block freed from
//! another thread (a batch decoded on one runtime thread, dropped on another) goes back
//! only when its owner next allocates from that page. After a burst (a catch-up of a
//! million events) that memory stays resident although nothing uses it. So each runtime
//! thread collects its heap when it runs out of work ([`on_thread_park`], installed by the
//! binary), at most every [`COLLECT_INTERVAL`]; and, for [`AFTER_REQUEST`] after each
//! [`return_freed_soon`] (the read model caught up; a partition worked off a backlog of
//! 10,000 events or more), each time it parks, at most every [`WHILE_REQUESTED`]. One
//! collection per request used to miss what was freed after it: the read model reports
//! caught up early in a catch-up (it keeps pace with the publishers), and what the
//! catch-up's end freed stayed resident until each thread's next periodic collection, so
//! the RSS read 2 s after a catch-up was 228-298 MiB depending on the run (BENCHMARKS.md,
//! "Fifteenth round").
//!
//! The collection is the allocator's gentle one (`mi_collect(false)`: free pages and
//! deferred frees, purged after the allocator's own delay): 0.7-3.2 ms on average, 12 ms
//! at most, measured. A forced one took 6.5-11 ms on average and up to 47 ms of a thread;
//! forced at most once a second (fourth round) it slowed a three-replica cluster on two
//! cores. RSS after a 1,000,000-event catch-up of 1,000 matches x 64 players, 2 s after:
//! 233-257 MiB without, 214-243 MiB with (BENCHMARKS.md, "Seventh round").

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often at most a runtime thread collects its heap without being asked.
pub const COLLECT_INTERVAL: Duration = Duration::from_secs(10);

/// How long after a [`return_freed_soon`] the threads keep collecting as they park.
pub const AFTER_REQUEST: Duration = Duration::from_secs(3);

/// How often at most a thread collects within [`AFTER_REQUEST`] of a request.
pub const WHILE_REQUESTED: Duration = Duration::from_millis(250);

/// The clock's origin for [`LAST_REQUEST`].
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// When [`return_freed_soon`] was last called: nanoseconds after [`ORIGIN`], plus one (0:
/// never).
static LAST_REQUEST: AtomicU64 = AtomicU64::new(0);

/// Asks every runtime thread to return its free pages as it runs out of work, for the
/// next [`AFTER_REQUEST`]: called when a burst of work that allocated a lot is over.
pub fn return_freed_soon() {
    let since_origin = ORIGIN.elapsed().as_nanos() as u64;
    LAST_REQUEST.store(since_origin + 1, Ordering::Relaxed);
}

/// Whether a thread that last collected at `last` (`None`: never) collects at `now`, the
/// last request having come at `requested`.
#[cfg_attr(feature = "heap-profile", allow(dead_code))]
fn due(last: Option<Instant>, requested: Option<Instant>, now: Instant) -> bool {
    let Some(last) = last else { return true };
    let since_last = now.duration_since(last);
    let asked = requested.is_some_and(|requested| {
        // Asked since the last collection, or still collecting after a recent request.
        requested > last
            || (now.duration_since(requested) < AFTER_REQUEST && since_last >= WHILE_REQUESTED)
    });
    asked || since_last >= COLLECT_INTERVAL
}

/// The runtime's `on_thread_park` hook: collects this thread's heap when [`due`].
pub fn on_thread_park() {
    #[cfg(not(feature = "heap-profile"))]
    {
        use std::cell::Cell;
        // When this thread last collected.
        thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
        let now = Instant::now();
        let requested = match LAST_REQUEST.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(*ORIGIN + Duration::from_nanos(nanos - 1)),
        };
        if !due(LAST.get(), requested, now) {
            return;
        }
        LAST.set(Some(now));
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_thread_that_never_collected_collects() {
        let now = Instant::now();
        assert!(due(None, None, now));
    }

    #[test]
    fn unasked_a_thread_collects_once_per_interval() {
        let last = Instant::now();
        assert!(!due(Some(last), None, last + COLLECT_INTERVAL - MS));
        assert!(due(Some(last), None, last + COLLECT_INTERVAL));
    }

    #[test]
    fn a_request_since_the_last_collection_makes_it_due_at_once() {
        let last = Instant::now();
        assert!(due(Some(last), Some(last + MS), last + 2 * MS));
    }

    #[test]
    fn after_a_request_a_thread_collects_again_as_it_parks_but_not_too_often() {
        let requested = Instant::now();
        // It collected just after the request; what the burst frees later is collected
        // at its next parks, every WHILE_REQUESTED at most, for AFTER_REQUEST.
        let last = requested + MS;
        assert!(!due(
            Some(last),
            Some(requested),
            last + WHILE_REQUESTED - MS
        ));
        assert!(due(Some(last), Some(requested), last + WHILE_REQUESTED));
        let late = requested + AFTER_REQUEST;
        assert!(!due(
            Some(late - MS),
            Some(requested),
            late + WHILE_REQUESTED
        ));
    }
}
