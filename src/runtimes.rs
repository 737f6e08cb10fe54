//! The service's async runtimes: the main one (ingest, and whatever shares it), the HTTP
//! servers' own ([`Runtimes::http`]), the query side's background work's own
//! ([`Runtimes::background`]), a thread at a lower CPU priority for good for the Redis
//! write-through and the history writer ([`Runtimes::lowered_writers`]) and a thread at a
//! lower CPU priority to which the read model's projection moves while ingest catches up
//! ([`Yielding`]).
//!
//! Why: in a catch-up (a start after downtime, a partition taken over), the command
//! side's writers are what works the backlog off and publishes the deltas every
//! downstream service waits for; the projector follows those deltas, and the replica is
//! not ready before the backlog is gone anyway. There the kernel's scheduler then gives
//! the CPU to the writers (and to nats-server) first. Once caught up, the read model's
//! freshness is served to clients and the projection runs at the process's priority
//! again: at a lower priority throughout, the read model fell 1.7 s behind on a saturated
//! machine at 20,000 events/s (BENCHMARKS.md, sixteenth round).
//!
//! The work moves between threads instead of a thread's priority going down and back up:
//! lowering a priority is always allowed, raising it back needs root or `CAP_SYS_NICE`,
//! which a container running as a non-root user with every capability dropped lacks.

use std::future::Future;

use rustix::process::{getpriority_process, setpriority_process};
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

/// The name of the thread [`Yielding`] moves work to.
const YIELDING_THREAD: &str = "lowered";
/// The name of the thread [`Runtimes::lowered_writers`] runs on.
const WRITERS_THREAD: &str = "lowered-writers";

/// A runtime of one thread named `thread_name`, `nice` below the priority of the thread
/// that starts it.
fn lowered_runtime(thread_name: &str, nice: i32) -> std::io::Result<Runtime> {
    builder(1, thread_name)
        .on_thread_start(move || lower_current_thread(nice))
        .build()
}

fn lower_current_thread(nice: i32) {
    let thread = gettid();
    let normal = getpriority_process(Some(thread)).unwrap_or(0);
    if let Err(error) = setpriority_process(Some(thread), (normal + nice).min(19)) {
        tracing::warn!(%error, nice, "the lowered thread's CPU priority could not be set");
    }
}

/// Where work that should give way to ingest runs: on a thread `nice` lower while ingest
/// catches up, where it is awaited otherwise (see the module). The thread is started when
/// a catch-up begins and stopped when it ends, so that what it allocated does not stay
/// with an idle thread's heap: a thread that ends hands its allocator pages to the
/// threads that go on.
pub struct Yielding {
    nice: i32,
    catching_up: Box<dyn Fn() -> bool + Send + Sync>,
    lowered: Option<Runtime>,
}

impl Yielding {
    /// Work runs `nice` lower while `catching_up` says so (0: never).
    pub fn new(nice: i32, catching_up: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        metrics::gauge!(crate::metrics::BACKGROUND_LOWERED).set(0.0);
        Yielding {
            nice,
            catching_up: Box::new(catching_up),
            lowered: None,
        }
    }

    /// `work`'s output, from the lowered thread while ingest catches up, else awaited
    /// here (and for good if the thread cannot start). A panic in `work` resumes here;
    /// an error only if the lowered thread stopped under it (the process shutting down).
    pub async fn run<T: Send + 'static>(
        &mut self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let catching_up = self.nice > 0 && (self.catching_up)();
        if catching_up && self.lowered.is_none() {
            match lowered_runtime(YIELDING_THREAD, self.nice) {
                Ok(lowered) => {
                    self.lowered = Some(lowered);
                    metrics::gauge!(crate::metrics::BACKGROUND_LOWERED).set(1.0);
                    metrics::counter!(crate::metrics::BACKGROUND_LOWERINGS).increment(1);
                    tracing::debug!(
                        nice = self.nice,
                        "ingest catching up: work moves to the lowered thread"
                    );
                }
                Err(error) => {
                    // A speed-up, not a necessity: the work goes on where it is awaited.
                    tracing::warn!(%error, "the lowered thread did not start; work keeps the process's priority from now on");
                    self.nice = 0;
                }
            }
        } else if !catching_up && self.lowered.is_some() {
            self.stop_lowered();
            tracing::debug!("ingest caught up: work runs at the process's priority again");
        }
        let Some(lowered) = &self.lowered else {
            return Ok(work.await);
        };
        match lowered.spawn(work).await {
            Ok(output) => Ok(output),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => anyhow::bail!("the lowered thread stopped"),
        }
    }

    /// Stops the lowered thread, if any, without waiting (dropping a runtime inside
    /// another one would panic).
    fn stop_lowered(&mut self) {
        if let Some(lowered) = self.lowered.take() {
            lowered.shutdown_background();
            metrics::gauge!(crate::metrics::BACKGROUND_LOWERED).set(0.0);
        }
    }
}

