//! A batch's deltas as the messages to publish ([`DeltaBatch`]): each applied event's entry
//! coalesced with the others of its match, split where a message would grow too large,
//! less what the deltas stream already holds ([`Published`]), each message fenced on its
//! match's last stored one and, room permitting, copied for this replica's projector.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_nats::HeaderMap;
use match_stats_commands::delta::{FORMAT_HEADER, Format, Position};
use match_stats_commands::{Change, DeltaEntry, MatchId, StatDelta, StatDeltaRef};

use super::matches::{Applied, Effect, EffectKind};
use crate::config::StreamNames;
use crate::handoff;

/// The last delta the deltas stream holds for a match: where it stands and its stream
/// sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stored {
    /// Its last version (and part).
    pub position: Position,
    /// The stream sequence of the message that carries it (0: none).
    pub sequence: u64,
}

/// Most changes in one delta message: with the largest change under 400 bytes, a message
/// stays well under NATS's 1 MiB `max_payload` whatever the match.
pub const MAX_CHANGES_PER_MESSAGE: usize = 1500;

/// Per match, what the deltas stream holds: looked up once per match while this replica
/// holds the partition, then kept up by its own publishes.
pub type Published = HashMap<MatchId, Stored>;

/// The deltas of one batch, coalesced: one delta message per match with every entry the
/// batch applied to it, in version order. An event that carries a trace context gets a
/// delta of its own, which carries the context on.
#[derive(Debug, Default)]
pub struct DeltaBatch {
    segments: Vec<(StatDelta, HeaderMap)>,
    open: HashMap<MatchId, usize>,
}

impl DeltaBatch {
    /// Adds an applied event's delta (`headers`: its trace context, if any).
    pub fn push(&mut self, applied: Applied, headers: Option<HeaderMap>) {
        let Applied {
            match_id,
            entry,
            match_view,
        } = applied;
        if let (None, Some(&i)) = (&headers, self.open.get(&match_id)) {
            let (open, _) = &mut self.segments[i];
            open.entries.push(entry);
            open.match_view = match_view;
            return;
        }
        let delta = StatDelta {
            match_id,
            entries: vec![entry],
            match_view,
        };
        match headers {
            None => {
                self.open.insert(match_id, self.segments.len());
                self.segments.push((delta, HeaderMap::new()));
            }
            Some(headers) => {
                self.open.remove(&match_id);
                self.segments.push((delta, headers));
            }
        }
    }

    /// The change lists of its entries, to be reused once its messages are published.
    pub fn into_change_lists(self) -> impl Iterator<Item = Vec<Change>> {
        self.segments
            .into_iter()
            .flat_map(|(delta, _)| delta.entries)
            .map(|entry| entry.changes)
    }

