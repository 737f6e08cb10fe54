//! The bare pipeline: the NATS work of the service's own design with no domain work, as a
//! baseline for its catch-up. One pull consumer per partition filter (the service's
//! layout); each batch's events are grouped by match and each group republished as one
//! message (its events' payloads concatenated, with the first event's `Nats-Msg-Id`), as
//! the service publishes one coalesced delta per match per batch; the publish acks are
//! awaited, then the batch is acknowledged with one ack-all; and an ordered consumer
//! reads every republished message back, as the query side reads the deltas. Decoding,
//! rules, read model, snapshots and Redis are left out: whatever the service does on top
//! of this costs more.
//!
//! [`live`] is the same for live events (new ones only), in the service's batches
//! (`match_stats::nats::batches::Batches`: a sparse event goes at once), each match's
//! message to `pipeline.<match_id>` with `Nats-Expected-Last-Subject-Sequence` (the
//! service's fence on each delta). Live batches rarely hold two events of a match, so
//! about one message goes out per event, as one delta does from the service; a load
//! generator watching `pipeline.>` measures publish to copy by message id, as for the
//! relay.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures::StreamExt;

use crate::support::consume::{next_chunk, pull};

const STREAM: &str = "PIPELINE";
const SUBJECT: &str = "pipeline";

/// Where the live pipeline's copies go (one subject per match): for a watcher.
pub const LIVE_COPIES: &str = "pipeline.>";

/// Counts shared by the pipeline's tasks.
#[derive(Default)]
struct Counts {
    /// Events acknowledged on the events stream.
    consumed: AtomicU64,
    /// Messages published (and confirmed) to the pipeline stream.
    published: AtomicU64,
    /// Messages read back from it.
    read: AtomicU64,
    stop: AtomicBool,
}

/// What one run of the pipeline measured.
pub struct PipelineRun {
    /// Events per second, until every event was consumed and every republished message
    /// read back.
    pub events_per_second: f64,
    /// Republished messages per event.
    pub messages_per_event: f64,
    /// The CPU nats-server and this process used for it, per event.
    pub cpu: crate::support::CpuPerEvent,
}

/// Catches up on the whole `events_stream` through the bare pipeline, one consumer per
/// filter in `filters`, batches of up to `batch` messages closed after `linger` (the
/// service's `BATCH_SIZE` and `BATCH_LINGER`); nats-server's CPU read from `nats_pid`.
pub async fn catch_up(
    js: &jetstream::Context,
    nats_pid: u32,
    events_stream: &str,
    filters: Vec<String>,
    batch: usize,
    linger: Duration,
) -> anyhow::Result<PipelineRun> {
    let out = output(js).await?;
    let stored = crate::support::stored_messages(js, events_stream).await?;
    let cpu = crate::support::CpuMeter::start(nats_pid, std::process::id());
    let started = Instant::now();
    let running = start(
        js,
        events_stream,
        filters,
        (batch, linger),
        Some(out),
        false,
    );
    let counts = running.counts.clone();
    while counts.consumed.load(Ordering::Relaxed) < stored
        || counts.read.load(Ordering::Relaxed) < counts.published.load(Ordering::Relaxed)
    {
        anyhow::ensure!(
            !running.tasks.iter().any(|t| t.is_finished()),
            "the bare pipeline stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu.per_event(stored);
    running.stop().await?;
    Ok(PipelineRun {
        cpu,
        events_per_second: stored as f64 / elapsed,
        messages_per_event: counts.published.load(Ordering::Relaxed) as f64 / stored as f64,
    })
}

/// The pipeline's stream, empty.
async fn output(js: &jetstream::Context) -> anyhow::Result<stream::Stream> {
    js.create_or_update_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{SUBJECT}.>")],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await?;
    let out = js.get_stream(STREAM).await?;
    out.purge().await?;
    Ok(out)
}

/// The live pipeline, started on new events of `events_stream`; stops (and removes its
/// consumers) when its `stop` is called. Without `read_back` nothing reads the copies
/// back: the NATS work of a layout whose query side took this replica's own deltas from
/// memory alone.
pub async fn live(
    js: &jetstream::Context,
    events_stream: &str,
    filters: Vec<String>,
    (batch, linger): (usize, Duration),
    read_back: bool,
) -> anyhow::Result<Running> {
    let out = output(js).await?;
    let out = read_back.then_some(out);
    Ok(start(
        js,
        events_stream,
        filters,
        (batch, linger),
        out,
        true,
    ))
}

/// One task per filter (live: new events only, one fenced message per match) and the
/// read-back of `out` (if given), sharing their counts.
fn start(
    js: &jetstream::Context,
    events_stream: &str,
    filters: Vec<String>,
    (batch, linger): (usize, Duration),
    out: Option<stream::Stream>,
    live: bool,
) -> Running {
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for filter in filters {
        let (js, events, counts) = (js.clone(), events_stream.to_owned(), counts.clone());
        tasks.push(if live {
            tokio::spawn(live_partition(js, events, filter, (batch, linger), counts))
        } else {
            tokio::spawn(partition(js, events, filter, (batch, linger), counts))
        });
    }
    if let Some(out) = out {
        tasks.push(tokio::spawn(read_back(out, batch, counts.clone())));
    }
    Running { counts, tasks }
}

/// The pipeline running.
pub struct Running {
    counts: Arc<Counts>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Stops it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.counts.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await??;
        }
        Ok(())
    }
}

