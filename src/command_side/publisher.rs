//! Publishing a batch's effects: every effect is sent, then every acknowledgement awaited;
//! the whole set is retried (idempotent by `Nats-Msg-Id`) until JetStream confirms it.
//! Before that, [`trim`] drops the delta entries the deltas stream already holds, so a
//! redelivery batched differently after a crash never stores a version twice.

use std::collections::HashMap;

use async_nats::jetstream::{
    self, context::PublishAckFuture, message::PublishMessage, publish::PublishAck,
};
use match_stats_commands::MatchId;
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::matches::{DeltaBatch, Effect};
use crate::metrics as m;
use crate::retry::{Cancelled, Retry};

/// Publishes effects and waits for JetStream to confirm them all, retrying the whole set
/// until it succeeds; counts what the streams stored.
pub async fn publish(
    ctx: &Context,
    effects: &[Effect],
    token: &CancellationToken,
) -> Result<(), Cancelled> {
    if effects.is_empty() {
        return Ok(());
    }
    let acks = Retry::new(token, "publishing effects")
        .counted(m::PUBLISH_RETRIES)
        .run(|| try_publish(&ctx.js, effects))
        .await?;
    for (effect, ack) in effects.iter().zip(acks) {
        ctx.stats.record_effect(&effect.kind, ack.duplicate);
    }
    Ok(())
}

async fn try_publish(
    js: &jetstream::Context,
    effects: &[Effect],
) -> anyhow::Result<Vec<PublishAck>> {
    let mut pending: Vec<PublishAckFuture> = Vec::with_capacity(effects.len());
    for e in effects {
        let message = PublishMessage::build()
            .payload(e.payload.clone())
            .headers(e.headers.clone())
            .message_id(&e.msg_id);
        pending.push(js.send_publish(e.subject.clone(), message).await?);
    }
    let mut acks = Vec::with_capacity(pending.len());
    for ack in futures::future::join_all(pending.into_iter().map(|p| p.into_future())).await {
        acks.push(ack?);
    }
    Ok(acks)
}

/// Per match, the last version the deltas stream holds: looked up once per match while
/// this replica holds the partition, then kept up by its own publishes.
pub type Published = HashMap<MatchId, u64>;

/// Drops from `batch` the entries the deltas stream already holds, per `published` (a
/// match not in it is looked up, retrying until NATS answers). Returns each match's last
/// version in the trimmed batch, to note once it is published.
pub async fn trim(
    ctx: &Context,
    published: &mut Published,
    batch: &mut DeltaBatch,
    token: &CancellationToken,
) -> Result<Vec<(MatchId, u64)>, Cancelled> {
    let unknown: Vec<MatchId> = batch
        .deltas_mut()
        .map(|d| d.match_id)
        .filter(|id| !published.contains_key(id))
        .collect();
    if !unknown.is_empty() {
        let found = Retry::new(token, "looking up published versions")
            .run(|| last_versions(ctx, &unknown))
            .await?;
        published.extend(found);
    }
    let mut last = Vec::new();
    let mut dropped = 0;
    for delta in batch.deltas_mut() {
        let stored = published[&delta.match_id];
        let before = delta.entries.len();
        delta.entries.retain(|e| e.version > stored);
        dropped += before - delta.entries.len();
        if let Some(entry) = delta.entries.last() {
            last.push((delta.match_id, entry.version));
        }
    }
    if dropped > 0 {
        ctx.stats.record_deduplicated(dropped as u64);
    }
    Ok(last)
}

/// The last version the deltas stream holds for each match: from the `Nats-Msg-Id` of
/// the last delta stored on its subject (`<match>:<version>` or `<match>:<first>-<last>`),
/// 0 when there is none.
async fn last_versions(ctx: &Context, ids: &[MatchId]) -> anyhow::Result<Vec<(MatchId, u64)>> {
    let deltas = ctx.js.get_stream(&ctx.names.deltas_stream).await?;
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        let subject = format!("{}.{id}", ctx.names.deltas_subject);
        let version = match deltas.direct_get_last_for_subject(subject).await {
            Ok(message) => version_of(&message)?,
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        found.push((*id, version));
    }
    Ok(found)
}

fn version_of(message: &jetstream::message::StreamMessage) -> anyhow::Result<u64> {
    let from_id = message
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .and_then(|id| id.as_str().rsplit([':', '-']).next()?.parse().ok());
    match from_id {
        Some(version) => Ok(version),
        None => {
            let delta: match_stats_commands::StatDelta = rmp_serde::from_slice(&message.payload)?;
            Ok(delta.entries.last().map_or(0, |e| e.version))
        }
    }
}
