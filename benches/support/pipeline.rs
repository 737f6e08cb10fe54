//! The bare pipeline: the NATS work of the service's own design with no domain work, as a
//! baseline. One pull consumer per partition filter (the service's layout), read in the
//! service's batches (`match_stats::nats::batches::Batches`); each batch's events are
//! grouped by match and each group republished as one message (its events' payloads
//! concatenated, with the first event's `Nats-Msg-Id`), as the service publishes one
//! coalesced delta per match per batch; the publish acks are awaited, then the batch is
//! acknowledged with one ack-all; and an ordered consumer reads every republished message
//! back, as the query side reads the deltas. Decoding, rules, read model, snapshots and
//! Redis are left out: whatever the service does on top of this costs more.
//!
//! [`catch_up`] drains the whole events stream, its copies as [`Copies`] says: all to one
//! subject (the load test's bare pipeline), or as the service publishes its deltas, each
//! match's to its own subject, fenced, and as heavy as a delta.
//!
//! [`live`] is the same for live events (new ones only), each match's message to
//! `pipeline.<match_id>` with `Nats-Expected-Last-Subject-Sequence` (the service's fence
//! on each delta). Live batches rarely hold two events of a match, so about one message
//! goes out per event, as one delta does from the service; a load generator watching
//! `pipeline.>` measures publish to copy by message id, as for the relay.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures::StreamExt;
use match_stats_commands::delta::Format;
use match_stats_commands::{Change, DeltaEntry, Match, MatchId, Outcome, StatDeltaRef};

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

