//! The command side's loops: one per partition of the events stream. Events stream in,
//! aggregates are updated, deltas and dead letters go out, then acknowledgements;
//! snapshots, idle matches and eviction on the side.
//!
//! Each partition has a durable pull consumer whose priority group pins one client: every
//! replica pulls every partition, and NATS delivers a partition's events to one replica
//! at a time (its writer), moving the pin to another when the writer stops pulling for
//! `PARTITION_PIN_TIMEOUT`. A replica notices it became a partition's writer by the
//! `Nats-Pin-Id` of the messages it receives, and then first catches up: from the
//! partition's snapshot (if another replica wrote a newer one) and by replaying the
//! partition's subjects to the end of the stream, so whatever the previous writer did
//! or did not finish is decided again, identically. Snapshots compare-and-swap every key:
//! a writer that was overtaken fails and gives the partition up.
//!
//! Per batch of messages, in stream order: each is decided by
//! [`CommandSide::process`]; the effects are published and confirmed by JetStream,
//! retrying until they are; only then are the messages acknowledged. Effects carry
//! deterministic `Nats-Msg-Id`s, so a retry (or a second writer) never stores one twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self, consumer, context::PublishAckFuture, kv, message::PublishMessage, publish::PublishAck,
};
use futures::StreamExt;
use match_stats_commands::{MatchId, Reason, StatDelta};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::command_side::{CommandSide, DeltaBatch, Effect, EffectKind, Processed, Source};
use crate::config::{Lifecycle, Topology};
use crate::snapshots::{Counters, Marker, SnapshotError, SnapshotStore};

/// Backoff between attempts to publish a batch's effects while NATS is unavailable.
pub const PUBLISH_RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// How often recovery logs its progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(3);
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
    /// Delta messages stored by the deltas stream (each coalesces a batch's entries for
    /// one match).
    pub deltas_published: AtomicU64,
    /// Delta entries (applied events) in those messages.
    pub delta_entries_published: AtomicU64,
    /// Dead letters stored by the dead-letter stream.
    pub dead_letters: AtomicU64,
    /// Effects published again that a stream already held (dropped by `Nats-Msg-Id`),
    /// or that recovery skipped because the deltas stream already had that version.
    pub effects_deduplicated: AtomicU64,
    /// Per partition: what this replica holds and how far it is.
    pub partitions: Vec<PartitionStats>,
    /// Snapshots written.
    pub snapshots_written: AtomicU64,
    /// `match_end` events published for idle matches.
    pub idle_matches_ended: AtomicU64,
    /// Messages replayed so far by recovery, and how many it has to replay.
    pub recovery_done: AtomicU64,
    /// See `recovery_done`.
    pub recovery_total: AtomicU64,
    /// Partitions whose recovery at start-up is done.
    pub partitions_started: AtomicUsize,
    /// Every partition recovered at start-up, and live consumption started.
    pub ready: AtomicBool,
    /// Times this replica became a partition's writer, or gave one up.
    pub acquisitions: AtomicU64,
    /// See `acquisitions`.
    pub releases: AtomicU64,
    /// Partitions per live replica, rounded up (0 until the balancer has counted).
    pub share: AtomicUsize,
}

/// One partition as this replica sees it. Consumer figures are refreshed every second.
#[derive(Debug, Default)]
pub struct PartitionStats {
    /// Its matches are in this replica's memory.
    pub held: AtomicBool,
    /// This replica is its writer (NATS delivers its events here).
    pub writing: AtomicBool,
    /// Matches in memory that have not ended.
    pub active: AtomicU64,
    /// Matches in memory that have ended.
    pub completed: AtomicU64,
    /// The last events stream sequence processed.
    pub applied_sequence: AtomicU64,
    /// Events waiting in the partition's consumer.
    pub pending: AtomicU64,
    /// Messages delivered and waiting for an ack.
    pub ack_pending: AtomicU64,
    /// Messages redelivered at least once.
    pub redelivered: AtomicU64,
    /// The consumer answered the last check.
    pub found: AtomicBool,
    /// The balancer asks this replica to hand the partition over to another.
    pub hand_over: AtomicBool,
}

/// The partitions' consumers summed, as last read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ConsumerLag {
    /// Events waiting.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub ack_pending: u64,
    /// Redelivered at least once.
    pub redelivered: u64,
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
    pub delta_entries_published: u64,
    pub dead_letters: u64,
    pub effects_deduplicated: u64,
    pub applied_sequence: u64,
    pub matches_active: u64,
    pub matches_completed: u64,
    pub snapshots_written: u64,
    pub idle_matches_ended: u64,
    pub partitions_held: Vec<u16>,
    pub partitions_writing: Vec<u16>,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn sum(slots: &[PartitionStats], field: impl Fn(&PartitionStats) -> &AtomicU64) -> u64 {
    slots.iter().map(|s| get(field(s))).sum()
}

