//! Finding a match: the read model (one `load()`), else Redis, else the
//! completed-matches bucket; while the read model is still catching up, Redis is asked too
//! and the newer object wins. Hit/miss counters per level, and a short negative cache of
//! ids no tier knew. [`ApiState`] is what every handler reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use match_stats_commands::MatchId;
use serde_json::json;

use crate::cache::{CacheError, CompletedStore, RedisCache};
use crate::error::ApiError;
use crate::read_model::{MatchSnapshot, ReadModel};

/// A cache level, for hit/miss counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// This replica's read model.
    Memory,
    /// The shared Redis.
    Redis,
    /// The completed-matches key-value bucket.
    Kv,
}

impl Level {
    const ALL: [Level; 3] = [Level::Memory, Level::Redis, Level::Kv];

    /// `memory`, `redis`, `kv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Memory => "memory",
            Level::Redis => "redis",
            Level::Kv => "kv",
        }
    }
}

/// Hits and misses per level.
#[derive(Debug, Default)]
pub struct LookupStats {
    hits: [AtomicU64; 3],
    misses: [AtomicU64; 3],
}

impl LookupStats {
    fn record(&self, level: Level, hit: bool) {
        let i = level as usize;
        let (counter, result) = if hit {
            (&self.hits[i], "hit")
        } else {
            (&self.misses[i], "miss")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::CACHE_REQUESTS, "level" => level.as_str(), "result" => result)
            .increment(1);
    }

    fn ratio(&self, level: Level) -> (u64, u64, f64) {
        let i = level as usize;
        let (hits, misses) = (
            self.hits[i].load(Ordering::Relaxed),
            self.misses[i].load(Ordering::Relaxed),
        );
        (hits, misses, hits as f64 / (hits + misses).max(1) as f64)
    }

    /// Sets the hit-ratio gauge of every level (before `/metrics` renders).
    pub fn publish_hit_ratios(&self) {
        for level in Level::ALL {
            let (_, _, ratio) = self.ratio(level);
            metrics::gauge!(crate::metrics::CACHE_HIT_RATIO, "level" => level.as_str()).set(ratio);
        }
    }

    /// `{level: {hits, misses, hit_ratio}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let levels: serde_json::Map<_, _> = Level::ALL
            .iter()
            .map(|&level| {
                let (h, m, ratio) = self.ratio(level);
                (
                    level.as_str().to_owned(),
                    json!({"hits": h, "misses": m, "hit_ratio": ratio}),
                )
            })
            .collect();
        levels.into()
    }
}

/// How long an id that no tier knows is answered 404 without asking Redis and the object
/// store again (the read model is always asked: a match that appears is found at once).
pub const NEGATIVE_TTL: std::time::Duration = std::time::Duration::from_secs(2);
/// How many such ids are remembered.
pub const NEGATIVE_CAPACITY: usize = 10_000;

/// Ids no tier knew, and when that was found out.
#[derive(Clone)]
pub struct Misses(Arc<quick_cache::sync::Cache<MatchId, Instant>>);

impl Default for Misses {
    fn default() -> Self {
        Misses(Arc::new(quick_cache::sync::Cache::new(NEGATIVE_CAPACITY)))
    }
}

impl Misses {
    fn recent(&self, id: &MatchId) -> bool {
        self.0.get(id).is_some_and(|at| at.elapsed() < NEGATIVE_TTL)
    }

    fn note(&self, id: MatchId) {
        self.0.insert(id, Instant::now());
    }
}

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// This replica's read model.
    pub model: Arc<ReadModel>,
    /// The shared Redis, if configured.
    pub redis: Option<Arc<RedisCache>>,
    /// The completed-matches bucket (shared: the state is cloned for every request, and
    /// an object store handle carries its stream's whole description).
    pub completed: Option<Arc<CompletedStore>>,
    /// Hit/miss counters.
    pub lookups: Arc<LookupStats>,
    /// Ids no tier knew a moment ago (a negative cache).
    pub misses: Misses,
    /// Live channels of watched matches, for the streams.
    pub live: Arc<crate::live::Live>,
    /// `Cache-Control: max-age` of a completed match's responses.
    pub completed_max_age: std::time::Duration,
}

/// Finds a match in the read model, else Redis, else the completed bucket.
pub async fn find(state: &ApiState, id: &MatchId) -> Result<Arc<MatchSnapshot>, ApiError> {
    let memory = state.model.get(id);
    let caught_up = state.model.is_caught_up();
    if let Some(snapshot) = &memory
        && caught_up
    {
        state.lookups.record(Level::Memory, true);
        return Ok(snapshot.clone());
    }
    state.lookups.record(Level::Memory, false);
    if memory.is_none() && state.misses.recent(id) {
        return Err(ApiError::not_found(format!("match {id} not found")));
    }
    let mut best = memory;
    // Only a miss every tier answered is remembered (an error says nothing).
    let mut answered = true;
    if let Some(redis) = &state.redis {
        match redis.get(id).await {
            Ok(Some(found)) => {
                state.lookups.record(Level::Redis, true);
                if best.as_ref().is_none_or(|b| b.version < found.version) {
                    best = Some(Arc::new(found));
                }
            }
            Ok(None) => state.lookups.record(Level::Redis, false),
            Err(error) => {
                state.lookups.record(Level::Redis, false);
                answered &= matches!(error, CacheError::Corrupt(_));
                tracing::debug!(%error, "redis lookup failed");
            }
        }
    }
    if best.is_none()
        && let Some(completed) = &state.completed
    {
        match completed.get(id).await {
            Ok(Some(found)) => {
                state.lookups.record(Level::Kv, true);
                best = Some(Arc::new(found));
            }
            Ok(None) => state.lookups.record(Level::Kv, false),
            Err(error) => {
                state.lookups.record(Level::Kv, false);
                answered &= matches!(error, CacheError::Corrupt(_));
                tracing::debug!(%error, "object store lookup failed");
            }
        }
    }
    best.ok_or_else(|| {
        if answered {
            state.misses.note(*id);
        }
        ApiError::not_found(format!("match {id} not found"))
    })
}
