//! The command side's counters.
//!
//! - Each partition's counts of decided messages ([`Counters`]) are exact: kept with its
//!   state, persisted in its snapshot marker with the sequence they belong to, and
//!   replayed with it, so a crash, a redelivery or a hand-over never counts a stream
//!   message twice or loses one. Every replica shows every partition's latest figures
//!   ([`Figures`]): its own live counts for the partitions it holds, the persisted marker
//!   for the others, so any replica answers for the whole deployment.
//! - The Prometheus counters of decisions count what this process decides for the first
//!   time, when it acknowledges it ([`IngestStats::record_acknowledged`]): a replay of
//!   messages another process already acknowledged is not counted again, so the sum over
//!   replicas of `increase()` equals what the stream received.
//! - The rest counts this process's work ([`IngestStats`]); every `record_*` method bumps
//!   the in-process atomic and its Prometheus counter together.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use match_stats_commands::Reason;
use serde::{Deserialize, Serialize};

use super::matches::{EffectKind, Verdict};
use crate::metrics as m;
use crate::nats::Partition;

/// A partition's counts of decided messages, carried across restarts in its snapshot
/// marker. `received = applied + duplicates + rejected + parked` always holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Messages decided.
    pub received: u64,
    /// Events applied.
    pub applied: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Rejections, indexed like `Reason::ALL` (stored by reason name, so a new reason
    /// reads back into an old marker and the reverse).
    #[serde(with = "by_reason")]
    pub rejected: [u64; Reason::COUNT],
    /// Events whose effects could never be stored.
    #[serde(default)]
    pub parked: u64,
}

/// `rejected` as a map from reason to count; an older marker's array (in `Reason::ALL`
/// order) reads too.
mod by_reason {
    use std::collections::BTreeMap;

    use match_stats_commands::Reason;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        counts: &[u64; Reason::COUNT],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<&str, u64> = Reason::ALL
            .iter()
            .zip(counts)
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (r.as_str(), *n))
            .collect();
        map.serialize(s)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        ByName(BTreeMap<String, u64>),
        InOrder(Vec<u64>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u64; Reason::COUNT], D::Error> {
        let mut counts = [0; Reason::COUNT];
        match Stored::deserialize(d)? {
            Stored::ByName(map) => {
                for (name, n) in map {
                    match name.parse::<Reason>() {
                        Ok(reason) => counts[reason as usize] = n,
                        Err(_) => {
                            tracing::warn!(reason = %name, "a count of an unknown rejection reason in a marker; dropped")
                        }
                    }
                }
            }
            Stored::InOrder(values) => {
                for (slot, n) in counts.iter_mut().zip(values) {
                    *slot = n;
                }
            }
        }
        Ok(counts)
    }
}

impl Counters {
    /// Counts one decision (a redelivery of a decided message is not one).
    pub fn count(&mut self, verdict: Verdict) {
        let slot = match verdict {
            Verdict::Applied => &mut self.applied,
            Verdict::Duplicate => &mut self.duplicates,
            Verdict::Rejected(reason) => &mut self.rejected[reason as usize],
            Verdict::Parked => &mut self.parked,
            Verdict::AlreadyApplied => return,
        };
        *slot += 1;
        self.received += 1;
    }

    /// Whether every received message is applied, a duplicate, rejected or parked.
    pub fn conserved(&self) -> bool {
        self.received
            == self.applied + self.duplicates + self.rejected.iter().sum::<u64>() + self.parked
    }

    fn add(&mut self, other: &Counters) {
        self.received += other.received;
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.parked += other.parked;
        for (a, b) in self.rejected.iter_mut().zip(other.rejected) {
            *a += b;
        }
    }

    /// `{received, applied, duplicates, rejected: {reason: n}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let rejected: BTreeMap<&str, u64> = Reason::ALL
            .iter()
            .zip(self.rejected)
            .map(|(r, n)| (r.as_str(), n))
            .collect();
        serde_json::json!({
            "received": self.received,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "rejected": rejected,
            "parked": self.parked,
        })
    }
}

