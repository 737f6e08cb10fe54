//! The service's async runtimes: the main one (ingest, and whatever shares it), the HTTP
//! servers' own ([`Runtimes::http`]) and the query side's background work's own
//! ([`Runtimes::background`]), whose threads run at a lower CPU priority while ingest
//! catches up ([`BackgroundPriority`]).
//!
//! Why: in a catch-up (a start after downtime, a partition taken over), the command
//! side's writers are what works the backlog off and publishes the deltas every
//! downstream service waits for; the projector, the Redis write-through and the history
//! writer follow those deltas, and the replica is not ready before the backlog is gone
//! anyway. There the kernel's scheduler then gives the CPU to the writers (and to
//! nats-server) first. Once caught up, the read model's freshness is served to clients
//! and the threads return to the default priority: at a lower priority throughout, the
//! read model fell 1.7 s behind on a saturated machine at 20,000 events/s (BENCHMARKS.md,
//! sixteenth round).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustix::process::{Pid, getpriority_process, setpriority_process};
use rustix::thread::gettid;
use tokio::runtime::{Builder, Handle, Runtime};

use crate::config::Config;

/// A multi-threaded runtime of `workers` threads named `thread_name`, whose idle threads
/// return their allocator's free pages ([`crate::memory::on_thread_park`]).
pub fn runtime(workers: usize, thread_name: &str) -> std::io::Result<Runtime> {
    builder(workers, thread_name).build()
}

fn builder(workers: usize, thread_name: &str) -> Builder {
    let mut builder = Builder::new_multi_thread();
    builder
        .worker_threads(workers)
        .thread_name(thread_name)
        .on_thread_park(crate::memory::on_thread_park)
        .enable_all();
    builder
}

/// The priority of the background runtime's threads: the process's own, or `nice` lower
/// while ingest catches up. Lowering a thread's priority is always allowed; raising it
/// back needs root, `CAP_SYS_NICE` or a large enough `RLIMIT_NICE`. Without that right
/// (found out once, at start) the threads keep the process's priority throughout:
/// slower catch-ups, never a read model left behind.
pub struct BackgroundPriority {
    /// The process's niceness and the background's while lowered.
    normal: i32,
    lowered_to: i32,
    /// Whether the threads can be moved back to `normal` (and so may be lowered at all).
    adjustable: bool,
    lowered: AtomicBool,
    threads: Mutex<Vec<Pid>>,
}

impl BackgroundPriority {
    /// `nice` below the process's priority while lowered (0: never lowered).
    pub fn new(nice: i32) -> Self {
        let normal = getpriority_process(None).unwrap_or(0);
        let lowered_to = (normal + nice).min(19);
        let adjustable = lowered_to > normal && can_raise_back(normal);
        if lowered_to > normal && !adjustable {
            tracing::info!(
                nice,
                "background threads keep the process's CPU priority: raising it back after a catch-up needs CAP_SYS_NICE"
            );
        }
        metrics::gauge!(crate::metrics::BACKGROUND_LOWERED).set(0.0);
        BackgroundPriority {
            normal,
            lowered_to,
            adjustable,
            lowered: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        }
    }

