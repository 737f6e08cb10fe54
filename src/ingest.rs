//! The command side's loop: events stream in, aggregates updated, deltas and dead
//! letters out, then acknowledgements; snapshots, idle matches and eviction on the side.
//!
//! Per batch of messages, in stream order: each is decided by
//! [`CommandSide::process`]; the effects are published and confirmed by JetStream,
//! retrying until they are; only then are the messages acknowledged. Effects carry
//! deterministic `Nats-Msg-Id`s, so a retry never stores one twice.
//!
//! On start, [`run`] restores the last snapshot and [`recover`] replays the events stream
//! from just after it to its last message, re-publishing only the effects that the
//! streams do not already hold. Every `SNAPSHOT_EVERY_EVENTS` events or
//! `SNAPSHOT_INTERVAL`, and on shutdown, the changed matches are snapshotted; a stale
//! writer's snapshot is refused and the loop stops with an error.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self, consumer, context::PublishAckFuture, kv, message::PublishMessage, publish::PublishAck,
};
use futures::StreamExt;
use match_stats_commands::{MatchId, Reason, StatDelta};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::command_side::{CommandSide, Effect, EffectKind, Processed, Source};
use crate::config::{Lifecycle, Topology};
use crate::snapshots::{Counters, Marker, SnapshotError, SnapshotStore};

/// Backoff between attempts to publish a batch's effects while NATS is unavailable.
pub const PUBLISH_RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// How often recovery logs its progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(3);
/// Idle heartbeat of the pull consumer (detects a lost server).
pub const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
/// How often the loop checks snapshot age, idle matches and retention when idle itself.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// Fraction of the events stream's max age past which an old snapshot is a warning.
pub const SNAPSHOT_AGE_WARNING: f64 = 0.8;

/// Counters of the ingest path, shared with HTTP handlers and tests. Each is also a
/// Prometheus metric. `received`, `applied`, `duplicates` and `rejected` are carried
/// across restarts in the snapshot; the others count this process's work.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Messages decided (redeliveries of applied messages not included).
    pub received: AtomicU64,
    /// Events applied.
    pub applied: AtomicU64,
    /// Events dropped as duplicates.
    pub duplicates: AtomicU64,
    /// Rejections, indexed like [`Reason::ALL`].
    pub rejected: [AtomicU64; 7],
    /// Redelivered or replayed messages already applied, acknowledged without effect.
    pub redelivered_skipped: AtomicU64,
    /// Delta messages stored by the deltas stream.
    pub deltas_published: AtomicU64,
    /// Dead letters stored by the dead-letter stream.
    pub dead_letters: AtomicU64,
    /// Effects published again that a stream already held (dropped by `Nats-Msg-Id`),
    /// or that recovery skipped because the deltas stream already had that version.
    pub effects_deduplicated: AtomicU64,
    /// The last events stream sequence processed.
    pub applied_sequence: AtomicU64,
    /// Matches in memory that have not ended.
    pub matches_active: AtomicU64,
    /// Matches in memory that have ended.
    pub matches_completed: AtomicU64,
    /// Snapshots written.
    pub snapshots_written: AtomicU64,
    /// `match_end` events published for idle matches.
    pub idle_matches_ended: AtomicU64,
    /// Events waiting in the durable consumer (refreshed every few seconds).
    pub consumer_pending: AtomicU64,
    /// Messages waiting for an ack.
    pub consumer_ack_pending: AtomicU64,
    /// Messages redelivered at least once.
    pub consumer_redelivered: AtomicU64,
    /// The events stream and durable consumer answered the last lag check.
    pub consumer_found: AtomicBool,
    /// Messages replayed so far by recovery, and how many it has to replay.
    pub recovery_done: AtomicU64,
    /// See `recovery_done`.
    pub recovery_total: AtomicU64,
    /// Recovery finished and live consumption started.
    pub ready: AtomicBool,
}