/// Where a partition's figures come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FiguresSource {
    /// Not known yet.
    #[default]
    Unknown,
    /// This replica holds the partition: its live counts.
    Memory,
    /// The partition's snapshot marker, as last read (another replica writes it).
    Snapshot,
}

/// A partition's counts as of a sequence of the events stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// The counts.
    pub counters: Counters,
    /// Every message of the partition up to this sequence is counted.
    pub sequence: u64,
    /// Where they come from.
    pub source: FiguresSource,
}

/// Counters of the ingest path, shared with HTTP handlers and tests. The decided-message
/// counts are the partitions' [`Figures`]; the rest counts this process's work.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Redelivered or replayed messages already applied, acknowledged without effect.
    pub redelivered_skipped: AtomicU64,
    /// Delta messages stored by the deltas stream (each coalesces a batch's entries for
    /// one match).
    pub deltas_published: AtomicU64,
    /// Delta entries (applied events) in those messages.
    pub delta_entries_published: AtomicU64,
    /// Dead letters stored by the dead-letter stream.
    pub dead_letters: AtomicU64,
    /// Effects published again that a stream already held (dropped by `Nats-Msg-Id`),
    /// or that recovery skipped because the deltas stream already had that version.
    pub effects_deduplicated: AtomicU64,
    /// Per partition: what this replica holds and how far it is.
    pub partitions: Vec<PartitionStats>,
    /// Snapshots written.
    pub snapshots_written: AtomicU64,
    /// `match_end` events published for idle matches.
    pub idle_matches_ended: AtomicU64,
    /// Messages replayed so far by recovery, and how many it has to replay.
    pub recovery_done: AtomicU64,
    /// See `recovery_done`.
    pub recovery_total: AtomicU64,
    /// Partitions whose recovery at start-up is done.
    pub partitions_started: AtomicUsize,
    /// Every partition recovered at start-up, and live consumption started.
    pub recovered: AtomicBool,
    /// Times this replica became a partition's writer, or gave one up.
    pub acquisitions: AtomicU64,
    /// See `acquisitions`.
    pub releases: AtomicU64,
    /// Partitions per live replica, rounded up (0 until the balancer has counted).
    pub share: AtomicUsize,
    /// Batches stopped by shutdown before their effects were confirmed (NATS redelivers
    /// them): work abandoned.
    pub abandoned: AtomicU64,
    /// When this process started (Unix ms): progress is measured from it until a first
    /// batch.
    pub started_ms: i64,
    /// A partition written here with work waiting and no batch confirmed for this long is
    /// stalled (`PARTITION_STALL_AFTER`).
    pub stall_after: std::time::Duration,
}

/// One partition as this replica sees it. Consumer figures are refreshed every second.
#[derive(Debug, Default)]
pub struct PartitionStats {
    /// Its matches are in this replica's memory.
    pub held: AtomicBool,
    /// This replica is its writer (NATS delivers its events here).
    pub writing: AtomicBool,
    /// Matches in memory that have not ended.
    pub active: AtomicU64,
    /// Matches in memory that have ended.
    pub completed: AtomicU64,
    /// The last events stream sequence processed.
    pub applied_sequence: AtomicU64,
    /// Events waiting in the partition's consumer.
    pub pending: AtomicU64,
    /// Messages delivered and waiting for an ack.
    pub ack_pending: AtomicU64,
    /// Messages redelivered at least once.
    pub redelivered: AtomicU64,
    /// The consumer answered the last check.
    pub found: AtomicBool,
    /// The balancer asks this replica to hand the partition over to another.
    pub hand_over: AtomicBool,
    /// It is working off a backlog: its last full batch left events waiting behind it,
    /// and no batch since has caught up.
    pub catching_up: AtomicBool,
    /// Its counts of decided messages, as last known.
    pub figures: Mutex<Figures>,
    /// When a batch of it was last confirmed here (Unix ms; 0: never).
    pub progress_at_ms: std::sync::atomic::AtomicI64,
    /// Failed attempts in a row of its current publish, restore or catch-up (0 when the
    /// last one succeeded).
    pub retry_streak: AtomicU64,
    /// When the batch (or restore) in progress started (Unix ms; 0: none in progress).
    pub busy_since_ms: std::sync::atomic::AtomicI64,
    /// Since when its consumer has shown events waiting or unacknowledged, by the checks
    /// so far (Unix ms; 0: none at the last check).
    pub waiting_since_ms: std::sync::atomic::AtomicI64,
}

