//! The [`Projector`]: the deltas stream, from its start, into the read model.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use match_stats_commands::{MatchId, StatDelta};
use match_stats_queries::live::{Live, Pending};
use match_stats_queries::{MatchBuilder, ReadModel};
use tokio_util::sync::CancellationToken;

use super::Dirty;
use crate::handoff::Handoff;
use crate::metrics as m;
use crate::runtimes::Yielding;

/// While catching up, how often the projector builds and publishes snapshots.
pub const CATCH_UP_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// How often the projector drops completed matches past their retention.
pub const EVICTION_INTERVAL: Duration = Duration::from_secs(10);

/// A match built again from its deltas, up to the stream sequence `upto`, applying what
/// can be applied (a missing version is jumped, a value that does not fit its field is
/// left out: both counted). A read that stalls is an error: the projector (and the
/// history writer) must not wait on it for good.
pub(crate) async fn resync(
    stream: &jetstream::stream::Stream,
    subject: String,
    id: MatchId,
    upto: u64,
    batch_size: usize,
) -> anyhow::Result<MatchBuilder> {
    let mut builder = MatchBuilder::new(id);
    let (mut skipped, mut bad) = (0, 0);
    crate::nats::streams::read_subject_upto(
        stream,
        subject,
        upto,
        batch_size,
        "the match's deltas reader",
        |message, _| {
            if let Ok(delta) = StatDelta::from_msgpack(&message.payload) {
                let outcome = builder.apply_lenient(&delta);
                skipped += outcome.skipped_versions;
                bad += outcome.bad_changes;
            }
        },
    )
    .await?;
    metrics::counter!(m::PROJECTION_RESYNCS).increment(1);
    tracing::warn!(match_id = %id, versions_missing = skipped, changes_left_out = bad, "match rebuilt from its deltas");
    Ok(builder)
}

/// Reads the deltas stream into the read model.
pub struct Projector {
    /// JetStream, on the query side's own connection.
    pub js: jetstream::Context,
    /// The deltas stream.
    pub deltas_stream: String,
    /// Its subject prefix (a match's deltas are on `<prefix>.<match_id>`).
    pub deltas_subject: String,
    /// The read model it publishes to.
    pub model: Arc<ReadModel>,
    /// What the cache writer should write.
    pub dirty: Arc<Dirty>,
    /// Messages read per chunk.
    pub batch_size: usize,
    /// Completed matches leave memory this long after this replica saw them end.
    pub retention: Duration,
    /// Stream clients' channels: watched matches get an update per published snapshot.
    pub live: Arc<Live>,
    /// The deltas this replica published, passed in memory instead of decoded again.
    pub handoff: Arc<Handoff>,
}

impl Projector {
    /// Reads the deltas stream from its start into the read model until cancelled; marks
    /// the model caught up once it has read what the stream held at start. Each chunk is
    /// taken where `yielding` puts it: on a thread at a lower priority while ingest
    /// catches up.
    pub async fn run(self, token: CancellationToken, mut yielding: Yielding) -> anyhow::Result<()> {
        let Projector {
            js,
            deltas_stream,
            deltas_subject,
            model,
            dirty,
            batch_size,
            retention,
            live,
            handoff,
        } = self;
        metrics::gauge!(m::READ_MODEL_MATCHES).set(0.0);
        metrics::gauge!(m::READ_MODEL_PENDING).set(0.0);
        let mut stream = js.get_stream(&deltas_stream).await?;
        let state = stream.info().await?.state.clone();
        let target = if state.messages == 0 {
            0
        } else {
            state.last_sequence
        };
        if target == 0 {
            model.set_caught_up();
        }
        let (_, mut messages) =
            crate::nats::streams::read_from(&stream, 0, batch_size, None).await?;
        let mut projection = Projection {
            stream,
            deltas_subject,
            batch_size,
            model,
            dirty,
            live,
            handoff,
            target,
            started: Instant::now(),
            builders: HashMap::new(),
            completed_at: HashMap::new(),
            pending: BTreeSet::new(),
            watched: HashMap::new(),
            applied: Vec::new(),
            is_watched: HashMap::new(),
            last_publish: Instant::now(),
        };
        let mut eviction = tokio::time::interval(EVICTION_INTERVAL);
        loop {
            let chunk = tokio::select! {
                _ = token.cancelled() => break,
                _ = eviction.tick() => {
                    projection.evict(retention);
                    continue;
                }
                chunk = messages.next() => match chunk {
                    Some(chunk) => chunk,
                    None => break,
                },
            };
            projection = yielding.run(projection.take(chunk)).await?;
        }
        Ok(())
    }
}

