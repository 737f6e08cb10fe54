//! What every part of the command side reads: the JetStream context, names, lifecycle
//! settings, the buckets, the batch size, the counters and the hand-off to the projector. Built once by
//! [`super::Ingest`], shared by every partition's writer and the balancer.

use std::sync::Arc;

use async_nats::jetstream::{self, kv, object_store::ObjectStore};

use super::stats::IngestStats;
use crate::config::{Lifecycle, StreamNames};
use crate::handoff::Handoff;
use crate::nats::Partitioning;

/// The command side's shared settings and handles.
pub struct Context {
    /// JetStream.
    pub js: jetstream::Context,
    /// Stream, subject, bucket and consumer names.
    pub names: StreamNames,
    /// How the events stream is partitioned.
    pub partitioning: Partitioning,
    /// Snapshot cadence, idle timeout, retention.
    pub lifecycle: Lifecycle,
    /// The snapshot bucket.
    pub snapshots: kv::Store,
    /// The completed-matches object store.
    pub completed: ObjectStore,
    /// The snapshot records object store (records too large for a key).
    pub records: ObjectStore,
    /// The replicas bucket (for sharing the partitions).
    pub replicas: kv::Store,
    /// Messages per batch.
    pub batch_size: usize,
    /// How long a batch waits to fill after its first message.
    pub batch_linger: std::time::Duration,
    /// The format deltas are published in.
    pub delta_format: match_stats_commands::delta::Format,
    /// Counters.
    pub stats: Arc<IngestStats>,
    /// Where confirmed deltas go for this replica's projector.
    pub handoff: Arc<Handoff>,
    /// Snapshots being encoded and written at once, across partitions
    /// ([`SNAPSHOTS_AT_ONCE`]): a partition whose snapshot is due waits for a slot.
    pub snapshot_slots: Arc<tokio::sync::Semaphore>,
}

/// Snapshots in progress at once in a replica. Each costs a burst of CPU (about 15 ms to
/// encode 125 matches of 64 players) and holds its encoded records (1.3 MB) until
/// written, and partitions fed alike fall due together (after a catch-up, all 16 at
/// once): a partition whose snapshot is due waits for a slot.
pub const SNAPSHOTS_AT_ONCE: usize = 2;
