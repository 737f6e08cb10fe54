//! The command side's loop: events stream in, aggregates updated, deltas and dead
//! letters out, then acknowledgements.
//!
//! Per batch of messages, in stream order: each is decoded and applied to its match
//! ([`CommandSide::process`]); the resulting effects (one [`StatDelta`] per applied event,
//! one dead letter per rejection) are published and confirmed by JetStream, retrying
//! until they are; only then are the messages acknowledged. Effects carry deterministic
//! `Nats-Msg-Id`s, so a retry or a replay never stores one twice.
//!
//! On start, [`recover`] rebuilds the aggregates by replaying the events stream up to its
//! last message (re-publishing the effects of messages the consumer had not yet
//! acknowledged); afterwards any redelivered message at or below the applied sequence is
//! acknowledged without effect.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{
    self, consumer, context::PublishAckFuture, message::PublishMessage, publish::PublishAck,
};
use bytes::Bytes;
use futures::StreamExt;
use match_stats_commands::{Match, MatchId, MatchStatus, Outcome, Reason, StatDelta, decode};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Topology;

/// Backoff between attempts to publish a batch's effects while NATS is unavailable.
pub const PUBLISH_RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// How often recovery logs its progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(3);
/// Idle heartbeat of the pull consumer (detects a lost server).
pub const PULL_HEARTBEAT: Duration = Duration::from_secs(5);

/// Dead-letter header: the rejection reason (contract section 3).
pub const HEADER_REASON: &str = "Match-Stats-Reason";
/// Dead-letter header: what exactly was wrong.
pub const HEADER_DETAIL: &str = "Match-Stats-Detail";
/// Dead-letter header: the events stream.
pub const HEADER_SOURCE_STREAM: &str = "Match-Stats-Source-Stream";
/// Dead-letter header: the events stream sequence of the rejected message.
pub const HEADER_SOURCE_SEQUENCE: &str = "Match-Stats-Source-Sequence";
/// Dead-letter header: the subject the event was published to.
pub const HEADER_SOURCE_SUBJECT: &str = "Match-Stats-Source-Subject";

/// Counters of the ingest path, shared with HTTP handlers and tests. Each is also a
/// Prometheus metric.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Messages taken from the events stream (replays included, skipped redeliveries not).
    pub received: AtomicU64,
    /// Events applied.
    pub applied: AtomicU64,
    /// Events dropped as duplicates.
    pub duplicates: AtomicU64,
    /// Rejections, indexed like [`Reason::ALL`].
    pub rejected: [AtomicU64; 7],
    /// Redelivered messages at or below the applied sequence, acknowledged without effect.
    pub redelivered_skipped: AtomicU64,
    /// Delta messages confirmed by the deltas stream.
    pub deltas_published: AtomicU64,
    /// Dead letters confirmed by the dead-letter stream.
    pub dead_letters: AtomicU64,
    /// Effects published again (after a restart) that the stream already held and
    /// dropped by their `Nats-Msg-Id`.
    pub effects_deduplicated: AtomicU64,
    /// The last events stream sequence applied.
    pub applied_sequence: AtomicU64,
    /// Matches in memory that have not ended.
    pub matches_active: AtomicU64,
    /// Matches in memory that have ended.
    pub matches_completed: AtomicU64,
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
}

impl IngestStats {
    /// Reads every counter.
    pub fn counts(&self) -> IngestCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
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
        }
    }

    fn count(&self, outcome: &Processed) {
        self.received.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("match_stats_events_received_total").increment(1);
        match outcome {
            Processed::Applied { .. } => {
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
        }
    }
}

/// What processing one message decided.
#[derive(Debug)]
enum Processed {
    Applied { delta: StatDelta },
    Duplicate,
    Rejected { reason: Reason, detail: String },
}

/// One message to publish as the effect of an event.
#[derive(Debug)]
pub struct Effect {
    subject: String,
    msg_id: String,
    headers: HeaderMap,
    payload: Bytes,
}

/// The aggregates of every match in memory, and how far into the stream they are.
#[derive(Debug, Default)]
pub struct CommandSide {
    matches: HashMap<MatchId, Match>,
    applied_sequence: u64,
    active: u64,
    completed: u64,
}

/// Where a message came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Events stream sequence.
    pub sequence: u64,
    /// When the stream stored it, Unix milliseconds.
    pub stored_at_ms: i64,
    /// Its subject.
    pub subject: &'a str,
}

