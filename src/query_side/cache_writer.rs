//! The [`CacheWriter`]: the read model's changed matches, through to Redis.

use std::sync::Arc;
use std::time::Duration;

use match_stats_queries::ReadModel;
use match_stats_queries::cache::{BreakerState, RedisCache};
use tokio_util::sync::CancellationToken;

use super::Dirty;
use crate::metrics as m;

/// Writes changed matches through to Redis.
pub struct CacheWriter {
    /// The read model it writes from.
    pub model: Arc<ReadModel>,
    /// Redis.
    pub redis: Arc<RedisCache>,
    /// What changed since the last write.
    pub dirty: Arc<Dirty>,
    /// How often changed matches are written.
    pub write_interval: Duration,
    /// How often every match is written again.
    pub resync_interval: Duration,
}

impl CacheWriter {
    /// Writes changed matches through to Redis until cancelled.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        let CacheWriter {
            model,
            redis,
            dirty,
            write_interval,
            resync_interval,
        } = self;
        let mut tick = tokio::time::interval(write_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The resync rolls: each write adds the next slice of the matches held (by id),
        // so every match is written again once per resync interval and no tick renders
        // every match at once.
        let slices = (resync_interval.as_secs_f64() / write_interval.as_secs_f64())
            .ceil()
            .max(1.0) as u64;
        let mut slice: u64 = 0;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => {}
            }
            let state = redis.state();
            metrics::gauge!(m::CACHE_CIRCUIT_STATE).set(match state {
                BreakerState::Closed => 0.0,
                BreakerState::HalfOpen => 1.0,
                BreakerState::Open => 2.0,
            });
            if state == BreakerState::Open {
                continue;
            }
            if failing {
                // Redis was unreachable: once it answers, write everything again.
                if redis.ping().await.is_err() {
                    continue;
                }
                tracing::info!("redis is back; repopulating the cache");
                failing = false;
                // Everything again, at once: Redis may have lost it all.
                dirty.extend(model.matches().keys().copied());
            }
            let current = slice % slices;
            dirty.extend(
                model
                    .matches()
                    .keys()
                    .filter(|id| resync_slice(id, slices) == current)
                    .copied(),
            );
            slice = slice.wrapping_add(1);
            let mut pending = dirty.take().into_iter();
            while let Some(id) = pending.next() {
                let Some(snapshot) = model.get(&id) else {
                    continue;
                };
                match redis.put(&snapshot).await {
                    Ok(written) => {
                        let result = if written { "written" } else { "older" };
                        metrics::counter!(m::CACHE_WRITES, "result" => result).increment(1);
                    }
                    Err(error) if error.is_outage() => {
                        metrics::counter!(m::REDIS_ERRORS).increment(1);
                        tracing::warn!(%error, "redis write failed; will retry");
                        failing = true;
                        dirty.extend(std::iter::once(id).chain(pending));
                        break;
                    }
                    Err(error) => {
                        // This key only (Redis refused it): skipped, the others go on.
                        metrics::counter!(m::REDIS_ERRORS).increment(1);
                        tracing::warn!(%error, match_id = %id, "redis refused a write; skipped");
                    }
                }
            }
        }
        Ok(())
    }
}

/// Which slice of a spread resync a match belongs to.
fn resync_slice(id: &match_stats_commands::MatchId, slices: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish() % slices
}
