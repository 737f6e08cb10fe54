//! The command side's state in memory: every match's aggregate with its place in the
//! stream, and the decision for one message with the effects to publish.

use std::collections::{HashMap, HashSet};

use async_nats::HeaderMap;
use bytes::Bytes;
use match_stats_commands::{Match, MatchId, MatchStatus, Outcome, Reason, StatDelta, decode};

use crate::config::Topology;
use crate::snapshots::Tracked;

/// Dead-letter header: the rejection reason (contract section 3).
pub const HEADER_REASON: &str = "Match-Stats-Reason";
/// Dead-letter header: what exactly was wrong.
pub const HEADER_DETAIL: &str = "Match-Stats-Detail";
/// Dead-letter header: the events stream.
pub const HEADER_SOURCE_STREAM: &str = "Match-Stats-Source-Stream";
/// Dead-letter header: the events stream sequence of the rejected message.
pub const HEADER_SOURCE_SEQUENCE: &str = "Match-Stats-Source-Sequence";
/// Dead-letter header: the subject the event was published to.
pub const HEADER_SOURCE_SUBJECT: &str = "Match-Stats-Source-Subject";

/// What processing one message decided.
#[derive(Debug)]
pub enum Processed {
    /// Applied (its delta is returned beside the decision).
    Applied,
    /// A duplicate `event_id`.
    Duplicate,
    /// Rejected (contract section 3).
    Rejected {
        /// The reason.
        reason: Reason,
        /// What exactly was wrong.
        detail: String,
    },
    /// Its match's snapshot already holds it (replay after a restore): no effect.
    AlreadyApplied,
}

/// What an [`Effect`] is, for counting it and for the checks specific to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EffectKind {
    /// A stat delta: its match and last version (to skip what the stream already has).
    Delta {
        /// The match.
        match_id: MatchId,
        /// The delta's last version.
        version: u64,
        /// Its entries (applied events).
        entries: u64,
    },
    /// A completed match's final object, put into the completed-matches bucket.
    CompletedMatch,
    /// A rejected event, dead-lettered.
    DeadLetter(Reason),
    /// A `match_end` the service publishes to the events stream for an idle match.
    IdleMatchEnd,
}

/// One message to publish as the effect of an event.
#[derive(Debug)]
pub struct Effect {
    /// What it is.
    pub kind: EffectKind,
    /// Subject.
    pub subject: String,
    /// `Nats-Msg-Id`.
    pub msg_id: String,
    /// Headers (dead letters, trace context).
    pub headers: HeaderMap,
    /// Payload.
    pub payload: Bytes,
}

/// Where a message came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Events stream sequence.
    pub sequence: u64,
    /// When the stream stored it, Unix milliseconds.
    pub stored_at_ms: i64,
    /// Its subject.
    pub subject: &'a str,
}

/// Every match in memory, and how far into the stream the command side is.
#[derive(Debug, Default)]
pub struct CommandSide {
    matches: HashMap<MatchId, Tracked>,
    applied_sequence: u64,
    changed: HashSet<MatchId>,
}

impl CommandSide {
    /// Starts from restored snapshots, at `sequence`.
    pub fn restore(matches: HashMap<MatchId, Tracked>, sequence: u64) -> Self {
        CommandSide {
            matches,
            applied_sequence: sequence,
            changed: HashSet::new(),
        }
    }

    /// The last processed stream sequence.
    pub fn applied_sequence(&self) -> u64 {
        self.applied_sequence
    }

    /// Active and completed matches in memory.
    pub fn match_counts(&self) -> (u64, u64) {
        let completed = self
            .matches
            .values()
            .filter(|t| t.aggregate.stats().status == MatchStatus::Completed)
            .count() as u64;
        (self.matches.len() as u64 - completed, completed)
    }

    /// Whether any match changed since the last [`CommandSide::take_changed`].
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// The matches changed since the last call.
    pub fn take_changed(&mut self) -> Vec<MatchId> {
        std::mem::take(&mut self.changed).into_iter().collect()
    }

    /// Marks matches changed again (their snapshot failed).
    pub fn mark_changed(&mut self, ids: impl IntoIterator<Item = MatchId>) {
        self.changed.extend(ids);
    }

    /// One match.
    pub fn tracked(&self, id: &MatchId) -> Option<&Tracked> {
        self.matches.get(id)
    }

    /// Active matches whose last event was stored before `stored_before_ms`, with the
    /// `match_end` that closes each: `(match id, event id, last_update)`.
    pub fn idle(&self, stored_before_ms: i64) -> Vec<(MatchId, String, i64)> {
        self.matches
            .values()
            .filter(|t| {
                t.aggregate.stats().status == MatchStatus::Active
                    && t.stored_at_ms < stored_before_ms
            })
            .map(|t| {
                let stats = t.aggregate.stats();
                let id = t.aggregate.match_id();
                (
                    id,
                    format!("idle-{id}-{}", stats.event_count),
                    stats.last_update,
                )
            })
            .collect()
    }

    /// Removes completed matches whose last event was stored before `stored_before_ms`.
    pub fn evict_completed(&mut self, stored_before_ms: i64) -> Vec<MatchId> {
        let old: Vec<MatchId> = self
            .matches
            .values()
            .filter(|t| {
                t.aggregate.stats().status == MatchStatus::Completed
                    && t.stored_at_ms < stored_before_ms
            })
            .map(|t| t.aggregate.match_id())
            .collect();
        for id in &old {
            self.matches.remove(id);
            self.changed.remove(id);
        }
        old
    }

