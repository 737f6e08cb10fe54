//! Completed matches' final objects, put into the completed-matches object store: any
//! size (the object store chunks them), kept for `COMPLETED_RETENTION` so that a replica
//! without the match in memory, or a client after Redis lost it, still finds it.
//!
//! A match's object is rendered once per batch that completed or changed it after its
//! end, and put only when the store lacks that version: a replay puts nothing again.

use async_nats::jetstream::object_store::ObjectMetadata;
use match_stats_commands::MatchId;
use match_stats_commands::view::stored;
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::matches::PartitionMatches;
use crate::metrics as m;
use crate::retry::{Cancelled, Retry};

/// The object's metadata key holding the match version it was rendered at.
const VERSION: &str = "version";

/// Puts the final objects of `ids` (completed matches of `matches`), retrying until the
/// store has them.
pub async fn store(
    ctx: &Context,
    matches: &PartitionMatches,
    ids: impl IntoIterator<Item = MatchId>,
    token: &CancellationToken,
) -> Result<(), Cancelled> {
    for id in ids {
        let Some(record) = matches.record(&id) else {
            continue;
        };
        let version = record.aggregate.stats().event_count.to_string();
        Retry::new(token, "storing a completed match")
            .counted(m::PUBLISH_RETRIES)
            .run(|| {
                put(ctx, id, &version, || {
                    stored::encode(&record.aggregate.view())
                })
            })
            .await?;
    }
    Ok(())
}

async fn put(
    ctx: &Context,
    id: MatchId,
    version: &str,
    render: impl FnOnce() -> Vec<u8>,
) -> anyhow::Result<()> {
    if let Ok(info) = ctx.completed.info(id.as_str()).await
        && info.metadata.get(VERSION).map(String::as_str) == Some(version)
    {
        ctx.stats.record_deduplicated(1);
        return Ok(());
    }
    let bytes = render();
    let meta = ObjectMetadata {
        name: id.to_string(),
        metadata: [(VERSION.to_owned(), version.to_owned())].into(),
        ..Default::default()
    };
    ctx.completed.put(meta, &mut bytes.as_slice()).await?;
    metrics::counter!(m::COMPLETED_MATCHES_STORED).increment(1);
    Ok(())
}
