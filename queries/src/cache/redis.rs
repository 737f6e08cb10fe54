//! The Redis tier: match objects written through by every replica, read by those that
//! lack a match. Redis is not trusted:
//! - a value is signed (HMAC-SHA256 over the match id, the version and the value, with a
//!   key Redis does not hold): a forged or altered value is a miss;
//! - a read refuses a value over [`MAX_VALUE_BYTES`] in Redis (the script checks before
//!   sending it), and decoding refuses one claiming more than `stored::MAX_DECODED_BYTES`;
//! - the version is the hash's `v`, checked against the object's `event_count`;
//! - a key of the wrong type is a miss (and replaced at the next write); a `v` that is not
//!   a number is older than any; neither counts against the breaker.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use match_stats_commands::MatchId;
use match_stats_commands::view::stored;
use sha2::Sha256;

use super::breaker::Breaker;
use super::{BreakerState, CacheError, STARTUP_CHECK};
use crate::read_model::MatchSnapshot;

/// Largest value a read accepts from Redis (a compressed match object of 10,000 players
/// is a few MB).
pub const MAX_VALUE_BYTES: usize = 16 << 20;

fn is_auth_error(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
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
    /// Bound on every call a request or a probe makes.
    pub timeout: Duration,
    /// Bound on each write-through of a match (a background write nobody waits on, on a
    /// connection of its own so that reads never queue behind it).
    pub write_timeout: Duration,
    /// TTL of an active match's key, refreshed on every write.
    pub ttl_active: Duration,
    /// TTL of a completed match's key.
    pub ttl_completed: Duration,
    /// TLS: a custom CA and a client certificate, both optional.
    pub tls: Option<RedisTls>,
    /// The key values are signed with (shared by the replicas, never stored in Redis):
    /// a value whose signature does not match is a miss.
    pub signing_key: Vec<u8>,
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

/// Writes the match object, signed, if its version is newer than the stored one (a `v`
/// that is not a number is older than any; a key of another type is replaced); keeps the
/// set of active match ids in step.
const PUT_SCRIPT: &str = r"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then
  redis.call('DEL', KEYS[1])
end
local current = tonumber(redis.call('HGET', KEYS[1], 'v'))
if current and current >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2], 's', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local set = redis.call('TYPE', KEYS[2])['ok']
if set ~= 'zset' and set ~= 'none' then
  redis.call('DEL', KEYS[2])
end
if ARGV[4] == 'active' then
  redis.call('ZADD', KEYS[2], 0, ARGV[5])
else
  redis.call('ZREM', KEYS[2], ARGV[5])
end
return 1
";

/// Reads `{v, b, s}` of a match's hash: nil for no hash (absent or another type), -1 for
/// a value over the size limit (ARGV[1]), which is not sent.
const GET_SCRIPT: &str = r"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then
  return false
end
if redis.call('HSTRLEN', KEYS[1], 'b') > tonumber(ARGV[1]) then
  return -1
end
return redis.call('HMGET', KEYS[1], 'v', 'b', 's')
";

/// Active match ids after ARGV[1] (a ZRANGEBYLEX bound), at most ARGV[2]; none when the
/// key is not a sorted set.
const ACTIVE_SCRIPT: &str = r"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'zset' then
  return {}
end
return redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, tonumber(ARGV[2]))
";

