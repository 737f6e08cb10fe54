//! The bare relay, a baseline of the load tests: the least a service that republishes
//! what it consumes can do, on the same NATS server and the same events stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures::StreamExt;

/// Where the relay's copies go: for a watcher measuring publish to copy.
pub const COPIES: &str = "relay.events";

/// The stream the bare relay republishes to.
pub const STREAM: &str = "RELAY";

/// A minimal relay: pull-consumes the events stream, republishes each event (with its
/// `Nats-Msg-Id`) to the RELAY stream, waits for those acks, then acks the batch (one
/// ack-all, like the service). Without `republish`, the bare consumer: pull and ack-all,
/// nothing else. Counts what it relayed until `stop`.
pub async fn run(
    js: jetstream::Context,
    events_stream: String,
    deliver: consumer::DeliverPolicy,
    republish: bool,
    filter: Option<String>,
    relayed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    js.create_or_update_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["relay.>".into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await?;
    let name = format!("relay-{}", rand::random::<u32>());
    let events = js.get_stream(&events_stream).await?;
    let consumer = events
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            deliver_policy: deliver,
            ack_policy: consumer::AckPolicy::All,
            max_ack_pending: 10_000,
            filter_subject: filter.unwrap_or_default(),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(256)
        .messages()
        .await?
        .ready_chunks(256);
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(chunk)) =
            tokio::time::timeout(Duration::from_millis(200), messages.next()).await
        else {
            continue;
        };
        let mut acks = Vec::with_capacity(chunk.len());
        let mut batch = Vec::with_capacity(chunk.len());
        for message in chunk {
            let message = message?;
            if !republish {
                batch.push(message);
                continue;
            }
            let mut copy = PublishMessage::build().payload(message.payload.clone());
            if let Some(id) = message
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            {
                copy = copy.message_id(id.as_str());
            }
            acks.push(js.send_publish(COPIES, copy).await?);
            batch.push(message);
        }
        for ack in futures::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack?;
        }
        // (ack all: the batch's last message acknowledges the batch, as the service does)
        if let Some(last) = batch.last() {
            last.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        relayed.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
    // Gone once measured: the service runs after some of these, beside no leftovers.
    drop(messages);
    events.delete_consumer(&name).await?;
    Ok(())
}
