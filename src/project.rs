//! The query side's loops: the projector (deltas stream → read model) and the cache
//! writer (read model → Redis).
//!
//! Every replica runs both: the projector reads the whole deltas stream with an ordered
//! consumer (so any replica answers for any match) and marks what it changed; the cache
//! writer writes the latest snapshot of each changed match through to Redis every
//! `CACHE_WRITE_INTERVAL` (coalescing many versions into one write), everything again
//! every `CACHE_RESYNC_INTERVAL` and whenever Redis comes back.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use match_stats_commands::{MatchId, StatDelta};
use match_stats_queries::cache::{BreakerState, RedisCache};
use match_stats_queries::{MatchBuilder, ReadModel};
use tokio_util::sync::CancellationToken;

/// While catching up, how often the projector builds and publishes snapshots.
pub const CATCH_UP_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// How often the projector drops completed matches past their retention.
pub const EVICTION_INTERVAL: Duration = Duration::from_secs(10);

/// Matches whose latest snapshot Redis has not seen yet.
#[derive(Debug, Default)]
pub struct Dirty(Mutex<BTreeSet<MatchId>>);

impl Dirty {
    fn extend(&self, ids: impl IntoIterator<Item = MatchId>) {
        self.0.lock().expect("dirty set").extend(ids);
    }

    fn take(&self) -> BTreeSet<MatchId> {
        std::mem::take(&mut *self.0.lock().expect("dirty set"))
    }
}

/// Reads the deltas stream from its start into the read model until cancelled; marks the
/// model caught up once it has read what the stream held at start.
pub async fn run_projector(
    js: jetstream::Context,
    deltas_stream: String,
    model: Arc<ReadModel>,
    dirty: Arc<Dirty>,
    batch_size: usize,
    retention: Duration,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let mut stream = js.get_stream(&deltas_stream).await?;
    let state = stream.info().await?.state.clone();
    let target = if state.messages == 0 {
        0
    } else {
        state.last_sequence
    };
    if target == 0 {
        model.set_caught_up();
    }
    let (_, mut messages) = crate::streams::read_from(&stream, 0, batch_size, None).await?;
    let mut builders: HashMap<MatchId, MatchBuilder> = HashMap::new();
    // When this replica saw each match complete; completed matches leave memory after
    // `retention` (Redis and the key-value bucket keep them for the same time).
    let mut completed_at: HashMap<MatchId, Instant> = HashMap::new();
    let mut eviction = tokio::time::interval(EVICTION_INTERVAL);
    let mut pending: BTreeSet<MatchId> = BTreeSet::new();
    let mut last_publish = Instant::now();
    let started = Instant::now();
    loop {
        let chunk = tokio::select! {
            _ = token.cancelled() => break,
            _ = eviction.tick() => {
                let expired: Vec<MatchId> = completed_at
                    .iter()
                    .filter(|(_, at)| at.elapsed() >= retention)
                    .map(|(id, _)| *id)
                    .collect();
                for id in &expired {
                    completed_at.remove(id);
                    builders.remove(id);
                }
                model.remove(&expired);
                metrics::counter!("match_stats_read_model_evicted_total").increment(expired.len() as u64);
                continue;
            }
            chunk = messages.next() => match chunk {
                Some(chunk) => chunk,
                None => break,
            },
        };
        let mut touched = BTreeSet::new();
        let mut last_sequence = 0;
        for message in chunk {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "deltas consumer error; continuing");
                    continue;
                }
            };
            if let Ok(info) = message.info() {
                last_sequence = info.stream_sequence;
            }
            let delta: StatDelta = match rmp_serde::from_slice(&message.payload) {
                Ok(delta) => delta,
                Err(error) => {
                    metrics::counter!("match_stats_deltas_undecodable_total").increment(1);
                    tracing::error!(%error, subject = %message.subject, "a deltas message is not a StatDelta; skipped");
                    continue;
                }
            };
            let builder = builders
                .entry(delta.match_id)
                .or_insert_with(|| MatchBuilder::new(delta.match_id));
            match builder.apply(&delta) {
                Ok(0) => {}
                Ok(_) => {
                    touched.insert(delta.match_id);
                }
                Err(error) => {
                    metrics::counter!("match_stats_delta_gaps_total").increment(1);
                    tracing::error!(%error, "delta not applied");
                }
            }
        }
        // While catching up, nobody reads the snapshots yet: build them at most every
        // CATCH_UP_PUBLISH_INTERVAL (and once caught up), not per chunk.
        pending.extend(touched);
        let reached = last_sequence >= target;
        if model.is_caught_up() || reached || last_publish.elapsed() >= CATCH_UP_PUBLISH_INTERVAL {
            let snapshots: Vec<_> = pending
                .iter()
                .map(|id| builders.get_mut(id).expect("touched").snapshot())
                .collect();
            for snapshot in snapshots.iter().filter(|s| s.is_completed()) {
                completed_at
                    .entry(snapshot.summary.match_id)
                    .or_insert_with(Instant::now);
            }
            model.publish(snapshots);
            dirty.extend(std::mem::take(&mut pending));
            last_publish = Instant::now();
        }
        metrics::gauge!("match_stats_read_model_matches").set(builders.len() as f64);
        if !model.is_caught_up() && reached {
            model.set_caught_up();
            tracing::info!(
                matches = builders.len(),
                seconds = started.elapsed().as_secs_f64(),
                "read model caught up"
            );
        }
    }
    Ok(())
}

/// Writes changed matches through to Redis until cancelled.
pub async fn run_cache_writer(
    model: Arc<ReadModel>,
    redis: Arc<RedisCache>,
    dirty: Arc<Dirty>,
    write_interval: Duration,
    resync_interval: Duration,
    token: CancellationToken,
) {
    let mut tick = tokio::time::interval(write_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_resync = Instant::now();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => {}
        }
        let state = redis.state();
        metrics::gauge!("match_stats_cache_circuit_state").set(match state {
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
            last_resync = Instant::now() - resync_interval;
        }
        if last_resync.elapsed() >= resync_interval {
            last_resync = Instant::now();
            dirty.extend(model.matches().keys().copied());
        }
        let mut pending = dirty.take().into_iter();
        while let Some(id) = pending.next() {
            let Some(snapshot) = model.get(&id) else {
                continue;
            };
            match redis.put(&snapshot).await {
                Ok(written) => {
                    let result = if written { "written" } else { "older" };
                    metrics::counter!("match_stats_cache_writes_total", "result" => result)
                        .increment(1);
                }
                Err(error) => {
                    metrics::counter!("match_stats_redis_errors_total").increment(1);
                    tracing::warn!(%error, "redis write failed; will retry");
                    failing = true;
                    dirty.extend(std::iter::once(id).chain(pending));
                    break;
                }
            }
        }
    }
}
