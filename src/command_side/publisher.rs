//! Publishing a batch's effects until JetStream has confirmed every one.
//!
//! Each attempt first drops the delta entries the deltas stream already holds
//! ([`trim`]), so a redelivery batched differently after a crash never stores a version
//! twice; then sends every effect and awaits every acknowledgement. What was stored is
//! noted and not sent again; a transient failure is retried with back-off. Each match's
//! first delta expects the last message its subject holds (`Nats-Expected-Last-Subject-
//! Sequence`): when another writer stored one in between (a hand-over in progress), the
//! stream refuses it, the match is looked up again and trimmed, and the rest goes out at
//! once: two writers never store one version twice.

use std::collections::HashSet;

use async_nats::jetstream::{
    self,
    context::{PublishError, PublishErrorKind},
    message::PublishMessage,
    publish::PublishAck,
};
use match_stats_commands::MatchId;
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::matches::{DeltaBatch, Effect, EffectKind, Published, Stored};
use crate::metrics as m;
use crate::retry::{Cancelled, Retry};

/// Publishes a batch's effects (its dead letters, then its deltas and completed matches)
/// and waits until JetStream has confirmed them all; counts what the streams stored and
/// keeps `published` up to date.
pub async fn publish(
    ctx: &Context,
    published: &mut Published,
    deltas: &mut DeltaBatch,
    others: &[Effect],
    token: &CancellationToken,
) -> Result<(), Cancelled> {
    let mut retry = Retry::new(token, "publishing effects").counted(m::PUBLISH_RETRIES);
    let mut stored: HashSet<String> = HashSet::new();
    loop {
        trim(ctx, published, deltas, token).await?;
        let effects: Vec<Effect> = others
            .iter()
            .cloned()
            .chain(deltas.effects(&ctx.names, published))
            .filter(|e| !stored.contains(&e.msg_id))
            .collect();
        if effects.is_empty() {
            break;
        }
        let results = retry.attempt(send_all(&ctx.js, &effects)).await?;
        let mut failure = None;
        for (effect, result) in effects.iter().zip(results) {
            match result {
                Ok(ack) => {
                    ctx.stats.record_effect(&effect.kind, ack.duplicate);
                    if let EffectKind::Delta {
                        match_id, version, ..
                    } = effect.kind
                    {
                        published.insert(
                            match_id,
                            Stored {
                                version,
                                sequence: ack.sequence,
                            },
                        );
                    }
                    stored.insert(effect.msg_id.clone());
                }
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                    if let EffectKind::Delta { match_id, .. } = effect.kind {
                        tracing::info!(%match_id, "another writer stored deltas of this match meanwhile; looking it up again");
                        published.remove(&match_id);
                    }
                }
                Err(error) => failure = Some(error),
            }
        }
        if let Some(error) = failure {
            retry.failed(&error).await?;
        }
    }
    retry.succeeded();
    Ok(())
}

/// Publishes effects with no batch around them (an idle match's `match_end`), until
/// confirmed; counts what the streams stored.
pub async fn publish_effects(
    ctx: &Context,
    effects: &[Effect],
    token: &CancellationToken,
) -> Result<(), Cancelled> {
    publish(
        ctx,
        &mut Published::new(),
        &mut DeltaBatch::default(),
        effects,
        token,
    )
    .await
}

/// Sends every effect, then awaits every acknowledgement: one result per effect.
async fn send_all(
    js: &jetstream::Context,
    effects: &[Effect],
) -> Vec<Result<PublishAck, PublishError>> {
    let mut pending = Vec::with_capacity(effects.len());
    for e in effects {
        let mut message = PublishMessage::build()
            .payload(e.payload.clone())
            .headers(e.headers.clone())
            .message_id(&e.msg_id);
        if let Some(sequence) = e.expected_last_subject_sequence {
            message = message.expected_last_subject_sequence(sequence);
        }
        pending.push(js.send_publish(e.subject.clone(), message).await);
    }
    let mut results = Vec::with_capacity(pending.len());
    for sent in pending {
        results.push(match sent {
            Ok(ack) => ack.await,
            Err(error) => Err(error),
        });
    }
    results
}

/// Drops from `batch` the entries the deltas stream already holds, per `published` (a
/// match not in it is looked up, retrying until NATS answers).
pub async fn trim(
    ctx: &Context,
    published: &mut Published,
    batch: &mut DeltaBatch,
    token: &CancellationToken,
) -> Result<(), Cancelled> {
    let unknown: Vec<MatchId> = batch
        .deltas_mut()
        .map(|d| d.match_id)
        .filter(|id| !published.contains_key(id))
        .collect();
    if !unknown.is_empty() {
        let found = Retry::new(token, "looking up published versions")
            .run(|| last_stored(ctx, &unknown))
            .await?;
        published.extend(found);
    }
    let mut dropped = 0;
    for delta in batch.deltas_mut() {
        let stored = published[&delta.match_id].version;
        let before = delta.entries.len();
        delta.entries.retain(|e| e.version > stored);
        dropped += before - delta.entries.len();
    }
    if dropped > 0 {
        ctx.stats.record_deduplicated(dropped as u64);
    }
    Ok(())
}

/// What the deltas stream holds for each match: the last delta stored on its subject
/// (its version from its `Nats-Msg-Id`, `<match>:<version>` or `<match>:<first>-<last>`),
/// nothing when there is none.
async fn last_stored(ctx: &Context, ids: &[MatchId]) -> anyhow::Result<Vec<(MatchId, Stored)>> {
    let deltas = ctx.js.get_stream(&ctx.names.deltas_stream).await?;
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        let subject = format!("{}.{id}", ctx.names.deltas_subject);
        let stored = match deltas.direct_get_last_for_subject(subject).await {
            Ok(message) => Stored {
                version: version_of(&message)?,
                sequence: message.sequence,
            },
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => {
                Stored::default()
            }
            Err(e) => return Err(e.into()),
        };
        found.push((*id, stored));
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
