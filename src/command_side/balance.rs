//! Sharing the partitions among the live replicas. Every third of the pin timeout the
//! balancer refreshes this replica's key in the replicas bucket (which expires keys after
//! the pin timeout) and counts the live replicas' keys; a replica writing more than its
//! share (P / replicas, rounded up) hands one partition over. Which replica takes it is
//! NATS's choice among those waiting on the partition.
//!
//! The decisions are plain functions ([`share`], [`to_hand_over`]) tested below.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::stats::flagged;
use crate::metrics as m;
use crate::nats::Partition;

/// Partitions per live replica, rounded up.
pub fn share(partitions: usize, live: usize) -> usize {
    partitions.div_ceil(live.max(1))
}

/// The partition to hand over, if this replica writes more than its share and is not
/// already handing one over: the highest-numbered one it writes.
pub fn to_hand_over(writing: &[u16], share: usize, handing_over: bool) -> Option<u16> {
    (writing.len() > share && !handing_over)
        .then(|| writing.last().copied())
        .flatten()
}

/// This replica's name in the replicas bucket: the host name (the pod's, on Kubernetes)
/// and a random suffix (a restarted process is a new replica).
fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Counts the live replicas and asks a partition's writer to hand it over when this
/// replica writes more than its share, until cancelled; then leaves the bucket.
pub async fn run(ctx: &Context, token: CancellationToken) -> anyhow::Result<()> {
    let prefix = format!("{}.", ctx.names.consumer_name);
    let key = format!("{prefix}{}", replica_id());
    let mut tick =
        tokio::time::interval((ctx.names.pin_timeout / 3).max(Duration::from_millis(300)));
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => {}
        }
        if ctx.replicas.put(&key, Default::default()).await.is_err() {
            continue;
        }
        let Ok(keys) = ctx.replicas.keys().await else {
            continue;
        };
        let Ok(keys) = keys.try_collect::<Vec<String>>().await else {
            continue;
        };
        let live = keys
            .iter()
            .filter(|k| k.starts_with(&prefix))
            .count()
            .max(1);
        metrics::gauge!(m::REPLICAS_LIVE).set(live as f64);
        let slots = &ctx.stats.partitions;
        let writing = flagged(slots, |s| &s.writing);
        let share = share(slots.len(), live);
        ctx.stats.share.store(share, Ordering::Relaxed);
        let handing_over = slots.iter().any(|s| s.hand_over.load(Ordering::Relaxed));
        if let Some(n) = to_hand_over(&writing, share, handing_over) {
            tracing::info!(
                partition = n,
                writing = writing.len(),
                share,
                live,
                "handing a partition over to share the load"
            );
            slots[usize::from(n)]
                .hand_over
                .store(true, Ordering::Relaxed);
        }
    }
    // Leave at once: the others' share grows at their next count.
    let _ = ctx.replicas.delete(&key).await;
    Ok(())
}

/// Releases the partition's pin, so that a waiting replica takes it at once.
pub async fn unpin(ctx: &Context, partition: Partition) {
    let name = partition.consumer_name(&ctx.names);
    if let Ok(stream) = ctx.js.get_stream(&ctx.names.events_stream).await
        && let Err(error) = stream
            .unpin_consumer(&name, crate::nats::streams::WRITER_GROUP)
            .await
    {
        tracing::debug!(%error, %partition, "could not release the pin");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_partitions_per_live_replica_rounded_up() {
        assert_eq!(share(16, 1), 16);
        assert_eq!(share(16, 3), 6);
        assert_eq!(share(16, 16), 1);
        assert_eq!(share(16, 0), 16, "at least this replica is live");
    }

    #[test]
    fn a_replica_over_its_share_hands_its_last_partition_over_one_at_a_time() {
        // given 3 replicas of 16 partitions (share 6), when this one writes 7
        let writing: Vec<u16> = (0..7).collect();
        assert_eq!(to_hand_over(&writing, 6, false), Some(6));
        // but not while one hand-over is still under way
        assert_eq!(to_hand_over(&writing, 6, true), None);
        // and not at or under its share
        assert_eq!(to_hand_over(&writing[..6], 6, false), None);
    }
}
