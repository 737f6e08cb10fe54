//! The JetStream topology: the events, deltas and dead-letter streams and the durable
//! ingest consumer, created or updated idempotently at start-up.
//!
//! The definitions are the files in `nats/streams/` and `nats/consumers/` (NATS's own
//! JSON format, usable with `nats stream add --config`); names, subjects and duplicate
//! windows from [`Topology`] and [`Config`] override theirs.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, kv, stream};

use crate::config::Config;
use crate::config::Topology as Names;

const EVENTS: &str = include_str!("../nats/streams/events.json");
const DELTAS: &str = include_str!("../nats/streams/deltas.json");
const DEAD_LETTERS: &str = include_str!("../nats/streams/dead_letters.json");
const INGEST_CONSUMER: &str = include_str!("../nats/consumers/ingest.json");

/// The events stream's definition with the configured name, subjects, window and
/// partition transform.
pub fn events_stream(topology: &Names) -> stream::Config {
    stream::Config {
        subject_transform: Some(stream::SubjectTransform {
            source: topology.events_filter(),
            destination: topology.partition_transform(),
        }),
        ..stream_config(
            EVENTS,
            &topology.events_stream,
            topology.events_filter(),
            Some(topology.events_duplicate_window),
        )
    }
}

/// The partition NATS maps a match to, as its `partition(P,1)` subject transform does:
/// FNV-1a (32 bits) of the match id, modulo `partitions`.
pub fn partition_of(match_id: &str, partitions: u16) -> u16 {
    let hash = match_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (hash % u32::from(partitions)) as u16
}

/// The priority group whose pinned client is a partition's writer.
pub const WRITER_GROUP: &str = "writer";

/// The deltas stream's definition.
pub fn deltas_stream(topology: &Names) -> stream::Config {
    stream_config(
        DELTAS,
        &topology.deltas_stream,
        format!("{}.*", topology.deltas_subject),
        Some(topology.deltas_duplicate_window),
    )
}

