//! The shared cache tiers behind the read model: Redis (every replica writes rendered
//! match objects through to it) and the JetStream key-value bucket that keeps completed
//! matches durably.
//!
//! Every Redis call has a bounded timeout and goes through a circuit [`Breaker`]: while
//! it is open no call is made at all, so no request ever waits on a dead Redis. Writes are
//! guarded by version in a Lua script, so an older match object never replaces a newer
//! one. Values over [`COMPRESS_OVER`] bytes are LZ4-compressed.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use match_stats_commands::{MatchId, MatchView};

use crate::read_model::MatchSnapshot;

/// Values larger than this are compressed.
pub const COMPRESS_OVER: usize = 1024;
/// Consecutive failures that open the breaker.
pub const BREAKER_THRESHOLD: u32 = 3;
/// How long an open breaker refuses calls before letting one through.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(2);

const PLAIN: u8 = b'J';
const LZ4: u8 = b'Z';

/// Encodes a match object's JSON for a cache: a tag byte, then JSON or LZ4 of it.
pub fn encode(json: &[u8]) -> Vec<u8> {
    if json.len() > COMPRESS_OVER {
        let mut out = vec![LZ4];
        out.extend(lz4_flex::compress_prepend_size(json));
        out
    } else {
        let mut out = Vec::with_capacity(json.len() + 1);
        out.push(PLAIN);
        out.extend_from_slice(json);
        out
    }
}

/// Decodes what [`encode`] wrote into a match object.
pub fn decode(value: &[u8]) -> Result<MatchView, CacheError> {
    let json = match value.split_first() {
        Some((&PLAIN, json)) => std::borrow::Cow::Borrowed(json),
        Some((&LZ4, packed)) => std::borrow::Cow::Owned(
            lz4_flex::decompress_size_prepended(packed)
                .map_err(|e| CacheError::Corrupt(e.to_string()))?,
        ),
        _ => return Err(CacheError::Corrupt("unknown encoding tag".into())),
    };
    serde_json::from_slice(&json).map_err(|e| CacheError::Corrupt(e.to_string()))
}

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
    Redis(#[from] redis::RedisError),
    /// The key-value bucket failed.
    #[error("key-value bucket: {0}")]
    Kv(String),
    /// A stored value could not be read.
    #[error("corrupt value: {0}")]
    Corrupt(String),
}

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
    async fn call<T>(
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

/// Redis settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` URL (address, password, database).
    pub url: String,
    /// Key prefix, e.g. `match_stats:`.
    pub prefix: String,
    /// Bound on every call.
    pub timeout: Duration,
    /// TTL of an active match's key, refreshed on every write.
    pub ttl_active: Duration,
    /// TTL of a completed match's key.
    pub ttl_completed: Duration,
    /// TLS (`rediss://` URLs): a custom CA and a client certificate, both optional.
    pub tls: Option<RedisTls>,
}

/// Redis TLS material, PEM.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    /// CA certificate to verify the server with, instead of the system roots.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key, for servers that authenticate clients.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Writes the match object if its version is newer than the stored one; keeps the set
/// of active match ids in step.
const PUT_SCRIPT: &str = r"
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[4] == 'active' then
  redis.call('ZADD', KEYS[2], 0, ARGV[5])
else
  redis.call('ZREM', KEYS[2], ARGV[5])
end
return 1
";

/// The Redis tier.
pub struct RedisCache {
    connection: redis::aio::ConnectionManager,
    settings: RedisSettings,
    breaker: Breaker,
    put: redis::Script,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.settings.prefix)
            .field("breaker", &self.breaker.state())
            .finish()
    }
}

impl RedisCache {
    /// A cache that connects lazily (start-up never waits on Redis).
    pub fn new(settings: RedisSettings) -> Result<Self, CacheError> {
        let client = match &settings.tls {
            None => redis::Client::open(settings.url.as_str())?,
            Some(tls) => redis::Client::build_with_tls(
                settings.url.as_str(),
                redis::TlsCertificates {
                    client_tls: tls.client.clone().map(|(client_cert, client_key)| {
                        redis::ClientTlsConfig {
                            client_cert,
                            client_key,
                        }
                    }),
                    root_cert: tls.ca.clone(),
                },
            )?,
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1);
        let connection = client.get_connection_manager_lazy(config)?;
        Ok(RedisCache {
            connection,
            settings,
            breaker: Breaker::default(),
            put: redis::Script::new(PUT_SCRIPT),
        })
    }