impl PartitionStats {
    /// Seconds since a batch of it was last confirmed here (since `since_ms` when none
    /// was).
    pub fn seconds_since_progress(&self, now_ms: i64, since_ms: i64) -> f64 {
        (now_ms - self.progress_from(since_ms)).max(0) as f64 / 1000.0
    }

    /// When a batch of it was last confirmed here (Unix ms; `since_ms` when none was).
    fn progress_from(&self, since_ms: i64) -> i64 {
        match self.progress_at_ms.load(Ordering::Relaxed) {
            0 => since_ms,
            at => at,
        }
    }

    /// Whether it is held here and stuck for `stall_after`: a batch (or restore) in
    /// progress that long, or, written here, events waiting and no batch confirmed.
    pub fn stalled(&self, now_ms: i64, since_ms: i64, stall_after: std::time::Duration) -> bool {
        let limit = stall_after.as_millis() as i64;
        let busy = self.busy_since_ms.load(Ordering::Relaxed);
        let stuck_in_work = busy != 0 && now_ms - busy > limit;
        // Waiting is measured from the later of the last confirmed batch and the first
        // check that saw events waiting: a partition idle for longer than the limit is
        // not stalled the moment an event arrives.
        let waiting_since = self.waiting_since_ms.load(Ordering::Relaxed);
        let starved = self.writing.load(Ordering::Relaxed)
            && waiting_since != 0
            && now_ms - self.progress_from(since_ms).max(waiting_since) > limit;
        stuck_in_work || starved
    }

    /// Marks the start (`true`) or the end of a batch or restore.
    pub fn busy(&self, busy: bool) {
        let at = if busy {
            chrono::Utc::now().timestamp_millis()
        } else {
            0
        };
        self.busy_since_ms.store(at, Ordering::Relaxed);
    }
}

/// The partitions' consumers summed, as last read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ConsumerLag {
    /// Events waiting.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub ack_pending: u64,
    /// Redelivered at least once.
    pub redelivered: u64,
}

/// A point-in-time copy of [`IngestStats`], as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct IngestCounts {
    pub received: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub parked: u64,
    pub redelivered_skipped: u64,
    pub deltas_published: u64,
    pub delta_entries_published: u64,
    pub dead_letters: u64,
    pub effects_deduplicated: u64,
    pub applied_sequence: u64,
    pub conserved: bool,
    pub matches_active: u64,
    pub matches_completed: u64,
    pub snapshots_written: u64,
    pub idle_matches_ended: u64,
    pub partitions_held: Vec<u16>,
    pub partitions_writing: Vec<u16>,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

fn sum(slots: &[PartitionStats], field: impl Fn(&PartitionStats) -> &AtomicU64) -> u64 {
    slots.iter().map(|s| get(field(s))).sum()
}

/// The partitions whose flag is set.
pub fn flagged(
    slots: &[PartitionStats],
    field: impl Fn(&PartitionStats) -> &AtomicBool,
) -> Vec<u16> {
    (0..slots.len() as u16)
        .filter(|&n| field(&slots[usize::from(n)]).load(Ordering::Relaxed))
        .collect()
}

impl IngestStats {
    /// Counters for `partitions` partitions, stalled after `stall_after` without progress.
    pub fn new(partitions: u16, stall_after: std::time::Duration) -> Self {
        IngestStats {
            partitions: (0..partitions).map(|_| PartitionStats::default()).collect(),
            started_ms: chrono::Utc::now().timestamp_millis(),
            stall_after,
            ..Default::default()
        }
    }

    /// This replica's view of one partition.
    pub fn partition(&self, partition: Partition) -> &PartitionStats {
        &self.partitions[partition.index()]
    }

