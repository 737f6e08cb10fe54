//! One partition's loop ([`PartitionWriter`]): restore at start, then pull; process
//! batches while this replica is the writer (a new pin means catching up first), do the
//! housekeeping every second, hand the partition over when the balancer asks, and on the
//! way out write a final snapshot and release the pin.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::balance;
use super::batch::{self, Mode};
use super::context::Context;
use super::held::{
    HeldPartition, Release, Snapshot, release, settle_finished, snapshot, snapshot_cadence,
    try_start_snapshot,
};
use super::housekeeping::{self, Observed};
use super::recovery::{self, Acquire};
use crate::nats::batches::{Backlog, Batches};
use crate::nats::{Partition, deliveries};

type Messages = Batches<consumer::pull::Stream>;
type Pulled = <consumer::pull::Stream as futures::Stream>::Item;

/// One partition's loop and its state.
pub struct PartitionWriter {
    ctx: Arc<Context>,
    partition: Partition,
    consumer: consumer::Consumer<consumer::pull::Config>,
    /// Its state, while this replica holds it.
    held: Option<HeldPartition>,
    /// The pull, while this replica writes the partition or waits for it.
    messages: Option<Messages>,
    /// After giving the partition up (or handing it over), no pulling before this.
    resume_at: Instant,
    /// Events processed since the consumer last had nothing waiting.
    backlog_events: u64,
    token: CancellationToken,
}

/// A backlog of at least this many events, worked off, was a catch-up (not a live burst):
/// what it allocated is freed, and the runtime threads are asked to return the pages
/// ([`crate::memory::return_freed_soon`]).
const CATCH_UP_EVENTS: u64 = 10_000;

/// How a loop turn ended.
enum Turn {
    /// Go on.
    Continue,
    /// Stop: cancelled before a batch's effects were confirmed (its state is dropped).
    Stopped,
}

fn pin_of(message: &jetstream::Message) -> Option<String> {
    message
        .headers
        .as_ref()?
        .get_last(async_nats::header::NATS_PIN_ID)
        .map(|v| v.as_str().to_owned())
}

impl PartitionWriter {
    /// The loop of `partition`, pulling from `consumer`, until `token` is cancelled.
    pub fn new(
        ctx: Arc<Context>,
        partition: Partition,
        consumer: consumer::Consumer<consumer::pull::Config>,
        token: CancellationToken,
    ) -> Self {
        PartitionWriter {
            ctx,
            partition,
            consumer,
            held: None,
            messages: None,
            backlog_events: 0,
            resume_at: Instant::now(),
            token,
        }
    }

    /// Runs until cancelled, or until the consumer is gone (an error).
    pub async fn run(mut self) -> anyhow::Result<()> {
        let (ctx, partition) = (self.ctx.clone(), self.partition);
        if recovery::restore_at_start(&ctx, partition, &self.consumer, &mut self.held, &self.token)
            .await
            .is_err()
        {
            return Ok(());
        }
        let started = ctx.stats.partitions_started.fetch_add(1, Ordering::Relaxed) + 1;
        if started == ctx.stats.partitions.len() {
            ctx.stats.recovered.store(true, Ordering::Relaxed);
            tracing::info!(
                partitions = started,
                applied_sequence = ctx.stats.counts().applied_sequence,
                "recovered; consuming live events"
            );
        }
        // Pull while writing the partition, or on standby while this replica writes less
        // than its share; not for a pin timeout after giving the partition up.
        self.messages = Some(self.pull().await?);
        // Housekeeping reads NATS beside the batches ([`housekeeping::observe`]): the
        // first round at once, the next ones at the partition's own point of the second,
        // so that the partitions do not all ask nats-server at the same moment.
        let period = housekeeping::HOUSEKEEPING_INTERVAL;
        let offset = period * u32::from(partition.n) / u32::from(partition.of.max(1));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let observe = |consumer| housekeeping::observe(ctx.clone(), partition, consumer);
        let mut observing = Some(Box::pin(observe(self.consumer.clone())));
        let result = loop {
            let chunk = tokio::select! {
                _ = self.token.cancelled() => break Ok(Turn::Continue),
                _ = ticks.tick(), if observing.is_none() => {
                    observing = Some(Box::pin(observe(self.consumer.clone())));
                    continue;
                }
                observed = async { observing.as_mut().expect("only while observing").await }, if observing.is_some() => {
                    observing = None;
                    match self.tick(observed).await {
                        Ok(()) => continue,
                        Err(e) => break Err(e),
                    }
                }
                chunk = next_chunk(&mut self.messages) => match chunk {
                    Some(chunk) => chunk,
                    None => break Err(anyhow::anyhow!(
                        "the events consumer {} ended (deleted?); stopping so that a restart recreates it",
                        partition.consumer_name(&ctx.names)
                    )),
                },
            };
            match self.on_chunk(chunk).await {
                Turn::Continue => {}
                Turn::Stopped => {
                    ctx.stats.abandoned.fetch_add(1, Ordering::Relaxed);
                    break Ok(Turn::Stopped);
                }
            }
        };
        self.finish(matches!(result, Ok(Turn::Continue))).await;
        result.map(|_| ())
    }

