//! Bringing a partition's state up to date: from its snapshot ([`restore`]), then by
//! replaying its subjects of the events stream ([`replay`]) through the same batch
//! routine as live consumption, publishing only the effects the streams lack.
//!
//! At start a partition is restored up to its consumer's ack floor
//! ([`restore_at_start`]): what follows, the consumer delivers. When this replica becomes
//! a partition's writer ([`acquire`]), it catches up on what another writer may have
//! done, up to the first message it was delivered.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::consumer;
use tokio_util::sync::CancellationToken;

use super::batch::{self, Mode};
use super::context::Context;
use super::held::{HeldPartition, Release, release};
use super::matches::PartitionMatches;
use super::snapshots::SnapshotStore;
use crate::metrics as m;
use crate::nats::Partition;
use crate::retry::{Cancelled, Retry};

/// How often a replay logs its progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(3);

/// At start: restores the partition and replays it up to its consumer's ack floor (what
/// was processed and acknowledged, perhaps after the snapshot). Retries (NATS
/// unavailable, a leader election...) until it succeeds.
pub async fn restore_at_start(
    ctx: &Context,
    partition: Partition,
    consumer: &consumer::Consumer<consumer::pull::Config>,
    held: &mut Option<HeldPartition>,
    token: &CancellationToken,
) -> Result<(), Cancelled> {
    let slot = ctx.stats.partition(partition);
    slot.busy(true);
    let mut retry = Retry::new(token, "restoring a partition")
        .counted(m::PARTITION_RESTORE_RETRIES)
        .streak(&slot.retry_streak);
    loop {
        let attempt = async {
            let floor = consumer.get_info().await?.ack_floor.stream_sequence;
            restore(ctx, partition, held, Some(floor), floor, token).await
        };
        match retry.attempt(attempt).await? {
            Ok(()) => break,
            Err(error) => retry.failed(&format!("{error:#}")).await?,
        }
    }
    retry.succeeded();
    slot.busy(false);
    Ok(())
}

/// Brings a partition nobody writes up to its consumer's ack floor `floor` (one
/// attempt): from its snapshot, or from the state this replica holds; whether it did.
pub async fn catch_up_settled(
    ctx: &Context,
    partition: Partition,
    held: &mut Option<HeldPartition>,
    floor: u64,
    token: &CancellationToken,
) -> bool {
    match catch_up(ctx, partition, held, Some(floor), floor, token).await {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(%partition, error = format!("{error:#}"), "catching up on a settled partition failed; trying again later");
            false
        }
    }
}

/// Why a writer catches up before processing a pull ([`acquire`]).
#[derive(Clone, Copy, Debug)]
pub enum Acquire {
    /// Messages with a new pin arrived: this replica became the partition's writer.
    NewPin,
    /// This many deliveries to this replica, the writer, never arrived (see
    /// [`crate::nats::deliveries`]).
    LostDeliveries(u64),
}

/// Catches up before processing a pull whose first message is at sequence `first` (see
/// [`Acquire`]): on what another writer may have done, or on deliveries lost in flight,
/// from its snapshot if another replica wrote one since, then by replaying the partition
/// up to what the consumer has delivered (see [`try_acquire`]); the writer under `pin`
/// after. Retries until it succeeds.
#[allow(clippy::too_many_arguments)]
pub async fn acquire(
    ctx: &Context,
    partition: Partition,
    consumer: &consumer::Consumer<consumer::pull::Config>,
    held: &mut Option<HeldPartition>,
    pin: Option<String>,
    first: u64,
    why: Acquire,
    token: &CancellationToken,
) -> Result<(), Cancelled> {
    let what = match why {
        Acquire::NewPin => "catching up on a partition",
        Acquire::LostDeliveries(lost) => {
            metrics::counter!(m::DELIVERIES_LOST, "consumer" => "events").increment(lost);
            tracing::warn!(%partition, lost, "deliveries never arrived (a connection dropped with them in flight): replaying the partition past them");
            "replaying past lost deliveries"
        }
    };
    let slot = ctx.stats.partition(partition);
    slot.busy(true);
    let mut retry = Retry::new(token, what)
        .counted(m::PARTITION_RESTORE_RETRIES)
        .streak(&slot.retry_streak);
    loop {
        match retry
            .attempt(try_acquire(ctx, partition, consumer, held, first, token))
            .await?
        {
            Ok(()) => break,
            Err(error) => retry.failed(&format!("{error:#}")).await?,
        }
    }
    retry.succeeded();
    slot.busy(false);
    let h = held.as_mut().expect("acquired");
    // (Restored from a snapshot if another replica wrote one since: the writer all the
    // same.)
    h.pin = pin;
    slot.writing
        .store(true, std::sync::atomic::Ordering::Relaxed);
    if let Acquire::NewPin = why {
        h.foreign_pin = None;
        ctx.stats.record_acquisition();
        tracing::info!(
            %partition,
            applied_sequence = h.matches.applied_sequence(),
            "writing partition"
        );
    }
    Ok(())
}

