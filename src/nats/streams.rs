//! What the service provisions in JetStream: the events, deltas and dead-letter streams,
//! one durable consumer per partition and the key-value buckets, created or updated
//! idempotently at start-up ([`ensure`]); and [`read_from`], the ordered read of a stream
//! that replays and projections use.
//!
//! The definitions are the files in `nats/streams/` and `nats/consumers/` (NATS's own
//! JSON format, usable with `nats stream add --config`); names, subjects and duplicate
//! windows from [`StreamNames`] and [`Config`] override theirs.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, kv, object_store, stream};

use super::partition::{Partition, Partitioning};
use crate::config::{Config, StreamNames};

const EVENTS: &str = include_str!("../../nats/streams/events.json");
const DELTAS: &str = include_str!("../../nats/streams/deltas.json");
const DEAD_LETTERS: &str = include_str!("../../nats/streams/dead_letters.json");
const INGEST_CONSUMER: &str = include_str!("../../nats/consumers/ingest.json");

/// The events stream's definition with the configured name, subjects, window and
/// partition transform.
pub fn events_stream(names: &StreamNames) -> stream::Config {
    stream::Config {
        subject_transform: Some(stream::SubjectTransform {
            source: names.events_filter(),
            destination: Partitioning::of(names).transform(names),
        }),
        ..stream_config(
            EVENTS,
            &names.events_stream,
            names.events_filter(),
            Some(names.events_duplicate_window),
        )
    }
}

/// The priority group whose pinned client is a partition's writer.
pub const WRITER_GROUP: &str = "writer";

/// The deltas stream's definition.
pub fn deltas_stream(names: &StreamNames) -> stream::Config {
    stream_config(
        DELTAS,
        &names.deltas_stream,
        format!("{}.*", names.deltas_subject),
        Some(names.deltas_duplicate_window),
    )
}

/// The dead-letter stream's definition.
pub fn dead_letter_stream(names: &StreamNames) -> stream::Config {
    stream_config(
        DEAD_LETTERS,
        &names.dead_letter_stream,
        format!("{}.*", names.dead_letter_subject),
        None,
    )
}

fn stream_config(
    json: &str,
    name: &str,
    subject: String,
    window: Option<Duration>,
) -> stream::Config {
    let mut config: stream::Config =
        serde_json::from_str(json).expect("nats/streams/*.json is a stream config");
    config.name = name.to_owned();
    config.subjects = vec![subject];
    if let Some(window) = window {
        config.duplicate_window = window;
    }
    config
}

/// The durable pull consumer of a partition: NATS pins one client (replica) of the
/// [`WRITER_GROUP`] and delivers only to it, until it stops pulling for the pin timeout.
pub fn ingest_consumer(config: &Config, partition: Partition) -> consumer::pull::Config {
    let mut consumer: consumer::pull::Config = serde_json::from_str(INGEST_CONSUMER)
        .expect("nats/consumers/ingest.json is a consumer config");
    let names = &config.streams;
    consumer.durable_name = Some(partition.consumer_name(names));
    consumer.filter_subject = partition.filter(names);
    consumer.ack_wait = config.ack_wait;
    consumer.max_ack_pending = config.buffer_size;
    consumer.priority_timeout = names.pin_timeout;
    consumer.num_replicas = names.stream_replicas.into();
    consumer
}

/// Durable name of the history writer's consumer of the deltas stream.
pub const HISTORY_CONSUMER: &str = "match-stats-history";

/// The history writer's durable pull consumer of the deltas stream: from the stream's
/// start (a first start backfills as far back as the stream goes), acknowledged in
/// chunks, delivered to the one pinned replica of the [`WRITER_GROUP`].
pub fn history_consumer(config: &Config) -> consumer::pull::Config {
    let names = &config.streams;
    consumer::pull::Config {
        durable_name: Some(HISTORY_CONSUMER.into()),
        description: Some(
            "The history writer: completed matches into PostgreSQL, delivered to the one pinned replica"
                .into(),
        ),
        filter_subject: format!("{}.*", names.deltas_subject),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::All,
        ack_wait: config.ack_wait,
        max_deliver: -1,
        max_ack_pending: 10_000,
        priority_policy: consumer::PriorityPolicy::PinnedClient,
        priority_groups: vec![WRITER_GROUP.into()],
        priority_timeout: names.pin_timeout,
        num_replicas: names.stream_replicas.into(),
        ..Default::default()
    }
}

