//! Pulling from the events stream, as the baselines do: a durable ack-all consumer and
//! its chunks, with a timeout so that a loop looks at its stop flag again.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

/// A durable ack-all consumer `name` of `events_stream` on `filter` (empty: every
/// subject), pulled in batches of `batch`; and the stream.
pub async fn pull(
    js: &jetstream::Context,
    events_stream: &str,
    name: &str,
    filter: String,
    deliver: consumer::DeliverPolicy,
    batch: usize,
) -> anyhow::Result<(stream::Stream, consumer::pull::Stream)> {
    let events = js.get_stream(events_stream).await?;
    let consumer = events
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.to_owned()),
            deliver_policy: deliver,
            ack_policy: consumer::AckPolicy::All,
            max_ack_pending: 10_000,
            filter_subject: filter,
            ..Default::default()
        })
        .await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await?;
    Ok((events, messages))
}

/// The next chunk of `messages`, or none after 200 ms without one (the caller looks at its
/// stop flag again); an error in any message fails the chunk.
pub async fn next_chunk<T, E>(
    messages: &mut (impl futures::Stream<Item = Vec<Result<T, E>>> + Unpin),
) -> anyhow::Result<Option<Vec<T>>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(Duration::from_millis(200), messages.next()).await {
        Ok(Some(chunk)) => Ok(Some(chunk.into_iter().collect::<Result<_, _>>()?)),
        _ => Ok(None),
    }
}