    /// Processes what a pull delivered: first catching up if it carries a new pin.
    async fn on_chunk(&mut self, chunk: Vec<Pulled>) -> Turn {
        let (ctx, partition) = (self.ctx.clone(), self.partition);
        let chunk: Vec<jetstream::Message> = chunk
            .into_iter()
            .filter_map(|m| {
                m.map_err(|error| tracing::warn!(%error, "pull consumer error; continuing"))
                    .ok()
            })
            .collect();
        let Some(pin) = chunk.first().map(pin_of) else {
            return Turn::Continue;
        };
        // The first message's place in the stream and, with the last's, in the
        // consumer's numbering (one parse of each reply subject).
        let first_info = chunk[0].info().ok();
        let first = first_info.as_ref().map_or(0, |i| i.stream_sequence);
        let last_delivery = chunk
            .last()
            .and_then(|m| m.info().ok())
            .map(|i| i.consumer_sequence);
        let span = first_info.map(|i| i.consumer_sequence).zip(last_delivery);
        // A new pin, or deliveries that never arrived: catch up first.
        let why = match &self.held {
            Some(h) if h.pin == pin => span
                .map(|span| deliveries::skipped(h.next_delivery, span, chunk.len()))
                .filter(|&lost| lost > 0)
                .map(Acquire::LostDeliveries),
            _ => Some(Acquire::NewPin),
        };
        let caught_up = match why {
            Some(why) => {
                recovery::acquire(
                    &ctx,
                    partition,
                    &self.consumer,
                    &mut self.held,
                    pin,
                    first,
                    why,
                    &self.token,
                )
                .await
            }
            None => Ok(()),
        };
        if caught_up.is_err() {
            // Caught up part of the way when stopped: nothing to snapshot.
            release(&ctx, partition, &mut self.held, Release::Shutdown);
            return Turn::Stopped;
        }
        let h = self.held.as_mut().expect("acquired");
        h.next_delivery = span.map(|(_, last)| last + 1);
        if batch::process(&ctx, partition, h, &chunk, Mode::Live, &self.token)
            .await
            .is_err()
        {
            // Applied but not confirmed: this state must not be snapshotted.
            release(&ctx, partition, &mut self.held, Release::Shutdown);
            return Turn::Stopped;
        }
        self.note_backlog(&chunk);
        // The last snapshot's write, if over; the next one when due and the last is over.
        if settle_finished(&ctx, partition, &mut self.held) == Some(Snapshot::GaveUp) {
            self.let_the_pin_lapse();
            return Turn::Continue;
        }
        let h = self.held.as_mut().expect("acquired");
        if h.events_since_snapshot >= snapshot_cadence(&ctx.lifecycle, partition).0
            && !h.snapshots.is_writing()
        {
            try_start_snapshot(&ctx, h).await;
        }
        Turn::Continue
    }

