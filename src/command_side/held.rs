//! A partition held in this replica's memory ([`HeldPartition`]), and the two ways its
//! state leaves a batch boundary: a snapshot to the bucket (started with
//! [`try_start_snapshot`], written in the background and settled with [`settle_finished`];
//! or written and waited for with [`snapshot`]) and giving the partition up
//! ([`release`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::context::Context;
use super::delta_batch::Published;
use super::matches::{PartitionMatches, Verdict};
use super::snapshot_writes::{Covered, RECORDS_PER_SLICE, SnapshotWrites, Written};
use super::snapshots::{Encoded, Marker, SnapshotError, SnapshotStore};
use super::stats::{Counters, Figures, FiguresSource};
use crate::config::Lifecycle;
use crate::metrics as m;
use crate::nats::Partition;

/// A partition's state in this replica's memory.
pub struct HeldPartition {
    /// Its matches.
    pub matches: PartitionMatches,
    /// Its keys in the snapshot bucket, and the snapshot being written.
    pub snapshots: SnapshotWrites,
    /// Its counts of decided messages, as of `matches.applied_sequence()`.
    pub counters: Counters,
    /// Decisions made by a replay of messages no process has acknowledged yet, in stream
    /// order: counted in Prometheus when this replica acknowledges them.
    pub unacked: VecDeque<(u64, Verdict)>,
    /// Per match, the last version the deltas stream holds.
    pub published: Published,
    /// The `Nats-Pin-Id` of the messages last processed: this replica is the writer while
    /// NATS's pinned client for the partition is this one.
    pub pin: Option<String>,
    /// Another client NATS showed pinned at the last check (see
    /// [`super::housekeeping::pin_check`]).
    pub foreign_pin: Option<String>,
    /// The consumer sequence the next delivery should carry (unknown after a new pin):
    /// see [`crate::nats::deliveries`].
    pub next_delivery: Option<u64>,
    /// Events processed since the last snapshot.
    pub events_since_snapshot: u64,
    /// When the last snapshot was written (or the partition restored).
    pub last_snapshot: Instant,
}

impl HeldPartition {
    /// A partition restored from its snapshot store at `sequence`.
    pub fn new(
        store: SnapshotStore,
        matches: PartitionMatches,
        counters: Counters,
    ) -> HeldPartition {
        HeldPartition {
            matches,
            snapshots: SnapshotWrites::new(store),
            counters,
            unacked: VecDeque::new(),
            published: Published::new(),
            pin: None,
            foreign_pin: None,
            next_delivery: None,
            events_since_snapshot: 0,
            last_snapshot: Instant::now(),
        }
    }

    /// Whether the bucket lacks something this state holds: changed matches, or events
    /// decided since the last snapshot. Rejections and duplicates change no match, only
    /// the counters, which reach the other replicas through the marker.
    pub fn unsnapshotted(&self) -> bool {
        self.matches.has_changes() || self.events_since_snapshot > 0
    }

    /// Whether this replica writes the partition.
    pub fn is_writer(&self) -> bool {
        self.pin.is_some()
    }

    /// `(active, completed, applied sequence)`, for the match gauges.
    pub fn match_figures(&self) -> (u64, u64, u64) {
        let (active, completed) = self.matches.match_counts();
        (active, completed, self.matches.applied_sequence())
    }

    /// Its counts as of its applied sequence.
    pub fn figures(&self) -> Figures {
        Figures {
            counters: self.counters.clone(),
            sequence: self.matches.applied_sequence(),
            source: FiguresSource::Memory,
        }
    }

