//! The service's async runtimes: the main one (ingest, and whatever shares it), the HTTP
//! servers' own ([`Runtimes::http`]) and the query side's background work's own
//! ([`Runtimes::background`]), whose threads run at a lower CPU priority.
//!
//! Why a lower priority: the command side's writers are what acknowledges events and
//! publishes the deltas every downstream service waits for; the projector, the Redis
//! write-through and the history writer follow those deltas and can fall a few
//! milliseconds behind without anyone waiting on them. On a busy machine the kernel's
//! scheduler then gives the CPU to the writers (and to nats-server) first. Measured
//! (BENCHMARKS.md, sixteenth round), against the query side on the main runtime: a
//! catch-up of 1,000,000 events 10% faster at the default niceness, 5, and 14% at 10;
//! but at 10 the read model fell 1.7 s behind in one of two runs at 20,000 events/s on
//! the saturated machine (at 5, 165-264 ms in three). On an idle machine it changes
//! nothing.

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

/// A runtime like [`runtime`] whose threads run at niceness `nice` (Linux: 0 is the
/// default, 19 the lowest priority). A thread that cannot lower its priority says so and
/// runs at the default: slower for ingest, never wrong.
pub fn background_runtime(workers: usize, nice: i32) -> std::io::Result<Runtime> {
    builder(workers, "background")
        .on_thread_start(move || {
            let thread = rustix::thread::gettid();
            if let Err(error) = rustix::process::setpriority_process(Some(thread), nice) {
                tracing::warn!(%error, nice, "a background thread keeps the default CPU priority");
            }
        })
        .build()
}

/// The runtimes of their own the configuration asks for, beside the main one; shut down
/// without waiting when dropped (dropping a runtime inside another one would panic).
pub struct Runtimes {
    http: Option<Runtime>,
    background: Option<Runtime>,
}

impl Runtimes {
    /// The HTTP servers' runtime (`HTTP_WORKERS` threads; none for 0) and the background
    /// runtime (`BACKGROUND_WORKERS` threads at `BACKGROUND_NICE`; none for 0).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let mut runtimes = Runtimes {
            http: None,
            background: None,
        };
        if config.http_workers > 0 {
            runtimes.http = Some(
                runtime(usize::from(config.http_workers), "http")
                    .context("the HTTP runtime starts")?,
            );
        }
        if config.background_workers > 0 {
            runtimes.background = Some(
                background_runtime(
                    usize::from(config.background_workers),
                    config.background_nice,
                )
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
        rustix::process::getpriority_process(Some(rustix::thread::gettid()))
            .expect("a thread's own priority is readable")
    }

    #[test]
    fn background_threads_run_at_the_niceness_asked_and_others_do_not() {
        let before = niceness();
        let background = background_runtime(2, 19).expect("it starts");
        let seen: Vec<i32> = background.block_on(async {
            let tasks = (0..8).map(|_| tokio::spawn(async { niceness() }));
            futures::future::try_join_all(tasks)
                .await
                .expect("no panic")
        });
        assert!(seen.iter().all(|&n| n == 19), "{seen:?}");
        // The process, and a runtime of the ordinary kind, keep theirs.
        assert_eq!(niceness(), before);
        let main = runtime(1, "main").expect("it starts");
        let main_seen = main.block_on(async { tokio::spawn(async { niceness() }).await });
        assert_eq!(main_seen.expect("no panic"), before);
    }
}
