//! A partition's matches in memory and the decision for one message: the aggregate it
//! reaches, what it decided ([`Decision`]), and the messages to publish as a result
//! ([`Effect`]): stat deltas (coalesced per match by
//! [`DeltaBatch`](super::delta_batch::DeltaBatch)), dead letters, final match objects and
//! the `match_end`s of idle matches.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use match_stats_commands::delta::Position;
use match_stats_commands::{
    Change, DeltaEntry, Match, MatchId, MatchStatus, MatchView, Outcome, Reason, Rejection,
    StatDelta, decode,
};
use serde::{Deserialize, Serialize};

use crate::config::StreamNames;

/// Dead-letter header: the rejection reason (contract section 3).
pub const HEADER_REASON: &str = "Match-Stats-Reason";
/// Dead-letter header: what exactly was wrong.
pub const HEADER_DETAIL: &str = "Match-Stats-Detail";
/// Dead-letter header: the events stream.
pub const HEADER_SOURCE_STREAM: &str = "Match-Stats-Source-Stream";
/// Dead-letter header: the events stream sequence of the rejected message.
pub const HEADER_SOURCE_SEQUENCE: &str = "Match-Stats-Source-Sequence";
/// Dead-letter header: the subject the event was published on (`<prefix>.<match>`, as
/// the publisher wrote it; the stream stores it with the partition inserted).
pub const HEADER_SOURCE_SUBJECT: &str = "Match-Stats-Source-Subject";

/// One match in memory: its aggregate and where in the stream it stands (also its
/// snapshot record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatchRecord {
    /// The aggregate.
    pub aggregate: Match,
    /// The last events stream sequence applied to it.
    pub sequence: u64,
    /// When the stream stored the last event applied to it (for idle and retention).
    pub stored_at_ms: i64,
}

impl MatchRecord {
    /// Whether its match has ended.
    pub fn is_completed(&self) -> bool {
        self.aggregate.stats().status == MatchStatus::Completed
    }
}

/// What was decided for one message, to count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Applied to its match.
    Applied,
    /// A duplicate `event_id`.
    Duplicate,
    /// Rejected (contract section 3) and dead-lettered.
    Rejected(Reason),
    /// Decided, but an effect could never be stored (over a size limit): acknowledged
    /// and set aside, so the partition moves on.
    Parked,
    /// Already decided (a redelivery or a replay of a message the state holds): no effect.
    AlreadyApplied,
}

/// What processing one message decided, with its effect.
#[derive(Debug)]
pub enum Decision {
    /// Applied; what it changed.
    Applied(Applied),
    /// A duplicate `event_id`.
    Duplicate,
    /// Rejected: the reason and the dead letter to publish.
    Rejected(Reason, Effect),
    /// Its match's state already holds it: no effect.
    AlreadyApplied,
}

impl Decision {
    /// What to count.
    pub fn verdict(&self) -> Verdict {
        match self {
            Decision::Applied(_) => Verdict::Applied,
            Decision::Duplicate => Verdict::Duplicate,
            Decision::Rejected(reason, _) => Verdict::Rejected(*reason),
            Decision::AlreadyApplied => Verdict::AlreadyApplied,
        }
    }
}

/// An applied event's part of its match's delta (its entry: a list of one per event
/// was an allocation per event).
#[derive(Debug)]
pub struct Applied {
    /// The match.
    pub match_id: MatchId,
    /// What the event changed.
    pub entry: DeltaEntry,
    /// The match object, when the match is completed (its delta message carries it).
    pub match_view: Option<Box<MatchView>>,
}

/// What an [`Effect`] is, for counting it and for the checks specific to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EffectKind {
    /// A stat delta: its match and where it stands (to skip what the stream already
    /// has).
    Delta {
        /// The match.
        match_id: MatchId,
        /// Its last version (and part).
        position: Position,
        /// Its entries (applied events, or a part of one).
        entries: u64,
    },
    /// A rejected event, dead-lettered.
    DeadLetter(Reason),
    /// A `match_end` the service publishes to the events stream for an idle match.
    IdleMatchEnd,
}

