//! The JetStream topology: the events, deltas and dead-letter streams and the durable
//! ingest consumer, created or updated idempotently at start-up.
//!
//! The definitions are the files in `nats/streams/` and `nats/consumers/` (NATS's own
//! JSON format, usable with `nats stream add --config`); names, subjects and duplicate
//! windows from [`Topology`] and [`Config`] override theirs.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};

use crate::config::{Config, Topology};

const EVENTS: &str = include_str!("../nats/streams/events.json");
const DELTAS: &str = include_str!("../nats/streams/deltas.json");
const DEAD_LETTERS: &str = include_str!("../nats/streams/dead_letters.json");
const INGEST_CONSUMER: &str = include_str!("../nats/consumers/ingest.json");

/// The events stream's definition with the configured name, subjects and window.
pub fn events_stream(topology: &Topology) -> stream::Config {
    stream_config(
        EVENTS,
        &topology.events_stream,
        topology.events_filter(),
        Some(topology.events_duplicate_window),
    )
}

/// The deltas stream's definition.
pub fn deltas_stream(topology: &Topology) -> stream::Config {
    stream_config(
        DELTAS,
        &topology.deltas_stream,
        format!("{}.*", topology.deltas_subject),
        Some(topology.deltas_duplicate_window),
    )
}

/// The dead-letter stream's definition.
pub fn dead_letter_stream(topology: &Topology) -> stream::Config {
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
    consumer.max_ack_pending = config.max_ack_pending;
    consumer
}

/// Creates or updates the three streams and the ingest consumer.
pub async fn ensure(
    js: &jetstream::Context,
    config: &Config,
) -> anyhow::Result<consumer::Consumer<consumer::pull::Config>> {
    let topology = &config.topology;
    let mut events = None;
    for stream in [
        events_stream(topology),
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
    let events = events.expect("events stream was created");
    events
        .create_consumer(ingest_consumer(config))
        .await
        .with_context(|| {
            format!(
                "cannot create or update consumer {}",
                topology.consumer_name
            )
        })
}
