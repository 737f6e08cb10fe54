//! Snapshots of the command side in a JetStream key-value bucket.
//!
//! One key per match (`match.<id>`: the aggregate, dedup window included, with the last
//! stream sequence applied to it) and one marker per partition (`partition.0`: the
//! sequence up to which every match's state is in the bucket, and the ingest counters).
//! A snapshot writes the changed matches, then the marker with compare-and-swap on its
//! revision: a writer whose marker revision is stale (another instance wrote since) fails
//! with [`SnapshotError::Stale`] and must stop. Recovery replays the events stream from
//! the marker's sequence + 1, skipping for each match what its own record already holds.

use std::collections::HashMap;

use async_nats::jetstream::kv;
use futures::TryStreamExt;
use match_stats_commands::{Match, MatchId};
use serde::{Deserialize, Serialize};

/// The marker key of the (single, until partitioning) partition.
pub const MARKER_KEY: &str = "partition.0";
/// Prefix of per-match keys.
pub const MATCH_PREFIX: &str = "match.";

/// One match in memory: its aggregate and where in the stream it stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tracked {
    /// The aggregate.
    pub aggregate: Match,
    /// The last events stream sequence applied to it.
    pub sequence: u64,
    /// When the stream stored the last event applied to it (for idle and retention).
    pub stored_at_ms: i64,
}

/// Ingest counters carried across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Messages processed.
    pub received: u64,
    /// Events applied.
    pub applied: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Rejections, indexed like `Reason::ALL`.
    pub rejected: [u64; 7],
}

/// The partition marker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    /// Every match's state up to this events stream sequence is in the bucket.
    pub sequence: u64,
    /// Counters as of `sequence`.
    pub counters: Counters,
    /// Wall-clock time of the write, Unix milliseconds (for the snapshot-age metric).
    pub written_at_ms: i64,
}

/// Why a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Another writer updated the marker since this one last did: this writer is stale.
    #[error(
        "stale writer: the snapshot marker was updated by another instance (expected revision {expected:?})"
    )]
    Stale {
        /// The revision this writer expected.
        expected: Option<u64>,
    },
    /// The bucket could not be read or written (NATS unavailable...).
    #[error("snapshot bucket: {0}")]
    Bucket(String),
}

/// What recovery starts from.
#[derive(Debug, Default)]
pub struct Restored {
    /// The marker, if a snapshot was ever written.
    pub marker: Option<Marker>,
    /// Every match record.
    pub matches: HashMap<MatchId, Tracked>,
}

/// Reads and writes the snapshot bucket, remembering the marker revision it last saw.
pub struct SnapshotStore {
    kv: kv::Store,
    revision: Option<u64>,
}

fn encode<T: Serialize>(value: &T) -> bytes::Bytes {
    let packed = rmp_serde::to_vec_named(value).expect("snapshots serialize");
    lz4_flex::compress_prepend_size(&packed).into()
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, SnapshotError> {
    let packed = lz4_flex::decompress_size_prepended(bytes)
        .map_err(|e| SnapshotError::Bucket(e.to_string()))?;
    rmp_serde::from_slice(&packed).map_err(|e| SnapshotError::Bucket(e.to_string()))
}

fn bucket_error(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Bucket(e.to_string())
}

impl SnapshotStore {
    /// Loads the marker and every match record.
    pub async fn load(kv: kv::Store) -> Result<(SnapshotStore, Restored), SnapshotError> {
        let mut restored = Restored::default();
        let mut revision = None;
        if let Some(entry) = kv.entry(MARKER_KEY).await.map_err(bucket_error)?
            && entry.operation == kv::Operation::Put
        {
            revision = Some(entry.revision);
            restored.marker = Some(decode(&entry.value)?);
        }
        if restored.marker.is_some() {
            let keys: Vec<String> = kv
                .keys()
                .await
                .map_err(bucket_error)?
                .try_collect()
                .await
                .map_err(bucket_error)?;
            for key in keys.iter().filter(|k| k.starts_with(MATCH_PREFIX)) {
                if let Some(value) = kv.get(key).await.map_err(bucket_error)? {
                    let tracked: Tracked = decode(&value)?;
                    restored
                        .matches
                        .insert(tracked.aggregate.match_id(), tracked);
                }
            }
        }
        Ok((SnapshotStore { kv, revision }, restored))
    }

    /// Writes the given matches, then the marker (compare-and-swap). Returns how many
    /// matches were written.
    pub async fn write<'a>(
        &mut self,
        changed: impl IntoIterator<Item = &'a Tracked>,
        marker: &Marker,
    ) -> Result<usize, SnapshotError> {
        let mut written = 0;
        for tracked in changed {
            let key = format!("{MATCH_PREFIX}{}", tracked.aggregate.match_id());
            self.kv
                .put(key, encode(tracked))
                .await
                .map_err(bucket_error)?;
            written += 1;
        }
        let value = encode(marker);
        let revision = match self.revision {
            None => self
                .kv
                .create(MARKER_KEY, value)
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => SnapshotError::Stale { expected: None },
                    _ => bucket_error(e),
                })?,
            Some(expected) => {
                self.kv
                    .update(MARKER_KEY, value, expected)
                    .await
                    .map_err(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => SnapshotError::Stale {
                            expected: Some(expected),
                        },
                        _ => bucket_error(e),
                    })?
            }
        };
        self.revision = Some(revision);
        Ok(written)
    }

    /// Removes a match's record (after it left memory).
    pub async fn forget(&self, id: &MatchId) -> Result<(), SnapshotError> {
        self.kv
            .delete(format!("{MATCH_PREFIX}{id}"))
            .await
            .map_err(bucket_error)
    }
}