/// What the projector holds from one chunk to the next: moved whole to where a chunk is
/// taken ([`Yielding`]) and back.
struct Projection {
    stream: jetstream::stream::Stream,
    deltas_subject: String,
    batch_size: usize,
    model: Arc<ReadModel>,
    dirty: Arc<Dirty>,
    live: Arc<Live>,
    handoff: Arc<Handoff>,
    /// The stream's last sequence at start: read that far, the model is caught up.
    target: u64,
    started: Instant,
    builders: HashMap<MatchId, MatchBuilder>,
    /// When this replica saw each match complete; completed matches leave memory after
    /// the retention (Redis and the key-value bucket keep them for the same time).
    completed_at: HashMap<MatchId, Instant>,
    /// Matches changed since the last publish.
    pending: BTreeSet<MatchId>,
    /// What changed in watched matches since their last published snapshot.
    watched: HashMap<MatchId, Pending>,
    /// Once caught up, the deltas applied since the last publish (one chunk): whether
    /// their match is watched is decided after the model takes the chunk, not as each
    /// is applied. A client that subscribes in between reads the model before or
    /// after that point; either way its first update follows on from what it read.
    applied: Vec<(Arc<StatDelta>, u64)>,
    /// Whether each of those matches is watched, asked once per match and publish.
    is_watched: HashMap<MatchId, bool>,
    last_publish: Instant,
}

