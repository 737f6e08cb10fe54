//! A partition's time-based work, every [`HOUSEKEEPING_INTERVAL`]: its consumer's figures
//! (lag, and who NATS pins), giving the partition up when another replica is pinned,
//! snapshots when due, the snapshot-age warning, idle matches ended through the stream,
//! and completed matches leaving memory.
//!
//! The decisions are plain functions ([`pin_check`], [`may_end`]) tested below as
//! given/when/then.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer;
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::held::{
    HeldPartition, Release, Snapshot, release, settle_finished, snapshot_cadence,
    try_start_snapshot,
};
use super::publisher;
use super::recovery;
use super::snapshots::{Marker, SnapshotStore};
use super::stats::{ConsumerLag, Figures, FiguresSource};
use crate::metrics as m;
use crate::nats::Partition;

/// How often the loop checks snapshot age, idle matches and retention when idle itself.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// Fraction of the events stream's max age past which an old snapshot is a warning.
pub const SNAPSHOT_AGE_WARNING: f64 = 0.8;

/// Who NATS pins as the partition's writer, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinned {
    /// The consumer did not answer.
    Unknown,
    /// No client is pinned.
    Nobody,
    /// This client (by its pin id).
    Client(String),
}

/// What to do about the pin after a consumer check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinCheck {
    /// Nothing: this replica is pinned, or nobody else is.
    Keep,
    /// Another client is pinned for the first time seen: remember it, and give the
    /// partition up if it is still pinned at the next check.
    Suspect(String),
    /// Another client is pinned for the second check in a row: give the partition up.
    GiveUp,
}

/// The two-strike rule: a partition is given up when another client is pinned at two
/// checks in a row (a message with this replica's new pin would have arrived in between,
/// had NATS pinned it back).
pub fn pin_check(own: Option<&str>, suspected: Option<&str>, pinned: &Pinned) -> PinCheck {
    match pinned {
        Pinned::Client(other) if own != Some(other.as_str()) => {
            if suspected == Some(other.as_str()) {
                PinCheck::GiveUp
            } else {
                PinCheck::Suspect(other.clone())
            }
        }
        _ => PinCheck::Keep,
    }
}

/// Whether this replica may end idle matches: as the pinned writer; or, with no writer
/// pinned, when its state covers everything the consumer has settled (nothing pending,
/// nothing in flight: `settled_at` is the ack floor then). Any replica that may end them
/// publishes the same `match_end`s, deduplicated by id.
pub fn may_end(own: Option<&str>, pinned: &Pinned, settled_at: Option<u64>, applied: u64) -> bool {
    match pinned {
        Pinned::Client(pinned) => own == Some(pinned.as_str()),
        Pinned::Nobody => settled_at.is_some_and(|floor| applied >= floor),
        Pinned::Unknown => false,
    }
}

/// What one round of housekeeping reads from NATS: the partition's consumer and its
/// marker. Read while the partition goes on deciding batches ([`observe`] owns what it
/// needs), so that the two round trips never hold up its events: every partition waiting
/// on them at the same point of each second showed as a stall in the live latencies
/// (BENCHMARKS.md, twenty-eighth round).
pub struct Observed {
    info: Option<consumer::Info>,
    marker: Option<Marker>,
}

/// Reads the partition's consumer and its marker, each within [`HOUSEKEEPING_INTERVAL`].
pub async fn observe(
    ctx: Arc<Context>,
    partition: Partition,
    consumer: consumer::Consumer<consumer::pull::Config>,
) -> Observed {
    let info = tokio::time::timeout(HOUSEKEEPING_INTERVAL, consumer.get_info()).await;
    let read = SnapshotStore::read_marker(&ctx.snapshots, partition);
    let marker = tokio::time::timeout(HOUSEKEEPING_INTERVAL, read).await;
    Observed {
        info: match info {
            Ok(Ok(info)) => Some(info),
            _ => None,
        },
        marker: marker.ok().and_then(Result::ok).flatten(),
    }
}