    /// Reloads, from their records, the evicted matches that `subjects` name (the matches
    /// of a batch about to be processed), retrying until the bucket answers.
    pub async fn reload_evicted<'a>(
        &mut self,
        subjects: impl Iterator<Item = &'a str>,
        token: &tokio_util::sync::CancellationToken,
    ) -> Result<(), crate::retry::Cancelled> {
        let mut ids: Vec<match_stats_commands::MatchId> = subjects
            .filter_map(|s| match_stats_commands::MatchId::parse(s.rsplit('.').next()?).ok())
            .filter(|id| self.matches.is_evicted(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        // Evicted matches' records are written (eviction waits for that), but reading
        // one records its revision in the store: the write in progress finishes first.
        let store = self.snapshots.store().await;
        for id in ids {
            let mut retry = crate::retry::Retry::new(token, "reloading a completed match");
            let record = loop {
                match retry.attempt(store.read_record(&id)).await? {
                    Ok(record) => break record,
                    Err(error) => retry.failed(&error).await?,
                }
            };
            retry.succeeded();
            metrics::counter!(m::MATCHES_RELOADED).increment(1);
            self.matches.reload(id, record);
        }
        Ok(())
    }

    /// Counts in Prometheus the replayed decisions up to `sequence`, now acknowledged.
    pub fn acknowledged(&mut self, ctx: &Context, sequence: u64) {
        let done = self.unacked.partition_point(|&(at, _)| at <= sequence);
        ctx.stats
            .record_acknowledged(self.unacked.drain(..done).map(|(_, verdict)| verdict));
    }
}

/// Why a partition was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// NATS pinned another replica.
    PinnedElsewhere,
    /// Another replica wrote the partition's snapshot.
    StaleSnapshot,
    /// This replica is stopping (or stopped before a batch's effects were confirmed).
    Shutdown,
    /// This replica wrote more than its share of the partitions.
    Shared,
    /// Restoring it failed (NATS unavailable...); it is restored again.
    Failed,
}

impl Release {
    /// Every reason.
    pub const ALL: [Release; 5] = [
        Release::PinnedElsewhere,
        Release::StaleSnapshot,
        Release::Shutdown,
        Release::Shared,
        Release::Failed,
    ];

    /// Registers the releases counter at 0 for every reason (`increase()` then sees the
    /// first release of each).
    pub fn register_counters() {
        for reason in Release::ALL {
            metrics::counter!(m::PARTITION_RELEASES, "reason" => reason.as_str()).increment(0);
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Release::PinnedElsewhere => "pinned_elsewhere",
            Release::StaleSnapshot => "stale_snapshot",
            Release::Shutdown => "shutdown",
            Release::Shared => "shared",
            Release::Failed => "failed",
        }
    }
}

/// Drops a partition's state from memory (and its counters from the totals).
pub fn release(
    ctx: &Context,
    partition: Partition,
    held: &mut Option<HeldPartition>,
    why: Release,
) {
    let Some(h) = held.take() else { return };
    ctx.stats.forget_figures(partition);
    let slot = ctx.stats.partition(partition);
    slot.held.store(false, std::sync::atomic::Ordering::Relaxed);
    slot.writing
        .store(false, std::sync::atomic::Ordering::Relaxed);
    slot.catching_up
        .store(false, std::sync::atomic::Ordering::Relaxed);
    ctx.stats.record_matches(partition, None);
    if h.is_writer() && why != Release::Shutdown {
        ctx.stats.record_release(why.as_str());
        tracing::info!(%partition, reason = why.as_str(), "gave up partition");
    }
}

/// When a partition's next snapshot is due: after `SNAPSHOT_EVERY_EVENTS` events or
/// `SNAPSHOT_INTERVAL`, each shortened by up to a quarter by the partition's number.
/// Partitions fed at the same rate would otherwise all snapshot at the same moment: one
/// burst of record encoding and bucket writes that holds up every partition's live
/// events at once.
pub fn snapshot_cadence(lifecycle: &Lifecycle, partition: Partition) -> (u64, Duration) {
    let factor = 1.0 - 0.25 * f64::from(partition.n) / f64::from(partition.of.max(1));
    let events = (lifecycle.snapshot_every_events as f64 * factor).round() as u64;
    (events.max(1), lifecycle.snapshot_interval.mul_f64(factor))
}

/// What a snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshot {
    /// Written.
    Written,
    /// The bucket failed: the changed matches are written at the next snapshot.
    Failed,
    /// Another replica wrote the partition's keys since: this one is stale and gave the
    /// partition up (or held nothing).
    GaveUp,
}

/// Starts a snapshot of the partition's changed matches and its marker in the
/// background, if one of the replica's snapshot slots is free (else the next batch or
/// tick tries again). The write before it must be over (`h.snapshots.is_writing()` is
/// false).
pub async fn try_start_snapshot(ctx: &Context, h: &mut HeldPartition) {
    if let Ok(slot) = ctx.snapshot_slots.clone().try_acquire_owned() {
        start_snapshot(h, slot).await;
    }
}