/// One live partition: new events only, in the service's batches; each republished to
/// its match's subject with its message id and the subject's last sequence expected.
async fn live_partition(
    js: jetstream::Context,
    events_stream: String,
    filter: String,
    (batch, linger): (usize, Duration),
    counts: Arc<Counts>,
) -> anyhow::Result<()> {
    let name = format!("pipeline-live-{}", rand::random::<u32>());
    let deliver = consumer::DeliverPolicy::New;
    let (events, messages) = pull(&js, &events_stream, &name, filter, deliver, batch).await?;
    let mut messages = match_stats::nats::batches::Batches::new(messages, batch, linger);
    // Per match subject, the last sequence the pipeline stream holds.
    let mut last: HashMap<String, u64> = HashMap::new();
    while !counts.stop.load(Ordering::Relaxed) {
        let Some(chunk) = next_chunk(&mut messages).await? else {
            continue;
        };
        // One message per match per batch, as the service publishes one delta per match
        // per batch (the fence allows no other).
        let by_match = by_match(&chunk);
        let mut acks = Vec::with_capacity(by_match.len());
        for (match_id, (payload, id)) in by_match {
            let subject = format!("{SUBJECT}.{match_id}");
            let expected = last.get(&subject).copied().unwrap_or(0);
            let mut copy = PublishMessage::build()
                .payload(payload.into())
                .expected_last_subject_sequence(expected);
            if let Some(id) = id {
                copy = copy.message_id(id);
            }
            acks.push((subject.clone(), js.send_publish(subject, copy).await?));
        }
        let published = acks.len() as u64;
        for (subject, ack) in acks {
            last.insert(subject, ack.await?.sequence);
        }
        done(&chunk, published, &counts).await?;
    }
    drop(messages);
    events.delete_consumer(&name).await?;
    Ok(())
}

/// One partition: pull a batch, republish one message per match, await the acks, ack all.
async fn partition(
    js: jetstream::Context,
    events_stream: String,
    filter: String,
    (batch, linger): (usize, Duration),
    counts: Arc<Counts>,
) -> anyhow::Result<()> {
    let name = format!("pipeline-{}", rand::random::<u32>());
    let deliver = consumer::DeliverPolicy::All;
    let (events, messages) = pull(&js, &events_stream, &name, filter, deliver, batch).await?;
    let mut messages = Box::pin(tokio_stream::StreamExt::chunks_timeout(
        messages, batch, linger,
    ));
    while !counts.stop.load(Ordering::Relaxed) {
        let Some(chunk) = next_chunk(&mut messages).await? else {
            continue;
        };
        let by_match = by_match(&chunk);
        let mut acks = Vec::with_capacity(by_match.len());
        for (payload, id) in by_match.into_values() {
            let mut copy = PublishMessage::build().payload(payload.into());
            if let Some(id) = id {
                copy = copy.message_id(id);
            }
            acks.push(js.send_publish(format!("{SUBJECT}.out"), copy).await?);
        }
        let published = acks.len() as u64;
        for ack in futures::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack?;
        }
        done(&chunk, published, &counts).await?;
    }
    // Gone once measured, as the relay's.
    drop(messages);
    events.delete_consumer(&name).await?;
    Ok(())
}

/// A batch's events by match (the subject's last token): their payloads concatenated, and
/// the first event's `Nats-Msg-Id` (live batches rarely hold two events of a match).
fn by_match(chunk: &[jetstream::Message]) -> HashMap<&str, (Vec<u8>, Option<&str>)> {
    let mut by_match: HashMap<&str, (Vec<u8>, Option<&str>)> = HashMap::new();
    for message in chunk {
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|id| id.as_str());
        let match_id = message.subject.rsplit('.').next().unwrap_or_default();
        let (payload, first_id) = by_match.entry(match_id).or_default();
        payload.extend_from_slice(&message.payload);
        *first_id = first_id.or(id);
    }
    by_match
}

/// A batch whose copies are confirmed: acknowledged with one ack-all, and counted.
async fn done(chunk: &[jetstream::Message], published: u64, counts: &Counts) -> anyhow::Result<()> {
    if let Some(last) = chunk.last() {
        last.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    counts.published.fetch_add(published, Ordering::Relaxed);
    counts
        .consumed
        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// The query side's half: an ordered consumer reading the republished messages.
async fn read_back(out: stream::Stream, batch: usize, counts: Arc<Counts>) -> anyhow::Result<()> {
    let reader = out
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await?;
    let mut messages = reader.messages().await?.ready_chunks(batch);
    while !counts.stop.load(Ordering::Relaxed) {
        let Some(chunk) = next_chunk(&mut messages).await? else {
            continue;
        };
        counts.read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}
