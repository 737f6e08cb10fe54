//! Publishing a batch's effects until JetStream has confirmed every one.
//!
//! Each attempt builds the batch's delta messages less what the deltas stream already
//! holds (so a redelivery batched differently after a crash never stores a version
//! twice), sends every effect and awaits every acknowledgement. What was stored is noted
//! and not sent again; a transient failure is retried with back-off. Each match's first
//! delta expects the last message its subject holds (`Nats-Expected-Last-Subject-
//! Sequence`): when another writer stored one in between (a hand-over in progress), the
//! stream refuses it, the match is looked up again, and the rest goes out at once: two
//! writers never store one version twice. A match whose first event was delivered for
//! the first time in this batch is not looked up before: nothing of it can be on its
//! subject, and the expectation (an empty subject) is what checks it.
//!
//! An effect the stream can never store (over its size limits: with bounded messages,
//! only when a server's or stream's limit is set below them) is not retried: the events
//! it carries are parked, a counted outcome of its own, and the partition moves on.

use std::collections::HashSet;

use async_nats::jetstream::{
    self,
    context::{PublishError, PublishErrorKind},
    message::PublishMessage,
    publish::PublishAck,
};
use match_stats_commands::{MatchId, StatDelta};
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::delta_batch::{DeltaBatch, Published, Stored};
use super::matches::{Effect, EffectKind};
use crate::metrics as m;
use crate::nats::{ACKS_IN_FLIGHT_PER_WRITER, Partition};
use crate::retry::{Cancelled, Retry};

/// The events stream sequences of events whose effects could never be stored.
pub type Parked = HashSet<u64>;

/// Publishes a batch's effects (`others`: its dead letters; then its deltas; `fresh`: the
/// matches the batch began with an event delivered for the first time) and waits
/// until JetStream has confirmed (or refused for good) every one; counts what the
/// streams stored and keeps `published` up to date.
pub async fn publish(
    ctx: &Context,
    partition: Partition,
    published: &mut Published,
    deltas: &DeltaBatch,
    fresh: &[MatchId],
    others: &[Effect],
    token: &CancellationToken,
) -> Result<Parked, Cancelled> {
    let mut retry = Retry::new(token, "publishing effects")
        .counted(m::PUBLISH_RETRIES)
        .streak(&ctx.stats.partition(partition).retry_streak);
    let mut done: HashSet<String> = HashSet::new();
    let mut parked = Parked::new();
    let mut first = true;
    // A match that began with a first delivery in this batch has nothing on its deltas
    // subject: no writer has seen its first event. Its delta expects an empty subject
    // (the stream enforces it: a refusal looks the match up below), so only a match
    // whose deltas go out as one message skips the lookup's round trip.
    for &id in fresh {
        if deltas.in_one_message(id) {
            published.entry(id).or_default();
        }
    }
    loop {
        look_up(ctx, published, deltas.match_ids(), token).await?;
        let room = ctx.handoff.room();
        let (delta_effects, dropped) =
            deltas.effects(&ctx.names, ctx.delta_format, published, room);
        // What the deltas stream held before this batch published anything (a replay
        // after a crash); later rounds drop what this batch itself stored.
        if std::mem::take(&mut first) && dropped > 0 {
            ctx.stats.record_deduplicated(dropped);
        }
        let effects: Vec<&Effect> = others
            .iter()
            .chain(&delta_effects)
            .filter(|e| !done.contains(&e.msg_id))
            .collect();
        if effects.is_empty() {
            break;
        }
        let results = retry.attempt(send_all(&ctx.js, &effects)).await?;
        let mut failure = None;
        for (effect, result) in effects.into_iter().zip(results) {
            match result {
                Ok(ack) => {
                    ctx.stats.record_effect(&effect.kind, ack.duplicate);
                    // A duplicate's sequence is the earlier message's, not this copy's.
                    if let (Some(delta), false) = (&effect.handoff, ack.duplicate) {
                        ctx.handoff.put(ack.sequence, delta.clone());
                    }
                    note_stored(published, effect, ack.sequence);
                    done.insert(effect.msg_id.clone());
                }
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                    if let EffectKind::Delta { match_id, .. } = effect.kind {
                        tracing::info!(%match_id, "another writer stored deltas of this match meanwhile; looking it up again");
                        published.remove(&match_id);
                    }
                }
                Err(error) if is_permanent(&error) => {
                    tracing::error!(
                        %error,
                        subject = %effect.subject,
                        bytes = effect.payload.len(),
                        events = ?effect.sources,
                        "an effect the stream can never store: its events are parked"
                    );
                    metrics::counter!(m::EFFECTS_PARKED).increment(1);
                    parked.extend(&effect.sources);
                    // Replays skip it too: what follows it is what the stream lacks (the
                    // subject's last stored message stays what it was).
                    if let EffectKind::Delta { match_id, .. } = effect.kind {
                        let sequence = published.get(&match_id).map_or(0, |s| s.sequence);
                        note_stored(published, effect, sequence);
                    }
                    done.insert(effect.msg_id.clone());
                }
                Err(error) => failure = Some(error),
            }
        }
        if let Some(error) = failure {
            retry.failed(&error).await?;
        }
    }
    retry.succeeded();
    Ok(parked)
}

/// Publishes effects with no batch around them (an idle match's `match_end`), until
/// confirmed; counts what the streams stored.
pub async fn publish_effects(
    ctx: &Context,
    partition: Partition,
    effects: &[Effect],
    token: &CancellationToken,
) -> Result<(), Cancelled> {
    let empty = DeltaBatch::default();
    publish(
        ctx,
        partition,
        &mut Published::new(),
        &empty,
        &[],
        effects,
        token,
    )
    .await
    .map(|_| ())
}

