//! The command side: events in, aggregates updated, effects out.
//!
//! Each partition of the events stream has a durable pull consumer whose priority group
//! pins one client: every replica pulls every partition, and NATS delivers a partition's
//! events to one replica at a time (its writer), moving the pin to another when the
//! writer stops pulling for `PARTITION_PIN_TIMEOUT`. [`Ingest`] runs one
//! [`writer::PartitionWriter`] per partition and the balancer.
//!
//! Where things happen:
//! - `writer`: a partition's loop (pull, housekeeping tick, cancel; a new pin means
//!   catching up first);
//! - `batch`: one batch, decided, published, acknowledged and counted (live and replay);
//! - `matches`: the matches in memory and the decision for one message, with its effects;
//! - `publisher`: effects published until confirmed, trimmed of what the streams hold;
//! - `completed`: completed matches' final objects into the object store;
//! - `recovery`: restore from the snapshot and replay; catch up on becoming the writer;
//! - `held`: a partition in memory, its snapshot and its release;
//! - `snapshot_writes`: the partition's snapshot written in the background;
//! - `snapshots`: the compare-and-swap fenced snapshot store; `records`: its versioned
//!   envelope;
//! - `housekeeping`: consumer figures, pin checks, snapshots due, idle matches, eviction;
//! - `balance`: sharing the partitions among replicas;
//! - `stats`: the counters; `context`: what every part reads.

mod balance;
mod batch;
mod completed;
mod context;
mod delta_batch;
mod held;
mod housekeeping;
mod matches;
mod publisher;
mod records;
mod recovery;
mod snapshot_writes;
mod snapshots;
pub mod stats;
mod writer;

use std::sync::Arc;

use async_nats::jetstream::{self, consumer};
use tokio_util::sync::CancellationToken;

pub use context::Context;
pub use matches::{
    HEADER_DETAIL, HEADER_REASON, HEADER_SOURCE_SEQUENCE, HEADER_SOURCE_STREAM,
    HEADER_SOURCE_SUBJECT, idle_end_event_id,
};
pub use snapshots::MATCH_PREFIX;
pub use stats::{ConsumerLag, IngestCounts, IngestStats};

use crate::config::Config;
use crate::handoff::Handoff;
use crate::nats::Partitioning;
use crate::nats::streams::Provisioned;

/// The command side, built and ready to run.
pub struct Ingest {
    ctx: Arc<Context>,
    consumers: Vec<consumer::Consumer<consumer::pull::Config>>,
}

impl Ingest {
    /// The command side of `config`, over the provisioned consumers and buckets.
    pub fn new(
        config: &Config,
        js: jetstream::Context,
        provisioned: Provisioned,
        stats: Arc<IngestStats>,
        handoff: Arc<Handoff>,
    ) -> Self {
        held::Release::register_counters();
        metrics::gauge!(crate::metrics::DELTA_FORMAT).set(f64::from(config.delta_format.version()));
        let ctx = Context {
            js,
            completed: provisioned.completed,
            records: provisioned.records,
            names: config.streams.clone(),
            partitioning: Partitioning::of(&config.streams),
            lifecycle: config.lifecycle.clone(),
            snapshots: provisioned.snapshots,
            replicas: provisioned.replicas,
            batch_size: config.batch_size as usize,
            batch_linger: config.batch_linger,
            delta_format: config.delta_format,
            stats,
            handoff,
            snapshot_slots: Arc::new(tokio::sync::Semaphore::new(context::SNAPSHOTS_AT_ONCE)),
        };
        Ingest {
            ctx: Arc::new(ctx),
            consumers: provisioned.consumers,
        }
    }

    /// Runs one loop per partition, and the balancer, until cancelled or one fails.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        let mut loops = tokio::task::JoinSet::new();
        for (partition, consumer) in self.ctx.partitioning.all().zip(self.consumers) {
            let writer =
                writer::PartitionWriter::new(self.ctx.clone(), partition, consumer, token.clone());
            loops.spawn(writer.run());
        }
        let ctx = self.ctx.clone();
        loops.spawn(async move { balance::run(&ctx, token).await });
        while let Some(ended) = loops.join_next().await {
            ended??;
        }
        Ok(())
    }
}