/// The snapshot bucket: the command side's aggregates and partition markers.
pub fn snapshot_bucket(config: &Config) -> kv::Config {
    kv::Config {
        bucket: config.streams.snapshot_bucket.clone(),
        description: "Command-side snapshots: match.<id> aggregates and partition.<n> markers"
            .into(),
        // Two revisions per key: a record newer than its partition's marker is rolled
        // back to the one before it at restore.
        history: 2,
        storage: stream::StorageType::File,
        num_replicas: config.streams.stream_replicas.into(),
        ..Default::default()
    }
}

/// The replicas bucket: each replica's key (`<consumer name>.<replica id>`), refreshed
/// every third of the pin timeout and expiring after it, so the live replicas can be
/// counted to share the partitions.
pub fn replicas_bucket(config: &Config) -> kv::Config {
    kv::Config {
        bucket: format!("{}_replicas", config.streams.snapshot_bucket),
        description: "Live match-stats replicas, for sharing the partitions".into(),
        history: 1,
        max_age: config
            .streams
            .pin_timeout
            .max(std::time::Duration::from_secs(1)),
        storage: stream::StorageType::Memory,
        num_replicas: config.streams.stream_replicas.into(),
        ..Default::default()
    }
}

/// The completed-matches object store's stream: one object per match (its final match
/// object, any size: chunked by the object store), kept for the completed retention.
/// The same stream `create_object_store` makes, so it can be created or updated.
pub fn completed_store(config: &Config) -> stream::Config {
    let bucket = &config.streams.completed_bucket;
    stream::Config {
        name: format!("OBJ_{bucket}"),
        description: Some("Final match objects of completed matches (LZ4/JSON, see README)".into()),
        subjects: vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")],
        max_age: config.cache.completed_retention,
        storage: stream::StorageType::File,
        num_replicas: config.streams.stream_replicas.into(),
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        allow_direct: true,
        ..Default::default()
    }
}

/// The records object store's stream: snapshot records too large for a key-value value
/// (the key points at the object). Objects are deleted when replaced, never aged out.
pub fn records_store(config: &Config) -> stream::Config {
    let bucket = records_bucket(config);
    stream::Config {
        name: format!("OBJ_{bucket}"),
        description: Some("Command-side snapshot records too large for a key".into()),
        subjects: vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")],
        storage: stream::StorageType::File,
        num_replicas: config.streams.stream_replicas.into(),
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        allow_direct: true,
        ..Default::default()
    }
}

/// The records object store's name: `<snapshot bucket>_records`.
pub fn records_bucket(config: &Config) -> String {
    format!("{}_records", config.streams.snapshot_bucket)
}

/// The key Redis values are signed with: created once (random) in the key bucket
/// `<snapshot bucket>_keys`, read by every replica. It lives in NATS, which only the
/// service may read, never in Redis.
pub async fn cache_signing_key(
    js: &jetstream::Context,
    config: &Config,
) -> anyhow::Result<Vec<u8>> {
    const KEY: &str = "cache-signing";
    let keys = js
        .create_or_update_key_value(kv::Config {
            bucket: format!("{}_keys", config.streams.snapshot_bucket),
            description: "Keys the replicas share (the Redis value signing key)".into(),
            history: 1,
            storage: stream::StorageType::File,
            num_replicas: config.streams.stream_replicas.into(),
            ..Default::default()
        })
        .await
        .context("cannot create or update the keys bucket")?;
    let fresh: [u8; 32] = rand::random();
    match keys.create(KEY, fresh.to_vec().into()).await {
        Ok(_) => Ok(fresh.to_vec()),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => keys
            .get(KEY)
            .await
            .context("reading the cache signing key")?
            .map(|k| k.to_vec())
            .context("the cache signing key was deleted while being read"),
        Err(e) => Err(e).context("creating the cache signing key"),
    }
}