/// The Redis tier.
pub struct RedisCache {
    /// Reads and probes, bounded by `timeout`.
    connection: redis::aio::ConnectionManager,
    /// The write-through, bounded by `write_timeout`.
    writer: redis::aio::ConnectionManager,
    settings: RedisSettings,
    breaker: Breaker,
    put: redis::Script,
    get: redis::Script,
    active: redis::Script,
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
        let config = |timeout| {
            redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
        };
        let connection = client.get_connection_manager_lazy(config(settings.timeout))?;
        let writer = client.get_connection_manager_lazy(config(settings.write_timeout))?;
        Ok(RedisCache {
            connection,
            writer,
            settings,
            breaker: Breaker::default(),
            put: redis::Script::new(PUT_SCRIPT),
            get: redis::Script::new(GET_SCRIPT),
            active: redis::Script::new(ACTIVE_SCRIPT),
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

    /// The signature of a value: HMAC-SHA256 of the match id, the version and the value.
    fn signature(&self, id: &MatchId, version: u64, value: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.settings.signing_key)
            .expect("HMAC takes any key length");
        mac.update(id.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(&version.to_be_bytes());
        mac.update(value);
        mac
    }

    /// Writes a snapshot if newer than what Redis has; `true` if written.
    pub async fn put(&self, snapshot: &MatchSnapshot) -> Result<bool, CacheError> {
        let id = snapshot.summary.match_id;
        let (status, ttl) = if snapshot.is_completed() {
            ("completed", self.settings.ttl_completed)
        } else {
            ("active", self.settings.ttl_active)
        };
        let value = stored::encode_json(&snapshot.render_body());
        let signature = self
            .signature(&id, snapshot.version, &value)
            .finalize()
            .into_bytes()
            .to_vec();
        let mut connection = self.writer.clone();
        let mut invocation = self.put.prepare_invoke();
        invocation
            .key(self.match_key(&id))
            .key(self.active_key())
            .arg(snapshot.version)
            .arg(value)
            .arg(ttl.as_millis() as u64)
            .arg(status)
            .arg(id.as_str())
            .arg(signature);
        self.breaker
            .call(self.settings.write_timeout, async {
                let written: i64 = invocation.invoke_async(&mut connection).await?;
                Ok(written == 1)
            })
            .await
    }

    /// Reads a match object: `None` when Redis has none; `Corrupt` (a miss, not a
    /// failure) when the value is too large, unsigned, altered, or says another version
    /// than its hash.
    pub async fn get(&self, id: &MatchId) -> Result<Option<MatchSnapshot>, CacheError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.get.prepare_invoke();
        invocation.key(self.match_key(id)).arg(MAX_VALUE_BYTES);
        let reply: redis::Value = self
            .breaker
            .call(self.settings.timeout, async {
                Ok(invocation.invoke_async(&mut connection).await?)
            })
            .await?;
        let fields = match reply {
            redis::Value::Nil => return Ok(None),
            redis::Value::Int(-1) => {
                return Err(CacheError::Corrupt(format!(
                    "a value over {MAX_VALUE_BYTES} bytes"
                )));
            }
            redis::Value::Array(fields) if fields.len() == 3 => fields,
            other => return Err(CacheError::Corrupt(format!("unexpected reply {other:?}"))),
        };
        let bytes = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => Some(b.clone()),
            _ => None,
        };
        let (Some(version), Some(value), Some(signature)) =
            (bytes(&fields[0]), bytes(&fields[1]), bytes(&fields[2]))
        else {
            return Err(CacheError::Corrupt(
                "an incomplete or unsigned value".into(),
            ));
        };
        let version: u64 = std::str::from_utf8(&version)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| CacheError::Corrupt("a version that is not a number".into()))?;
        self.signature(id, version, &value)
            .verify_slice(&signature)
            .map_err(|_| CacheError::Corrupt("a signature that does not match".into()))?;
        let view = stored::decode(&value)?;
        if view.match_id != *id || view.event_count != version {
            return Err(CacheError::Corrupt(
                "another match or version than its key".into(),
            ));
        }
        Ok(Some(MatchSnapshot::from_view(view)))
    }

    /// Active match ids after `after`, in id order, at most `limit` (none when the key
    /// is not a sorted set). The ids are only hints: each match read is verified.
    pub async fn active_ids(
        &self,
        after: Option<&MatchId>,
        limit: usize,
    ) -> Result<Vec<MatchId>, CacheError> {
        let mut connection = self.connection.clone();
        let start = after.map_or("-".to_owned(), |id| format!("({id}"));
        let mut invocation = self.active.prepare_invoke();
        invocation.key(self.active_key()).arg(&start).arg(limit);
        let ids: Vec<String> = self
            .breaker
            .call(self.settings.timeout, async {
                Ok(invocation.invoke_async(&mut connection).await?)
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
            write_timeout: Duration::from_secs(1),
            ttl_active: Duration::from_secs(60),
            ttl_completed: Duration::from_secs(60),
            tls: None,
            signing_key: b"key".to_vec(),
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
}
