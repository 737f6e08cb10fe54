//! The first start's backfill: against a database that has never been backfilled, every
//! match in the completed-matches bucket is written (the bucket keeps completed matches
//! for `COMPLETED_RETENTION`), in batches, with progress in the logs and in `/ready`.
//! The deltas stream, as far back as it goes, follows through the history consumer,
//! which a first start creates at the stream's beginning. Both write with the version
//! guard, so their overlap writes nothing twice.

use std::time::{Duration, Instant};

use match_stats_queries::cache::{CacheError, CompletedStore};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::HistoryStats;
use super::record::MatchRecord;
use super::store;
use crate::retry::{Cancelled, Retry};

/// Matches written per batch.
pub const BATCH: usize = 100;
/// How often progress is logged.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// Writes every match of the bucket, then notes the backfill done.
pub async fn run(
    pool: &PgPool,
    completed: &CompletedStore,
    stats: &HistoryStats,
    token: &CancellationToken,
) -> Result<(), Cancelled> {
    let ids = Retry::new(token, "listing the completed-matches bucket")
        .run(|| completed.ids())
        .await?;
    stats.backfill_started(ids.len() as u64);
    tracing::info!(
        matches = ids.len(),
        "history: backfilling from the completed-matches bucket"
    );
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut done = 0u64;
    for chunk in ids.chunks(BATCH) {
        let mut records = Vec::with_capacity(chunk.len());
        for id in chunk {
            // A transient error (NATS busy, a limit, a timeout) is retried; only an
            // object that cannot be decoded is skipped.
            let read = Retry::new(token, "reading a completed match for the backfill")
                .run(|| async {
                    match completed.get(id).await {
                        Ok(found) => Ok(Ok(found)),
                        Err(CacheError::Corrupt(error)) => Ok(Err(error)),
                        Err(error) => Err(error),
                    }
                })
                .await?;
            match read {
                Ok(Some(snapshot)) => records.push(MatchRecord {
                    view: snapshot.to_view(),
                    end_reason: None,
                }),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(match_id = %id, %error, "history backfill: undecodable object skipped")
                }
            }
        }
        Retry::new(token, "writing backfilled history")
            .run(|| store::write(pool, &records))
            .await?;
        done += chunk.len() as u64;
        stats.backfill_progress(done);
        if last_progress.elapsed() >= PROGRESS_INTERVAL {
            last_progress = Instant::now();
            tracing::info!(done, total = ids.len(), "history backfill progress");
        }
    }
    Retry::new(token, "noting the backfill done")
        .run(|| store::backfilled(pool))
        .await?;
    stats.backfill_finished();
    tracing::info!(
        matches = done,
        seconds = started.elapsed().as_secs_f64(),
        "history: backfill from the bucket done; the deltas stream follows"
    );
    Ok(())
}
