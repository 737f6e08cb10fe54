//! The shared cache tiers behind the read model: Redis (every replica writes rendered
//! match objects through to it) and the JetStream key-value bucket that keeps completed
//! matches durably.
//!
//! Every Redis call has a bounded timeout and goes through a circuit [`Breaker`]: while
//! it is open no call is made at all, so no request ever waits on a dead Redis. Writes are
//! guarded by version in a Lua script, so an older match object never replaces a newer
//! one. Values are stored as `match_stats_commands::view::stored` encodes them.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::object_store::ObjectStore;
use match_stats_commands::MatchId;
use match_stats_commands::view::stored;

use crate::read_model::MatchSnapshot;

/// Consecutive failures that open the breaker.
pub const BREAKER_THRESHOLD: u32 = 3;
/// How long an open breaker refuses calls before letting one through.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(2);
/// Bound on the start-up check of Redis (connect and authenticate).
pub const STARTUP_CHECK: Duration = Duration::from_secs(2);
/// Reads of the completed-matches bucket may take this many Redis timeouts (a
/// key-value get is a NATS request, slower than a Redis call on the same host).
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
    Redis(#[from] redis::RedisError),
    /// The key-value bucket failed.
    #[error("key-value bucket: {0}")]
    Kv(String),
    /// A stored value could not be read.
    #[error("corrupt value: {0}")]
    Corrupt(String),
    /// Redis refused the credentials (REDIS_USERNAME/REDIS_PASSWORD).
    #[error("redis refused the credentials (REDIS_USERNAME/REDIS_PASSWORD): {0}")]
    Unauthorized(redis::RedisError),
}

impl From<stored::Corrupt> for CacheError {
    fn from(e: stored::Corrupt) -> Self {
        CacheError::Corrupt(e.0)
    }
}

