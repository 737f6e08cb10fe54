//! Snapshots of the command side in a JetStream key-value bucket.
//!
//! One key per match (`match.<id>`: the aggregate, dedup window included, with the last
//! stream sequence applied to it) and one marker per partition (`partition.<P>.<n>`: the
//! sequence up to which every match of partition `n` of `P` has its state in the bucket,
//! and the partition's ingest counters). A snapshot writes the changed matches, then the
//! marker, every key with compare-and-swap on the revision this writer last saw: a writer
//! that another replica has overtaken fails with [`SnapshotError::Stale`] at the first key
//! the other wrote, and gives the partition up. Recovery replays the partition from the
//! marker's sequence + 1, skipping for each match what its own record already holds. A
//! record newer than the marker (a snapshot stopped between them) is rolled back to the
//! revision before it, so the matches never run ahead of the marker's counts.

use std::collections::HashMap;

use async_nats::jetstream::kv;
use futures::TryStreamExt;
use match_stats_commands::MatchId;
use serde::{Deserialize, Serialize};

use super::matches::MatchRecord;
use super::stats::Counters;
use crate::nats::Partition;
use crate::nats::partition::MARKER_PREFIX;

/// Prefix of per-match keys.
pub const MATCH_PREFIX: &str = "match.";

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
    /// Another writer wrote a key since this one last did: this writer is stale.
    #[error(
        "stale writer: snapshot key {key} was written by another instance (expected revision {expected:?})"
    )]
    Stale {
        /// The key.
        key: String,
        /// The revision this writer expected (none: it expected no key).
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
    pub matches: HashMap<MatchId, MatchRecord>,
}

/// Reads and writes one partition's keys in the snapshot bucket, remembering the revision
/// of every key it last read or wrote: every write is a compare-and-swap on it.
pub struct SnapshotStore {
    kv: kv::Store,
    marker_key: String,
    revisions: HashMap<String, u64>,
}