/// A point-in-time copy of [`IngestStats`], as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct IngestCounts {
    pub received: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub rejected: std::collections::BTreeMap<&'static str, u64>,
    pub redelivered_skipped: u64,
    pub deltas_published: u64,
    pub dead_letters: u64,
    pub effects_deduplicated: u64,
    pub applied_sequence: u64,
    pub matches_active: u64,
    pub matches_completed: u64,
    pub snapshots_written: u64,
    pub idle_matches_ended: u64,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl IngestStats {
    /// Reads every counter.
    pub fn counts(&self) -> IngestCounts {
        IngestCounts {
            received: get(&self.received),
            applied: get(&self.applied),
            duplicates: get(&self.duplicates),
            rejected: Reason::ALL
                .iter()
                .zip(&self.rejected)
                .map(|(r, c)| (r.as_str(), get(c)))
                .collect(),
            redelivered_skipped: get(&self.redelivered_skipped),
            deltas_published: get(&self.deltas_published),
            dead_letters: get(&self.dead_letters),
            effects_deduplicated: get(&self.effects_deduplicated),
            applied_sequence: get(&self.applied_sequence),
            matches_active: get(&self.matches_active),
            matches_completed: get(&self.matches_completed),
            snapshots_written: get(&self.snapshots_written),
            idle_matches_ended: get(&self.idle_matches_ended),
        }
    }

    fn counters(&self) -> Counters {
        Counters {
            received: get(&self.received),
            applied: get(&self.applied),
            duplicates: get(&self.duplicates),
            rejected: std::array::from_fn(|i| get(&self.rejected[i])),
        }
    }

    fn restore(&self, counters: &Counters) {
        self.received.store(counters.received, Ordering::Relaxed);
        self.applied.store(counters.applied, Ordering::Relaxed);
        self.duplicates
            .store(counters.duplicates, Ordering::Relaxed);
        for (slot, n) in self.rejected.iter().zip(counters.rejected) {
            slot.store(n, Ordering::Relaxed);
        }
    }

    fn count(&self, outcome: &Processed) {
        if matches!(outcome, Processed::AlreadyApplied) {
            self.redelivered_skipped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("match_stats_redelivered_skipped_total").increment(1);
            return;
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("match_stats_events_received_total").increment(1);
        match outcome {
            Processed::Applied(_) => {
                self.applied.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("match_stats_events_processed_total").increment(1);
            }
            Processed::Duplicate => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("match_stats_events_duplicate_total").increment(1);
            }
            Processed::Rejected { reason, .. } => {
                let i = Reason::ALL
                    .iter()
                    .position(|r| r == reason)
                    .expect("listed");
                self.rejected[i].fetch_add(1, Ordering::Relaxed);
                metrics::counter!("match_stats_events_rejected_total", "reason" => reason.as_str())
                    .increment(1);
            }
            Processed::AlreadyApplied => {}
        }
    }

    fn publish_match_counts(&self, side: &CommandSide) {
        let (active, completed) = side.match_counts();
        self.matches_active.store(active, Ordering::Relaxed);
        self.matches_completed.store(completed, Ordering::Relaxed);
        self.applied_sequence
            .store(side.applied_sequence(), Ordering::Relaxed);
        metrics::gauge!("match_stats_matches_active").set(active as f64);
        metrics::gauge!("match_stats_matches_completed").set(completed as f64);
    }
}