    /// The matches whose deltas it holds.
    pub fn match_ids(&self) -> impl Iterator<Item = MatchId> + '_ {
        self.segments.iter().map(|(delta, _)| delta.match_id)
    }

    /// Whether `id`'s deltas in this batch go out as one message (one segment, small
    /// enough not to be split).
    pub fn in_one_message(&self, id: MatchId) -> bool {
        let mut segments = self
            .segments
            .iter()
            .filter(|(delta, _)| delta.match_id == id);
        match (segments.next(), segments.next()) {
            (Some((delta, _)), None) => delta.change_count() <= MAX_CHANGES_PER_MESSAGE,
            _ => false,
        }
    }

    /// The matches that ended, or changed after their end, in this batch.
    pub fn completed(&self) -> impl Iterator<Item = MatchId> + '_ {
        self.segments
            .iter()
            .filter(|(delta, _)| delta.match_view.is_some())
            .map(|(delta, _)| delta.match_id)
    }

    /// The delta messages to publish, less what `published` says the deltas stream
    /// already holds; and how many entries (or parts) that dropped. Each event's changes
    /// are split into parts of at most [`MAX_CHANGES_PER_MESSAGE`] (the same way by any
    /// writer); whole entries are coalesced per match up to that many changes a message;
    /// each match's first message expects the last one its subject holds. A delta effect
    /// carries its own copy for the hand-off to the projector when its
    /// [`handoff::weight`] fits what is left of `copy_room` (the hand-off's room: a copy
    /// it would refuse is not made).
    pub fn effects(
        &self,
        names: &StreamNames,
        format: Format,
        published: &Published,
        mut copy_room: usize,
    ) -> (Vec<Effect>, u64) {
        let mut effects = Vec::with_capacity(self.segments.len());
        let mut expecting = HashSet::new();
        let mut dropped = 0;
        for (delta, headers) in &self.segments {
            let stored = published.get(&delta.match_id).copied().unwrap_or_default();
            let mut open: Vec<Cow<'_, DeltaEntry>> = Vec::new();
            let mut open_changes = 0;
            let mut messages: Vec<Vec<Cow<'_, DeltaEntry>>> = Vec::new();
            for entry in &delta.entries {
                // A whole entry is published as it is kept (with no list of one part: an
                // allocation per event); only a split one is copied.
                let whole = DeltaEntry::parts_of(entry.changes.len(), MAX_CHANGES_PER_MESSAGE) == 1;
                let (kept, split) = if whole {
                    (Some(Cow::Borrowed(entry)), Vec::new())
                } else {
                    (None, entry.clone().split(MAX_CHANGES_PER_MESSAGE))
                };
                let parts = kept.into_iter().chain(split.into_iter().map(Cow::Owned));
                for part in parts {
                    let at = (!part.is_whole()).then_some(part.part);
                    if stored.position.covers(part.version, at) {
                        dropped += 1;
                        continue;
                    }
                    if !part.is_whole() {
                        messages.extend((!open.is_empty()).then(|| std::mem::take(&mut open)));
                        open_changes = 0;
                        messages.push(vec![part]);
                        continue;
                    }
                    if open_changes + part.changes.len() > MAX_CHANGES_PER_MESSAGE
                        && !open.is_empty()
                    {
                        messages.push(std::mem::take(&mut open));
                        open_changes = 0;
                    }
                    open_changes += part.changes.len();
                    open.push(part);
                }
            }
            messages.extend((!open.is_empty()).then_some(open));
            let count = messages.len();
            for (i, entries) in messages.into_iter().enumerate() {
                let message = StatDeltaRef {
                    match_id: delta.match_id,
                    entries,
                    // The match object goes with the last message of the batch's delta.
                    match_view: delta.match_view.as_deref().filter(|_| i + 1 == count),
                };
                let expected = expecting.insert(delta.match_id).then_some(stored.sequence);
                let weight = handoff::weight(message.change_count());
                let copy = weight <= copy_room;
                if copy {
                    copy_room -= weight;
                }
                effects.push(delta_effect(
                    names, format, &message, headers, expected, copy,
                ));
            }
        }
        (effects, dropped)
    }
}

/// One delta message as an effect.
fn delta_effect(
    names: &StreamNames,
    format: Format,
    delta: &StatDeltaRef<'_>,
    headers: &HeaderMap,
    expected: Option<u64>,
    copy: bool,
) -> Effect {
    let last = delta.entries.last().expect("a message carries an entry");
    let position = Position {
        version: last.version,
        part: (!last.is_whole()).then_some((last.part, last.parts)),
    };
    let mut headers = headers.clone();
    headers.insert(FORMAT_HEADER, format.version().to_string());
    Effect {
        subject: format!("{}.{}", names.deltas_subject, delta.match_id),
        msg_id: delta.msg_id(),
        expected_last_subject_sequence: expected,
        sources: delta.entries.iter().map(|e| e.stream_sequence).collect(),
        kind: EffectKind::Delta {
            match_id: delta.match_id,
            position,
            entries: delta.entries.len() as u64,
        },
        payload: delta.encode(format).into(),
        handoff: copy.then(|| Arc::new(delta.to_owned_delta())),
        headers,
    }
}

#[cfg(test)]
mod tests;
