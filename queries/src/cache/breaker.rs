//! The circuit [`Breaker`] in front of Redis.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::CacheError;

/// Consecutive failures that open the breaker.
pub const BREAKER_THRESHOLD: u32 = 3;
/// How long an open breaker refuses calls before letting one through.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(2);

/// A circuit breaker: closed, open for [`BREAKER_COOLDOWN`] after
/// [`BREAKER_THRESHOLD`] consecutive failures, then half-open (calls go through; one
/// failure opens it again, one success closes it). Lock-free.
#[derive(Debug)]
pub struct Breaker {
    started: Instant,
    failures: AtomicU32,
    open_until_ms: AtomicU64,
}

/// What the breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused.
    Open,
    /// The cooldown is over; the next call decides.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            started: Instant::now(),
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
        }
    }
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        if self.failures.load(Ordering::Relaxed) < BREAKER_THRESHOLD {
            BreakerState::Closed
        } else if self.now_ms() < self.open_until_ms.load(Ordering::Relaxed) {
            BreakerState::Open
        } else {
            BreakerState::HalfOpen
        }
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    fn failure(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= BREAKER_THRESHOLD {
            let until = self.now_ms() + BREAKER_COOLDOWN.as_millis() as u64;
            self.open_until_ms.store(until, Ordering::Relaxed);
        }
    }

    /// Runs `call` unless open, within `timeout`, and records the result.
    pub(crate) async fn call<T>(
        &self,
        timeout: Duration,
        call: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        if self.state() == BreakerState::Open {
            return Err(CacheError::Open);
        }
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(CacheError::Timeout(timeout)),
        };
        match &result {
            Ok(_) | Err(CacheError::Corrupt(_)) => self.success(),
            Err(_) => self.failure(),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn breaker_opens_after_consecutive_failures_and_refuses_calls() {
        let breaker = Breaker::default();
        for _ in 0..BREAKER_THRESHOLD {
            let r: Result<(), _> = breaker
                .call(Duration::from_millis(5), async {
                    Err(CacheError::Kv("down".into()))
                })
                .await;
            assert!(r.is_err());
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        let r = breaker
            .call(Duration::from_millis(5), async { Ok(()) })
            .await;
        assert!(
            matches!(r, Err(CacheError::Open)),
            "not even tried while open"
        );
        let slow = breaker
            .call(
                Duration::from_millis(5),
                std::future::pending::<Result<(), _>>(),
            )
            .await;
        assert!(matches!(slow, Err(CacheError::Open)));
    }

    #[tokio::test]
    async fn a_bad_value_is_not_a_failure() {
        let breaker = Breaker::default();
        for _ in 0..10 {
            let _: Result<(), _> = breaker
                .call(Duration::from_millis(5), async {
                    Err(CacheError::Corrupt("forged".into()))
                })
                .await;
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