/// What start-up provisions: the events stream, the partitions' consumers and the
/// buckets.
pub struct Provisioned {
    /// The events stream.
    pub events: stream::Stream,
    /// The durable consumer of each partition, in partition order.
    pub consumers: Vec<consumer::Consumer<consumer::pull::Config>>,
    /// The completed-matches object store.
    pub completed: object_store::ObjectStore,
    /// The snapshot bucket.
    pub snapshots: kv::Store,
    /// The records object store (snapshot records too large for a key).
    pub records: object_store::ObjectStore,
    /// The replicas bucket.
    pub replicas: kv::Store,
}

/// The partition count of an existing events stream (from its subject transform), if
/// it has one.
fn partitions_of(stream: &stream::Config, names: &StreamNames) -> Option<Partitioning> {
    let destination = &stream.subject_transform.as_ref()?.destination;
    let rest = destination.strip_prefix(&format!("{}.", names.events_subject))?;
    let count = rest.split('.').next()?.parse().ok()?;
    Some(Partitioning { count })
}

/// Refuses to change the partition count while the old partitions' consumers still hold
/// events: those are on the old partitions' subjects, which the new writers do not read.
async fn check_repartition(
    js: &jetstream::Context,
    names: &StreamNames,
) -> anyhow::Result<Option<Partitioning>> {
    let Ok(mut stream) = js.get_stream(&names.events_stream).await else {
        return Ok(None);
    };
    let new = Partitioning::of(names);
    let Some(old) = partitions_of(&stream.info().await?.config, names).filter(|&old| old != new)
    else {
        return Ok(None);
    };
    let mut waiting = 0;
    for partition in old.all() {
        if let Ok(info) = stream.consumer_info(partition.consumer_name(names)).await {
            waiting += info.num_pending + info.num_ack_pending as u64;
        }
    }
    if waiting > 0 {
        anyhow::bail!(
            "PARTITIONS changed from {} to {} while {waiting} events wait in the old partitions' consumers; run with PARTITIONS={} until they are processed, then change it (README: Changing the partition count)",
            old.count,
            new.count,
            old.count
        );
    }
    tracing::warn!(
        from = old.count,
        to = new.count,
        "changing the partition count; the old partitions are drained"
    );
    Ok(Some(old))
}

/// Creates or updates the three streams, the buckets and the partitions' consumers.
pub async fn ensure(js: &jetstream::Context, config: &Config) -> anyhow::Result<Provisioned> {
    let names = &config.streams;
    let replaced = check_repartition(js, names).await?;
    let mut events = None;
    for stream in [
        stream::Config {
            max_age: config.lifecycle.events_max_age,
            ..events_stream(names)
        },
        deltas_stream(names),
        dead_letter_stream(names),
    ] {
        let stream = stream::Config {
            num_replicas: names.stream_replicas.into(),
            ..stream
        };
        let name = stream.name.clone();
        js.create_or_update_stream(stream)
            .await
            .with_context(|| format!("cannot create or update stream {name}"))?;
        if name == names.events_stream {
            events = Some(
                js.get_stream(&name)
                    .await
                    .with_context(|| format!("stream {name}"))?,
            );
        }
    }
    js.create_or_update_stream(completed_store(config))
        .await
        .with_context(|| {
            format!(
                "cannot create or update object store {}",
                names.completed_bucket
            )
        })?;
    let completed = js
        .get_object_store(&names.completed_bucket)
        .await
        .with_context(|| format!("object store {}", names.completed_bucket))?;
    let snapshots = js
        .create_or_update_key_value(snapshot_bucket(config))
        .await
        .with_context(|| {
            format!(
                "cannot create or update key-value bucket {}",
                names.snapshot_bucket
            )
        })?;
    js.create_or_update_stream(records_store(config))
        .await
        .context("cannot create or update the snapshot records object store")?;
    let records = js
        .get_object_store(records_bucket(config))
        .await
        .context("the snapshot records object store")?;
    let replicas = js
        .create_or_update_key_value(replicas_bucket(config))
        .await
        .context("cannot create or update the replicas key-value bucket")?;
    let events: stream::Stream = events.expect("events stream was created");
    if let Some(old) = replaced {
        for partition in old.all() {
            let _ = events
                .delete_consumer(&partition.consumer_name(names))
                .await;
        }
    }
    let mut consumers = Vec::with_capacity(names.partitions.into());
    for partition in Partitioning::of(names).all() {
        let consumer = events
            .create_consumer(ingest_consumer(config, partition))
            .await
            .with_context(|| {
                format!(
                    "cannot create or update consumer {}",
                    partition.consumer_name(names)
                )
            })?;
        consumers.push(consumer);
    }
    Ok(Provisioned {
        events,
        consumers,
        completed,
        snapshots,
        records,
        replicas,
    })
}