    /// Whether a partition of this replica is working off a backlog (a catch-up).
    pub fn catching_up(&self) -> bool {
        self.partitions
            .iter()
            .any(|s| s.catching_up.load(Ordering::Relaxed))
    }

    /// Whether this replica writes its share of the partitions (or more): then it stops
    /// waiting on the others, so that they go to replicas with room.
    pub fn full(&self) -> bool {
        let share = self.share.load(Ordering::Relaxed);
        share > 0 && flagged(&self.partitions, |s| &s.writing).len() >= share
    }

    /// The partitions' consumers summed; `None` until every one has answered.
    pub fn consumer_lag(&self) -> Option<ConsumerLag> {
        let slots = &self.partitions;
        slots
            .iter()
            .all(|s| s.found.load(Ordering::Relaxed))
            .then(|| ConsumerLag {
                pending: sum(slots, |s| &s.pending),
                ack_pending: sum(slots, |s| &s.ack_pending),
                redelivered: sum(slots, |s| &s.redelivered),
            })
    }

    /// Sets the per-partition gauges of progress (before `/metrics` renders): seconds since
    /// a batch was confirmed, the retry streak, stalled or not; all 0 for a partition
    /// this replica neither writes nor works on.
    pub fn publish_partition_gauges(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        for (n, slot) in self.partitions.iter().enumerate() {
            let label = n.to_string();
            let working = slot.writing.load(Ordering::Relaxed)
                || slot.busy_since_ms.load(Ordering::Relaxed) != 0;
            let (seconds, streak, stalled) = if working {
                (
                    slot.seconds_since_progress(now, self.started_ms),
                    get(&slot.retry_streak) as f64,
                    f64::from(u8::from(slot.stalled(
                        now,
                        self.started_ms,
                        self.stall_after,
                    ))),
                )
            } else {
                (0.0, 0.0, 0.0)
            };
            metrics::gauge!(m::PARTITION_SECONDS_SINCE_PROGRESS, "partition" => label.clone())
                .set(seconds);
            metrics::gauge!(m::PARTITION_RETRY_STREAK, "partition" => label.clone()).set(streak);
            metrics::gauge!(m::PARTITION_STALLED, "partition" => label.clone()).set(stalled);
            metrics::gauge!(m::PARTITION_PENDING, "partition" => label)
                .set(get(&slot.pending) as f64);
        }
    }

    /// The partitions written here that are stalled.
    pub fn stalled(&self) -> Vec<u16> {
        let now = chrono::Utc::now().timestamp_millis();
        (0..self.partitions.len() as u16)
            .filter(|&n| {
                self.partitions[usize::from(n)].stalled(now, self.started_ms, self.stall_after)
            })
            .collect()
    }

    /// Every partition's figures, in partition order.
    pub fn figures(&self) -> Vec<Figures> {
        self.partitions
            .iter()
            .map(|s| s.figures.lock().expect("figures").clone())
            .collect()
    }

    /// Every partition's counts summed: the whole deployment's.
    pub fn decided(&self) -> Counters {
        let mut total = Counters::default();
        for figures in self.figures() {
            total.add(&figures.counters);
        }
        total
    }

    /// Reads every counter.
    pub fn counts(&self) -> IngestCounts {
        let slots = &self.partitions;
        let decided = self.decided();
        IngestCounts {
            received: decided.received,
            applied: decided.applied,
            duplicates: decided.duplicates,
            rejected: Reason::ALL
                .iter()
                .zip(decided.rejected)
                .map(|(r, n)| (r.as_str(), n))
                .collect(),
            parked: decided.parked,
            conserved: decided.conserved(),
            redelivered_skipped: get(&self.redelivered_skipped),
            deltas_published: get(&self.deltas_published),
            delta_entries_published: get(&self.delta_entries_published),
            dead_letters: get(&self.dead_letters),
            effects_deduplicated: get(&self.effects_deduplicated),
            applied_sequence: slots
                .iter()
                .map(|s| get(&s.applied_sequence))
                .max()
                .unwrap_or(0),
            matches_active: sum(slots, |s| &s.active),
            matches_completed: sum(slots, |s| &s.completed),
            snapshots_written: get(&self.snapshots_written),
            idle_matches_ended: get(&self.idle_matches_ended),
            partitions_held: flagged(slots, |s| &s.held),
            partitions_writing: flagged(slots, |s| &s.writing),
        }
    }