    /// The breaker's state: `closed` means healthy.
    pub fn state(&self) -> BreakerState {
        self.breaker.state()
    }

    fn match_key(&self, id: &MatchId) -> String {
        format!("{}match:{id}", self.settings.prefix)
    }

    fn active_key(&self) -> String {
        format!("{}active", self.settings.prefix)
    }

    /// Writes a snapshot if newer than what Redis has; `true` if written.
    pub async fn put(&self, snapshot: &MatchSnapshot) -> Result<bool, CacheError> {
        let id = snapshot.summary.match_id;
        let (status, ttl) = if snapshot.is_completed() {
            ("completed", self.settings.ttl_completed)
        } else {
            ("active", self.settings.ttl_active)
        };
        let value = encode(snapshot.body());
        let mut connection = self.connection.clone();
        let mut invocation = self.put.prepare_invoke();
        invocation
            .key(self.match_key(&id))
            .key(self.active_key())
            .arg(snapshot.version)
            .arg(value)
            .arg(ttl.as_millis() as u64)
            .arg(status)
            .arg(id.as_str());
        self.breaker
            .call(self.settings.timeout, async {
                let written: i64 = invocation.invoke_async(&mut connection).await?;
                Ok(written == 1)
            })
            .await
    }

    /// Reads a match object.
    pub async fn get(&self, id: &MatchId) -> Result<Option<MatchSnapshot>, CacheError> {
        let mut connection = self.connection.clone();
        let key = self.match_key(id);
        let value: Option<Vec<u8>> = self
            .breaker
            .call(self.settings.timeout, async {
                Ok(redis::cmd("HGET")
                    .arg(&key)
                    .arg("b")
                    .query_async(&mut connection)
                    .await?)
            })
            .await?;
        value
            .map(|v| decode(&v).map(MatchSnapshot::from_view))
            .transpose()
    }

    /// Active match ids after `after`, in id order, at most `limit`.
    pub async fn active_ids(
        &self,
        after: Option<&MatchId>,
        limit: usize,
    ) -> Result<Vec<MatchId>, CacheError> {
        let mut connection = self.connection.clone();
        let start = after.map_or("-".to_owned(), |id| format!("({id}"));
        let key = self.active_key();
        let ids: Vec<String> = self
            .breaker
            .call(self.settings.timeout, async {
                Ok(redis::cmd("ZRANGEBYLEX")
                    .arg(&key)
                    .arg(&start)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut connection)
                    .await?)
            })
            .await?;
        Ok(ids
            .iter()
            .filter_map(|id| MatchId::parse(id).ok())
            .collect())
    }

    /// Checks the connection (used to close the breaker when Redis returns).
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.ping_within(self.settings.timeout).await
    }

    /// Checks the connection within `timeout` (start-up: connect and authenticate).
    pub async fn ping_within(&self, timeout: Duration) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        self.breaker
            .call(timeout, async {
                let _: String = redis::cmd("PING").query_async(&mut connection).await?;
                Ok(())
            })
            .await
    }
}

/// The key-value tier: completed matches' final objects, durable in JetStream.
#[derive(Debug, Clone)]
pub struct CompletedStore {
    store: kv::Store,
    timeout: Duration,
}

impl CompletedStore {
    /// Wraps a bucket; `timeout` bounds every read.
    pub fn new(store: kv::Store, timeout: Duration) -> Self {
        CompletedStore { store, timeout }
    }

    /// Reads a completed match.
    pub async fn get(&self, id: &MatchId) -> Result<Option<MatchSnapshot>, CacheError> {
        let value = tokio::time::timeout(self.timeout, self.store.get(id.as_str()))
            .await
            .map_err(|_| CacheError::Timeout(self.timeout))?
            .map_err(|e| CacheError::Kv(e.to_string()))?;
        value
            .map(|v| decode(&v).map(MatchSnapshot::from_view))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_stay_plain_and_large_ones_are_compressed() {
        let small = br#"{"a":1}"#;
        assert_eq!(encode(small)[0], PLAIN);
        let large = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
        let packed = encode(large.as_bytes());
        assert_eq!(packed[0], LZ4);
        assert!(packed.len() < large.len() / 10);
    }

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
}