fn stored_at_ms(info: &jetstream::message::Info<'_>) -> i64 {
    (info.published.unix_timestamp_nanos() / 1_000_000) as i64
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Publishes effects and waits for JetStream to confirm them all, retrying the whole set
/// (idempotent by `Nats-Msg-Id`) until it succeeds; `false` if cancelled first.
async fn publish(
    js: &jetstream::Context,
    effects: &[Effect],
    stats: &IngestStats,
    token: &CancellationToken,
) -> bool {
    if effects.is_empty() {
        return true;
    }
    let acks = loop {
        match try_publish(js, effects).await {
            Ok(acks) => break acks,
            Err(error) => {
                metrics::counter!("match_stats_publish_retries_total").increment(1);
                tracing::warn!(%error, effects = effects.len(), "publishing effects failed; retrying");
                tokio::select! {
                    _ = token.cancelled() => return false,
                    _ = tokio::time::sleep(PUBLISH_RETRY_BACKOFF) => {}
                }
            }
        }
    };
    for (effect, ack) in effects.iter().zip(acks) {
        if ack.duplicate {
            stats.effects_deduplicated.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("match_stats_effects_deduplicated_total").increment(1);
            continue;
        }
        match effect.kind {
            EffectKind::Delta { .. } => {
                stats.deltas_published.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("match_stats_deltas_published_total").increment(1);
            }
            EffectKind::CompletedMatch => {
                metrics::counter!("match_stats_completed_matches_stored_total").increment(1);
            }
            EffectKind::DeadLetter(reason) => {
                stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("match_stats_dead_letters_total", "reason" => reason.as_str())
                    .increment(1);
            }
            EffectKind::IdleMatchEnd => {
                stats.idle_matches_ended.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("match_stats_idle_matches_ended_total").increment(1);
            }
        }
    }
    true
}

async fn try_publish(
    js: &jetstream::Context,
    effects: &[Effect],
) -> anyhow::Result<Vec<PublishAck>> {
    let mut pending: Vec<PublishAckFuture> = Vec::with_capacity(effects.len());
    for e in effects {
        let message = PublishMessage::build()
            .payload(e.payload.clone())
            .headers(e.headers.clone())
            .message_id(&e.msg_id);
        pending.push(js.send_publish(e.subject.clone(), message).await?);
    }
    let mut acks = Vec::with_capacity(pending.len());
    for ack in futures::future::join_all(pending.into_iter().map(|p| p.into_future())).await {
        acks.push(ack?);
    }
    Ok(acks)
}

/// The last version the deltas stream holds per match, looked up once per match during
/// recovery, so a replay re-publishes no delta however long ago it was first published.
struct PublishedVersions {
    deltas: jetstream::stream::Stream,
    subject: String,
    known: HashMap<MatchId, u64>,
}

impl PublishedVersions {
    async fn last(&mut self, id: MatchId) -> anyhow::Result<u64> {
        if let Some(v) = self.known.get(&id) {
            return Ok(*v);
        }
        let version = match self
            .deltas
            .direct_get_last_for_subject(format!("{}.{id}", self.subject))
            .await
        {
            Ok(message) => rmp_serde::from_slice::<StatDelta>(&message.payload)?
                .entries
                .last()
                .map_or(0, |e| e.version),
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        self.known.insert(id, version);
        Ok(version)
    }
}

/// Replays the events stream from `side`'s applied sequence + 1 to the last message stored
/// when recovery starts. Effects are published again only where the streams lack them.
#[tracing::instrument(skip_all, fields(stream = %topology.events_stream))]
pub async fn recover(
    js: &jetstream::Context,
    topology: &Topology,
    side: &mut CommandSide,
    stats: &IngestStats,
    batch_size: usize,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let mut stream = js.get_stream(&topology.events_stream).await?;
    let state = stream.info().await?.state.clone();
    let (from, last) = (side.applied_sequence() + 1, state.last_sequence);
    if state.messages == 0 || last < from {
        return Ok(());
    }
    if state.first_sequence > from {
        tracing::error!(
            needed = from,
            first = state.first_sequence,
            "events needed for recovery have aged out of the stream; statistics of matches they touched are incomplete"
        );
        metrics::counter!("match_stats_recovery_gaps_total").increment(1);
    }
    stats
        .recovery_total
        .store(last + 1 - from, Ordering::Relaxed);
    tracing::info!(from, last, "replaying the events stream after the snapshot");
    let mut published = PublishedVersions {
        deltas: js.get_stream(&topology.deltas_stream).await?,
        subject: topology.deltas_subject.clone(),
        known: HashMap::new(),
    };
    let mut messages = crate::streams::read_from(&stream, from, batch_size).await?;
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut done = 0u64;
    while let Some(chunk) = messages.next().await {
        let mut effects = Vec::new();
        let mut outcomes = Vec::new();
        let mut finished = false;
        for message in chunk {
            let message = message?;
            let info = message
                .info()
                .map_err(|e| anyhow::anyhow!("message info: {e}"))?;
            let source = Source {
                sequence: info.stream_sequence,
                stored_at_ms: stored_at_ms(&info),
                subject: message.subject.as_str(),
            };
            let (processed, new_effects) = side.process(&message.payload, source, topology);
            for effect in new_effects {
                if let EffectKind::Delta { match_id, version } = effect.kind
                    && version <= published.last(match_id).await?
                {
                    stats.effects_deduplicated.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                effects.push(effect);
            }
            outcomes.push(processed);
            done += 1;
            if source.sequence >= last {
                finished = true;
                break;
            }
        }
        if !publish(js, &effects, stats, token).await {
            anyhow::bail!("stopped during recovery");
        }
        for outcome in &outcomes {
            stats.count(outcome);
        }
        stats.recovery_done.store(done, Ordering::Relaxed);
        stats.publish_match_counts(side);
        if last_log.elapsed() >= PROGRESS_INTERVAL {
            last_log = Instant::now();
            let rate = done as f64 / started.elapsed().as_secs_f64();
            tracing::info!(
                replayed = done,
                remaining = last.saturating_sub(side.applied_sequence()),
                rate = format!("{rate:.0}/s"),
                "recovery progress"
            );
        }
        if finished || token.is_cancelled() {
            break;
        }
    }
    tracing::info!(
        replayed = done,
        seconds = started.elapsed().as_secs_f64(),
        "recovery done"
    );
    Ok(())
}

/// What the loop needs besides the consumer.
pub struct Ingest {
    /// JetStream.
    pub js: jetstream::Context,
    /// Names.
    pub topology: Topology,
    /// Snapshot cadence, idle timeout, retention.
    pub lifecycle: Lifecycle,
    /// The snapshot bucket.
    pub snapshots: kv::Store,
    /// Messages per batch.
    pub batch_size: usize,
    /// Counters.
    pub stats: Arc<IngestStats>,
}

/// When to snapshot.
struct Cadence {
    events: u64,
    last: Instant,
}

impl Ingest {
    /// Restores, recovers, then consumes live events until cancelled. A stale snapshot
    /// write stops it with an error.
    pub async fn run(
        self,
        consumer: consumer::Consumer<consumer::pull::Config>,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        let (mut store, restored) = SnapshotStore::load(self.snapshots.clone()).await?;
        let from = restored.marker.as_ref().map_or(0, |m| m.sequence);
        if let Some(marker) = &restored.marker {
            self.stats.restore(&marker.counters);
            tracing::info!(
                sequence = marker.sequence,
                matches = restored.matches.len(),
                "restored snapshot"
            );
        }
        let mut side = CommandSide::restore(restored.matches, from);
        recover(
            &self.js,
            &self.topology,
            &mut side,
            &self.stats,
            self.batch_size,
            &token,
        )
        .await?;
        self.stats.publish_match_counts(&side);
        self.stats.ready.store(true, Ordering::Relaxed);
        tracing::info!(
            applied_sequence = side.applied_sequence(),
            "consuming live events"
        );

        let mut cadence = Cadence {
            events: 0,
            last: Instant::now(),
        };
        let result = self
            .consume(consumer, &mut side, &mut store, &mut cadence, &token)
            .await;
        // Final snapshot on the way out (not after a stale-writer error).
        if !matches!(&result, Err(e) if e.downcast_ref::<SnapshotError>().is_some()) {
            self.snapshot(&mut side, &mut store, &mut cadence).await?;
        }
        result
    }

    async fn consume(
        &self,
        consumer: consumer::Consumer<consumer::pull::Config>,
        side: &mut CommandSide,
        store: &mut SnapshotStore,
        cadence: &mut Cadence,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.batch_size)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await?
            .ready_chunks(self.batch_size);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        loop {
            let chunk = tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = housekeeping.tick() => {
                    self.housekeeping(side, store, cadence, token).await?;
                    continue;
                }
                chunk = messages.next() => match chunk {
                    Some(chunk) => chunk,
                    None => anyhow::bail!(
                        "the events consumer {} ended (deleted?); stopping so that a restart recreates it",
                        self.topology.consumer_name
                    ),
                },
            };
            let started = Instant::now();
            let mut effects = Vec::with_capacity(chunk.len());
            let mut outcomes = Vec::with_capacity(chunk.len());
            let mut acks = Vec::with_capacity(chunk.len());
            for message in chunk {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(%error, "pull consumer error; continuing");
                        continue;
                    }
                };
                let Ok(info) = message.info() else {
                    tracing::warn!(subject = %message.subject, "message without JetStream metadata; skipped");
                    continue;
                };
                if info.stream_sequence <= side.applied_sequence() {
                    outcomes.push(Processed::AlreadyApplied);
                } else {
                    let source = Source {
                        sequence: info.stream_sequence,
                        stored_at_ms: stored_at_ms(&info),
                        subject: message.subject.as_str(),
                    };
                    // A `traceparent` on the event continues into this span and onto its delta.

                    let span = crate::telemetry::event_span(
                        message.headers.as_ref(),
                        info.stream_sequence,
                    );

                    let (processed, mut new_effects) = match &span {
                        Some(span) => {
                            span.in_scope(|| side.process(&message.payload, source, &self.topology))
                        }

                        None => side.process(&message.payload, source, &self.topology),
                    };

                    if let Some(span) = &span {
                        let deltas = new_effects
                            .iter_mut()
                            .filter(|e| matches!(e.kind, EffectKind::Delta { .. }));
                        for effect in deltas {
                            crate::telemetry::inject(span, &mut effect.headers);
                        }
                    }

                    effects.extend(new_effects);
                    outcomes.push(processed);
                }
                acks.push(message);
            }
            if !publish(&self.js, &effects, &self.stats, token).await {
                tracing::info!(
                    unacked = acks.len(),
                    "stopped before effects were confirmed; NATS will redeliver"
                );
                return Ok(());
            }
            for message in &acks {
                if let Err(error) = message.ack().await {
                    tracing::warn!(%error, "ack failed; the message will be redelivered and skipped");
                }
            }
            for outcome in &outcomes {
                self.stats.count(outcome);
            }
            self.stats.publish_match_counts(side);
            metrics::histogram!("match_stats_processing_latency")
                .record(started.elapsed().as_secs_f64());
            cadence.events += outcomes.len() as u64;
            if cadence.events >= self.lifecycle.snapshot_every_events {
                self.snapshot(side, store, cadence).await?;
            }
        }
    }

    /// Time-based work: snapshots, idle matches, eviction, snapshot-age warning.
    async fn housekeeping(
        &self,
        side: &mut CommandSide,
        store: &mut SnapshotStore,
        cadence: &mut Cadence,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        let age = cadence.last.elapsed();
        metrics::gauge!("match_stats_snapshot_age_seconds").set(age.as_secs_f64());
        if age.as_secs_f64() > self.lifecycle.events_max_age.as_secs_f64() * SNAPSHOT_AGE_WARNING {
            tracing::warn!(age = ?age, max_age = ?self.lifecycle.events_max_age, "the last snapshot is close to the events stream's retention: recovery would lose events");
        }
        if age >= self.lifecycle.snapshot_interval && side.has_changes() {
            self.snapshot(side, store, cadence).await?;
        }
        let now = now_ms();
        // Idle matches are ended through the stream, so a replay decides the same.
        let idle = side.idle(now - self.lifecycle.idle_timeout.as_millis() as i64);
        let mut effects = Vec::new();
        for (id, event_id, last_update) in &idle {
            let event = serde_json::json!({
                "event_id": event_id,
                "match_id": id,
                "event_type": "match_end",
                "timestamp": last_update,
                "event_data": {"reason": "idle_timeout"},
            });
            effects.push(Effect {
                subject: format!("{}.{id}", self.topology.events_subject),
                msg_id: event_id.clone(),
                headers: Default::default(),
                payload: serde_json::to_vec(&event).expect("events serialize").into(),
                kind: EffectKind::IdleMatchEnd,
            });
        }
        if !effects.is_empty() {
            tracing::info!(matches = idle.len(), "ending idle matches");
            // Counted in `publish` once stored (not when NATS drops a re-publish).
            publish(&self.js, &effects, &self.stats, token).await;
        }
        for id in
            side.evict_completed(now - self.lifecycle.completed_memory_retention.as_millis() as i64)
        {
            metrics::counter!("match_stats_matches_evicted_total").increment(1);
            if let Err(error) = store.forget(&id).await {
                tracing::warn!(%error, match_id = %id, "could not remove an evicted match's snapshot");
            }
        }
        Ok(())
    }

    /// Snapshots the changed matches. A bucket error is logged and retried later; a stale
    /// writer is an error that stops the loop.
    async fn snapshot(
        &self,
        side: &mut CommandSide,
        store: &mut SnapshotStore,
        cadence: &mut Cadence,
    ) -> anyhow::Result<()> {
        let marker = Marker {
            sequence: side.applied_sequence(),
            counters: self.stats.counters(),
            written_at_ms: now_ms(),
        };
        let changed = side.take_changed();
        let records: Vec<&crate::snapshots::Tracked> =
            changed.iter().filter_map(|id| side.tracked(id)).collect();
        let result = store.write(records, &marker).await;
        match result {
            Ok(written) => {
                cadence.events = 0;
                cadence.last = Instant::now();
                self.stats.snapshots_written.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("match_stats_snapshots_written_total").increment(1);
                tracing::debug!(
                    sequence = marker.sequence,
                    matches = written,
                    "snapshot written"
                );
                Ok(())
            }
            Err(error @ SnapshotError::Stale { .. }) => {
                metrics::counter!("match_stats_snapshot_stale_total").increment(1);
                tracing::error!(%error, "another instance owns the snapshot; this writer stops");
                Err(error.into())
            }
            Err(error) => {
                side.mark_changed(changed);
                metrics::counter!("match_stats_snapshot_errors_total").increment(1);
                tracing::warn!(%error, "snapshot failed; will retry");
                Ok(())
            }
        }
    }
}