/// How long a reader of [`read_from`] may go without its next messages, while it has
/// more to read, before its caller gives the attempt up and tries again with a new one:
/// a reader whose connection dropped under it could otherwise wait for good.
pub const READ_STALL: Duration = Duration::from_secs(10);

/// The next chunk of a [`read_from`] reader that has more to read: an error when none
/// comes within [`READ_STALL`] (`what` names the reader in it). Not for a reader that
/// follows the stream's end, which waits legitimately while nothing is published.
pub async fn next_or_stall<S: futures::Stream + Unpin>(
    chunks: &mut S,
    what: &str,
) -> anyhow::Result<Option<S::Item>> {
    use futures::StreamExt;
    tokio::time::timeout(READ_STALL, chunks.next())
        .await
        .map_err(|_| anyhow::anyhow!("{what} stalled: nothing for {READ_STALL:?}"))
}

/// Reads a stream (the subjects matching `filter`, or all) from sequence `from` (its
/// first message when 0 or 1), in order, in chunks of up to `batch_size` of the messages
/// that have arrived (an ordered consumer: recreated by the client if a message goes
/// missing). Also returns how many messages it had to deliver when created.
pub async fn read_from(
    stream: &stream::Stream,
    from: u64,
    batch_size: usize,
    filter: Option<String>,
) -> anyhow::Result<(u64, futures::stream::ReadyChunks<consumer::pull::Ordered>)> {
    use futures::StreamExt;
    let deliver_policy = if from <= 1 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: from,
        }
    };
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy,
            filter_subject: filter.unwrap_or_default(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot read stream {}", stream.cached_info().config.name))?;
    let pending = reader.cached_info().num_pending;
    Ok((pending, reader.messages().await?.ready_chunks(batch_size)))
}

/// Reads the messages on `subject` from the stream's first up to stream sequence `upto`
/// (inclusive), in order, handing each to `each` with its metadata: a match read again
/// from a stream. A read that stalls is an error ([`next_or_stall`]; `what` names the
/// reader in it), not a wait for good. Returns how many messages it handed over.
pub async fn read_subject_upto(
    stream: &stream::Stream,
    subject: String,
    upto: u64,
    batch_size: usize,
    what: &str,
    mut each: impl FnMut(&jetstream::Message, &jetstream::message::Info<'_>),
) -> anyhow::Result<u64> {
    let (total, mut chunks) = read_from(stream, 0, batch_size, Some(subject)).await?;
    let mut read = 0;
    while read < total {
        let Some(chunk) = next_or_stall(&mut chunks, what).await? else {
            break;
        };
        for message in chunk {
            let message = message?;
            let info = message
                .info()
                .map_err(|e| anyhow::anyhow!("message info: {e}"))?;
            if info.stream_sequence > upto {
                return Ok(read);
            }
            read += 1;
            each(&message, &info);
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reader_with_nothing_coming_is_an_error_after_the_stall_bound_not_a_wait() {
        // given a reader that has more to read but whose next chunk never comes
        let mut silent = futures::stream::pending::<Vec<u64>>();
        // when its next chunk is awaited
        let started = tokio::time::Instant::now();
        let outcome = next_or_stall(&mut silent, "the test's reader").await;
        // then it fails once READ_STALL has passed, naming the reader
        let error = outcome.expect_err("a stall is an error");
        assert_eq!(started.elapsed(), READ_STALL);
        assert!(
            error.to_string().contains("the test's reader stalled"),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_gets_its_chunks_and_its_end() {
        // given a reader with one chunk left
        let mut chunks = futures::stream::iter([vec![1_u64, 2]]);
        // then it gets that chunk, then the end
        assert_eq!(
            next_or_stall(&mut chunks, "r").await.unwrap(),
            Some(vec![1, 2])
        );
        assert_eq!(next_or_stall(&mut chunks, "r").await.unwrap(), None);
    }
}