/// One message to publish as the effect of an event.
#[derive(Debug, Clone)]
pub struct Effect {
    /// What it is.
    pub kind: EffectKind,
    /// Subject.
    pub subject: String,
    /// `Nats-Msg-Id`.
    pub msg_id: String,
    /// `Nats-Expected-Last-Subject-Sequence`: the stream stores it only if the last
    /// message on its subject is the one this writer knows (0: none). A delta carries it,
    /// so two writers of one match (a hand-over in progress) can never store a version
    /// twice.
    pub expected_last_subject_sequence: Option<u64>,
    /// Headers (dead letters, trace context).
    pub headers: HeaderMap,
    /// Payload.
    pub payload: Bytes,
    /// A delta's own copy, for this replica's projector once the stream confirmed it
    /// (see [`crate::handoff`]); `None` when the hand-off has no room.
    pub handoff: Option<Arc<StatDelta>>,
    /// The events stream sequences of the events it is an effect of: if it can never be
    /// stored, those events are parked.
    pub sources: Vec<u64>,
}

/// Where a message came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Events stream sequence.
    pub sequence: u64,
    /// When the stream stored it, Unix milliseconds.
    pub stored_at_ms: i64,
    /// The subject the stream stored it on: `<prefix>.<P>.<n>.<match token>`.
    pub subject: &'a str,
}

impl Source<'_> {
    /// The match the subject names: its last token (what the publisher put after the
    /// prefix).
    pub fn match_token(&self) -> &str {
        self.subject.rsplit('.').next().unwrap_or_default()
    }

    /// The subject the event was published on: `<prefix>.<match token>` (the stream's
    /// subject transform inserted the partition).
    pub fn published_subject(&self, names: &StreamNames) -> String {
        format!("{}.{}", names.events_subject, self.match_token())
    }
}

/// The `event_id` of the `match_end` the service publishes for an idle match at
/// `event_count`: a name-based id, the same from any replica and any replay, of the
/// contract's alphabet whatever the match id's length.
pub fn idle_end_event_id(match_id: MatchId, event_count: u64) -> String {
    let name = format!("{match_id}:idle:{event_count}");
    uuid::Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).to_string()
}

/// An active match with no event stored for the idle timeout, and the `match_end` that
/// closes it.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleMatch {
    /// The match.
    pub match_id: MatchId,
    /// The `match_end`'s `event_id`.
    pub event_id: String,
    /// Its `timestamp`: the match's `last_update`.
    pub last_update: i64,
}

impl IdleMatch {
    /// The `match_end` to publish to the events stream.
    pub fn effect(&self, names: &StreamNames) -> Effect {
        let payload = match_stats_commands::encode::idle_match_end(
            &self.event_id,
            self.match_id,
            self.last_update,
        );
        Effect {
            subject: format!("{}.{}", names.events_subject, self.match_id),
            msg_id: self.event_id.clone(),
            expected_last_subject_sequence: None,
            headers: HeaderMap::new(),
            payload: payload.into(),
            handoff: None,
            sources: Vec::new(),
            kind: EffectKind::IdleMatchEnd,
        }
    }
}

/// The name space of the ids the service mints for its own events (UUID v5 of a name).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d61_7463_685f_7374_6174_735f_6964_7331);

/// Every match of a partition in memory, and how far into the stream the partition is.
/// A completed match leaves memory after a while but keeps its record in the snapshot
/// bucket: an event for it reloads it, so it is never mistaken for a new match.
#[derive(Debug, Default)]
pub struct PartitionMatches {
    matches: HashMap<MatchId, MatchRecord>,
    /// How many of `matches` are completed (kept up as they change: counting them per
    /// batch would cost a pass over every match held).
    completed: usize,
    applied_sequence: u64,
    changed: HashSet<MatchId>,
    /// Completed matches out of memory, their records in the bucket: when the stream
    /// stored their last event.
    evicted: HashMap<MatchId, i64>,
    /// The latest time the stream stored an event of the partition at (Unix ms): the
    /// clock of eviction, so that it depends on the stream, not on the machine.
    stream_time_ms: i64,
    /// Change lists of published deltas, handed back for the next events to record into
    /// (applying an event then allocates nothing).
    spare_changes: Vec<Vec<Change>>,
}