/// Encodes the snapshot here, a few records between yields (the partition's own events
/// wait for its encoding, the runtime's other tasks do not), and starts its write.
async fn start_snapshot(h: &mut HeldPartition, slot: tokio::sync::OwnedSemaphorePermit) {
    let marker = Marker {
        sequence: h.matches.applied_sequence(),
        counters: h.counters.clone(),
        written_at_ms: chrono::Utc::now().timestamp_millis(),
    };
    let changed = h.matches.take_changed();
    let mut encoded = Encoded::new(&marker);
    let records = changed.iter().filter_map(|id| h.matches.record(id));
    for (n, record) in records.enumerate() {
        encoded.push(record);
        if n % RECORDS_PER_SLICE == RECORDS_PER_SLICE - 1 {
            tokio::task::yield_now().await;
        }
    }
    let covered = Covered {
        changed,
        events: h.events_since_snapshot,
        previous_at: h.last_snapshot,
        sequence: marker.sequence,
        received: marker.counters.received,
    };
    h.snapshots.start(encoded, covered, slot);
    h.events_since_snapshot = 0;
    h.last_snapshot = Instant::now();
}

/// Settles the snapshot write that finished since the last look, if any, without
/// waiting: counted; if another replica wrote the partition since, the partition is
/// given up; if the bucket failed, its matches and events wait for the next snapshot.
pub fn settle_finished(
    ctx: &Context,
    partition: Partition,
    held: &mut Option<HeldPartition>,
) -> Option<Snapshot> {
    let written = held.as_mut()?.snapshots.take_finished()?;
    Some(settle(ctx, partition, held, written))
}

fn settle(
    ctx: &Context,
    partition: Partition,
    held: &mut Option<HeldPartition>,
    written: Written,
) -> Snapshot {
    let Written {
        result,
        covered,
        bytes,
        took,
    } = written;
    match result {
        Ok(matches) => {
            ctx.stats.record_snapshot();
            tracing::debug!(
                %partition,
                sequence = covered.sequence,
                received = covered.received,
                matches,
                bytes,
                took_ms = took.as_secs_f64() * 1e3,
                "snapshot written"
            );
            Snapshot::Written
        }
        Err(error @ SnapshotError::Stale { .. }) => {
            metrics::counter!(m::SNAPSHOT_STALE).increment(1);
            tracing::warn!(%partition, %error, "another replica wrote this partition's snapshot; giving it up");
            release(ctx, partition, held, Release::StaleSnapshot);
            Snapshot::GaveUp
        }
        Err(error) => {
            if let Some(h) = held.as_mut() {
                h.matches.mark_changed(covered.changed);
                h.events_since_snapshot += covered.events;
                h.last_snapshot = covered.previous_at;
            }
            metrics::counter!(m::SNAPSHOT_ERRORS).increment(1);
            tracing::warn!(%partition, %error, "snapshot failed; will retry");
            Snapshot::Failed
        }
    }
}

/// Snapshots a partition's changed matches, then its marker, and waits for it (and for
/// the write before it): at a hand-over and on the way out.
pub async fn snapshot(
    ctx: &Context,
    partition: Partition,
    held: &mut Option<HeldPartition>,
) -> Snapshot {
    let Some(h) = held.as_mut() else {
        return Snapshot::GaveUp;
    };
    h.snapshots.store().await;
    if settle_finished(ctx, partition, held) == Some(Snapshot::GaveUp) {
        return Snapshot::GaveUp;
    }
    let Some(h) = held.as_mut() else {
        return Snapshot::GaveUp;
    };
    let slot = ctx
        .snapshot_slots
        .clone()
        .acquire_owned()
        .await
        .expect("the slots are never closed");
    start_snapshot(h, slot).await;
    h.snapshots.store().await;
    settle_finished(ctx, partition, held).expect("the write just waited for")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_snapshot_at_different_cadences_never_later_than_configured() {
        use clap::Parser as _;
        // The defaults: 10,000 events, 30 s.
        let lifecycle = crate::cli::Cli::try_parse_from(["match-stats"])
            .unwrap()
            .config
            .lifecycle;
        let cadences: Vec<(u64, Duration)> = (0..16)
            .map(|n| snapshot_cadence(&lifecycle, Partition { n, of: 16 }))
            .collect();
        assert_eq!(cadences[0], (10_000, Duration::from_secs(30)));
        assert_eq!(cadences[8], (8_750, Duration::from_millis(26_250)));
        for pair in cadences.windows(2) {
            assert!(pair[1].0 < pair[0].0 && pair[1].1 < pair[0].1);
        }
        assert!(cadences[15].0 >= 7_500 && cadences[15].1 >= Duration::from_millis(22_500));
        let one = Lifecycle {
            snapshot_every_events: 1,
            ..lifecycle.clone()
        };
        assert_eq!(snapshot_cadence(&one, Partition { n: 15, of: 16 }).0, 1);
    }
}