impl Drop for Yielding {
    fn drop(&mut self) {
        self.stop_lowered();
    }
}

/// The runtimes of their own the configuration asks for, beside the main one; shut down
/// without waiting when dropped (dropping a runtime inside another one would panic).
pub struct Runtimes {
    http: Option<Runtime>,
    background: Option<Runtime>,
    writers: Option<Runtime>,
}

impl Runtimes {
    /// The HTTP servers' runtime (`HTTP_WORKERS` threads; none for 0) and the background
    /// runtime (`BACKGROUND_WORKERS` threads; none for 0).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let mut runtimes = Runtimes {
            http: None,
            background: None,
            writers: None,
        };
        if config.http_workers > 0 {
            runtimes.http = Some(
                runtime(usize::from(config.http_workers), "http")
                    .context("the HTTP runtime starts")?,
            );
        }
        if config.background_workers > 0 {
            runtimes.background = Some(
                runtime(usize::from(config.background_workers), "background")
                    .context("the background runtime starts")?,
            );
        }
        if config.background_nice > 0 {
            runtimes.writers = Some(
                lowered_runtime(WRITERS_THREAD, config.background_nice)
                    .context("the lowered writers' runtime starts")?,
            );
        }
        Ok(runtimes)
    }

    /// Where the Redis write-through and the history writer run: on a thread of their
    /// own `BACKGROUND_NICE` lower for good (else on the background runtime). Neither
    /// a request nor a delta waits for them (Redis serves replicas that start cold,
    /// PostgreSQL the finished matches), but the write-through renders every changed
    /// match every `CACHE_WRITE_INTERVAL`: at the process's priority that burst took the
    /// CPU from the live path, at a lower one the kernel gives the live path the CPU
    /// first (BENCHMARKS.md, eighteenth round).
    pub fn lowered_writers(&self) -> Handle {
        Self::or_current(self.writers.as_ref().or(self.background.as_ref()))
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

    fn or_current(runtime: Option<&Runtime>) -> Handle {
        runtime.map_or_else(Handle::current, |r| r.handle().clone())
    }
}

impl Drop for Runtimes {
    fn drop(&mut self) {
        for runtime in [
            self.http.take(),
            self.background.take(),
            self.writers.take(),
        ]
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn niceness() -> i32 {
        getpriority_process(Some(gettid())).expect("a thread's own priority is readable")
    }

    #[test]
    fn work_runs_lowered_while_ingest_catches_up_and_where_awaited_after() {
        let main = runtime(1, "main").expect("it starts");
        let normal = main.block_on(async { niceness() });
        let catching_up = Arc::new(AtomicBool::new(false));
        let mut yielding = Yielding::new(7, {
            let catching_up = catching_up.clone();
            move || catching_up.load(Ordering::Relaxed)
        });
        let seen = |yielding: &mut Yielding| {
            main.block_on(yielding.run(async { niceness() }))
                .expect("the lowered thread runs")
        };
        assert_eq!(seen(&mut yielding), normal);
        catching_up.store(true, Ordering::Relaxed);
        // Lowering needs no privilege: this holds for any user.
        assert_eq!(seen(&mut yielding), (normal + 7).min(19));
        assert_eq!(seen(&mut yielding), (normal + 7).min(19));
        catching_up.store(false, Ordering::Relaxed);
        assert_eq!(seen(&mut yielding), normal);
        assert!(yielding.lowered.is_none(), "the lowered thread stops after");
        catching_up.store(true, Ordering::Relaxed);
        assert_eq!(seen(&mut yielding), (normal + 7).min(19));
        assert_eq!(seen(&mut Yielding::new(0, || false)), normal);
        assert_eq!(seen(&mut Yielding::new(0, || true)), normal);
        // The thread that started the lowered thread keeps its priority.
        assert_eq!(main.block_on(async { niceness() }), normal);
    }

    #[test]
    fn the_cache_and_history_writers_run_lowered_for_good_unless_told_not_to() {
        use clap::Parser as _;
        let main = runtime(1, "main").expect("it starts");
        let normal = main.block_on(async { niceness() });
        let seen = |nice: &str| {
            let cli = crate::cli::Cli::try_parse_from(["match-stats", "--background-nice", nice])
                .expect("the flags parse");
            let runtimes = Runtimes::new(&cli.config).expect("the runtimes start");
            let on = runtimes.lowered_writers();
            main.block_on(async { on.spawn(async { niceness() }).await })
                .expect("the work runs")
        };
        assert_eq!(seen("6"), (normal + 6).min(19));
        assert_eq!(seen("0"), normal);
    }

    #[test]
    fn a_panic_in_lowered_work_resumes_where_it_is_awaited() {
        let main = runtime(1, "main").expect("it starts");
        let mut yielding = Yielding::new(1, || true);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            main.block_on(yielding.run(async { panic!("in the work") }))
        }));
        assert!(caught.is_err());
    }
}
