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
    /// Counters.
    pub stats: Arc<IngestStats>,
    /// Where confirmed deltas go for this replica's projector.
    pub handoff: Arc<Handoff>,
}