    /// Decides and applies one message; returns the decision, an applied event's delta
    /// (to coalesce in a [`DeltaBatch`]) or a rejected one's dead letter.
    pub fn process(
        &mut self,
        payload: &Bytes,
        source: Source<'_>,
        topology: &Topology,
    ) -> Decision {
        self.applied_sequence = self.applied_sequence.max(source.sequence);
        let mut delta = None;
        let processed = match decode(payload, source.stored_at_ms) {
            Err(rejection) => Processed::Rejected {
                reason: rejection.reason,
                detail: rejection.detail,
            },
            Ok(event) => {
                let tracked = self
                    .matches
                    .entry(event.match_id)
                    .or_insert_with(|| Tracked {
                        aggregate: Match::new(event.match_id),
                        sequence: 0,
                        stored_at_ms: source.stored_at_ms,
                    });
                if tracked.sequence >= source.sequence {
                    Processed::AlreadyApplied
                } else {
                    match tracked.aggregate.handle(&event, source.sequence) {
                        Outcome::Applied(entry) => {
                            tracked.sequence = source.sequence;
                            tracked.stored_at_ms = source.stored_at_ms;
                            self.changed.insert(event.match_id);
                            let completed =
                                tracked.aggregate.stats().status == MatchStatus::Completed;
                            delta = Some(StatDelta {
                                match_id: event.match_id,
                                entries: vec![entry],
                                match_view: completed.then(|| Box::new(tracked.aggregate.view())),
                            });
                            Processed::Applied
                        }
                        Outcome::Duplicate => Processed::Duplicate,
                        Outcome::Rejected(rejection) => Processed::Rejected {
                            reason: rejection.reason,
                            detail: rejection.detail,
                        },
                    }
                }
            }
        };
        let dead_letter = match &processed {
            Processed::Rejected { reason, detail } => {
                Some(dead_letter(payload, source, *reason, detail, topology))
            }
            _ => None,
        };
        Decision {
            processed,
            delta,
            dead_letter,
        }
    }
}

/// What [`CommandSide::process`] decided for one message.
#[derive(Debug)]
pub struct Decision {
    /// The decision.
    pub processed: Processed,
    /// An applied event's delta.
    pub delta: Option<StatDelta>,
    /// A rejected event's dead letter.
    pub dead_letter: Option<Effect>,
}

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
    pub fn push(&mut self, delta: StatDelta, headers: Option<HeaderMap>) {
        let id = delta.match_id;
        match (headers, self.open.get(&id)) {
            (None, Some(&i)) => {
                let (open, _) = &mut self.segments[i];
                open.entries.extend(delta.entries);
                open.match_view = delta.match_view;
            }
            (None, None) => {
                self.open.insert(id, self.segments.len());
                self.segments.push((delta, HeaderMap::new()));
            }
            (Some(headers), _) => {
                self.open.remove(&id);
                self.segments.push((delta, headers));
            }
        }
    }

    /// The deltas, in order, to trim before publishing (a replay drops what the stream
    /// already holds).
    pub fn deltas_mut(&mut self) -> impl Iterator<Item = &mut StatDelta> {
        self.segments.iter_mut().map(|(delta, _)| delta)
    }

    /// The messages to publish: each delta, and for a match that ended, its final object
    /// for the completed-matches bucket.
    pub fn into_effects(self, topology: &Topology) -> Vec<Effect> {
        let mut effects = Vec::with_capacity(self.segments.len());
        for (delta, headers) in self.segments {
            if let Some(view) = &delta.match_view {
                // A key-value put is a publish to the bucket's subject. (Also when a
                // replay trimmed the delta itself: the put may be what was missing.)
                let json = serde_json::to_vec(view).expect("views serialize");
                effects.push(Effect {
                    subject: format!("$KV.{}.{}", topology.completed_bucket, delta.match_id),
                    msg_id: format!("{}:{}:final", delta.match_id, view.event_count),
                    headers: HeaderMap::new(),
                    payload: match_stats_queries::cache::encode(&json).into(),
                    kind: EffectKind::CompletedMatch,
                });
            }
            let Some(last) = delta.entries.last() else {
                continue;
            };
            let version = last.version;
            effects.push(Effect {
                subject: format!("{}.{}", topology.deltas_subject, delta.match_id),
                msg_id: delta.msg_id(),
                headers,
                payload: rmp_serde::to_vec_named(&delta)
                    .expect("deltas serialize")
                    .into(),
                kind: EffectKind::Delta {
                    match_id: delta.match_id,
                    version,
                    entries: delta.entries.len() as u64,
                },
            });
        }
        effects
    }
}

fn dead_letter(
    payload: &Bytes,
    source: Source<'_>,
    reason: Reason,
    detail: &str,
    topology: &Topology,
) -> Effect {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_REASON, reason.as_str());
    // Header values are one line of printable text.
    let detail: String = detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    headers.insert(HEADER_DETAIL, detail.as_str());
    headers.insert(HEADER_SOURCE_STREAM, topology.events_stream.as_str());
    headers.insert(HEADER_SOURCE_SEQUENCE, source.sequence.to_string().as_str());
    headers.insert(HEADER_SOURCE_SUBJECT, source.subject);
    Effect {
        subject: format!("{}.{}", topology.dead_letter_subject, reason.as_str()),
        msg_id: format!("{}:{}", topology.events_stream, source.sequence),
        headers,
        payload: payload.clone(),
        kind: EffectKind::DeadLetter(reason),
    }
}
