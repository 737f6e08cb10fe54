//! One batch of a partition's messages, in stream order: each is decided, the deltas are
//! coalesced per match and trimmed of what the deltas stream already holds, the effects
//! are published and confirmed, then (live) the batch is acknowledged, and the decisions
//! are counted. The same routine serves live consumption and replay.

use std::time::Instant;

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::delta_batch::DeltaBatch;
use super::held::HeldPartition;
use super::matches::{Decision, Source, Verdict};
use super::{completed, publisher};
use crate::metrics as m;
use crate::nats::Partition;
use crate::retry::Cancelled;

/// Where the messages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The partition's durable consumer: the batch is acknowledged once its effects are
    /// confirmed (one ack for all: the consumer acknowledges all), then its decisions are
    /// counted in Prometheus; an event's `traceparent` continues into its span and onto
    /// its delta.
    Live,
    /// A replay through an ordered consumer: nothing to acknowledge. Messages up to
    /// `acknowledged_to` (the consumer's ack floor) were acknowledged, and counted in
    /// Prometheus, by whichever process decided them first; later ones are counted when
    /// this replica acknowledges them.
    Replay {
        /// The consumer's ack floor when the replay started.
        acknowledged_to: u64,
    },
}

/// The stream's stored time of a message, Unix milliseconds.
pub fn stored_at_ms(info: &jetstream::message::Info<'_>) -> i64 {
    (info.published.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Processes one batch; `Err(Cancelled)` if the service stopped before its effects were
/// confirmed (then nothing was acknowledged or counted: NATS redelivers it, and the
/// state in memory must not be snapshotted).
pub async fn process(
    ctx: &Context,
    partition: Partition,
    held: &mut HeldPartition,
    batch: &[jetstream::Message],
    mode: Mode,
    token: &CancellationToken,
) -> Result<(), Cancelled> {
    let started = Instant::now();
    let slot = ctx.stats.partition(partition);
    slot.busy(true);
    let result = process_batch(ctx, partition, held, batch, mode, token, started).await;
    slot.busy(false);
    result
}

async fn process_batch(
    ctx: &Context,
    partition: Partition,
    held: &mut HeldPartition,
    batch: &[jetstream::Message],
    mode: Mode,
    token: &CancellationToken,
    started: Instant,
) -> Result<(), Cancelled> {
    // A completed match that left memory comes back from its record before its events.
    held.reload_evicted(batch.iter().map(|m| m.subject.as_str()), token)
        .await?;
    let matches = &mut held.matches;
    let mut effects = Vec::new();
    let mut deltas = DeltaBatch::default();
    let mut verdicts = Vec::with_capacity(batch.len());
    let mut fresh = Vec::new();
    for message in batch {
        let Ok(info) = message.info() else {
            tracing::warn!(subject = %message.subject, "message without JetStream metadata; skipped");
            continue;
        };
        if info.stream_sequence <= matches.applied_sequence() {
            tracing::debug!(%partition, sequence = info.stream_sequence, applied = matches.applied_sequence(), delivered = info.delivered, "already applied");
            verdicts.push((info.stream_sequence, Verdict::AlreadyApplied));
            continue;
        }
        let source = Source {
            sequence: info.stream_sequence,
            stored_at_ms: stored_at_ms(&info),
            subject: message.subject.as_str(),
        };
        // A traced event gets its span and a delta of its own, live or replayed when not
        // yet acknowledged (a writer taking a partition over replays what the previous
        // one was delivered; it may never have been published).
        let span = match mode {
            Mode::Replay { acknowledged_to } if info.stream_sequence <= acknowledged_to => None,
            _ => crate::telemetry::event_span(message.headers.as_ref(), info.stream_sequence),
        };
        let decision = match &span {
            Some(span) => span.in_scope(|| matches.process(&message.payload, source, &ctx.names)),
            None => matches.process(&message.payload, source, &ctx.names),
        };
        verdicts.push((info.stream_sequence, decision.verdict()));
        match decision {
            Decision::Applied(applied) => {
                // Its first event, delivered for the first time: no writer has published
                // anything of this match (a replay or a redelivery may have).
                if mode == Mode::Live && info.delivered == 1 && applied.entry.version == 1 {
                    fresh.push(applied.match_id);
                }
                let headers = span.as_ref().map(|span| {
                    let mut headers = async_nats::HeaderMap::new();
                    crate::telemetry::inject(span, &mut headers);
                    headers
                });
                deltas.push(applied, headers);
            }
            Decision::Rejected(_, dead_letter) => effects.push(dead_letter),
            Decision::Duplicate | Decision::AlreadyApplied => {}
        }
    }
    // A redelivery after a crash may be batched differently than what the crashed writer
    // published: only what the deltas stream lacks goes out.
    let stopped = |cancelled| {
        tracing::info!(
            %partition,
            unacked = batch.len(),
            "stopped before effects were confirmed; NATS will redeliver"
        );
        cancelled
    };
    let parked = publisher::publish(
        ctx,
        partition,
        &mut held.published,
        &deltas,
        &fresh,
        &effects,
        token,
    )
    .await
    .map_err(stopped)?;
    completed::store(ctx, &held.matches, deltas.completed(), token)
        .await
        .map_err(stopped)?;
    held.matches.recycle(deltas.into_change_lists());
    for (at, verdict) in &mut verdicts {
        if parked.contains(at) {
            *verdict = Verdict::Parked;
        }
    }
    for &(_, verdict) in &verdicts {
        match verdict {
            Verdict::AlreadyApplied => ctx.stats.record_redelivered(),
            decided => held.counters.count(decided),
        }
    }
    match mode {
        Mode::Live => {
            if let Some(last) = batch.last() {
                if let Err(error) = last.ack().await {
                    tracing::warn!(%error, "ack failed; the batch will be redelivered and skipped");
                }
                ctx.stats
                    .record_acknowledged(verdicts.iter().map(|&(_, verdict)| verdict));
                let acked = last.info().map_or(0, |i| i.stream_sequence);
                held.acknowledged(ctx, acked);
            }
            metrics::histogram!(m::PROCESSING_LATENCY).record(started.elapsed().as_secs_f64());
        }
        Mode::Replay { acknowledged_to } => held.unacked.extend(
            verdicts
                .iter()
                .filter(|(at, v)| *at > acknowledged_to && *v != Verdict::AlreadyApplied),
        ),
    }
    ctx.stats
        .record_matches(partition, Some(held.match_figures()));
    ctx.stats.record_figures(partition, held.figures());
    held.events_since_snapshot += verdicts.len() as u64;
    Ok(())
}