    /// A partition's latest counts: this replica's own while it holds the partition
    /// (`Memory`), else its marker's (`Snapshot`), whichever covers more of the stream.
    pub fn record_figures(&self, partition: Partition, figures: Figures) {
        let mut current = self.partition(partition).figures.lock().expect("figures");
        if figures.source == FiguresSource::Memory
            || current.source == FiguresSource::Unknown
            || figures.sequence > current.sequence
        {
            *current = figures;
        }
    }

    /// Marks a partition's figures as no longer this replica's own (it gave it up): the
    /// next marker read replaces them, even if older.
    pub fn forget_figures(&self, partition: Partition) {
        let mut current = self.partition(partition).figures.lock().expect("figures");
        if current.source == FiguresSource::Memory {
            current.source = FiguresSource::Unknown;
        }
    }

    /// Counts a redelivered or replayed message already decided.
    pub fn record_redelivered(&self) {
        bump(&self.redelivered_skipped, 1);
        metrics::counter!(m::REDELIVERED_SKIPPED).increment(1);
    }

    /// Counts, in Prometheus, decisions this process acknowledged: the first time any
    /// process acknowledged those messages. Tallied first, so a batch costs each series
    /// one update, not one per message.
    pub fn record_acknowledged(&self, verdicts: impl IntoIterator<Item = Verdict>) {
        let (mut applied, mut duplicate, mut parked, mut received) = (0, 0, 0, 0);
        let mut rejected: Vec<(Reason, u64)> = Vec::new();
        for verdict in verdicts {
            match verdict {
                Verdict::Applied => applied += 1,
                Verdict::Duplicate => duplicate += 1,
                Verdict::Rejected(reason) => {
                    match rejected.iter_mut().find(|(r, _)| *r == reason) {
                        Some((_, n)) => *n += 1,
                        None => rejected.push((reason, 1)),
                    }
                }
                Verdict::Parked => parked += 1,
                Verdict::AlreadyApplied => continue,
            }
            received += 1;
        }
        for (series, n) in [
            (m::EVENTS_PROCESSED, applied),
            (m::EVENTS_DUPLICATE, duplicate),
            (m::EVENTS_PARKED, parked),
            (m::EVENTS_RECEIVED, received),
        ] {
            if n > 0 {
                metrics::counter!(series).increment(n);
            }
        }
        for (reason, n) in rejected {
            metrics::counter!(m::EVENTS_REJECTED, "reason" => reason.as_str()).increment(n);
        }
    }

    /// Counts an effect the streams stored (`duplicate`: a stream already held it).
    pub fn record_effect(&self, kind: &EffectKind, duplicate: bool) {
        if duplicate {
            self.record_deduplicated(1);
            return;
        }
        match kind {
            EffectKind::Delta { entries, .. } => {
                bump(&self.deltas_published, 1);
                bump(&self.delta_entries_published, *entries);
                metrics::counter!(m::DELTAS_PUBLISHED).increment(1);
                metrics::counter!(m::DELTA_ENTRIES_PUBLISHED).increment(*entries);
            }
            EffectKind::DeadLetter(reason) => {
                bump(&self.dead_letters, 1);
                metrics::counter!(m::DEAD_LETTERS, "reason" => reason.as_str()).increment(1);
            }
            EffectKind::IdleMatchEnd => {
                bump(&self.idle_matches_ended, 1);
                metrics::counter!(m::IDLE_MATCHES_ENDED).increment(1);
            }
        }
    }

    /// Counts effects a stream already held (dropped by `Nats-Msg-Id` or by version).
    pub fn record_deduplicated(&self, n: u64) {
        bump(&self.effects_deduplicated, n);
        metrics::counter!(m::EFFECTS_DEDUPLICATED).increment(n);
    }

