//! An optional per-client rate limit on `/api/` routes (GCRA, `governor`): a client is
//! its API key when it presents one, else its address. Over the limit: a JSON 429 with
//! `Retry-After` (whole seconds, at least 1).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Clients remembered before idle ones are forgotten.
pub const TRACKED_CLIENTS: usize = 100_000;

/// The keyed limiter.
pub struct Limiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("clients", &self.limiter.len())
            .finish()
    }
}

impl Limiter {
    /// `per_second` requests a second per client, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let quota = Quota::per_second(NonZeroU32::new(per_second.max(1)).expect("non-zero"))
            .allow_burst(NonZeroU32::new(burst.max(1)).expect("non-zero"));
        Limiter {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// `None` when the client may go on, else how many seconds it should wait.
    pub fn check(&self, client: String) -> Option<u64> {
        if self.limiter.len() > TRACKED_CLIENTS {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&client) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Some(wait.as_secs_f64().ceil().max(1.0) as u64)
            }
        }
    }
}

/// Lets `/api/` requests within their client's rate through, answers others 429.
pub async fn limit(State(limiter): State<Arc<Limiter>>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let client = match super::auth::presented(&request) {
        Some(key) => format!("key:{key}"),
        None => request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string()),
    };
    match limiter.check(client) {
        None => next.run(request).await,
        Some(seconds) => {
            metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
            ApiError::retry_after(
                StatusCode::TOO_MANY_REQUESTS,
                format!("rate limit exceeded; retry in {seconds} s"),
                seconds as u32,
            )
            .into_response()
        }
    }
}