    fn threads(&self) -> std::sync::MutexGuard<'_, Vec<Pid>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the calling thread among the background's (from its runtime's start hook).
    fn register_current_thread(&self) {
        let thread = gettid();
        let mut threads = self.threads();
        threads.push(thread);
        if self.lowered.load(Ordering::Relaxed) {
            set(thread, self.lowered_to);
        }
    }

    /// Lowers the threads' priority while `catching_up`, and restores it after; a no-op
    /// when nothing changed or the priority cannot be restored.
    pub fn ingest_catching_up(&self, catching_up: bool) {
        if !self.adjustable || self.lowered.swap(catching_up, Ordering::Relaxed) == catching_up {
            return;
        }
        let to = if catching_up {
            self.lowered_to
        } else {
            self.normal
        };
        tracing::debug!(catching_up, niceness = to, "background threads' priority");
        metrics::gauge!(crate::metrics::BACKGROUND_LOWERED).set(f64::from(u8::from(catching_up)));
        for &thread in self.threads().iter() {
            set(thread, to);
        }
    }
}

fn set(thread: Pid, niceness: i32) {
    if let Err(error) = setpriority_process(Some(thread), niceness) {
        tracing::warn!(%error, niceness, "a background thread's CPU priority could not be set");
    }
}

/// Whether a thread may raise its priority back to `normal` after lowering it (tried on
/// a thread of its own, which ends).
fn can_raise_back(normal: i32) -> bool {
    std::thread::spawn(move || {
        let thread = gettid();
        setpriority_process(Some(thread), (normal + 1).min(19)).is_ok()
            && setpriority_process(Some(thread), normal).is_ok()
    })
    .join()
    .unwrap_or(false)
}

/// A runtime like [`runtime`] whose threads take their priority from `priority`.
pub fn background_runtime(
    workers: usize,
    priority: Arc<BackgroundPriority>,
) -> std::io::Result<Runtime> {
    builder(workers, "background")
        .on_thread_start(move || priority.register_current_thread())
        .build()
}

/// The runtimes of their own the configuration asks for, beside the main one; shut down
/// without waiting when dropped (dropping a runtime inside another one would panic).
pub struct Runtimes {
    http: Option<Runtime>,
    background: Option<Runtime>,
    priority: Arc<BackgroundPriority>,
}

impl Runtimes {
    /// The HTTP servers' runtime (`HTTP_WORKERS` threads; none for 0) and the background
    /// runtime (`BACKGROUND_WORKERS` threads, `BACKGROUND_NICE` lower while ingest catches
    /// up; none for 0).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        // Without a background runtime nothing runs lowered (nor says it does).
        let nice = if config.background_workers > 0 {
            config.background_nice
        } else {
            0
        };
        let priority = Arc::new(BackgroundPriority::new(nice));
        let mut runtimes = Runtimes {
            http: None,
            background: None,
            priority: priority.clone(),
        };
        if config.http_workers > 0 {
            runtimes.http = Some(
                runtime(usize::from(config.http_workers), "http")
                    .context("the HTTP runtime starts")?,
            );
        }
        if config.background_workers > 0 {
            runtimes.background = Some(
                background_runtime(usize::from(config.background_workers), priority)
                    .context("the background runtime starts")?,
            );
        }
        Ok(runtimes)
    }

    /// Where the HTTP servers run. Requests are short and latency-bound, ingest long and
    /// throughput-bound: on one runtime, a request waits behind whatever batches the
    /// workers are deciding.
    pub fn http(&self) -> Handle {
        Self::or_current(self.http.as_ref())
    }

    /// Where the query side's tasks run (see the module).
    pub fn background(&self) -> Handle {
        Self::or_current(self.background.as_ref())
    }

    /// The background threads' priority.
    pub fn priority(&self) -> Arc<BackgroundPriority> {
        self.priority.clone()
    }

    fn or_current(runtime: Option<&Runtime>) -> Handle {
        runtime.map_or_else(Handle::current, |r| r.handle().clone())
    }
}

impl Drop for Runtimes {
    fn drop(&mut self) {
        for runtime in [self.http.take(), self.background.take()]
            .into_iter()
            .flatten()
        {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn niceness() -> i32 {
        getpriority_process(Some(gettid())).expect("a thread's own priority is readable")
    }

    fn seen(runtime: &Runtime) -> Vec<i32> {
        runtime.block_on(async {
            let tasks = (0..8).map(|_| tokio::spawn(async { niceness() }));
            futures::future::try_join_all(tasks)
                .await
                .expect("no panic")
        })
    }

    #[test]
    fn background_threads_are_lowered_while_ingest_catches_up_and_restored_after() {
        let normal = niceness();
        let priority = Arc::new(BackgroundPriority::new(7));
        let background = background_runtime(2, priority.clone()).expect("it starts");
        if !priority.adjustable {
            // Without the right to raise a priority back, nothing is ever lowered.
            priority.ingest_catching_up(true);
            assert!(seen(&background).iter().all(|&n| n == normal));
            return;
        }
        assert!(seen(&background).iter().all(|&n| n == normal));
        priority.ingest_catching_up(true);
        let lowered = (normal + 7).min(19);
        assert!(seen(&background).iter().all(|&n| n == lowered));
        // The process, and a runtime of the ordinary kind, keep theirs.
        assert_eq!(niceness(), normal);
        let main = runtime(1, "main").expect("it starts");
        assert!(seen(&main).iter().all(|&n| n == normal));
        priority.ingest_catching_up(false);
        assert!(seen(&background).iter().all(|&n| n == normal));
    }
}