/// How the pipeline publishes its copies.
#[derive(Clone, Copy, PartialEq)]
pub enum Copies {
    /// All to one subject, with no fence.
    OneSubject,
    /// As the service publishes its deltas: each match's copy to its own subject,
    /// `pipeline.<match_id>`, fenced with `Nats-Expected-Last-Subject-Sequence` (the
    /// subject's last sequence, from the acks), its payload `weight` times its events'
    /// bytes (zeros added: a delta weighs more than the events it comes from).
    Fenced { weight: f64 },
    /// Fenced as above, each copy the match's real delta: the batch's events decoded,
    /// applied to the partition's aggregates and their entries encoded in this format
    /// (the service's `DELTA_FORMAT`), as the service decides and publishes them (no
    /// dead letters, snapshots, projection or anything else of the service's).
    Deltas(Format),
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
/// service's `BATCH_SIZE` and `BATCH_LINGER`), its copies as `copies` says;
/// nats-server's CPU read from `nats_pid`.
pub async fn catch_up(
    js: &jetstream::Context,
    nats_pid: u32,
    events_stream: &str,
    filters: Vec<String>,
    (batch, linger): (usize, Duration),
    copies: Copies,
) -> anyhow::Result<PipelineRun> {
    let out = output(js).await?;
    let stored = crate::support::stored_messages(js, events_stream).await?;
    let cpu = crate::support::CpuMeter::start(nats_pid, std::process::id());
    let started = Instant::now();
    let deliver = (consumer::DeliverPolicy::All, copies);
    let running = start(
        js,
        events_stream,
        filters,
        (batch, linger),
        deliver,
        Some(out),
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

/// The pipeline's stream, new (a run inside an earlier one's duplicate window would find
/// its message ids stored and store nothing: a cheaper run).
async fn output(js: &jetstream::Context) -> anyhow::Result<stream::Stream> {
    if js.get_stream(STREAM).await.is_ok() {
        js.delete_stream(STREAM).await?;
    }
    Ok(js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![format!("{SUBJECT}.>")],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?)
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
    let deliver = (consumer::DeliverPolicy::New, Copies::Fenced { weight: 1.0 });
    Ok(start(
        js,
        events_stream,
        filters,
        (batch, linger),
        deliver,
        out,
    ))
}

/// One task per filter (from where `deliver` says, copies as it says) and the read-back
/// of `out` (if given), sharing their counts.
fn start(
    js: &jetstream::Context,
    events_stream: &str,
    filters: Vec<String>,
    (batch, linger): (usize, Duration),
    deliver: (consumer::DeliverPolicy, Copies),
    out: Option<stream::Stream>,
) -> Running {
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for filter in filters {
        let (js, events, counts) = (js.clone(), events_stream.to_owned(), counts.clone());
        let source = (events, filter);
        tasks.push(tokio::spawn(partition(
            js,
            source,
            (batch, linger),
            deliver,
            counts,
        )));
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

/// One partition: pull a batch (in the service's batches), republish one message per
/// match as `copies` says, await the acks, ack all.
async fn partition(
    js: jetstream::Context,
    (events_stream, filter): (String, String),
    (batch, linger): (usize, Duration),
    (deliver, copies): (consumer::DeliverPolicy, Copies),
    counts: Arc<Counts>,
) -> anyhow::Result<()> {
    let name = format!("pipeline-{}", rand::random::<u32>());
    let (events, messages) = pull(&js, &events_stream, &name, filter, deliver, batch).await?;
    let mut messages = match_stats::nats::batches::Batches::new(messages, batch, linger);
    // Per match subject, the last sequence the pipeline stream holds (fenced copies).
    let mut last: HashMap<String, u64> = HashMap::new();
    // The partition's aggregates, when its copies are the deltas themselves.
    let mut deltas = match copies {
        Copies::Deltas(format) => Some(Deltas::new(format)),
        _ => None,
    };
    while !counts.stop.load(Ordering::Relaxed) {
        let Some(chunk) = next_chunk(&mut messages).await? else {
            continue;
        };
        // One message per match per batch, as the service publishes one delta per match
        // per batch (the fence allows no other).
        let copied: Vec<Outgoing<'_>> = match deltas.as_mut() {
            Some(deltas) => deltas.of(&chunk),
            None => by_match(&chunk)
                .into_iter()
                .map(|(m, (payload, id))| (m.into(), payload, id.map(Cow::from)))
                .collect(),
        };
        let mut acks = Vec::with_capacity(copied.len());
        for (match_id, mut payload, id) in copied {
            let mut copy = PublishMessage::build();
            let subject = if copies == Copies::OneSubject {
                format!("{SUBJECT}.out")
            } else {
                let subject = format!("{SUBJECT}.{match_id}");
                let expected = last.get(&subject).copied().unwrap_or(0);
                copy = copy.expected_last_subject_sequence(expected);
                if let Copies::Fenced { weight } = copies {
                    payload.resize((payload.len() as f64 * weight).round() as usize, 0);
                }
                subject
            };
            copy = copy.payload(payload.into());
            if let Some(id) = id {
                copy = copy.message_id(id);
            }
            acks.push((subject.clone(), js.send_publish(subject, copy).await?));
        }
        let published = acks.len() as u64;
        for (subject, ack) in acks {
            let sequence = ack.await?.sequence;
            if copies != Copies::OneSubject {
                last.insert(subject, sequence);
            }
        }
        done(&chunk, published, &counts).await?;
    }
    // Gone once measured, as the relay's.
    drop(messages);
    events.delete_consumer(&name).await?;
    Ok(())
}

/// One copy to publish: its match's id, payload and message id.
type Outgoing<'a> = (Cow<'a, str>, Vec<u8>, Option<Cow<'a, str>>);

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

/// A partition's aggregates, for [`Copies::Deltas`].
struct Deltas {
    matches: HashMap<MatchId, Match>,
    /// Change lists of published deltas, reused (as the service reuses them).
    lists: Vec<Vec<Change>>,
    format: Format,
}

impl Deltas {
    fn new(format: Format) -> Self {
        Deltas {
            matches: HashMap::new(),
            lists: Vec::new(),
            format,
        }
    }

    /// The batch's events decided, and one encoded delta per match: (match id, payload,
    /// message id). An event that does not decode or apply is skipped (the load
    /// generator's all do).
    fn of(&mut self, chunk: &[jetstream::Message]) -> Vec<Outgoing<'static>> {
        let stored_at = chrono::Utc::now().timestamp_millis();
        let mut entries: HashMap<MatchId, Vec<DeltaEntry>> = HashMap::new();
        for message in chunk {
            let Ok(event) = match_stats_commands::decode(&message.payload, stored_at) else {
                continue;
            };
            let sequence = message.info().map_or(0, |i| i.stream_sequence);
            let aggregate = self
                .matches
                .entry(event.match_id)
                .or_insert_with(|| Match::new(event.match_id));
            let list = self.lists.pop().unwrap_or_default();
            if let Outcome::Applied(entry) = aggregate.handle_into(&event, sequence, list) {
                entries.entry(event.match_id).or_default().push(entry);
            }
        }
        let mut out = Vec::with_capacity(entries.len());
        for (match_id, entries) in entries {
            let delta = StatDeltaRef {
                match_id,
                entries: entries.iter().map(Cow::Borrowed).collect(),
                match_view: None,
            };
            let payload = delta.encode(self.format);
            out.push((
                match_id.to_string().into(),
                payload,
                Some(delta.msg_id().into()),
            ));
            self.lists.extend(entries.into_iter().map(|e| e.changes));
        }
        out
    }
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