/// How often the consumer's lag is read.
pub const LAG_INTERVAL: Duration = Duration::from_secs(2);

/// Reads the durable consumer's pending, ack-pending and redelivered counts into `stats`
/// and the metrics every [`LAG_INTERVAL`] until cancelled.
pub async fn watch_lag(
    js: jetstream::Context,
    topology: Topology,
    stats: Arc<IngestStats>,
    token: CancellationToken,
) {
    let mut tick = tokio::time::interval(LAG_INTERVAL);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let info = async {
            let stream = js.get_stream(&topology.events_stream).await.ok()?;
            stream.consumer_info(&topology.consumer_name).await.ok()
        };
        let Ok(Some(info)) = tokio::time::timeout(LAG_INTERVAL, info).await else {
            stats.consumer_found.store(false, Ordering::Relaxed);
            continue;
        };
        stats.consumer_found.store(true, Ordering::Relaxed);
        stats
            .consumer_pending
            .store(info.num_pending, Ordering::Relaxed);
        stats
            .consumer_ack_pending
            .store(info.num_ack_pending as u64, Ordering::Relaxed);
        stats
            .consumer_redelivered
            .store(info.num_redelivered as u64, Ordering::Relaxed);
        metrics::gauge!("match_stats_consumer_pending").set(info.num_pending as f64);
        metrics::gauge!("match_stats_consumer_ack_pending").set(info.num_ack_pending as f64);
        metrics::gauge!("match_stats_consumer_redelivered").set(info.num_redelivered as f64);
    }
}