    /// Counts a snapshot written.
    pub fn record_snapshot(&self) {
        bump(&self.snapshots_written, 1);
        metrics::counter!(m::SNAPSHOTS_WRITTEN).increment(1);
    }

    /// Counts messages replayed by recovery (`total`: more to replay).
    pub fn record_replayed(&self, done: u64, total: u64) {
        bump(&self.recovery_done, done);
        bump(&self.recovery_total, total);
    }

    /// Counts a partition taken.
    pub fn record_acquisition(&self) {
        bump(&self.acquisitions, 1);
        metrics::counter!(m::PARTITION_ACQUISITIONS).increment(1);
    }

    /// Counts a partition given up, with why.
    pub fn record_release(&self, reason: &'static str) {
        bump(&self.releases, 1);
        metrics::counter!(m::PARTITION_RELEASES, "reason" => reason).increment(1);
    }

    /// Refreshes a partition's match counts and sequence (and the gauges); `None` when
    /// this replica does not hold it.
    pub fn record_matches(&self, partition: Partition, held: Option<(u64, u64, u64)>) {
        let slot = self.partition(partition);
        let (active, completed, sequence) = held.unwrap_or_default();
        slot.active.store(active, Ordering::Relaxed);
        slot.completed.store(completed, Ordering::Relaxed);
        slot.applied_sequence.store(sequence, Ordering::Relaxed);
        let slots = &self.partitions;
        metrics::gauge!(m::MATCHES_ACTIVE).set(sum(slots, |s| &s.active) as f64);
        metrics::gauge!(m::MATCHES_COMPLETED).set(sum(slots, |s| &s.completed) as f64);
    }

    /// Stores a partition's consumer figures (`None`: its consumer did not answer).
    pub fn record_consumer(&self, partition: Partition, figures: Option<ConsumerLag>) {
        let slot = self.partition(partition);
        slot.found.store(figures.is_some(), Ordering::Relaxed);
        let Some(figures) = figures else { return };
        slot.pending.store(figures.pending, Ordering::Relaxed);
        slot.ack_pending
            .store(figures.ack_pending, Ordering::Relaxed);
        if figures.pending + figures.ack_pending == 0 {
            slot.waiting_since_ms.store(0, Ordering::Relaxed);
        } else {
            let now = chrono::Utc::now().timestamp_millis();
            let _ = slot.waiting_since_ms.compare_exchange(
                0,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        slot.redelivered
            .store(figures.redelivered, Ordering::Relaxed);
        if let Some(lag) = self.consumer_lag() {
            metrics::gauge!(m::CONSUMER_PENDING).set(lag.pending as f64);
            metrics::gauge!(m::CONSUMER_ACK_PENDING).set(lag.ack_pending as f64);
            metrics::gauge!(m::CONSUMER_REDELIVERED).set(lag.redelivered as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

    fn written(progress_at_ms: i64, waiting_since_ms: i64) -> PartitionStats {
        let slot = PartitionStats::default();
        slot.writing.store(true, Ordering::Relaxed);
        slot.progress_at_ms.store(progress_at_ms, Ordering::Relaxed);
        slot.waiting_since_ms
            .store(waiting_since_ms, Ordering::Relaxed);
        slot
    }

    #[test]
    fn a_partition_is_starved_once_events_wait_past_the_limit_without_a_batch() {
        let now = 1_000_000;
        // idle for a minute, an event seen waiting a second ago: not stalled
        assert!(!written(now - 60_000, now - 1_000).stalled(now, 0, LIMIT));
        // idle for a minute, events waiting for 31 s: stalled
        assert!(written(now - 60_000, now - 31_000).stalled(now, 0, LIMIT));
        // events waiting for a minute, but a batch confirmed a second ago: not stalled
        assert!(!written(now - 1_000, now - 60_000).stalled(now, 0, LIMIT));
        // nothing waiting: never stalled, however long idle
        assert!(!written(now - 600_000, 0).stalled(now, 0, LIMIT));
        // never a batch since the process started 31 s ago, events waiting since: stalled
        assert!(written(0, now - 31_000).stalled(now, now - 31_000, LIMIT));
    }
}
