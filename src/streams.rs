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

/// The events stream's definition with the configured name, subjects and window.
pub fn events_stream(topology: &Names) -> stream::Config {
    stream_config(
        EVENTS,
        &topology.events_stream,
        topology.events_filter(),
        Some(topology.events_duplicate_window),
    )
}

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

/// The durable pull consumer's definition.
pub fn ingest_consumer(config: &Config) -> consumer::pull::Config {
    let mut consumer: consumer::pull::Config = serde_json::from_str(INGEST_CONSUMER)
        .expect("nats/consumers/ingest.json is a consumer config");
    consumer.durable_name = Some(config.topology.consumer_name.clone());
    consumer.ack_wait = config.ack_wait;
    consumer.max_ack_pending = config.buffer_size;
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
        num_replicas: 1,
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
        num_replicas: 1,
        ..Default::default()
    }
}

/// What start-up creates: the ingest consumer and the two buckets.
pub struct Topology {
    /// The durable ingest consumer.
    pub consumer: consumer::Consumer<consumer::pull::Config>,
    /// The completed-matches bucket.
    pub completed: kv::Store,
    /// The snapshot bucket.
    pub snapshots: kv::Store,
}

/// Creates or updates the three streams, the bucket and the ingest consumer.
pub async fn ensure(js: &jetstream::Context, config: &Config) -> anyhow::Result<Topology> {
    let topology = &config.topology;
    let mut events = None;
    for stream in [
        stream::Config {
            max_age: config.lifecycle.events_max_age,
            ..events_stream(topology)
        },
        deltas_stream(topology),
        dead_letter_stream(topology),
    ] {
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
    let events = events.expect("events stream was created");
    let consumer = events
        .create_consumer(ingest_consumer(config))
        .await
        .with_context(|| {
            format!(
                "cannot create or update consumer {}",
                topology.consumer_name
            )
        })?;
    Ok(Topology {
        consumer,
        completed,
        snapshots,
    })
}

/// Reads a stream from sequence `from` (its first message when 0 or 1), in order, in
/// chunks of up to `batch_size` of the messages that have arrived (an ordered consumer:
/// recreated by the client if a message goes missing).
pub async fn read_from(
    stream: &stream::Stream,
    from: u64,
    batch_size: usize,
) -> anyhow::Result<futures::stream::ReadyChunks<consumer::pull::Ordered>> {
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
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot read stream {}", stream.cached_info().config.name))?;
    Ok(reader.messages().await?.ready_chunks(batch_size))
}