/// Errors no retry can fix: the message is over the server's `max_payload` or the
/// stream's `max_msg_size`.
fn is_permanent(error: &PublishError) -> bool {
    use std::error::Error as _;
    error.kind() == PublishErrorKind::MaxPayloadExceeded
        || error
            .source()
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .is_some_and(|e| e.error_code() == jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
}

/// After a delta was stored at `sequence`, the match's subject holds it.
fn note_stored(published: &mut Published, effect: &Effect, sequence: u64) {
    if let EffectKind::Delta {
        match_id, position, ..
    } = effect.kind
    {
        published.insert(match_id, Stored { position, sequence });
    }
}

/// How long a window's acknowledgements may take, all together ([`send_all`]).
const WINDOW_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends the effects in windows of [`ACKS_IN_FLIGHT_PER_WRITER`], awaiting each window's
/// acknowledgements before the next (the context admits that many per writer: see
/// [`crate::nats::writers_context`]): one result per effect, in order.
///
/// A window's acknowledgements are all due within [`WINDOW_ACK_WAIT`] of its last send.
/// The client bounds each acknowledgement by its own timeout (also 5 s), counted from
/// when it is awaited: when a dropped connection lost a whole window's acknowledgements,
/// awaiting them one after another held the partition 5 s per message (65 s for 13 of
/// them, measured; 21 minutes for a full window), its pull unread. One deadline for the
/// window makes that one wait, then the retry; acknowledgements that have arrived are
/// taken in order without setting a timer each.
async fn send_all(
    js: &jetstream::Context,
    effects: &[&Effect],
) -> Vec<Result<PublishAck, PublishError>> {
    let mut results = Vec::with_capacity(effects.len());
    for window in effects.chunks(ACKS_IN_FLIGHT_PER_WRITER) {
        let mut pending = Vec::with_capacity(window.len());
        for e in window {
            let mut message = PublishMessage::build()
                .payload(e.payload.clone())
                .headers(e.headers.clone())
                .message_id(&e.msg_id);
            if let Some(sequence) = e.expected_last_subject_sequence {
                message = message.expected_last_subject_sequence(sequence);
            }
            pending.push(js.send_publish(e.subject.clone(), message).await);
        }
        let due = tokio::time::Instant::now() + WINDOW_ACK_WAIT;
        for sent in pending {
            results.push(match sent {
                Ok(ack) => tokio::time::timeout_at(due, ack)
                    .await
                    .unwrap_or_else(|_| Err(PublishError::new(PublishErrorKind::TimedOut))),
                Err(error) => Err(error),
            });
        }
    }
    results
}

/// Looks up, retrying until NATS answers, what the deltas stream holds for the matches
/// `published` does not know yet.
async fn look_up(
    ctx: &Context,
    published: &mut Published,
    ids: impl Iterator<Item = MatchId>,
    token: &CancellationToken,
) -> Result<(), Cancelled> {
    let unknown: Vec<MatchId> = ids.filter(|id| !published.contains_key(id)).collect();
    if !unknown.is_empty() {
        let found = Retry::new(token, "looking up published versions")
            .run(|| last_stored(ctx, &unknown))
            .await?;
        published.extend(found);
    }
    Ok(())
}

/// Direct gets in flight at once while looking up new matches.
const LOOKUPS_IN_FLIGHT: usize = 64;

/// What the deltas stream holds for each match: the last delta stored on its subject
/// (where it stands, from its `Nats-Msg-Id`), nothing when there is none. The lookups
/// of a batch go out together: a batch of new matches costs about one round trip, not
/// one per match.
async fn last_stored(ctx: &Context, ids: &[MatchId]) -> anyhow::Result<Vec<(MatchId, Stored)>> {
    // (No stream info request: a direct get needs only the stream's name.)
    let deltas = ctx.js.get_stream_no_info(&ctx.names.deltas_stream).await?;
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(LOOKUPS_IN_FLIGHT) {
        let lookups = chunk
            .iter()
            .map(|id| last_stored_on(&deltas, format!("{}.{id}", ctx.names.deltas_subject), *id));
        found.extend(futures::future::try_join_all(lookups).await?);
    }
    Ok(found)
}

async fn last_stored_on(
    deltas: &jetstream::stream::Stream<()>,
    subject: String,
    id: MatchId,
) -> anyhow::Result<(MatchId, Stored)> {
    let stored = match deltas.direct_get_last_for_subject(subject).await {
        Ok(message) => Stored {
            // Not a delta of this service (only a writer without the shipped permissions
            // can put one there): where the match stands is unknown, so its next deltas
            // go out (their ids drop what the stream already holds) rather than the
            // partition waiting on it forever.
            position: position_of(&message).unwrap_or_else(|error| {
                metrics::counter!(crate::metrics::DELTAS_UNDECODABLE).increment(1);
                tracing::warn!(%error, match_id = %id, sequence = message.sequence, "the last message on a match's deltas subject is not a stat delta; publishing after it");
                match_stats_commands::delta::Position::default()
            }),
            sequence: message.sequence,
        },
        Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => Stored::default(),
        Err(e) => return Err(e.into()),
    };
    Ok((id, stored))
}

fn position_of(
    message: &jetstream::message::StreamMessage,
) -> anyhow::Result<match_stats_commands::delta::Position> {
    let from_id = message
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .and_then(|id| StatDelta::position_of(id.as_str()));
    match from_id {
        Some(position) => Ok(position),
        None => {
            let delta = StatDelta::from_msgpack(&message.payload)?;
            let last = delta.entries.last();
            Ok(match_stats_commands::delta::Position {
                version: last.map_or(0, |e| e.version),
                part: last.filter(|e| !e.is_whole()).map(|e| (e.part, e.parts)),
            })
        }
    }
}