impl CommandSide {
    /// The last applied stream sequence.
    pub fn applied_sequence(&self) -> u64 {
        self.applied_sequence
    }

    /// Decides and applies one message; returns its effects: none for a duplicate, a
    /// dead letter, or a delta (plus the final object for the completed-matches bucket
    /// once the match has ended).
    fn process(
        &mut self,
        payload: &Bytes,
        source: Source<'_>,
        topology: &Topology,
    ) -> (Processed, Vec<Effect>) {
        self.applied_sequence = source.sequence;
        let processed = match decode(payload, source.stored_at_ms) {
            Err(rejection) => Processed::Rejected {
                reason: rejection.reason,
                detail: rejection.detail,
            },
            Ok(event) => {
                let is_new = !self.matches.contains_key(&event.match_id);
                let aggregate = self
                    .matches
                    .entry(event.match_id)
                    .or_insert_with(|| Match::new(event.match_id));
                let was_active = aggregate.stats().status == MatchStatus::Active;
                match aggregate.handle(&event, source.sequence) {
                    Outcome::Applied(entry) => {
                        let completed = aggregate.stats().status == MatchStatus::Completed;
                        if is_new {
                            self.active += 1;
                        }
                        if was_active && completed {
                            self.active -= 1;
                            self.completed += 1;
                        }
                        Processed::Applied {
                            delta: StatDelta {
                                match_id: event.match_id,
                                entries: vec![entry],
                                match_view: completed.then(|| Box::new(aggregate.view())),
                            },
                        }
                    }
                    Outcome::Duplicate => Processed::Duplicate,
                    Outcome::Rejected(rejection) => Processed::Rejected {
                        reason: rejection.reason,
                        detail: rejection.detail,
                    },
                }
            }
        };
        let mut effects = Vec::new();
        match &processed {
            Processed::Applied { delta } => {
                effects.push(Effect {
                    subject: format!("{}.{}", topology.deltas_subject, delta.match_id),
                    msg_id: delta.msg_id(),
                    headers: HeaderMap::new(),
                    payload: rmp_serde::to_vec_named(delta)
                        .expect("deltas serialize")
                        .into(),
                });
                if let Some(view) = &delta.match_view {
                    // A key-value put is a publish to the bucket's subject.
                    let json = serde_json::to_vec(view).expect("views serialize");
                    effects.push(Effect {
                        subject: format!("$KV.{}.{}", topology.completed_bucket, delta.match_id),
                        msg_id: format!("{}:final", delta.msg_id()),
                        headers: HeaderMap::new(),
                        payload: match_stats_queries::cache::encode(&json).into(),
                    });
                }
            }
            Processed::Duplicate => {}
            Processed::Rejected { reason, detail } => {
                effects.push(dead_letter(payload, source, *reason, detail, topology))
            }
        }
        (processed, effects)
    }
}

fn dead_letter(
    payload: &Bytes,
    source: Source<'_>,
    reason: Reason,
    detail: &str,
    topology: &Topology,
) -> Effect {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_REASON, reason.as_str());
    // Header values are one line of printable text.
    let detail: String = detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    headers.insert(HEADER_DETAIL, detail.as_str());
    headers.insert(HEADER_SOURCE_STREAM, topology.events_stream.as_str());
    headers.insert(HEADER_SOURCE_SEQUENCE, source.sequence.to_string().as_str());
    headers.insert(HEADER_SOURCE_SUBJECT, source.subject);
    Effect {
        subject: format!("{}.{}", topology.dead_letter_subject, reason.as_str()),
        msg_id: format!("{}:{}", topology.events_stream, source.sequence),
        headers,
        payload: payload.clone(),
    }
}