/// The dead-letter stream's definition.
pub fn dead_letter_stream(topology: &Names) -> stream::Config {
    stream_config(
        DEAD_LETTERS,
        &topology.dead_letter_stream,
        format!("{}.*", topology.dead_letter_subject),
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

/// The durable pull consumer of partition `n`: NATS pins one client (replica) of the
/// [`WRITER_GROUP`] and delivers only to it, until it stops pulling for the pin timeout.
pub fn ingest_consumer(config: &Config, n: u16) -> consumer::pull::Config {
    let mut consumer: consumer::pull::Config = serde_json::from_str(INGEST_CONSUMER)
        .expect("nats/consumers/ingest.json is a consumer config");
    let topology = &config.topology;
    consumer.durable_name = Some(topology.partition_consumer(n));
    consumer.filter_subject = topology.partition_filter(n);
    consumer.ack_wait = config.ack_wait;
    consumer.max_ack_pending = config.buffer_size;
    consumer.priority_timeout = topology.pin_timeout;
    consumer.num_replicas = topology.stream_replicas.into();
    consumer
}

/// The snapshot bucket: the command side's aggregates and partition markers.
pub fn snapshot_bucket(config: &Config) -> kv::Config {
    kv::Config {
        bucket: config.topology.snapshot_bucket.clone(),
        description: "Command-side snapshots: match.<id> aggregates and partition.<n> markers"
            .into(),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: config.topology.stream_replicas.into(),
        ..Default::default()
    }
}

/// The replicas bucket: each replica's key (`<consumer name>.<replica id>`), refreshed
/// every third of the pin timeout and expiring after it, so the live replicas can be
/// counted to share the partitions.
pub fn replicas_bucket(config: &Config) -> kv::Config {
    kv::Config {
        bucket: format!("{}_replicas", config.topology.snapshot_bucket),
        description: "Live match-stats replicas, for sharing the partitions".into(),
        history: 1,
        max_age: config
            .topology
            .pin_timeout
            .max(std::time::Duration::from_secs(1)),
        storage: stream::StorageType::Memory,
        num_replicas: config.topology.stream_replicas.into(),
        ..Default::default()
    }
}

/// The completed-matches bucket: one value per match, kept for the completed retention.
pub fn completed_bucket(config: &Config) -> kv::Config {
    kv::Config {
        bucket: config.topology.completed_bucket.clone(),
        description: "Final match objects of completed matches (LZ4/JSON, see README)".into(),
        history: 1,
        max_age: config.cache.completed_retention,
        storage: stream::StorageType::File,
        num_replicas: config.topology.stream_replicas.into(),
        ..Default::default()
    }
}

/// What start-up creates: the partitions' consumers and the two buckets.
pub struct Topology {
    /// The events stream.
    pub events: stream::Stream,
    /// The durable consumer of each partition, in partition order.
    pub consumers: Vec<consumer::Consumer<consumer::pull::Config>>,
    /// The completed-matches bucket.
    pub completed: kv::Store,
    /// The snapshot bucket.
    pub snapshots: kv::Store,
    /// The replicas bucket.
    pub replicas: kv::Store,
}

/// The partition count of an existing events stream (from its subject transform), if
/// it has one.
fn partitions_of(stream: &stream::Config, topology: &Names) -> Option<u16> {
    let destination = &stream.subject_transform.as_ref()?.destination;
    let rest = destination.strip_prefix(&format!("{}.", topology.events_subject))?;
    rest.split('.').next()?.parse().ok()
}

/// Refuses to change the partition count while the old partitions' consumers still hold
/// events: those are on the old partitions' subjects, which the new writers do not read.
async fn check_repartition(
    js: &jetstream::Context,
    topology: &Names,
) -> anyhow::Result<Option<u16>> {
    let Ok(mut stream) = js.get_stream(&topology.events_stream).await else {
        return Ok(None);
    };
    let Some(old) = partitions_of(&stream.info().await?.config, topology)
        .filter(|&old| old != topology.partitions)
    else {
        return Ok(None);
    };
    let old_topology = Names {
        partitions: old,
        ..topology.clone()
    };
    let mut waiting = 0;
    for n in 0..old {
        if let Ok(info) = stream
            .consumer_info(old_topology.partition_consumer(n))
            .await
        {
            waiting += info.num_pending + info.num_ack_pending as u64;
        }
    }
    if waiting > 0 {
        anyhow::bail!(
            "PARTITIONS changed from {old} to {} while {waiting} events wait in the old partitions' consumers; run with PARTITIONS={old} until they are processed, then change it (README: Changing the partition count)",
            topology.partitions
        );
    }
    tracing::warn!(
        from = old,
        to = topology.partitions,
        "changing the partition count; the old partitions are drained"
    );
    Ok(Some(old))
}

/// Creates or updates the three streams, the buckets and the partitions' consumers.
pub async fn ensure(js: &jetstream::Context, config: &Config) -> anyhow::Result<Topology> {
    let topology = &config.topology;
    let replaced = check_repartition(js, topology).await?;
    let mut events = None;
    for stream in [
        stream::Config {
            max_age: config.lifecycle.events_max_age,
            ..events_stream(topology)
        },
        deltas_stream(topology),
        dead_letter_stream(topology),
    ] {
        let stream = stream::Config {
            num_replicas: topology.stream_replicas.into(),
            ..stream
        };
        let name = stream.name.clone();
        js.create_or_update_stream(stream)
            .await
            .with_context(|| format!("cannot create or update stream {name}"))?;
        if name == topology.events_stream {
            events = Some(
                js.get_stream(&name)
                    .await
                    .with_context(|| format!("stream {name}"))?,
            );
        }
    }
    let completed = js
        .create_or_update_key_value(completed_bucket(config))
        .await
        .with_context(|| {
            format!(
                "cannot create or update key-value bucket {}",
                topology.completed_bucket
            )
        })?;
    let snapshots = js
        .create_or_update_key_value(snapshot_bucket(config))
        .await
        .with_context(|| {
            format!(
                "cannot create or update key-value bucket {}",
                topology.snapshot_bucket
            )
        })?;
    let replicas = js
        .create_or_update_key_value(replicas_bucket(config))
        .await
        .context("cannot create or update the replicas key-value bucket")?;
    let events: stream::Stream = events.expect("events stream was created");
    if let Some(old) = replaced {
        let old_topology = Names {
            partitions: old,
            ..topology.clone()
        };
        for n in 0..old {
            let _ = events
                .delete_consumer(&old_topology.partition_consumer(n))
                .await;
        }
    }
    let mut consumers = Vec::with_capacity(topology.partitions.into());
    for n in 0..topology.partitions {
        let consumer = events
            .create_consumer(ingest_consumer(config, n))
            .await
            .with_context(|| {
                format!(
                    "cannot create or update consumer {}",
                    topology.partition_consumer(n)
                )
            })?;
        consumers.push(consumer);
    }
    Ok(Topology {
        events,
        consumers,
        completed,
        snapshots,
        replicas,
    })
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