fn is_auth_error(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
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
#[derive(Clone)]
pub struct RedisSettings {
    /// `host:port`; empty: no Redis.
    pub addr: String,
    /// ACL user; empty: the default user.
    pub username: String,
    /// Password; empty: none.
    pub password: String,
    /// Database number.
    pub db: u32,
    /// Key prefix, e.g. `match_stats:`.
    pub prefix: String,
    /// Bound on every call.
    pub timeout: Duration,
    /// TTL of an active match's key, refreshed on every write.
    pub ttl_active: Duration,
    /// TTL of a completed match's key.
    pub ttl_completed: Duration,
    /// TLS: a custom CA and a client certificate, both optional.
    pub tls: Option<RedisTls>,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("db", &self.db)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisSettings {
    /// Where and how to connect: the address, credentials and database as given (never
    /// spliced into a URL, so any character of a password is sent as it is).
    pub fn connection_info(&self) -> Result<redis::ConnectionInfo, CacheError> {
        use redis::IntoConnectionInfo as _;
        let invalid = |detail: String| {
            CacheError::Redis(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "REDIS_ADDR is not host:port",
                detail,
            )))
        };
        let (host, port) = self
            .addr
            .trim()
            .rsplit_once(':')
            .ok_or_else(|| invalid(format!("{:?} has no port", self.addr)))?;
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(format!("{port:?} is not a port")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addr = if self.tls.is_some() {
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host, port)
        };
        let mut redis = redis::RedisConnectionInfo::default().set_db(i64::from(self.db));
        if !self.username.is_empty() {
            redis = redis.set_username(&self.username);
        }
        if !self.password.is_empty() {
            redis = redis.set_password(&self.password);
        }
        Ok(addr.into_connection_info()?.set_redis_settings(redis))
    }
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
    /// The cache, when `addr` is set: Redis is checked within [`STARTUP_CHECK`]; refused
    /// credentials are an error (a misconfiguration), an unreachable Redis only a
    /// warning (the service serves from its read models until Redis answers).
    pub async fn connect(settings: RedisSettings) -> Result<Option<Self>, CacheError> {
        if settings.addr.trim().is_empty() {
            return Ok(None);
        }
        let addr = settings.addr.clone();
        let cache = Self::new(settings)?;
        match cache.ping_within(STARTUP_CHECK).await {
            Ok(()) => tracing::info!(%addr, "redis connected"),
            Err(CacheError::Redis(e)) if is_auth_error(&e) => {
                return Err(CacheError::Unauthorized(e));
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "redis unreachable; serving from memory until it answers")
            }
        }
        Ok(Some(cache))
    }

    /// A cache that connects lazily (start-up never waits on Redis).
    pub fn new(settings: RedisSettings) -> Result<Self, CacheError> {
        let info = settings.connection_info()?;
        let client = match &settings.tls {
            None => redis::Client::open(info)?,
            Some(tls) => redis::Client::build_with_tls(
                info,
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
        let value = stored::encode_json(snapshot.body());
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
        Ok(value
            .map(|v| stored::decode(&v).map(MatchSnapshot::from_view))
            .transpose()?)
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

/// The object-store tier: completed matches' final objects, durable in JetStream.
#[derive(Clone)]
pub struct CompletedStore {
    store: ObjectStore,
    timeout: Duration,
}

impl std::fmt::Debug for CompletedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletedStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CompletedStore {
    /// Wraps an object store; `timeout` bounds every read.
    pub fn new(store: ObjectStore, timeout: Duration) -> Self {
        CompletedStore { store, timeout }
    }

    /// Wraps an object store, its reads bounded by [`KV_TIMEOUT_FACTOR`] Redis timeouts
    /// (an object of a large match takes several NATS requests).
    pub fn with_redis_timeout(store: ObjectStore, redis_timeout: Duration) -> Self {
        Self::new(store, redis_timeout * KV_TIMEOUT_FACTOR)
    }

    /// Reads a completed match (refusing an object over the decoded-size limit).
    pub async fn get(&self, id: &MatchId) -> Result<Option<MatchSnapshot>, CacheError> {
        use async_nats::jetstream::object_store::GetErrorKind;
        use tokio::io::AsyncReadExt;
        let read = async {
            let mut object = match self.store.get(id.as_str()).await {
                Ok(object) => object,
                Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(CacheError::Kv(e.to_string())),
            };
            if object.info().size > stored::MAX_DECODED_BYTES {
                return Err(CacheError::Corrupt(format!(
                    "object of {} bytes",
                    object.info().size
                )));
            }
            let mut bytes = Vec::with_capacity(object.info().size);
            object
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| CacheError::Kv(e.to_string()))?;
            Ok(Some(bytes))
        };
        let bytes = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| CacheError::Timeout(self.timeout))??;
        Ok(bytes
            .map(|v| stored::decode(&v).map(MatchSnapshot::from_view))
            .transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(addr: &str, password: &str) -> RedisSettings {
        RedisSettings {
            addr: addr.into(),
            username: String::new(),
            password: password.into(),
            db: 2,
            prefix: "p:".into(),
            timeout: Duration::from_millis(50),
            ttl_active: Duration::from_secs(60),
            ttl_completed: Duration::from_secs(60),
            tls: None,
        }
    }

    #[test]
    fn the_connection_carries_the_password_as_given_and_the_db() {
        let info = settings("r:6380", "ab/cd#ef@x:1%41")
            .connection_info()
            .unwrap();
        assert_eq!(
            info.addr(),
            &redis::ConnectionAddr::Tcp("r".into(), 6380),
            "the password never changes where it connects"
        );
        assert_eq!(info.redis_settings().password(), Some("ab/cd#ef@x:1%41"));
        assert_eq!(info.redis_settings().db(), 2);
        assert!(settings("no-port", "").connection_info().is_err());
    }

    #[tokio::test]
    async fn an_empty_address_means_no_redis() {
        assert!(
            RedisCache::connect(settings("", ""))
                .await
                .unwrap()
                .is_none()
        );
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
