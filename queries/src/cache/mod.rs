//! The shared cache tiers behind the read model: Redis (every replica writes rendered
//! match objects through to it) and the JetStream object store that keeps completed
//! matches durably.
//!
//! - [`breaker`]: every Redis call is bounded by a timeout and goes through a circuit
//!   breaker, so no request ever waits on a dead Redis;
//! - [`redis`]: the Redis tier. Redis is a cache, not trusted: values are signed with a
//!   key Redis does not hold (a forged or tampered value is a miss), reads are bounded in
//!   size, a key of the wrong type is a miss (and replaced at the next write), never a
//!   failure that opens the breaker for everyone;
//! - [`completed`]: the object-store tier.
//!
//! Values are stored as `match_stats_commands::view::stored` encodes them.

pub mod breaker;
pub mod completed;
pub mod redis;

use std::time::Duration;

use match_stats_commands::view::stored;

pub use self::redis::{RedisCache, RedisSettings, RedisTls};
pub use breaker::{Breaker, BreakerState};
pub use completed::CompletedStore;

/// Bound on the start-up check of Redis (connect and authenticate).
pub const STARTUP_CHECK: Duration = Duration::from_secs(2);
/// Reads of the completed-matches store may take this many Redis timeouts (an object is
/// read with NATS requests, slower than a Redis call on the same host).
pub const KV_TIMEOUT_FACTOR: u32 = 4;

/// Why a cache call did not answer.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The breaker is open: the call was not made.
    #[error("circuit open")]
    Open,
    /// No answer within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The object store failed.
    #[error("object store: {0}")]
    Kv(String),
    /// A stored value could not be read or is not to be trusted (a miss, not a failure).
    #[error("corrupt value: {0}")]
    Corrupt(String),
    /// Redis refused the credentials (REDIS_USERNAME/REDIS_PASSWORD).
    #[error("redis refused the credentials (REDIS_USERNAME/REDIS_PASSWORD): {0}")]
    Unauthorized(::redis::RedisError),
}

impl CacheError {
    /// Whether the call failed because Redis is away (retry everything later), not
    /// because of the key or its value.
    pub fn is_outage(&self) -> bool {
        match self {
            CacheError::Open | CacheError::Timeout(_) => true,
            CacheError::Redis(e) => e.is_io_error() || e.is_timeout() || e.is_connection_dropped(),
            _ => false,
        }
    }
}

impl From<stored::Corrupt> for CacheError {
    fn from(e: stored::Corrupt) -> Self {
        CacheError::Corrupt(e.0)
    }
}
