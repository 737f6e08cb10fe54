//! The history writer: its own durable consumer of the deltas stream, pinned to one
//! replica at a time (NATS delivers to the pinned client of the `writer` group until it
//! stops pulling for `PARTITION_PIN_TIMEOUT`), so it never slows ingest and can lag and
//! catch up. It notes which matches a chunk of deltas completed (or corrected after
//! completion), takes each one's whole object, writes them in one batch and only then
//! acknowledges: a crash redelivers the chunk, and the version guard makes the rewrite a
//! no-op.
//!
//! A completed match's object comes from this replica's read model once it has reached
//! the version (it reads the same deltas), else from the completed-matches bucket, else
//! it is rebuilt from the match's deltas.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;
use match_stats_commands::{FieldValue, MatchId, MatchStatus, StatDelta};
use match_stats_queries::ReadModel;
use match_stats_queries::cache::CompletedStore;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::HistoryStats;
use super::record::MatchRecord;
use super::store;
use crate::config::Config;
use crate::metrics as m;
use crate::nats::deliveries;
use crate::retry::{Cancelled, Retry};

/// Deltas read per chunk (at most).
pub const CHUNK: usize = 1024;
/// How long a chunk waits to fill once its first delta arrived.
pub const CHUNK_LINGER: Duration = Duration::from_millis(100);
/// How long the writer waits for this replica's read model to reach a version before it
/// asks the other sources.
pub const MODEL_WAIT: Duration = Duration::from_secs(5);
/// How often the consumer's lag is read.
pub const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// What a chunk of deltas asks to write: each match's newest completed version and, when
/// the chunk holds its end, how it ended.
#[derive(Debug, Default)]
pub struct Completions(BTreeMap<MatchId, (u64, Option<&'static str>)>);

impl Completions {
    /// Notes a delta message. Only a completed match's deltas carry the match object; the
    /// rest are not decoded at all.
    pub fn note_message(&mut self, payload: &[u8]) {
        if StatDelta::carries_match(payload) != Some(false)
            && let Ok(delta) = StatDelta::from_msgpack(payload)
        {
            self.note(&delta);
        }
    }

    /// Notes a delta: a delta of a completed match carries its summary.
    pub fn note(&mut self, delta: &StatDelta) {
        let Some(view) = &delta.match_view else {
            return;
        };
        if view.status != MatchStatus::Completed {
            return;
        }
        let version = delta.entries.last().map_or(0, |e| e.version);
        let ended = delta.entries.iter().find(|e| {
            e.changes.iter().any(|c| {
                c.field == match_stats_commands::Field::Status
                    && matches!(&c.after, FieldValue::Text(t) if t.as_str() == "completed")
            })
        });
        let reason = ended.map(|e| {
            let idle = crate::command_side::idle_end_event_id(delta.match_id, e.version - 1);
            if e.event_id.to_string() == idle {
                "idle_timeout"
            } else {
                "match_end"
            }
        });
        let entry = self.0.entry(delta.match_id).or_insert((version, None));
        entry.0 = entry.0.max(version);
        if reason.is_some() {
            entry.1 = reason;
        }
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The writer's parts.
pub struct HistoryWriter {
    /// JetStream.
    pub js: jetstream::Context,
    /// The settings.
    pub config: Config,
    /// The database.
    pub pool: PgPool,
    /// This replica's read model.
    pub model: Arc<ReadModel>,
    /// The completed-matches bucket.
    pub completed: Arc<CompletedStore>,
    /// Figures for `/ready`, `/system/stats` and the metrics.
    pub stats: Arc<HistoryStats>,
}

impl HistoryWriter {
    /// Migrates, backfills on a first start, then writes until cancelled. A database that
    /// is down is waited for with back-off; ingest and the API never wait for it.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        self.stats.set_lag(0);
        match self.prepare(&token).await {
            Ok(consumer) => self.write_until_cancelled(consumer, &token).await,
            Err(Cancelled) => Ok(()),
        }
    }

    async fn prepare(&self, token: &CancellationToken) -> Result<PullConsumer, Cancelled> {
        Retry::new(token, "migrating the history database")
            .run(|| store::migrate(&self.pool))
            .await?;
        let backfill = Retry::new(token, "reading the history state")
            .run(|| store::needs_backfill(&self.pool))
            .await?;
        if backfill {
            super::backfill::run(&self.pool, &self.completed, &self.stats, token).await?;
        }
        let stream = Retry::new(token, "finding the deltas stream")
            .run(|| self.js.get_stream(&self.config.streams.deltas_stream))
            .await?;
        Retry::new(token, "creating the history consumer")
            .run(|| {
                let config = crate::nats::streams::history_consumer(&self.config);
                let stream = stream.clone();
                async move {
                    stream
                        .create_consumer(config)
                        .await
                        .map_err(anyhow::Error::from)
                }
            })
            .await
    }

    async fn write_until_cancelled(
        &self,
        consumer: PullConsumer,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        let expires = (self.config.streams.pin_timeout / 3).max(Duration::from_millis(300));
        let mut lag_check = tokio::time::interval(LAG_INTERVAL);
        let mut consumer = consumer;
        // The stream sequence of the next delta expected (unknown when a pull starts).
        let mut next: Option<u64>;
        'pulling: loop {
            next = None;
            let pull = consumer
                .stream()
                .group(crate::nats::streams::WRITER_GROUP)
                .max_messages_per_batch(CHUNK)
                .expires(expires)
                .heartbeat(expires / 3)
                .messages()
                .await;
            let pull = match pull {
                Ok(pull) => pull,
                Err(error) => {
                    tracing::warn!(%error, "history consumer pull failed; retrying");
                    tokio::select! {
                        _ = token.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let mut chunks = Box::pin(tokio_stream::StreamExt::chunks_timeout(
                pull,
                CHUNK,
                CHUNK_LINGER,
            ));
            loop {
                let chunk = tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = lag_check.tick() => {
                        self.read_lag(&mut consumer).await;
                        continue;
                    }
                    chunk = chunks.next() => match chunk {
                        Some(chunk) => chunk,
                        None => continue 'pulling,
                    },
                };
                let mut completions = Completions::default();
                let (mut last, mut first, mut count) = (None, None, 0u64);
                for message in chunk {
                    let message = match message {
                        Ok(message) => message,
                        Err(error) => {
                            tracing::debug!(%error, "history consumer: pull error");
                            continue;
                        }
                    };
                    completions.note_message(&message.payload);
                    first = first.or_else(|| sequence_of(&message));
                    count += 1;
                    last = Some(message);
                }
                let Some(last) = last else { continue };
                // A hole before or inside the chunk is deltas delivered (here, or to the
                // replica pinned before) and never received (`nats::deliveries`): they
                // are read from the stream before the chunk is acknowledged.
                let (first, to) = (first.unwrap_or(0), sequence_of(&last).unwrap_or(0));
                let from = match next {
                    Some(next) => next,
                    None => match self.first_unacknowledged(&consumer, token).await {
                        Ok(sequence) => sequence,
                        Err(Cancelled) => return Ok(()),
                    },
                };
                let lost = deliveries::skipped(Some(from), (first, to), count as usize);
                if lost > 0 {
                    metrics::counter!(m::DELIVERIES_LOST, "consumer" => "history").increment(lost);
                    tracing::warn!(
                        from,
                        to,
                        lost,
                        "history consumer: deltas delivered but never received; reading them from the stream"
                    );
                    let mut retry =
                        Retry::new(token, "reading the deltas the history consumer lost");
                    loop {
                        let read = self.read_range(from.min(first), to, &mut completions);
                        match retry.attempt(read).await {
                            Ok(Ok(())) => break,
                            Ok(Err(error)) => {
                                if retry.failed(&format!("{error:#}")).await.is_err() {
                                    return Ok(());
                                }
                            }
                            Err(Cancelled) => return Ok(()),
                        }
                    }
                    retry.succeeded();
                }
                next = Some(to + 1);
                if !completions.is_empty() {
                    let sequence = last.info().map_or(u64::MAX, |i| i.stream_sequence);
                    if self.write(completions, sequence, token).await.is_err() {
                        return Ok(());
                    }
                }
                // Ack-all: every delta of the chunk is settled.
                if let Err(error) = last.ack().await {
                    tracing::warn!(%error, "history consumer: ack failed (the chunk will be redelivered)");
                }
                self.read_lag(&mut consumer).await;
            }
        }
    }

    /// The first delta the consumer has not had acknowledged and the stream still holds
    /// (its stream sequence), asked until NATS answers.
    async fn first_unacknowledged(
        &self,
        consumer: &PullConsumer,
        token: &CancellationToken,
    ) -> Result<u64, Cancelled> {
        Retry::new(token, "reading the history consumer's position")
            .run(|| async {
                let floor = consumer.get_info().await?.ack_floor.stream_sequence;
                let mut stream = self
                    .js
                    .get_stream(&self.config.streams.deltas_stream)
                    .await?;
                let first = stream.info().await?.state.first_sequence;
                anyhow::Ok((floor + 1).max(first))
            })
            .await
    }

    /// Notes what the deltas stored from sequence `from` to `to` complete, read from the
    /// stream directly.
    async fn read_range(
        &self,
        from: u64,
        to: u64,
        completions: &mut Completions,
    ) -> anyhow::Result<()> {
        let stream = self
            .js
            .get_stream(&self.config.streams.deltas_stream)
            .await?;
        let (mut left, mut chunks) =
            crate::nats::streams::read_from(&stream, from, CHUNK, None).await?;
        while left > 0 {
            let Some(chunk) =
                crate::nats::streams::next_or_stall(&mut chunks, "the deltas reader").await?
            else {
                break;
            };
            for message in chunk {
                let message = message?;
                left = left.saturating_sub(1);
                if sequence_of(&message).is_none_or(|sequence| sequence > to) {
                    return Ok(());
                }
                completions.note_message(&message.payload);
            }
        }
        Ok(())
    }

    /// Reads the consumer's lag (bounded: NATS may be away).
    async fn read_lag(&self, consumer: &mut PullConsumer) {
        if let Ok(Ok(info)) = tokio::time::timeout(LAG_INTERVAL, consumer.info()).await {
            self.stats
                .set_lag(info.num_pending + info.num_ack_pending as u64);
        }
    }

    /// Resolves each completed match's object and writes the batch, retrying while the
    /// database is away.
    async fn write(
        &self,
        completions: Completions,
        upto: u64,
        token: &CancellationToken,
    ) -> Result<(), Cancelled> {
        let mut records = Vec::with_capacity(completions.0.len());
        for (id, (version, reason)) in completions.0 {
            match self.object(id, version, upto).await {
                Some(view) => records.push(MatchRecord {
                    view,
                    end_reason: reason,
                }),
                None => {
                    metrics::counter!(m::HISTORY_UNRESOLVED).increment(1);
                    tracing::error!(match_id = %id, version, "history: no source has this completed match; not written");
                }
            }
        }
        let started = Instant::now();
        let written = Retry::new(token, "writing match history")
            .counted(m::HISTORY_WRITE_RETRIES)
            .run(|| store::write(&self.pool, &records))
            .await?;
        metrics::histogram!(m::HISTORY_WRITE_DURATION).record(started.elapsed().as_secs_f64());
        metrics::counter!(m::HISTORY_MATCHES_WRITTEN).increment(written as u64);
        let players: usize = records.iter().map(|r| r.players().len()).sum();
        self.stats.written(written as u64, players as u64);
        Ok(())
    }

    /// A completed match's object at `version` or later.
    async fn object(
        &self,
        id: MatchId,
        version: u64,
        upto: u64,
    ) -> Option<match_stats_commands::MatchView> {
        let deadline = Instant::now() + MODEL_WAIT;
        loop {
            if let Some(snapshot) = self.model.get(&id)
                && snapshot.version >= version
                && snapshot.is_completed()
            {
                return Some(snapshot.to_view());
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Ok(Some(snapshot)) = self.completed.get(&id).await
            && snapshot.version >= version
        {
            return Some(snapshot.to_view());
        }
        let stream = self
            .js
            .get_stream(&self.config.streams.deltas_stream)
            .await
            .ok()?;
        let subject = format!("{}.{id}", self.config.streams.deltas_subject);
        let batch = self.config.batch_size as usize;
        let rebuilt = crate::query_side::resync(&stream, subject, id, upto, batch)
            .await
            .ok()?;
        let snapshot = rebuilt.snapshot();
        (snapshot.is_completed()).then(|| snapshot.to_view())
    }
}

/// A delivered delta's stream sequence.
fn sequence_of(message: &jetstream::Message) -> Option<u64> {
    message.info().ok().map(|info| info.stream_sequence)
}