fn encode<T: Serialize>(value: &T) -> bytes::Bytes {
    let packed = rmp_serde::to_vec_named(value).expect("snapshots serialize");
    lz4_flex::compress_prepend_size(&packed).into()
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, SnapshotError> {
    let packed = lz4_flex::decompress_size_prepended(bytes).map_err(bucket_error)?;
    rmp_serde::from_slice(&packed).map_err(bucket_error)
}

fn bucket_error(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Bucket(e.to_string())
}

impl SnapshotStore {
    /// Loads a partition's marker and the records of its matches, with their revisions.
    pub async fn load(
        kv: kv::Store,
        partition: Partition,
    ) -> Result<(SnapshotStore, Restored), SnapshotError> {
        let marker_key = partition.marker_key();
        let mut restored = Restored::default();
        let mut revisions = HashMap::new();
        let keys: Vec<String> = kv
            .keys()
            .await
            .map_err(bucket_error)?
            .try_collect()
            .await
            .map_err(bucket_error)?;
        let this_count = format!("{MARKER_PREFIX}{}.", partition.of);
        let repartitioned = keys
            .iter()
            .any(|k| k.starts_with(MARKER_PREFIX) && !k.starts_with(&this_count));
        for key in keys {
            let ours = key == marker_key
                || key
                    .strip_prefix(MATCH_PREFIX)
                    .is_some_and(|id| partition.holds(id));
            if !ours {
                continue;
            }
            let Some(entry) = kv.entry(key.as_str()).await.map_err(bucket_error)? else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            revisions.insert(key.clone(), entry.revision);
            if key == marker_key {
                restored.marker = Some(decode(&entry.value)?);
            } else {
                let record: MatchRecord = decode(&entry.value)?;
                restored.matches.insert(record.aggregate.match_id(), record);
            }
        }
        match &restored.marker {
            None if !repartitioned => {
                // Records written before any marker was: replay from the stream's start.
                // (After a change of the partition count, the records are kept: each
                // carries its own sequence, and the new partitions' subjects hold only
                // newer events.)
                restored.matches.clear();
            }
            None => {}
            Some(marker) => {
                Self::roll_back_to(&kv, marker.sequence, &mut restored.matches).await?;
            }
        }
        Ok((
            SnapshotStore {
                kv,
                marker_key,
                revisions,
            },
            restored,
        ))
    }

    /// A snapshot writes its matches, then the marker: records newer than the marker were
    /// written by a snapshot that stopped before its marker. Each is replaced by the
    /// revision before it (the bucket keeps two), which the marker covers, or dropped if
    /// it has none; the replay from the marker decides their events again, so the
    /// matches and the marker's counts stay consistent.
    async fn roll_back_to(
        kv: &kv::Store,
        sequence: u64,
        matches: &mut HashMap<MatchId, MatchRecord>,
    ) -> Result<(), SnapshotError> {
        let ahead: Vec<MatchId> = matches
            .values()
            .filter(|r| r.sequence > sequence)
            .map(|r| r.aggregate.match_id())
            .collect();
        for id in &ahead {
            let key = format!("{MATCH_PREFIX}{id}");
            let history: Vec<kv::Entry> = kv
                .history(key.as_str())
                .await
                .map_err(bucket_error)?
                .try_collect()
                .await
                .map_err(bucket_error)?;
            let mut older = None;
            for entry in history.iter().rev().skip(1) {
                if entry.operation != kv::Operation::Put {
                    break;
                }
                let record: MatchRecord = decode(&entry.value)?;
                if record.sequence <= sequence {
                    older = Some(record);
                    break;
                }
            }
            match older {
                Some(record) => matches.insert(*id, record),
                None => matches.remove(id),
            };
        }
        if !ahead.is_empty() {
            tracing::info!(
                matches = ahead.len(),
                marker = sequence,
                "a snapshot had stopped before its marker; those matches restart from their previous records"
            );
        }
        Ok(())
    }

    /// A partition's marker, as the bucket holds it now.
    pub async fn read_marker(
        kv: &kv::Store,
        partition: Partition,
    ) -> Result<Option<Marker>, SnapshotError> {
        match kv.get(partition.marker_key()).await.map_err(bucket_error)? {
            Some(value) => decode(&value).map(Some),
            None => Ok(None),
        }
    }

    /// Whether the partition's marker is still the one this store last read or wrote (no
    /// other replica has snapshotted the partition since).
    pub async fn is_current(&self) -> Result<bool, SnapshotError> {
        let revision = self
            .kv
            .entry(self.marker_key.as_str())
            .await
            .map_err(bucket_error)?
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| e.revision);
        Ok(revision == self.revisions.get(&self.marker_key).copied())
    }

    /// Writes the given matches, then the marker, each with compare-and-swap on the
    /// revision this store last saw (create for a new key). Returns how many matches were
    /// written.
    pub async fn write<'a>(
        &mut self,
        changed: impl IntoIterator<Item = &'a MatchRecord>,
        marker: &Marker,
    ) -> Result<usize, SnapshotError> {
        let mut written = 0;
        for record in changed {
            let key = format!("{MATCH_PREFIX}{}", record.aggregate.match_id());
            self.swap(key, encode(record)).await?;
            written += 1;
        }
        self.swap(self.marker_key.clone(), encode(marker)).await?;
        Ok(written)
    }

    async fn swap(&mut self, key: String, value: bytes::Bytes) -> Result<(), SnapshotError> {
        let expected = self.revisions.get(&key).copied();
        let stale = |key: &str| SnapshotError::Stale {
            key: key.to_owned(),
            expected,
        };
        let revision = match expected {
            None => self
                .kv
                .create(&key, value)
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => stale(&key),
                    _ => bucket_error(e),
                })?,
            Some(revision) => {
                self.kv
                    .update(&key, value, revision)
                    .await
                    .map_err(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => stale(&key),
                        _ => bucket_error(e),
                    })?
            }
        };
        self.revisions.insert(key, revision);
        Ok(())
    }

    /// Removes a match's record (after it left memory), if it is still the one this store
    /// wrote.
    pub async fn forget(&mut self, id: &MatchId) -> Result<(), SnapshotError> {
        let key = format!("{MATCH_PREFIX}{id}");
        let Some(revision) = self.revisions.remove(&key) else {
            return Ok(());
        };
        self.kv
            .delete_expect_revision(&key, Some(revision))
            .await
            .map_err(bucket_error)
    }
}