/// One attempt of [`acquire`]: on an error, `held` is consistent (caught up part of the
/// way, or empty) and the call can be repeated.
///
/// It catches up to the last message the consumer has delivered to anyone, not only to
/// the first one delivered here: messages the previous writer received but did not
/// acknowledge come back only once their ack wait expires, after newer ones, and by then
/// this writer has moved past them; so they are decided now, in stream order, and their
/// redelivery finds them done.
async fn try_acquire(
    ctx: &Context,
    partition: Partition,
    consumer: &consumer::Consumer<consumer::pull::Config>,
    held: &mut Option<HeldPartition>,
    first: u64,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let info = consumer.get_info().await?;
    let floor = info.ack_floor.stream_sequence;
    let until = first.saturating_sub(1).max(info.delivered.stream_sequence);
    catch_up(ctx, partition, held, Some(until), floor, token).await
}

/// Catches up to `until` (the consumer had acknowledged up to `acknowledged_to`): from
/// the state this replica holds if no other replica has snapshotted the partition since,
/// else from the snapshot.
async fn catch_up(
    ctx: &Context,
    partition: Partition,
    held: &mut Option<HeldPartition>,
    until: Option<u64>,
    acknowledged_to: u64,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let current = match held.as_mut() {
        Some(h) => h.snapshots.store().await.is_current().await?,
        None => false,
    };
    if current {
        let h = held.as_mut().expect("held");
        // Another writer may have published since this replica last looked.
        h.published.clear();
        replay(ctx, partition, h, until, acknowledged_to, token).await?;
        ctx.stats.record_figures(partition, h.figures());
        Ok(())
    } else {
        release(ctx, partition, held, Release::StaleSnapshot);
        restore(ctx, partition, held, until, acknowledged_to, token).await
    }
}

/// Loads the partition's snapshot into `held` and replays the partition after it (up to
/// `until`; the consumer had acknowledged up to `acknowledged_to`). On an error, `held`
/// is left empty.
async fn restore(
    ctx: &Context,
    partition: Partition,
    held: &mut Option<HeldPartition>,
    until: Option<u64>,
    acknowledged_to: u64,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let (store, restored) =
        SnapshotStore::load(ctx.snapshots.clone(), ctx.records.clone(), partition).await?;
    let from = restored.marker.as_ref().map_or(0, |m| m.sequence);
    let counters = restored.marker.map(|m| m.counters).unwrap_or_default();
    tracing::debug!(%partition, marker = from, received = counters.received, matches = restored.matches.len(), "restored from the snapshot");
    let mut matches = PartitionMatches::restore(restored.matches, from);
    for id in restored.rebuild {
        rebuild(ctx, partition, &mut matches, id, from).await?;
    }
    ctx.stats
        .partition(partition)
        .held
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let h = held.insert(HeldPartition::new(store, matches, counters));
    if let Err(error) = replay(ctx, partition, h, until, acknowledged_to, token).await {
        release(ctx, partition, held, Release::Failed);
        return Err(error);
    }
    if let Some(h) = held.as_ref() {
        ctx.stats.record_matches(partition, Some(h.match_figures()));
        ctx.stats.record_figures(partition, h.figures());
    }
    Ok(())
}