/// The held partition's time-based work, on what [`observe`] read. Decisions that
/// compare with the partition's progress stay right when it moved on meanwhile: a
/// marker ahead of the state held now was ahead of it then too, and a partition that
/// applied more since it was seen settled is not taken as settled.
pub async fn run(
    ctx: &Context,
    partition: Partition,
    observed: Observed,
    held: &mut Option<HeldPartition>,
    token: &CancellationToken,
) {
    // Settled: nothing waits in the consumer and nothing is in flight.
    let mut settled_at = None;
    let pinned = match observed.info {
        Some(info) => {
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                settled_at = Some(info.ack_floor.stream_sequence);
            }
            let figures = ConsumerLag {
                pending: info.num_pending,
                ack_pending: info.num_ack_pending as u64,
                redelivered: info.num_redelivered as u64,
            };
            ctx.stats.record_consumer(partition, Some(figures));
            info.priority_groups
                .into_iter()
                .find(|g| g.group == crate::nats::streams::WRITER_GROUP)
                .and_then(|g| g.pinned_client_id)
                .map_or(Pinned::Nobody, Pinned::Client)
        }
        None => {
            ctx.stats.record_consumer(partition, None);
            Pinned::Unknown
        }
    };
    // The partition's marker: the figures of a partition another replica writes, and a
    // fence: a marker ahead of the state this replica holds was written by a writer that
    // processed more since, so this replica's state (and its belief that it writes the
    // partition) is stale.
    let marked = observed.marker;
    if let Some(marker) = &marked
        && held
            .as_ref()
            .is_some_and(|h| marker.sequence > h.matches.applied_sequence())
    {
        tracing::info!(%partition, marker = marker.sequence, "another replica has snapshotted this partition further; giving it up");
        release(ctx, partition, held, Release::StaleSnapshot);
    }
    let marked = marked.map(|m| {
        let sequence = m.sequence;
        ctx.stats.record_figures(
            partition,
            Figures {
                counters: m.counters,
                sequence,
                source: FiguresSource::Snapshot,
            },
        );
        sequence
    });
    if !held.as_ref().is_some_and(HeldPartition::is_writer) {
        // Nobody writes it, everything is acknowledged, and what this replica knows of it
        // (the state it holds, else the marker) is behind: the last writer stopped before
        // snapshotting what it acknowledged. Catching up to the ack floor makes its
        // figures exact here, and the snapshot that follows brings the marker up for every
        // replica.
        let known = held
            .as_ref()
            .map_or(marked.unwrap_or(0), |h| h.matches.applied_sequence());
        if pinned == Pinned::Nobody
            && let Some(floor) = settled_at
            && known < floor
            && recovery::catch_up_settled(ctx, partition, held, floor, token).await
        {
            tracing::info!(%partition, floor, "caught up on an unwritten partition whose snapshot was behind");
        }
    }
    if let Some(h) = held.as_mut() {
        match pin_check(h.pin.as_deref(), h.foreign_pin.as_deref(), &pinned) {
            PinCheck::Keep => h.foreign_pin = None,
            PinCheck::Suspect(other) => h.foreign_pin = Some(other),
            PinCheck::GiveUp => release(ctx, partition, held, Release::PinnedElsewhere),
        }
    }
    if settle_finished(ctx, partition, held) == Some(Snapshot::GaveUp) {
        return;
    }
    let Some(h) = held.as_mut() else { return };
    let age = h.last_snapshot.elapsed();
    if partition.n == 0 {
        metrics::gauge!(m::SNAPSHOT_AGE).set(age.as_secs_f64());
    }
    let max_age = ctx.lifecycle.events_max_age;
    if age.as_secs_f64() > max_age.as_secs_f64() * SNAPSHOT_AGE_WARNING {
        tracing::warn!(%partition, ?age, ?max_age, "the last snapshot is close to the events stream's retention: recovery would lose events");
    }
    // Completed matches leave memory before a snapshot starts: while one is being
    // written, its matches' records are not yet.
    evict_and_expire(ctx, h).await;
    // The writer snapshots; so does a holder when nobody writes the partition.
    let may_snapshot = h.is_writer() || pinned == Pinned::Nobody;
    if may_snapshot
        && age >= snapshot_cadence(&ctx.lifecycle, partition).1
        && h.unsnapshotted()
        && !h.snapshots.is_writing()
    {
        try_start_snapshot(ctx, h).await;
    }
    // Idle matches are ended through the stream, so a replay decides the same.
    let now = chrono::Utc::now().timestamp_millis();
    if may_end(
        h.pin.as_deref(),
        &pinned,
        settled_at,
        h.matches.applied_sequence(),
    ) {
        let idle = h
            .matches
            .idle(now - ctx.lifecycle.idle_timeout.as_millis() as i64);
        if !idle.is_empty() {
            tracing::info!(%partition, matches = idle.len(), "ending idle matches");
            let effects: Vec<_> = idle.iter().map(|m| m.effect(&ctx.names)).collect();
            // Counted once stored (not when NATS drops a re-publish).
            let _ = publisher::publish_effects(ctx, partition, &effects, token).await;
        }
    }
    ctx.stats.record_matches(partition, Some(h.match_figures()));
}

