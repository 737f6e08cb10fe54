//! The one retry idiom: an operation that fails while a dependency is away (NATS
//! restarting, a leader election, Redis down) is tried again with exponential back-off
//! and jitter, without limit, until it succeeds or the service stops.
//!
//! One warning per outage: the first failure is logged as a warning, later ones at debug,
//! and the recovery once, with how many attempts it took. The delays are `backon`'s
//! jittered exponential back-off; the loop is written here because an attempt may borrow
//! the caller's state mutably, which `backon`'s `Retryable` closures cannot.
//!
//! Start-up is the one place with a bound ([`within`]): before the service runs, a
//! dependency that stays away, or a failure that is not transient, is an error to report.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder as _, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// First back-off.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The service stopped before the operation succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped before it succeeded")]
pub struct Cancelled;

/// Retries an operation until it succeeds or `token` is cancelled: [`Retry::run`] for
/// an operation that is a closure, or, when an attempt borrows the caller's state
/// mutably, the loop written out with [`Retry::attempt`] and [`Retry::failed`]:
///
/// ```ignore
/// let mut retry = Retry::new(&token, "restoring a partition");
/// loop {
///     match retry.attempt(restore(&mut held)).await? {
///         Ok(()) => break,
///         Err(error) => retry.failed(&error).await?,
///     }
/// }
/// retry.succeeded();
/// ```
#[derive(Debug)]
pub struct Retry<'a> {
    token: &'a CancellationToken,
    what: &'static str,
    counter: Option<&'static str>,
    streak: Option<&'a std::sync::atomic::AtomicU64>,
    delays: backon::ExponentialBackoff,
    failures: u64,
    started: Instant,
}

impl<'a> Retry<'a> {
    /// Retries `what` (for the logs) until `token` is cancelled.
    pub fn new(token: &'a CancellationToken, what: &'static str) -> Self {
        Retry {
            token,
            what,
            counter: None,
            streak: None,
            delays: ExponentialBuilder::default()
                .with_min_delay(MIN_BACKOFF)
                .with_max_delay(MAX_BACKOFF)
                .with_jitter()
                .without_max_times()
                .build(),
            failures: 0,
            started: Instant::now(),
        }
    }

    /// Also counts every retry in this Prometheus counter.
    pub fn counted(self, counter: &'static str) -> Self {
        Retry {
            counter: Some(counter),
            ..self
        }
    }

    /// Also keeps `streak` at the number of failed attempts in a row (0 on success).
    pub fn streak(self, streak: &'a std::sync::atomic::AtomicU64) -> Self {
        Retry {
            streak: Some(streak),
            ..self
        }
    }

    /// Runs `op` until it returns `Ok`; `Err(Cancelled)` if the token is cancelled first
    /// (an attempt in flight is dropped).
    pub async fn run<T, E, Fut>(mut self, mut op: impl FnMut() -> Fut) -> Result<T, Cancelled>
    where
        E: std::fmt::Display,
        Fut: Future<Output = Result<T, E>>,
    {
        loop {
            match self.attempt(op()).await? {
                Ok(value) => {
                    self.succeeded();
                    return Ok(value);
                }
                Err(error) => self.failed(&error).await?,
            }
        }
    }

    /// One attempt, unless the token is cancelled first.
    pub async fn attempt<T>(&self, attempt: impl Future<Output = T>) -> Result<T, Cancelled> {
        tokio::select! {
            result = attempt => Ok(result),
            _ = self.token.cancelled() => Err(Cancelled),
        }
    }

    /// Notes a failed attempt (a warning for the first of an outage, counted) and waits
    /// the next back-off; `Err(Cancelled)` if the token is cancelled meanwhile.
    pub async fn failed(&mut self, error: &impl std::fmt::Display) -> Result<(), Cancelled> {
        self.failures += 1;
        if let Some(streak) = self.streak {
            streak.store(self.failures, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(counter) = self.counter {
            metrics::counter!(counter).increment(1);
        }
        let delay = self.delays.next().unwrap_or(MAX_BACKOFF);
        if self.failures == 1 {
            tracing::warn!(what = self.what, %error, "failed; retrying with back-off until it succeeds");
        } else {
            tracing::debug!(what = self.what, %error, ?delay, attempt = self.failures + 1, "still failing");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = self.token.cancelled() => Err(Cancelled),
        }
    }

    /// Notes the success that ends an outage (logged once, with the attempts it took).
    pub fn succeeded(&self) {
        if let Some(streak) = self.streak {
            streak.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        if self.failures > 0 {
            tracing::info!(
                what = self.what,
                attempts = self.failures + 1,
                seconds = self.started.elapsed().as_secs_f64(),
                "succeeded after retrying"
            );
        }
    }
}

/// Runs `step` again with the same back-off while its error is `transient` and less than
/// `patience` has passed since the first attempt; any other error, or the one that fails
/// past the patience, is returned as it is. Each retry is a warning.
pub async fn within<T, Fut>(
    what: &str,
    patience: Duration,
    transient: impl Fn(&anyhow::Error) -> bool,
    step: impl FnMut() -> Fut,
) -> anyhow::Result<T>
where
    Fut: Future<Output = anyhow::Result<T>>,
{
    use backon::Retryable as _;
    let backoff = ExponentialBuilder::default()
        .with_min_delay(MIN_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times();
    let started = Instant::now();
    step.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|error| transient(error) && started.elapsed() < patience)
        .notify(|error, delay| {
            tracing::warn!(
                what,
                error = format!("{error:#}"),
                ?delay,
                "failed; trying again"
            );
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_until_it_succeeds() {
        let token = CancellationToken::new();
        let mut calls = 0;
        let result = Retry::new(&token, "test")
            .run(|| {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err("not yet") } else { Ok(n) } }
            })
            .await;
        assert_eq!(result, Ok(3));
    }

    #[tokio::test]
    async fn within_its_patience_retries_only_what_is_transient() {
        let mut calls = 0;
        let result = within(
            "test",
            Duration::from_secs(5),
            |e| e.to_string() == "not yet",
            || {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1 | 2 => Err(anyhow::anyhow!("not yet")),
                        _ => Err(anyhow::anyhow!("refused")),
                    }
                }
            },
        )
        .await;
        let error: anyhow::Result<()> = result;
        assert_eq!(error.unwrap_err().to_string(), "refused");
        assert_eq!(
            calls, 3,
            "two transient failures retried, the third error returned"
        );
        let patience_spent: anyhow::Result<()> = within(
            "test",
            Duration::ZERO,
            |_| true,
            || async { Err(anyhow::anyhow!("not yet")) },
        )
        .await;
        assert!(
            patience_spent.is_err(),
            "past the patience, the error is returned"
        );
    }

    #[tokio::test]
    async fn stops_when_cancelled() {
        let token = CancellationToken::new();
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            canceller.cancel();
        });
        let result: Result<(), _> = Retry::new(&token, "test")
            .run(|| async { Err::<(), _>("never") })
            .await;
        assert_eq!(result, Err(Cancelled));
    }
}