fn stored_at_ms(info: &jetstream::message::Info<'_>) -> i64 {
    (info.published.unix_timestamp_nanos() / 1_000_000) as i64
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
        } else if effect.subject.starts_with("$KV.") {
            metrics::counter!("match_stats_completed_matches_stored_total").increment(1);
        } else if let Some(reason) = effect.headers.get(HEADER_REASON) {
            stats.dead_letters.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("match_stats_dead_letters_total", "reason" => reason.to_string())
                .increment(1);
        } else {
            stats.deltas_published.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("match_stats_deltas_published_total").increment(1);
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

/// Rebuilds the aggregates from the events stream, from its first message to the last one
/// stored when recovery starts. Effects of messages after the consumer's ack floor are
/// published again (NATS drops the ones it already has).
#[tracing::instrument(skip_all, fields(stream = %topology.events_stream))]
pub async fn recover(
    js: &jetstream::Context,
    topology: &Topology,
    consumer: &mut consumer::Consumer<consumer::pull::Config>,
    side: &mut CommandSide,
    stats: &IngestStats,
    batch_size: usize,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let mut stream = js.get_stream(&topology.events_stream).await?;
    let state = stream.info().await?.state.clone();
    let last = state.last_sequence;
    let ack_floor = consumer.info().await?.ack_floor.stream_sequence;
    if state.messages == 0 {
        side.applied_sequence = last;
        return Ok(());
    }
    stats.recovery_total.store(last, Ordering::Relaxed);
    tracing::info!(
        last,
        ack_floor,
        "replaying the events stream to rebuild aggregates"
    );
    let mut messages = crate::streams::read_from_start(&stream, batch_size).await?;
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut done = 0u64;
    'replay: while let Some(chunk) = messages.next().await {
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
            let (processed, effect) = side.process(&message.payload, source, topology);
            if source.sequence > ack_floor {
                effects.extend(effect);
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
        stats
            .applied_sequence
            .store(side.applied_sequence, Ordering::Relaxed);
        if last_log.elapsed() >= PROGRESS_INTERVAL {
            last_log = Instant::now();
            let rate = done as f64 / started.elapsed().as_secs_f64();
            tracing::info!(
                replayed = done,
                remaining = last.saturating_sub(side.applied_sequence),
                rate = format!("{rate:.0}/s"),
                "recovery progress"
            );
        }
        if finished || token.is_cancelled() {
            break 'replay;
        }
    }
    tracing::info!(
        replayed = done,
        seconds = started.elapsed().as_secs_f64(),
        "recovery done"
    );
    Ok(())
}

/// The live loop: pull batches from the durable consumer until cancelled.
pub async fn run(
    js: jetstream::Context,
    topology: Topology,
    mut consumer: consumer::Consumer<consumer::pull::Config>,
    stats: Arc<IngestStats>,
    batch_size: usize,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let mut side = CommandSide::default();
    recover(
        &js,
        &topology,
        &mut consumer,
        &mut side,
        &stats,
        batch_size,
        &token,
    )
    .await?;
    publish_match_counts(&side, &stats);
    stats.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        applied_sequence = side.applied_sequence,
        "consuming live events"
    );

    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch_size)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await?
        .ready_chunks(batch_size);
    loop {
        let chunk = tokio::select! {
            _ = token.cancelled() => break,
            chunk = messages.next() => match chunk {
                Some(chunk) => chunk,
                None => break,
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
            if info.stream_sequence <= side.applied_sequence {
                stats.redelivered_skipped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("match_stats_redelivered_skipped_total").increment(1);
            } else {
                let source = Source {
                    sequence: info.stream_sequence,
                    stored_at_ms: stored_at_ms(&info),
                    subject: message.subject.as_str(),
                };
                let (processed, effect) = side.process(&message.payload, source, &topology);
                effects.extend(effect);
                outcomes.push(processed);
            }
            acks.push(message);
        }
        if !publish(&js, &effects, &stats, &token).await {
            tracing::info!(
                unacked = acks.len(),
                "stopped before effects were confirmed; NATS will redeliver"
            );
            break;
        }
        for message in &acks {
            if let Err(error) = message.ack().await {
                tracing::warn!(%error, "ack failed; the message will be redelivered and skipped");
            }
        }
        for outcome in &outcomes {
            stats.count(outcome);
        }
        stats
            .applied_sequence
            .store(side.applied_sequence, Ordering::Relaxed);
        publish_match_counts(&side, &stats);
        metrics::histogram!("match_stats_processing_latency")
            .record(started.elapsed().as_secs_f64());
    }
    Ok(())
}

fn publish_match_counts(side: &CommandSide, stats: &IngestStats) {
    stats.matches_active.store(side.active, Ordering::Relaxed);
    stats
        .matches_completed
        .store(side.completed, Ordering::Relaxed);
    metrics::gauge!("match_stats_matches_active").set(side.active as f64);
    metrics::gauge!("match_stats_matches_completed").set(side.completed as f64);
}