/// Completed matches leave memory on the stream's clock (their records stay: an event for
/// one reloads it); records go once their events have aged out of the stream. Neither
/// while a snapshot is being written (the next tick does it).
async fn evict_and_expire(ctx: &Context, h: &mut HeldPartition) {
    let Some(store) = h.snapshots.idle() else {
        return;
    };
    let stream_now = h.matches.stream_time();
    let evicted = h
        .matches
        .evict_completed(stream_now - ctx.lifecycle.completed_memory_retention.as_millis() as i64);
    metrics::counter!(m::MATCHES_EVICTED).increment(evicted.len() as u64);
    for id in &evicted {
        // Looked up again if the match comes back.
        h.published.remove(id);
    }
    for id in h
        .matches
        .expire(stream_now - ctx.lifecycle.events_max_age.as_millis() as i64)
    {
        if let Err(error) = store.forget(&id).await {
            tracing::warn!(%error, match_id = %id, "could not remove the record of a match whose events aged out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str) -> Pinned {
        Pinned::Client(id.into())
    }

    #[test]
    fn another_pinned_client_is_suspected_once_then_the_partition_is_given_up() {
        // given this replica writes with pin "a", when NATS shows "b" pinned
        assert_eq!(
            pin_check(Some("a"), None, &client("b")),
            PinCheck::Suspect("b".into())
        );
        // then, when "b" is still pinned at the next check
        assert_eq!(
            pin_check(Some("a"), Some("b"), &client("b")),
            PinCheck::GiveUp
        );
        // but a different client at the second check is a first strike again
        assert_eq!(
            pin_check(Some("a"), Some("b"), &client("c")),
            PinCheck::Suspect("c".into())
        );
    }

    #[test]
    fn own_pin_nobody_or_no_answer_keeps_the_partition() {
        assert_eq!(
            pin_check(Some("a"), Some("b"), &client("a")),
            PinCheck::Keep
        );
        assert_eq!(
            pin_check(Some("a"), Some("b"), &Pinned::Nobody),
            PinCheck::Keep
        );
        assert_eq!(pin_check(None, None, &Pinned::Unknown), PinCheck::Keep);
        assert_eq!(
            pin_check(None, None, &client("b")),
            PinCheck::Suspect("b".into()),
            "a held but unpinned partition is also given up to the pinned writer"
        );
    }

    #[test]
    fn the_pinned_writer_ends_idle_matches() {
        assert!(may_end(Some("a"), &client("a"), None, 0));
        assert!(!may_end(Some("a"), &client("b"), Some(10), 10));
        assert!(!may_end(None, &client("b"), Some(10), 10));
    }

    #[test]
    fn with_nobody_pinned_a_replica_whose_state_covers_the_settled_consumer_ends_them() {
        assert!(may_end(None, &Pinned::Nobody, Some(10), 10));
        assert!(may_end(None, &Pinned::Nobody, Some(10), 12));
        assert!(
            !may_end(None, &Pinned::Nobody, Some(10), 9),
            "behind the ack floor"
        );
        assert!(!may_end(None, &Pinned::Nobody, None, 10), "not settled");
        assert!(
            !may_end(Some("a"), &Pinned::Unknown, Some(10), 10),
            "no answer"
        );
    }
}