fn flagged(slots: &[PartitionStats], field: impl Fn(&PartitionStats) -> &AtomicBool) -> Vec<u16> {
    (0..slots.len() as u16)
        .filter(|&n| field(&slots[usize::from(n)]).load(Ordering::Relaxed))
        .collect()
}

impl IngestStats {
    /// Counters for `partitions` partitions.
    pub fn new(partitions: u16) -> Self {
        IngestStats {
            partitions: (0..partitions).map(|_| PartitionStats::default()).collect(),
            ..Default::default()
        }
    }

    /// Whether this replica writes its share of the partitions (or more): then it stops
    /// waiting on the others, so that they go to replicas with room.
    pub fn full(&self) -> bool {
        let share = self.share.load(Ordering::Relaxed);
        share > 0 && flagged(&self.partitions, |s| &s.writing).len() >= share
    }

    /// The partitions' consumers summed; `None` until every one has answered.
    pub fn consumer_lag(&self) -> Option<ConsumerLag> {
        let slots = &self.partitions;
        slots
            .iter()
            .all(|s| s.found.load(Ordering::Relaxed))
            .then(|| ConsumerLag {
                pending: sum(slots, |s| &s.pending),
                ack_pending: sum(slots, |s| &s.ack_pending),
                redelivered: sum(slots, |s| &s.redelivered),
            })
    }

