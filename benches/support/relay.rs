//! The bare relay, a baseline of the load tests: the least a service that republishes
//! what it consumes can do, on the same NATS server and the same events stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures::StreamExt;

use crate::support::consume::{next_chunk, pull};

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
    let filter = filter.unwrap_or_default();
    let (events, messages) = pull(&js, &events_stream, &name, filter, deliver, 256).await?;
    let mut messages = messages.ready_chunks(256);
    while !stop.load(Ordering::Relaxed) {
        let Some(chunk) = next_chunk(&mut messages).await? else {
            continue;
        };
        let mut acks = Vec::new();
        if republish {
            for message in &chunk {
                let mut copy = PublishMessage::build().payload(message.payload.clone());
                if let Some(id) = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                {
                    copy = copy.message_id(id.as_str());
                }
                acks.push(js.send_publish(COPIES, copy).await?);
            }
        }
        for ack in futures::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack?;
        }
        // (ack all: the batch's last message acknowledges the batch, as the service does)
        if let Some(last) = chunk.last() {
            last.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        relayed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    // Gone once measured: the service runs after some of these, beside no leftovers.
    drop(messages);
    events.delete_consumer(&name).await?;
    Ok(())
}