/// Most change lists kept for reuse per partition: each holds room for 10 or more
/// changes, 3 KiB and up, so 64 keep about 200 KiB per partition (a live batch seldom
/// holds more events; a catch-up batch's further events allocate theirs).
const SPARE_CHANGE_LISTS: usize = 64;

impl PartitionMatches {
    /// Starts from restored snapshots, at `sequence`.
    pub fn restore(matches: HashMap<MatchId, MatchRecord>, sequence: u64) -> Self {
        let stream_time_ms = matches.values().map(|r| r.stored_at_ms).max().unwrap_or(0);
        let completed = matches.values().filter(|r| r.is_completed()).count();
        PartitionMatches {
            completed,
            matches,
            applied_sequence: sequence,
            changed: HashSet::new(),
            evicted: HashMap::new(),
            stream_time_ms,
            spare_changes: Vec::new(),
        }
    }

    /// Takes back the change lists of a batch's published deltas, for reuse.
    pub fn recycle(&mut self, lists: impl Iterator<Item = Vec<Change>>) {
        let room = SPARE_CHANGE_LISTS.saturating_sub(self.spare_changes.len());
        self.spare_changes.extend(lists.take(room));
    }

    /// The latest time the stream stored an event of the partition at (Unix ms).
    pub fn stream_time(&self) -> i64 {
        self.stream_time_ms
    }

    /// Whether a match left memory and its record must be reloaded before its events.
    pub fn is_evicted(&self, id: &MatchId) -> bool {
        self.evicted.contains_key(id)
    }

    /// Brings an evicted match back (its record, read from the bucket), or forgets it if
    /// the bucket no longer has it.
    pub fn reload(&mut self, id: MatchId, record: Option<MatchRecord>) {
        self.evicted.remove(&id);
        if let Some(record) = record {
            self.completed += usize::from(record.is_completed());
            if let Some(replaced) = self.matches.insert(id, record) {
                self.completed -= usize::from(replaced.is_completed());
            }
        }
    }