impl Projection {
    /// Drops the completed matches past `retention`.
    fn evict(&mut self, retention: Duration) {
        let expired: Vec<MatchId> = self
            .completed_at
            .iter()
            .filter(|(_, at)| at.elapsed() >= retention)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.completed_at.remove(id);
            self.builders.remove(id);
            self.watched.remove(id);
        }
        self.model.remove(&expired);
        metrics::counter!(m::READ_MODEL_EVICTED).increment(expired.len() as u64);
    }

    /// Applies one chunk of the deltas stream and publishes what it changed (at most
    /// every [`CATCH_UP_PUBLISH_INTERVAL`] while catching up); itself back after.
    async fn take<E: std::fmt::Display>(
        mut self,
        chunk: Vec<Result<jetstream::Message, E>>,
    ) -> Self {
        let last_sequence = self.apply(chunk).await;
        // While catching up, nobody reads the snapshots yet: build them at most every
        // CATCH_UP_PUBLISH_INTERVAL (and once caught up), not per chunk.
        let reached = last_sequence >= self.target;
        if self.model.is_caught_up()
            || reached
            || self.last_publish.elapsed() >= CATCH_UP_PUBLISH_INTERVAL
        {
            self.publish();
        }
        metrics::gauge!(m::READ_MODEL_MATCHES).set(self.builders.len() as f64);
        if !self.model.is_caught_up() && reached {
            self.model.set_caught_up();
            // The catch-up's chunks are gone: their pages go back.
            crate::memory::return_freed_soon();
            tracing::info!(
                matches = self.builders.len(),
                seconds = self.started.elapsed().as_secs_f64(),
                "read model caught up"
            );
        }
        self
    }

    /// Applies `chunk` to the matches' builders, marking what changed as pending; the
    /// last stream sequence it held.
    async fn apply<E: std::fmt::Display>(
        &mut self,
        chunk: Vec<Result<jetstream::Message, E>>,
    ) -> u64 {
        let mut last_sequence = 0;
        let mut behind = None;
        let (mut handed_off, mut decoded) = (0u64, 0u64);
        for message in chunk {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "deltas consumer error; continuing");
                    continue;
                }
            };
            let (sequence, pending) = message
                .info()
                .map_or((0, None), |i| (i.stream_sequence, Some(i.pending)));
            last_sequence = last_sequence.max(sequence);
            behind = pending.or(behind);
            let delta = match self.handoff.take(sequence) {
                Some(delta) => {
                    handed_off += 1;
                    delta
                }
                None => match StatDelta::from_msgpack(&message.payload) {
                    Ok(delta) => {
                        decoded += 1;
                        Arc::new(delta)
                    }
                    Err(error) => {
                        metrics::counter!(m::DELTAS_UNDECODABLE).increment(1);
                        tracing::error!(%error, subject = %message.subject, "a deltas message is not a StatDelta; skipped");
                        continue;
                    }
                },
            };
            let builder = self
                .builders
                .entry(delta.match_id)
                .or_insert_with(|| MatchBuilder::new(delta.match_id));
            let before = builder.version();
            match builder.apply(&delta) {
                Ok(0) => {}
                Ok(_) => {
                    self.pending.insert(delta.match_id);
                    if self.model.is_caught_up() {
                        self.applied.push((delta, before));
                    } else if self.live.is_watched(&delta.match_id) {
                        // While catching up, publishes are up to a second apart,
                        // too many deltas to keep: what is watched is decided as
                        // each is applied (a client subscribing meanwhile may get
                        // one more snapshot: a full state, never a wrong one).
                        self.watched
                            .entry(delta.match_id)
                            .or_default()
                            .record(&delta, before);
                    }
                }
                Err(error) => {
                    // Never frozen: the match is built again from its deltas,
                    // jumping what is missing.
                    metrics::counter!(m::DELTA_GAPS).increment(1);
                    tracing::warn!(%error, match_id = %delta.match_id, "delta not applied; rebuilding the match from its deltas");
                    let subject = format!("{}.{}", self.deltas_subject, delta.match_id);
                    match resync(
                        &self.stream,
                        subject,
                        delta.match_id,
                        sequence,
                        self.batch_size,
                    )
                    .await
                    {
                        Ok(rebuilt) => {
                            *builder = rebuilt;
                            self.pending.insert(delta.match_id);
                            self.watched.entry(delta.match_id).or_default().reset();
                        }
                        Err(error) => {
                            tracing::error!(%error, match_id = %delta.match_id, "rebuilding a match from its deltas failed")
                        }
                    }
                }
            }
        }
        metrics::counter!(m::DELTAS_PROJECTED, "how" => "handed_off").increment(handed_off);
        metrics::counter!(m::DELTAS_PROJECTED, "how" => "decoded").increment(decoded);
        if let Some(behind) = behind {
            metrics::gauge!(m::READ_MODEL_PENDING).set(behind as f64);
        }
        last_sequence
    }

    /// Builds and publishes the pending matches' snapshots: to the read model, to their
    /// watchers, and as dirty for the cache writer.
    fn publish(&mut self) {
        let snapshots: Vec<_> = self
            .pending
            .iter()
            .filter_map(|id| self.builders.get(id).map(MatchBuilder::snapshot))
            .collect();
        for snapshot in snapshots.iter().filter(|s| s.is_completed()) {
            self.completed_at
                .entry(snapshot.summary.match_id)
                .or_insert_with(Instant::now);
        }
        self.model.publish(snapshots.iter().cloned());
        // After the model: a client that subscribes from here on reads this
        // chunk's snapshots; one that subscribed before is watching now, so its
        // updates are recorded (and a client that needs a snapshot finds these).
        self.is_watched.clear();
        for (delta, before) in self.applied.drain(..) {
            let id = delta.match_id;
            if *self
                .is_watched
                .entry(id)
                .or_insert_with(|| self.live.is_watched(&id))
            {
                self.watched.entry(id).or_default().record(&delta, before);
            }
        }
        for snapshot in &snapshots {
            if let Some(changes) = self.watched.remove(&snapshot.summary.match_id) {
                self.live.publish(changes.into_update(snapshot));
            }
        }
        self.dirty.extend(std::mem::take(&mut self.pending));
        self.last_publish = Instant::now();
    }
}