    /// Reads every counter.
    pub fn counts(&self) -> IngestCounts {
        let slots = &self.partitions;
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
            delta_entries_published: get(&self.delta_entries_published),
            dead_letters: get(&self.dead_letters),
            effects_deduplicated: get(&self.effects_deduplicated),
            applied_sequence: slots
                .iter()
                .map(|s| get(&s.applied_sequence))
                .max()
                .unwrap_or(0),
            matches_active: sum(slots, |s| &s.active),
            matches_completed: sum(slots, |s| &s.completed),
            snapshots_written: get(&self.snapshots_written),
            idle_matches_ended: get(&self.idle_matches_ended),
            partitions_held: flagged(slots, |s| &s.held),
            partitions_writing: flagged(slots, |s| &s.writing),
        }
    }

    /// Adds (when a partition is taken) or subtracts (when it is given up) a partition's
    /// persistent counters: the totals are those of the partitions this replica holds.
    fn add(&self, counters: &Counters, add: bool) {
        let apply = |slot: &AtomicU64, n: u64| {
            if add {
                slot.fetch_add(n, Ordering::Relaxed);
            } else {
                slot.fetch_sub(n, Ordering::Relaxed);
            }
        };
        apply(&self.received, counters.received);
        apply(&self.applied, counters.applied);
        apply(&self.duplicates, counters.duplicates);
        for (slot, n) in self.rejected.iter().zip(counters.rejected) {
            apply(slot, n);
        }
    }

    /// Counts one decision, in the totals and in the partition's own `counters`.
    fn count(&self, outcome: &Processed, counters: &mut Counters) {
        if matches!(outcome, Processed::AlreadyApplied) {
            self.redelivered_skipped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("match_stats_redelivered_skipped_total").increment(1);
            return;
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        counters.received += 1;
        metrics::counter!("match_stats_events_received_total").increment(1);
        match outcome {
            Processed::Applied => {
                self.applied.fetch_add(1, Ordering::Relaxed);
                counters.applied += 1;
                metrics::counter!("match_stats_events_processed_total").increment(1);
            }
            Processed::Duplicate => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                counters.duplicates += 1;
                metrics::counter!("match_stats_events_duplicate_total").increment(1);
            }
            Processed::Rejected { reason, .. } => {
                let i = Reason::ALL
                    .iter()
                    .position(|r| r == reason)
                    .expect("listed");
                self.rejected[i].fetch_add(1, Ordering::Relaxed);
                counters.rejected[i] += 1;
                metrics::counter!("match_stats_events_rejected_total", "reason" => reason.as_str())
                    .increment(1);
            }
            Processed::AlreadyApplied => {}
        }
    }

    /// Refreshes partition `n`'s match counts and sequence (and the gauges).
    fn publish_match_counts(&self, n: u16, side: Option<&CommandSide>) {
        let slot = &self.partitions[usize::from(n)];
        let (active, completed) = side.map_or((0, 0), CommandSide::match_counts);
        slot.active.store(active, Ordering::Relaxed);
        slot.completed.store(completed, Ordering::Relaxed);
        slot.applied_sequence.store(
            side.map_or(0, CommandSide::applied_sequence),
            Ordering::Relaxed,
        );
        let slots = &self.partitions;
        metrics::gauge!("match_stats_matches_active").set(sum(slots, |s| &s.active) as f64);
        metrics::gauge!("match_stats_matches_completed").set(sum(slots, |s| &s.completed) as f64);
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
            EffectKind::Delta { entries, .. } => {
                stats.deltas_published.fetch_add(1, Ordering::Relaxed);
                stats
                    .delta_entries_published
                    .fetch_add(entries, Ordering::Relaxed);
                metrics::counter!("match_stats_deltas_published_total").increment(1);
                metrics::counter!("match_stats_delta_entries_published_total").increment(entries);
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

/// A partition's state in this replica's memory.
pub struct Held {
    /// Its matches.
    side: CommandSide,
    /// Its keys in the snapshot bucket.
    store: SnapshotStore,
    /// Its persistent counters (included in [`IngestStats`]'s totals while held).
    counters: Counters,
    /// Per match, the last version the deltas stream holds: looked up once per match
    /// while this replica holds the partition, then kept up by its own publishes.
    published: HashMap<MatchId, u64>,
    /// The `Nats-Pin-Id` of the messages last processed: this replica is the writer while
    /// NATS's pinned client for the partition is this one.
    pin: Option<String>,
    /// Another client NATS showed pinned at the last check (given up if it still is at the
    /// next: a message with this replica's new pin would have arrived in between).
    foreign_pin: Option<String>,
    /// When to snapshot.
    events_since_snapshot: u64,
    last_snapshot: Instant,
}

/// What the loops need besides the consumers.
pub struct Ingest {
    /// JetStream.
    pub js: jetstream::Context,
    /// Names.
    pub topology: Topology,
    /// Snapshot cadence, idle timeout, retention.
    pub lifecycle: Lifecycle,
    /// The snapshot bucket.
    pub snapshots: kv::Store,
    /// The replicas bucket (for sharing the partitions).
    pub replicas: kv::Store,
    /// Messages per batch.
    pub batch_size: usize,
    /// Counters.
    pub stats: Arc<IngestStats>,
}

/// Why a partition was given up.
#[derive(Debug, Clone, Copy)]
enum Release {
    /// NATS pinned another replica.
    PinnedElsewhere,
    /// Another replica wrote the partition's snapshot.
    StaleSnapshot,
    /// This replica is stopping.
    Shutdown,
    /// This replica wrote more than its share of the partitions.
    Shared,
    /// Restoring it failed (NATS unavailable...); it is restored again.
    Failed,
}

impl Release {
    fn as_str(self) -> &'static str {
        match self {
            Release::PinnedElsewhere => "pinned_elsewhere",
            Release::StaleSnapshot => "stale_snapshot",
            Release::Shutdown => "shutdown",
            Release::Shared => "shared",
            Release::Failed => "failed",
        }
    }
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

fn pin_of(message: &jetstream::Message) -> Option<String> {
    message
        .headers
        .as_ref()?
        .get_last(async_nats::header::NATS_PIN_ID)
        .map(|v| v.as_str().to_owned())
}

impl Ingest {
    /// Runs one loop per partition, and the balancer, until cancelled or one fails.
    pub async fn run(
        self,
        consumers: Vec<consumer::Consumer<consumer::pull::Config>>,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        let this = Arc::new(self);
        let mut loops = tokio::task::JoinSet::new();
        for (n, consumer) in consumers.into_iter().enumerate() {
            loops.spawn(this.clone().partition(n as u16, consumer, token.clone()));
        }
        loops.spawn(this.clone().balance(token.clone()));
        while let Some(ended) = loops.join_next().await {
            ended??;
        }
        Ok(())
    }

    /// Partition `n`'s loop: recover what the bucket and stream hold, then pull; process
    /// while this replica is the writer, hand over on the way out.
    async fn partition(
        self: Arc<Self>,
        n: u16,
        consumer: consumer::Consumer<consumer::pull::Config>,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut held = None;
        if !self.restore_retrying(n, &consumer, &mut held, &token).await {
            return Ok(());
        }
        let started = self
            .stats
            .partitions_started
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if started == self.stats.partitions.len() {
            self.stats.ready.store(true, Ordering::Relaxed);
            tracing::info!(
                partitions = started,
                applied_sequence = self.stats.counts().applied_sequence,
                "recovered; consuming live events"
            );
        }
        // Pull while writing the partition, or on standby while this replica writes less
        // than its share; not for a pin timeout after handing the partition over.
        let mut messages = Some(self.pull(&consumer).await?);
        let mut resume_at = Instant::now();
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        let slot = &self.stats.partitions[usize::from(n)];
        let result = loop {
            let chunk = tokio::select! {
                _ = token.cancelled() => break Ok(()),
                _ = housekeeping.tick() => {
                    if let Err(e) = self.housekeeping(n, &consumer, &mut held, &token).await {
                        break Err(e);
                    }
                    let writing = held.as_ref().is_some_and(|h| h.pin.is_some());
                    if slot.hand_over.swap(false, Ordering::Relaxed) && writing {
                        // Stop pulling, snapshot, unpin: a waiting replica takes the pin.
                        messages = None;
                        self.snapshot(n, &mut held).await?;
                        self.release(n, &mut held, Release::Shared);
                        self.unpin(n).await;
                        resume_at = Instant::now() + self.topology.pin_timeout;
                    }
                    let writing = held.as_ref().is_some_and(|h| h.pin.is_some());
                    let pull = writing || (!self.stats.full() && Instant::now() >= resume_at);
                    match (pull, messages.is_some()) {
                        (true, false) => messages = Some(self.pull(&consumer).await?),
                        (false, true) => messages = None,
                        _ => {}
                    }
                    continue;
                }
                chunk = async {
                    match messages.as_mut() {
                        Some(messages) => messages.next().await,
                        None => std::future::pending().await,
                    }
                } => match chunk {
                    Some(chunk) => chunk,
                    None => break Err(anyhow::anyhow!(
                        "the events consumer {} ended (deleted?); stopping so that a restart recreates it",
                        self.topology.partition_consumer(n)
                    )),
                },
            };
            let chunk: Vec<jetstream::Message> = chunk
                .into_iter()
                .filter_map(|m| {
                    m.map_err(|error| tracing::warn!(%error, "pull consumer error; continuing"))
                        .ok()
                })
                .collect();
            let Some(pin) = chunk.first().map(pin_of) else {
                continue;
            };
            if held.as_ref().is_none_or(|h| h.pin != pin) {
                let first = chunk[0].info().map_or(0, |i| i.stream_sequence);
                while let Err(error) = self.acquire(n, &mut held, pin.clone(), first, &token).await
                {
                    tracing::warn!(
                        partition = n,
                        error = format!("{error:#}"),
                        "catching up on the partition failed; retrying"
                    );
                    metrics::counter!("match_stats_partition_restore_retries_total").increment(1);
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(PUBLISH_RETRY_BACKOFF) => {}
                    }
                }
                if token.is_cancelled() {
                    break Ok(());
                }
            }
            let h = held.as_mut().expect("acquired");
            match self.process(n, h, chunk, &token).await {
                Ok(true) => {}
                Ok(false) => {
                    // Applied but not confirmed: this state must not be snapshotted.
                    self.release(n, &mut held, Release::Shutdown);
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
            if h.events_since_snapshot >= self.lifecycle.snapshot_every_events {
                self.snapshot(n, &mut held).await?;
            }
        };
        // On the way out: a final snapshot, and the pin handed over at once.
        if let Some(h) = held.as_ref()
            && h.pin.is_some()
            && result.is_ok()
        {
            let _ = self.snapshot(n, &mut held).await;
            drop(messages);
            self.unpin(n).await;
        }
        self.release(n, &mut held, Release::Shutdown);
        result
    }

    /// Drops from `batch` the entries the deltas stream already holds, per `published`
    /// (a match not in it is looked up: the last delta stored on its subject). Returns each
    /// match's last version in the trimmed batch, to note once it is published.
    async fn trim(
        &self,
        published: &mut HashMap<MatchId, u64>,
        batch: &mut DeltaBatch,
    ) -> anyhow::Result<Vec<(MatchId, u64)>> {
        let mut stream = None;
        let mut last = Vec::new();
        for delta in batch.deltas_mut() {
            let id = delta.match_id;
            let stored = match published.get(&id) {
                Some(v) => *v,
                None => {
                    let deltas = match &stream {
                        Some(s) => s,
                        None => {
                            stream.insert(self.js.get_stream(&self.topology.deltas_stream).await?)
                        }
                    };
                    let subject = format!("{}.{id}", self.topology.deltas_subject);
                    let version = match deltas.direct_get_last_for_subject(subject).await {
                        Ok(message) => rmp_serde::from_slice::<StatDelta>(&message.payload)?
                            .entries
                            .last()
                            .map_or(0, |e| e.version),
                        Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => 0,
                        Err(e) => return Err(e.into()),
                    };
                    published.insert(id, version);
                    version
                }
            };
            let before = delta.entries.len();
            delta.entries.retain(|e| e.version > stored);
            if delta.entries.len() < before {
                self.stats
                    .effects_deduplicated
                    .fetch_add((before - delta.entries.len()) as u64, Ordering::Relaxed);
            }
            if let Some(entry) = delta.entries.last() {
                last.push((id, entry.version));
            }
        }
        Ok(last)
    }

    /// Pulls partition `n`'s consumer in its writer group, in chunks of up to a batch.
    /// Pulls expire well within the pin timeout, so a live writer keeps its pin.
    async fn pull(
        &self,
        consumer: &consumer::Consumer<consumer::pull::Config>,
    ) -> anyhow::Result<futures::stream::ReadyChunks<consumer::pull::Stream>> {
        let expires = (self.topology.pin_timeout / 3).max(Duration::from_millis(300));
        Ok(consumer
            .stream()
            .group(crate::streams::WRITER_GROUP)
            .max_messages_per_batch(self.batch_size)
            .expires(expires)
            .heartbeat(expires / 3)
            .messages()
            .await?
            .ready_chunks(self.batch_size))
    }

    /// Releases partition `n`'s pin, so that a waiting replica takes it at once.
    async fn unpin(&self, n: u16) {
        let name = self.topology.partition_consumer(n);
        if let Ok(stream) = self.js.get_stream(&self.topology.events_stream).await
            && let Err(error) = stream
                .unpin_consumer(&name, crate::streams::WRITER_GROUP)
                .await
        {
            tracing::debug!(%error, partition = n, "could not release the pin");
        }
    }

    /// Shares the partitions among the live replicas. Every third of the pin timeout it
    /// refreshes this replica's key in the replicas bucket (which expires keys after the
    /// pin timeout) and counts the live replicas' keys; a replica writing more than its
    /// share (P / replicas, rounded up) hands one partition over. Which replica takes it
    /// is NATS's choice among those waiting on the partition.
    async fn balance(self: Arc<Self>, token: CancellationToken) -> anyhow::Result<()> {
        use futures::TryStreamExt;
        let prefix = format!("{}.", self.topology.consumer_name);
        let key = format!("{prefix}{}", replica_id());
        let mut tick =
            tokio::time::interval((self.topology.pin_timeout / 3).max(Duration::from_millis(300)));
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => {}
            }
            if self.replicas.put(&key, Default::default()).await.is_err() {
                continue;
            }
            let Ok(keys) = self.replicas.keys().await else {
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
            metrics::gauge!("match_stats_replicas_live").set(live as f64);
            let slots = &self.stats.partitions;
            let writing = flagged(slots, |s| &s.writing);
            let share = slots.len().div_ceil(live);
            self.stats.share.store(share, Ordering::Relaxed);
            let handing_over = slots.iter().any(|s| s.hand_over.load(Ordering::Relaxed));
            if writing.len() > share && !handing_over {
                let n = *writing.last().expect("writes some");
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
        let _ = self.replicas.delete(&key).await;
        Ok(())
    }

    /// Replays partition `n` of the events stream from `side`'s applied sequence + 1 to the
    /// last message stored when recovery starts (or to `until`). Effects are published again
    /// only where the streams lack them.
    #[tracing::instrument(skip_all, fields(partition = n))]
    async fn recover(
        &self,
        n: u16,
        held: &mut Held,
        until: Option<u64>,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (js, topology, stats) = (&self.js, &self.topology, &*self.stats);
        let side = &mut held.side;
        let mut stream = js.get_stream(&topology.events_stream).await?;
        let state = stream.info().await?.state.clone();
        let last = until.map_or(state.last_sequence, |u| u.min(state.last_sequence));
        let from = side.applied_sequence() + 1;
        if state.messages == 0 || last < from {
            return Ok(());
        }
        if state.first_sequence > from && from > 1 {
            tracing::error!(
                needed = from,
                first = state.first_sequence,
                "events needed for recovery have aged out of the stream; statistics of matches they touched are incomplete"
            );
            metrics::counter!("match_stats_recovery_gaps_total").increment(1);
        }
        let (total, mut messages) = crate::streams::read_from(
            &stream,
            from,
            self.batch_size,
            Some(topology.partition_filter(n)),
        )
        .await?;
        if total == 0 {
            return Ok(());
        }
        stats.recovery_total.fetch_add(total, Ordering::Relaxed);
        tracing::debug!(from, last, total, "replaying the partition");
        let started = Instant::now();
        let mut last_log = Instant::now();
        let mut done = 0u64;
        while let Some(chunk) = messages.next().await {
            let mut effects = Vec::new();
            let mut deltas = DeltaBatch::default();
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
                if source.sequence > last {
                    finished = true;
                    break;
                }
                let decision = side.process(&message.payload, source, topology);
                if let Some(delta) = decision.delta {
                    deltas.push(delta, None);
                }
                effects.extend(decision.dead_letter);
                outcomes.push(decision.processed);
                done += 1;
                if source.sequence >= last || info.pending == 0 {
                    finished = true;
                    break;
                }
            }
            // Only what the deltas stream lacks is published again.
            let last = self.trim(&mut held.published, &mut deltas).await?;
            effects.extend(deltas.into_effects(topology));
            if !publish(js, &effects, stats, token).await {
                anyhow::bail!("stopped during recovery");
            }
            held.published.extend(last);
            for outcome in &outcomes {
                stats.count(outcome, &mut held.counters);
            }
            stats
                .recovery_done
                .fetch_add(outcomes.len() as u64, Ordering::Relaxed);
            stats.publish_match_counts(n, Some(side));
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
            if finished || token.is_cancelled() {
                break;
            }
        }
        tracing::debug!(
            replayed = done,
            seconds = started.elapsed().as_secs_f64(),
            "partition replayed"
        );
        Ok(())
    }

    /// Loads partition `n`'s snapshot into `held` and replays the partition after it (up
    /// to `until`). On an error, `held` is left empty.
    async fn restore(
        &self,
        n: u16,
        held: &mut Option<Held>,
        until: Option<u64>,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        let partitions = self.topology.partitions;
        let (store, restored) = SnapshotStore::load(self.snapshots.clone(), partitions, n, |id| {
            crate::streams::partition_of(id, partitions) == n
        })
        .await?;
        let from = restored.marker.as_ref().map_or(0, |m| m.sequence);
        let counters = restored
            .marker
            .as_ref()
            .map(|m| m.counters.clone())
            .unwrap_or_default();
        self.stats.add(&counters, true);
        self.stats.partitions[usize::from(n)]
            .held
            .store(true, Ordering::Relaxed);
        let h = held.insert(Held {
            side: CommandSide::restore(restored.matches, from),
            store,
            counters,
            published: HashMap::new(),
            pin: None,
            foreign_pin: None,
            events_since_snapshot: 0,
            last_snapshot: Instant::now(),
        });
        if let Err(error) = self.recover(n, h, until, token).await {
            self.release(n, held, Release::Failed);
            return Err(error);
        }
        self.stats
            .publish_match_counts(n, held.as_ref().map(|h| &h.side));
        Ok(())
    }

    /// At start: restores partition `n` and replays it up to its consumer's ack floor
    /// (what was processed and acknowledged, perhaps after the snapshot); what follows, the
    /// consumer delivers. Retries (NATS unavailable, a leader election...) until it
    /// succeeds; `false` if cancelled first.
    async fn restore_retrying(
        &self,
        n: u16,
        consumer: &consumer::Consumer<consumer::pull::Config>,
        held: &mut Option<Held>,
        token: &CancellationToken,
    ) -> bool {
        loop {
            let restored = match consumer.get_info().await {
                Ok(info) => {
                    self.restore(n, held, Some(info.ack_floor.stream_sequence), token)
                        .await
                }
                Err(e) => Err(e.into()),
            };
            match restored {
                Ok(()) => return true,
                Err(error) => {
                    tracing::warn!(
                        partition = n,
                        error = format!("{error:#}"),
                        "restoring the partition failed; retrying"
                    );
                    metrics::counter!("match_stats_partition_restore_retries_total").increment(1);
                }
            }
            tokio::select! {
                _ = token.cancelled() => return false,
                _ = tokio::time::sleep(PUBLISH_RETRY_BACKOFF) => {}
            }
        }
    }

    /// This replica became partition `n`'s writer (messages with a new pin arrived, the
    /// first at sequence `first`): catch up on what another writer may have done, from its
    /// snapshot if it wrote one, then by replaying the partition up to `first`. On an
    /// error, `held` is consistent (caught up part of the way, or empty) and the call can
    /// be repeated.
    async fn acquire(
        &self,
        n: u16,
        held: &mut Option<Held>,
        pin: Option<String>,
        first: u64,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        let until = Some(first.saturating_sub(1));
        let current = match held.as_ref() {
            Some(h) => h.store.is_current().await?,
            None => false,
        };
        if current {
            let h = held.as_mut().expect("held");
            self.recover(n, h, until, token).await?;
        } else {
            self.release(n, held, Release::StaleSnapshot);
            self.restore(n, held, until, token).await?;
        }
        let h = held.as_mut().expect("restored");
        h.foreign_pin = None;
        h.pin = pin;
        self.stats.partitions[usize::from(n)]
            .writing
            .store(true, Ordering::Relaxed);
        self.stats.acquisitions.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("match_stats_partition_acquisitions_total").increment(1);
        tracing::info!(
            partition = n,
            applied_sequence = h.side.applied_sequence(),
            "writing partition"
        );
        Ok(())
    }

    /// Drops partition `n`'s state from memory (and its counters from the totals).
    fn release(&self, n: u16, held: &mut Option<Held>, why: Release) {
        let Some(h) = held.take() else { return };
        self.stats.add(&h.counters, false);
        let slot = &self.stats.partitions[usize::from(n)];
        slot.held.store(false, Ordering::Relaxed);
        slot.writing.store(false, Ordering::Relaxed);
        self.stats.publish_match_counts(n, None);
        if h.pin.is_some() && !matches!(why, Release::Shutdown) {
            self.stats.releases.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("match_stats_partition_releases_total", "reason" => why.as_str())
                .increment(1);
            tracing::info!(partition = n, reason = why.as_str(), "gave up partition");
        }
    }

    /// Processes one batch of partition `n` in stream order; `false` if stopped before
    /// its effects were confirmed (NATS redelivers it).
    async fn process(
        &self,
        n: u16,
        held: &mut Held,
        chunk: Vec<jetstream::Message>,
        token: &CancellationToken,
    ) -> anyhow::Result<bool> {
        let started = Instant::now();
        let side = &mut held.side;
        let mut effects = Vec::new();
        let mut deltas = DeltaBatch::default();
        let mut outcomes = Vec::with_capacity(chunk.len());
        let mut acks = Vec::with_capacity(chunk.len());
        for message in chunk {
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
                let span =
                    crate::telemetry::event_span(message.headers.as_ref(), info.stream_sequence);
                let decision = match &span {
                    Some(span) => {
                        span.in_scope(|| side.process(&message.payload, source, &self.topology))
                    }
                    None => side.process(&message.payload, source, &self.topology),
                };
                if let Some(delta) = decision.delta {
                    let headers = span.as_ref().map(|span| {
                        let mut headers = async_nats::HeaderMap::new();
                        crate::telemetry::inject(span, &mut headers);
                        headers
                    });
                    deltas.push(delta, headers);
                }
                effects.extend(decision.dead_letter);
                outcomes.push(decision.processed);
            }
            acks.push(message);
        }
        // A redelivery after a crash may be batched differently than what the crashed
        // writer published: only what the deltas stream lacks goes out.
        let last = loop {
            match self.trim(&mut held.published, &mut deltas).await {
                Ok(last) => break last,
                Err(error) => {
                    tracing::warn!(%error, "looking up published versions failed; retrying");
                    tokio::select! {
                        _ = token.cancelled() => return Ok(false),
                        _ = tokio::time::sleep(PUBLISH_RETRY_BACKOFF) => {}
                    }
                }
            }
        };
        effects.extend(deltas.into_effects(&self.topology));
        if !publish(&self.js, &effects, &self.stats, token).await {
            tracing::info!(
                unacked = acks.len(),
                "stopped before effects were confirmed; NATS will redeliver"
            );
            return Ok(false);
        }
        held.published.extend(last);
        // The consumer acknowledges all: the batch's last message acks the whole batch.
        if let Some(last) = acks.last()
            && let Err(error) = last.ack().await
        {
            tracing::warn!(%error, "ack failed; the batch will be redelivered and skipped");
        }
        for outcome in &outcomes {
            self.stats.count(outcome, &mut held.counters);
        }
        self.stats.publish_match_counts(n, Some(&held.side));
        metrics::histogram!("match_stats_processing_latency")
            .record(started.elapsed().as_secs_f64());
        held.events_since_snapshot += outcomes.len() as u64;
        Ok(true)
    }

    /// Reads partition `n`'s consumer (lag figures, and who NATS pins), gives the
    /// partition up if another replica is pinned, and does the time-based work of a held
    /// partition: snapshots, idle matches, eviction, snapshot-age warning.
    async fn housekeeping(
        &self,
        n: u16,
        consumer: &consumer::Consumer<consumer::pull::Config>,
        held: &mut Option<Held>,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        let slot = &self.stats.partitions[usize::from(n)];
        let info = tokio::time::timeout(HOUSEKEEPING_INTERVAL, consumer.get_info()).await;
        // Settled: nothing waits in the consumer and nothing is in flight.
        let mut settled_at = None;
        let pinned = match info {
            Ok(Ok(info)) => {
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    settled_at = Some(info.ack_floor.stream_sequence);
                }
                slot.found.store(true, Ordering::Relaxed);
                slot.pending.store(info.num_pending, Ordering::Relaxed);
                slot.ack_pending
                    .store(info.num_ack_pending as u64, Ordering::Relaxed);
                slot.redelivered
                    .store(info.num_redelivered as u64, Ordering::Relaxed);
                if let Some(lag) = self.stats.consumer_lag() {
                    metrics::gauge!("match_stats_consumer_pending").set(lag.pending as f64);
                    metrics::gauge!("match_stats_consumer_ack_pending").set(lag.ack_pending as f64);
                    metrics::gauge!("match_stats_consumer_redelivered").set(lag.redelivered as f64);
                }
                Some(
                    info.priority_groups
                        .into_iter()
                        .find(|g| g.group == crate::streams::WRITER_GROUP)
                        .and_then(|g| g.pinned_client_id),
                )
            }
            _ => {
                slot.found.store(false, Ordering::Relaxed);
                None
            }
        };
        if let Some(h) = held.as_mut() {
            match &pinned {
                Some(Some(pinned)) if h.pin.as_ref() != Some(pinned) => {
                    if h.foreign_pin.as_ref() == Some(pinned) {
                        self.release(n, held, Release::PinnedElsewhere);
                    } else {
                        h.foreign_pin = Some(pinned.clone());
                    }
                }
                _ => h.foreign_pin = None,
            }
        }
        let Some(h) = held.as_mut() else {
            return Ok(());
        };
        let age = h.last_snapshot.elapsed();
        if n == 0 {
            metrics::gauge!("match_stats_snapshot_age_seconds").set(age.as_secs_f64());
        }
        if age.as_secs_f64() > self.lifecycle.events_max_age.as_secs_f64() * SNAPSHOT_AGE_WARNING {
            tracing::warn!(partition = n, age = ?age, max_age = ?self.lifecycle.events_max_age, "the last snapshot is close to the events stream's retention: recovery would lose events");
        }
        if age >= self.lifecycle.snapshot_interval
            && h.side.has_changes()
            && !self.snapshot(n, held).await?
        {
            return Ok(());
        }
        let Some(h) = held.as_mut() else {
            return Ok(());
        };
        // Idle matches are ended through the stream, so a replay decides the same; only
        // the writer (or, with no writer pinned, any replica holding the same state: the
        // `match_end`s carry the same ids) ends them.
        // With no writer pinned, a replica whose state covers everything the consumer
        // has settled may end them (the same `match_end`s, by id, from any such replica).
        let may_end = match &pinned {
            Some(Some(pinned)) => h.pin.as_ref() == Some(pinned),
            Some(None) => settled_at.is_some_and(|floor| h.side.applied_sequence() >= floor),
            None => false,
        };
        let now = now_ms();
        let idle = if may_end {
            h.side
                .idle(now - self.lifecycle.idle_timeout.as_millis() as i64)
        } else {
            Vec::new()
        };
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
            tracing::info!(partition = n, matches = idle.len(), "ending idle matches");
            // Counted in `publish` once stored (not when NATS drops a re-publish).
            publish(&self.js, &effects, &self.stats, token).await;
        }
        for id in h
            .side
            .evict_completed(now - self.lifecycle.completed_memory_retention.as_millis() as i64)
        {
            metrics::counter!("match_stats_matches_evicted_total").increment(1);
            if let Err(error) = h.store.forget(&id).await {
                tracing::warn!(%error, match_id = %id, "could not remove an evicted match's snapshot");
            }
        }
        self.stats.publish_match_counts(n, Some(&h.side));
        Ok(())
    }

    /// Snapshots partition `n`'s changed matches. A bucket error is logged and retried
    /// later; when another replica wrote the partition's keys since (this one is stale),
    /// the partition is given up: `false`.
    async fn snapshot(&self, n: u16, held: &mut Option<Held>) -> anyhow::Result<bool> {
        let Some(h) = held.as_mut() else {
            return Ok(false);
        };
        let marker = Marker {
            sequence: h.side.applied_sequence(),
            counters: h.counters.clone(),
            written_at_ms: now_ms(),
        };
        let changed = h.side.take_changed();
        let records: Vec<&crate::snapshots::Tracked> =
            changed.iter().filter_map(|id| h.side.tracked(id)).collect();
        let result = h.store.write(records, &marker).await;
        match result {
            Ok(written) => {
                h.events_since_snapshot = 0;
                h.last_snapshot = Instant::now();
                self.stats.snapshots_written.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("match_stats_snapshots_written_total").increment(1);
                tracing::debug!(
                    partition = n,
                    sequence = marker.sequence,
                    matches = written,
                    "snapshot written"
                );
                Ok(true)
            }
            Err(error @ SnapshotError::Stale { .. }) => {
                metrics::counter!("match_stats_snapshot_stale_total").increment(1);
                tracing::warn!(partition = n, %error, "another replica wrote this partition's snapshot; giving it up");
                self.release(n, held, Release::StaleSnapshot);
                Ok(false)
            }
            Err(error) => {
                h.side.mark_changed(changed);
                metrics::counter!("match_stats_snapshot_errors_total").increment(1);
                tracing::warn!(partition = n, %error, "snapshot failed; will retry");
                Ok(true)
            }
        }
    }
}