/// Rebuilds a match whose record was unreadable (set aside) by replaying its events up to
/// `upto` (the marker's sequence: its counts, and the effects of these events, are
/// already done), so the partition goes on from the marker with the match whole again.
/// A read that stalls is an error (the acquisition is retried).
async fn rebuild(
    ctx: &Context,
    partition: Partition,
    matches: &mut PartitionMatches,
    id: match_stats_commands::MatchId,
    upto: u64,
) -> anyhow::Result<()> {
    let stream = ctx.js.get_stream(&ctx.names.events_stream).await?;
    let read = crate::nats::streams::read_subject_upto(
        &stream,
        partition.subject_of(&ctx.names, id),
        upto,
        ctx.batch_size,
        "the match's events reader",
        |message, info| {
            let source = super::matches::Source {
                sequence: info.stream_sequence,
                stored_at_ms: batch::stored_at_ms(info),
                subject: message.subject.as_str(),
            };
            matches.process(&message.payload, source, &ctx.names);
        },
    )
    .await?;
    matches.mark_changed([id]);
    tracing::warn!(%partition, match_id = %id, events = read, "rebuilt a match whose snapshot record was unreadable");
    Ok(())
}

/// Replays the partition of the events stream from its applied sequence + 1 to the last
/// message stored when the replay starts (or to `until`); the consumer had acknowledged
/// up to `acknowledged_to`.
#[tracing::instrument(skip_all, fields(%partition))]
async fn replay(
    ctx: &Context,
    partition: Partition,
    held: &mut HeldPartition,
    until: Option<u64>,
    acknowledged_to: u64,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let mut stream = ctx.js.get_stream(&ctx.names.events_stream).await?;
    let state = stream.info().await?.state.clone();
    let last = until.map_or(state.last_sequence, |u| u.min(state.last_sequence));
    let from = held.matches.applied_sequence() + 1;
    if state.messages == 0 || last < from {
        return Ok(());
    }
    if state.first_sequence > from && from > 1 {
        tracing::error!(
            needed = from,
            first = state.first_sequence,
            "events needed for recovery have aged out of the stream; statistics of matches they touched are incomplete"
        );
        metrics::counter!(m::RECOVERY_GAPS).increment(1);
    }
    let (total, mut messages) = crate::nats::streams::read_from(
        &stream,
        from,
        ctx.batch_size,
        Some(partition.filter(&ctx.names)),
    )
    .await?;
    if total == 0 {
        return Ok(());
    }
    ctx.stats.record_replayed(0, total);
    tracing::debug!(
        from,
        last,
        total,
        received = held.counters.received,
        "replaying the partition"
    );
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut done = 0u64;
    loop {
        let Some(chunk) = crate::nats::streams::next_or_stall(&mut messages, "the replay's reader")
            .await
            .with_context(|| format!("replayed {done} of {total}"))?
        else {
            break;
        };
        let mut chunk = chunk.into_iter().collect::<Result<Vec<_>, _>>()?;
        // Up to `last` (the end of the stream when the replay started, or `until`).
        let within = chunk
            .iter()
            .position(|m| m.info().map_or(true, |i| i.stream_sequence > last))
            .unwrap_or(chunk.len());
        let reached_end = within < chunk.len()
            || chunk.last().is_some_and(|m| {
                m.info()
                    .is_ok_and(|i| i.stream_sequence >= last || i.pending == 0)
            });
        chunk.truncate(within);
        batch::process(
            ctx,
            partition,
            held,
            &chunk,
            Mode::Replay { acknowledged_to },
            token,
        )
        .await
        .map_err(|_| anyhow::anyhow!("stopped during recovery"))?;
        done += chunk.len() as u64;
        ctx.stats.record_replayed(chunk.len() as u64, 0);
        if last_log.elapsed() >= PROGRESS_INTERVAL {
            last_log = Instant::now();
            let rate = done as f64 / started.elapsed().as_secs_f64();
            tracing::info!(
                replayed = done,
                of = total,
                rate = format!("{rate:.0}/s"),
                "recovery progress"
            );
        }
        if reached_end || token.is_cancelled() {
            break;
        }
    }
    tracing::debug!(
        replayed = done,
        applied_sequence = held.matches.applied_sequence(),
        received = held.counters.received,
        seconds = started.elapsed().as_secs_f64(),
        "partition replayed"
    );
    Ok(())
}