    /// Evicted matches whose last event was stored before `stored_before_ms` (their
    /// events have aged out of the stream): forgotten here; their records can go.
    pub fn expire(&mut self, stored_before_ms: i64) -> Vec<MatchId> {
        let old: Vec<MatchId> = self
            .evicted
            .iter()
            .filter(|(_, at)| **at < stored_before_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in &old {
            self.evicted.remove(id);
        }
        old
    }

    /// The last processed stream sequence.
    pub fn applied_sequence(&self) -> u64 {
        self.applied_sequence
    }

    /// Active and completed matches in memory.
    pub fn match_counts(&self) -> (u64, u64) {
        let completed = self.completed as u64;
        (self.matches.len() as u64 - completed, completed)
    }

    /// Whether any match changed since the last [`PartitionMatches::take_changed`].
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
    pub fn record(&self, id: &MatchId) -> Option<&MatchRecord> {
        self.matches.get(id)
    }

    /// Active matches whose last event was stored before `stored_before_ms`.
    pub fn idle(&self, stored_before_ms: i64) -> Vec<IdleMatch> {
        self.matches
            .values()
            .filter(|t| {
                t.aggregate.stats().status == MatchStatus::Active
                    && t.stored_at_ms < stored_before_ms
            })
            .map(|t| {
                let stats = t.aggregate.stats();
                let match_id = t.aggregate.match_id();
                IdleMatch {
                    match_id,
                    event_id: idle_end_event_id(match_id, stats.event_count),
                    last_update: stats.last_update,
                }
            })
            .collect()
    }

    /// Takes out of memory the completed matches whose last event was stored before
    /// `stored_before_ms` and whose record is written (not changed since the last
    /// snapshot); their records stay in the bucket. Returns them.
    pub fn evict_completed(&mut self, stored_before_ms: i64) -> Vec<MatchId> {
        let old: Vec<(MatchId, i64)> = self
            .matches
            .values()
            .filter(|t| {
                t.aggregate.stats().status == MatchStatus::Completed
                    && t.stored_at_ms < stored_before_ms
                    && !self.changed.contains(&t.aggregate.match_id())
            })
            .map(|t| (t.aggregate.match_id(), t.stored_at_ms))
            .collect();
        for (id, at) in &old {
            self.matches.remove(id);
            self.evicted.insert(*id, *at);
        }
        self.completed -= old.len();
        old.into_iter().map(|(id, _)| id).collect()
    }

    /// Decides and applies one message.
    pub fn process(
        &mut self,
        payload: &Bytes,
        source: Source<'_>,
        names: &StreamNames,
    ) -> Decision {
        self.applied_sequence = self.applied_sequence.max(source.sequence);
        self.stream_time_ms = self.stream_time_ms.max(source.stored_at_ms);
        let event = match decode(payload, source.stored_at_ms) {
            Ok(event) => event,
            Err(rejection) => return rejected(payload, source, rejection, names),
        };
        // Routing follows the subject, statistics the payload: a mismatch could reach
        // another partition's writer, so it never reaches an aggregate (contract
        // section 1).
        if event.match_id.as_str() != source.match_token() {
            let detail = format!(
                "match_id {:?} differs from the match {:?} named by the subject {}",
                event.match_id.as_str(),
                source.match_token(),
                source.published_subject(names)
            );
            let rejection = Rejection::new(Reason::InvalidField, detail);
            return rejected(payload, source, rejection, names);
        }
        let record = self
            .matches
            .entry(event.match_id)
            .or_insert_with(|| MatchRecord {
                aggregate: Match::new(event.match_id),
                sequence: 0,
                stored_at_ms: source.stored_at_ms,
            });
        if record.sequence >= source.sequence {
            tracing::debug!(sequence = source.sequence, record = record.sequence, match_id = %event.match_id, "already in the record");
            return Decision::AlreadyApplied;
        }
        let was_completed = record.is_completed();
        let buffer = self.spare_changes.pop().unwrap_or_default();
        match record
            .aggregate
            .handle_into(&event, source.sequence, buffer)
        {
            Outcome::Applied(entry) => {
                record.sequence = source.sequence;
                record.stored_at_ms = source.stored_at_ms;
                self.changed.insert(event.match_id);
                let completed = record.is_completed();
                self.completed += usize::from(completed && !was_completed);
                Decision::Applied(Applied {
                    match_id: event.match_id,
                    entry,
                    match_view: completed.then(|| Box::new(record.aggregate.summary())),
                })
            }
            Outcome::Duplicate => Decision::Duplicate,
            Outcome::Rejected(rejection) => rejected(payload, source, rejection, names),
        }
    }
}

fn rejected(
    payload: &Bytes,
    source: Source<'_>,
    rejection: Rejection,
    names: &StreamNames,
) -> Decision {
    let dead_letter = dead_letter(payload, source, &rejection, names);
    Decision::Rejected(rejection.reason, dead_letter)
}

fn dead_letter(
    payload: &Bytes,
    source: Source<'_>,
    rejection: &Rejection,
    names: &StreamNames,
) -> Effect {
    let reason = rejection.reason;
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_REASON, reason.as_str());
    // Header values are one line of printable text.
    let detail: String = rejection
        .detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    headers.insert(HEADER_DETAIL, detail.as_str());
    headers.insert(HEADER_SOURCE_STREAM, names.events_stream.as_str());
    headers.insert(HEADER_SOURCE_SEQUENCE, source.sequence.to_string().as_str());
    headers.insert(
        HEADER_SOURCE_SUBJECT,
        source.published_subject(names).as_str(),
    );
    Effect {
        subject: format!("{}.{}", names.dead_letter_subject, reason.as_str()),
        msg_id: format!("{}:{}", names.events_stream, source.sequence),
        expected_last_subject_sequence: None,
        sources: vec![source.sequence],
        headers,
        payload: payload.clone(),
        handoff: None,
        kind: EffectKind::DeadLetter(reason),
    }
}