    /// What a processed batch says about the partition's backlog. A full batch with more
    /// behind it starts a catch-up (the read model's projection then runs on a lowered
    /// thread, [`crate::runtimes::Yielding`]); a batch with nothing behind it ends it, and
    /// when the backlog worked off was [`CATCH_UP_EVENTS`] or more, the runtime threads
    /// are asked to return what it allocated.
    fn note_backlog(&mut self, chunk: &[jetstream::Message]) {
        self.backlog_events += chunk.len() as u64;
        let behind = chunk.last().is_some_and(Backlog::waiting_behind);
        let slot = self.ctx.stats.partition(self.partition);
        if behind {
            if chunk.len() >= self.ctx.batch_size {
                slot.catching_up.store(true, Ordering::Relaxed);
            }
            return;
        }
        slot.catching_up.store(false, Ordering::Relaxed);
        if std::mem::take(&mut self.backlog_events) >= CATCH_UP_EVENTS {
            crate::memory::return_freed_soon();
        }
    }

    /// After giving up a partition it wrote: no pulling for a pin timeout. Its pull still
    /// carries the pin, and a pin with no new messages never moves: a replica that gave
    /// the partition up would stay pinned without writing it, and no replica would catch
    /// up on (and snapshot) what it had acknowledged. Once the pin lapses, whoever NATS
    /// pins next acquires the partition, or, with nothing left to deliver, a replica
    /// catches up on the settled partition (housekeeping).
    fn let_the_pin_lapse(&mut self) {
        self.messages = None;
        self.resume_at = Instant::now() + self.ctx.names.pin_timeout;
    }

    /// Housekeeping, a requested hand-over, and whether to pull.
    async fn tick(&mut self, observed: Observed) -> anyhow::Result<()> {
        let (ctx, partition) = (self.ctx.clone(), self.partition);
        let was_writing = self.held.as_ref().is_some_and(HeldPartition::is_writer);
        housekeeping::run(&ctx, partition, observed, &mut self.held, &self.token).await;
        let writing = self.held.as_ref().is_some_and(HeldPartition::is_writer);
        if was_writing && !writing {
            self.let_the_pin_lapse();
        }
        let slot = ctx.stats.partition(partition);
        if slot.hand_over.swap(false, Ordering::Relaxed) && writing {
            // Stop pulling, snapshot, unpin: a waiting replica takes the pin.
            self.messages = None;
            snapshot(&ctx, partition, &mut self.held).await;
            release(&ctx, partition, &mut self.held, Release::Shared);
            balance::unpin(&ctx, partition).await;
            self.let_the_pin_lapse();
        }
        let writing = self.held.as_ref().is_some_and(HeldPartition::is_writer);
        let pull = writing || (!ctx.stats.full() && Instant::now() >= self.resume_at);
        match (pull, self.messages.is_some()) {
            (true, false) => self.messages = Some(self.pull().await?),
            (false, true) => self.messages = None,
            _ => {}
        }
        Ok(())
    }

    /// On the way out: a final snapshot and the pin handed over at once (when it ended
    /// cleanly as the writer), then the state dropped.
    async fn finish(&mut self, clean: bool) {
        let (ctx, partition) = (self.ctx.clone(), self.partition);
        if clean && self.held.as_ref().is_some_and(HeldPartition::is_writer) {
            if snapshot(&ctx, partition, &mut self.held).await == Snapshot::Failed {
                tracing::warn!(%partition, "the final snapshot failed; a restart replays from the last one");
            }
            self.messages = None;
            balance::unpin(&ctx, partition).await;
        }
        release(&ctx, partition, &mut self.held, Release::Shutdown);
    }

    /// Pulls the partition's consumer in its writer group, in batches ([`Batches`]).
    /// Pulls expire well within the pin timeout, so a live writer keeps its pin.
    async fn pull(&self) -> anyhow::Result<Messages> {
        let expires = (self.ctx.names.pin_timeout / 3).max(Duration::from_millis(300));
        let pull = self
            .consumer
            .stream()
            .group(crate::nats::streams::WRITER_GROUP)
            .max_messages_per_batch(self.ctx.batch_size)
            .expires(expires)
            .heartbeat(expires / 3)
            .messages()
            .await?;
        Ok(Batches::new(
            pull,
            self.ctx.batch_size,
            self.ctx.batch_linger,
        ))
    }
}

/// The next chunk of the pull, or never while not pulling.
async fn next_chunk(messages: &mut Option<Messages>) -> Option<Vec<Pulled>> {
    match messages.as_mut() {
        Some(messages) => messages.next().await,
        None => std::future::pending().await,
    }
}
