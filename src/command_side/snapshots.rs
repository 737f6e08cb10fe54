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

use async_nats::jetstream::{kv, object_store::ObjectStore};
use bytes::Bytes;
use futures::TryStreamExt;
use match_stats_commands::{MatchId, RULES_VERSION};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::matches::MatchRecord;
use super::records::{self, Body, ObjectRef, Unreadable};
use super::stats::Counters;
use crate::metrics as m;
use crate::nats::Partition;
use crate::nats::partition::MARKER_PREFIX;

/// Prefix of per-match keys.
pub const MATCH_PREFIX: &str = "match.";
/// Prefix under which an unreadable value is set aside.
pub const QUARANTINE_PREFIX: &str = "quarantine.";

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
    /// Every readable match record.
    pub matches: HashMap<MatchId, MatchRecord>,
    /// Matches whose record was unreadable and set aside: rebuilt by replaying their
    /// events up to the marker.
    pub rebuild: Vec<MatchId>,
}

/// A snapshot encoded (its matches as of its marker's sequence), ready to be written.
#[derive(Debug)]
pub struct Encoded {
    records: Vec<EncodedRecord>,
    marker: Bytes,
}

#[derive(Debug)]
struct EncodedRecord {
    key: String,
    sequence: u64,
    value: Bytes,
}

impl Encoded {
    /// Its marker, encoded; no match yet.
    pub fn new(marker: &Marker) -> Self {
        Encoded {
            records: Vec::new(),
            marker: records::encode(marker, RULES_VERSION),
        }
    }

    /// Adds a match (one the marker claims).
    pub fn push(&mut self, record: &MatchRecord) {
        self.records.push(EncodedRecord {
            key: format!("{MATCH_PREFIX}{}", record.aggregate.match_id()),
            sequence: record.sequence,
            value: records::encode(record, RULES_VERSION),
        });
    }

    /// Bytes it holds (records and marker).
    pub fn bytes(&self) -> usize {
        self.marker.len() + self.records.iter().map(|r| r.value.len()).sum::<usize>()
    }
}

/// Reads and writes one partition's keys in the snapshot bucket, remembering the revision
/// of every key it last read or wrote: every write is a compare-and-swap on it. Records
/// too large for a key live in the records object store, the key pointing at them.
pub struct SnapshotStore {
    kv: kv::Store,
    objects: ObjectStore,
    marker_key: String,
    revisions: HashMap<String, u64>,
    /// Per key, the object its value points at (to delete once replaced).
    pointing: HashMap<String, String>,
}

fn bucket_error(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Bucket(e.to_string())
}

/// Why a value could not be read back: the bucket (retry) or the value (set it aside).
enum ReadError {
    Bucket(SnapshotError),
    Unreadable(Unreadable),
}

impl From<Unreadable> for ReadError {
    fn from(e: Unreadable) -> Self {
        ReadError::Unreadable(e)
    }
}

impl SnapshotStore {
    /// Loads a partition's marker and the records of its matches, with their revisions.
    /// An unreadable value (junk, another version, a missing object) is set aside under
    /// `quarantine.<key>`, counted and logged; the partition goes on without it.
    pub async fn load(
        kv: kv::Store,
        objects: ObjectStore,
        partition: Partition,
    ) -> Result<(SnapshotStore, Restored), SnapshotError> {
        let mut store = SnapshotStore {
            kv,
            objects,
            marker_key: partition.marker_key(),
            revisions: HashMap::new(),
            pointing: HashMap::new(),
        };
        let mut restored = Restored::default();
        let keys: Vec<String> = store
            .kv
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
        let mut other_rules = 0;
        for key in keys {
            let id = key
                .strip_prefix(MATCH_PREFIX)
                .and_then(|id| MatchId::parse(id).ok());
            let ours = key == store.marker_key || id.is_some_and(|id| partition.holds(id.as_str()));
            if !ours {
                continue;
            }
            let Some(entry) = store.kv.entry(key.as_str()).await.map_err(bucket_error)? else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            store.revisions.insert(key.clone(), entry.revision);
            if key == store.marker_key {
                match store.read::<Marker>(&key, &entry.value).await {
                    Ok((marker, _)) => restored.marker = Some(marker),
                    Err(ReadError::Bucket(e)) => return Err(e),
                    Err(ReadError::Unreadable(e)) => {
                        // Without a marker, the partition is replayed from the start.
                        store.quarantine(&key, entry.value, &e).await?;
                    }
                }
                continue;
            }
            let id = id.expect("a match key");
            match store.read::<MatchRecord>(&key, &entry.value).await {
                Ok((record, rules)) if record.aggregate.match_id() == id => {
                    other_rules += usize::from(rules != RULES_VERSION);
                    restored.matches.insert(id, record);
                }
                Ok(_) => {
                    let e = Unreadable("the record is of another match".into());
                    store.quarantine(&key, entry.value, &e).await?;
                    restored.rebuild.push(id);
                }
                Err(ReadError::Bucket(e)) => return Err(e),
                Err(ReadError::Unreadable(e)) => {
                    store.quarantine(&key, entry.value, &e).await?;
                    restored.rebuild.push(id);
                }
            }
        }
        if other_rules > 0 {
            tracing::info!(%partition, matches = other_rules, rules = RULES_VERSION, "restored matches built by another rules version (README: Upgrading)");
        }
        match &restored.marker {
            None if !repartitioned => {
                // Records written before any marker was: replay from the stream's start.
                // (After a change of the partition count, the records are kept: each
                // carries its own sequence, and the new partitions' subjects hold only
                // newer events.)
                restored.matches.clear();
                restored.rebuild.clear();
            }
            None => {}
            Some(marker) => {
                store.roll_back_to(marker.sequence, &mut restored).await?;
            }
        }
        Ok((store, restored))
    }

    /// Reads a value: inline, or from the records object store.
    async fn read<T: DeserializeOwned>(
        &mut self,
        key: &str,
        value: &[u8],
    ) -> Result<(T, u32), ReadError> {
        match records::decode::<T>(value)? {
            Body::Inline(value, rules) => Ok((value, rules)),
            Body::Object(object) => {
                let bytes = self.fetch(&object).await?;
                self.pointing.insert(key.to_owned(), object.name);
                Ok(records::decode_inline(&bytes)?)
            }
        }
    }

    async fn fetch(&self, object: &ObjectRef) -> Result<Vec<u8>, ReadError> {
        use async_nats::jetstream::object_store::GetErrorKind;
        use tokio::io::AsyncReadExt;
        if object.size as usize > records::MAX_DECODED_BYTES {
            return Err(Unreadable(format!("object of {} bytes", object.size)).into());
        }
        let mut reader = match self.objects.get(&object.name).await {
            Ok(reader) => reader,
            Err(e) if e.kind() == GetErrorKind::NotFound => {
                return Err(Unreadable(format!("object {} is missing", object.name)).into());
            }
            Err(e) => return Err(ReadError::Bucket(bucket_error(e))),
        };
        let mut bytes = Vec::with_capacity(object.size as usize);
        reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| ReadError::Bucket(bucket_error(e)))?;
        Ok(bytes)
    }

    /// Sets an unreadable value aside under `quarantine.<key>` and removes the key (if
    /// nobody wrote it since): counted and logged once.
    async fn quarantine(
        &mut self,
        key: &str,
        value: Bytes,
        error: &Unreadable,
    ) -> Result<(), SnapshotError> {
        metrics::counter!(m::SNAPSHOT_QUARANTINED).increment(1);
        tracing::error!(key, %error, "an unreadable snapshot value; set aside under {QUARANTINE_PREFIX}{key}, the partition goes on without it");
        self.kv
            .put(format!("{QUARANTINE_PREFIX}{key}"), value)
            .await
            .map_err(bucket_error)?;
        if let Some(revision) = self.revisions.remove(key) {
            let _ = self.kv.delete_expect_revision(key, Some(revision)).await;
        }
        Ok(())
    }

    /// A snapshot writes its matches, then the marker: records newer than the marker were
    /// written by a snapshot that stopped before its marker. Each is replaced by the
    /// revision before it (the bucket keeps two), which the marker covers, or dropped if
    /// it has none; the replay from the marker decides their events again, so the
    /// matches and the marker's counts stay consistent.
    async fn roll_back_to(
        &mut self,
        sequence: u64,
        restored: &mut Restored,
    ) -> Result<(), SnapshotError> {
        let ahead: Vec<MatchId> = restored
            .matches
            .values()
            .filter(|r| r.sequence > sequence)
            .map(|r| r.aggregate.match_id())
            .collect();
        for id in &ahead {
            let key = format!("{MATCH_PREFIX}{id}");
            let history: Vec<kv::Entry> = self
                .kv
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
                match self.read::<MatchRecord>(&key, &entry.value).await {
                    Ok((record, _)) if record.sequence <= sequence => {
                        older = Some(record);
                        break;
                    }
                    Ok(_) => {}
                    Err(ReadError::Bucket(e)) => return Err(e),
                    Err(ReadError::Unreadable(_)) => {
                        restored.rebuild.push(*id);
                        break;
                    }
                }
            }
            match older {
                Some(record) => restored.matches.insert(*id, record),
                None => restored.matches.remove(id),
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

    /// A partition's marker, as the bucket holds it now (`None` when absent or
    /// unreadable).
    pub async fn read_marker(
        kv: &kv::Store,
        partition: Partition,
    ) -> Result<Option<Marker>, SnapshotError> {
        let value = kv.get(partition.marker_key()).await.map_err(bucket_error)?;
        Ok(value.and_then(|v| match records::decode::<Marker>(&v) {
            Ok(Body::Inline(marker, _)) => Some(marker),
            _ => None,
        }))
    }

    /// One match's record, as the bucket holds it now (a completed match that left memory,
    /// reloaded when an event of it arrives); `None` when there is none or it is
    /// unreadable.
    pub async fn read_record(
        &mut self,
        id: &MatchId,
    ) -> Result<Option<MatchRecord>, SnapshotError> {
        let key = format!("{MATCH_PREFIX}{id}");
        let Some(entry) = self.kv.entry(key.as_str()).await.map_err(bucket_error)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        self.revisions.insert(key.clone(), entry.revision);
        match self.read::<MatchRecord>(&key, &entry.value).await {
            Ok((record, _)) => Ok(Some(record)),
            Err(ReadError::Bucket(e)) => Err(e),
            Err(ReadError::Unreadable(e)) => {
                self.quarantine(&key, entry.value, &e).await?;
                Ok(None)
            }
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

    /// Writes an encoded snapshot: its matches, then its marker, each with
    /// compare-and-swap on the revision this store last saw (create for a new key).
    /// Returns how many matches were written.
    pub async fn write(&mut self, snapshot: Encoded) -> Result<usize, SnapshotError> {
        let mut written = 0;
        let mut inline_records = Vec::new();
        for record in snapshot.records {
            if record.value.len() <= records::INLINE_LIMIT {
                inline_records.push((record.key, record.value));
            } else {
                // Too large for a key: the object holds it, the key points at it. Its
                // name carries the sequence, so a stale writer never overwrites the
                // object a current key points at.
                let object = ObjectRef {
                    name: format!("{}.{}", record.key, record.sequence),
                    size: record.value.len() as u64,
                };
                self.objects
                    .put(object.name.as_str(), &mut record.value.as_ref())
                    .await
                    .map_err(bucket_error)?;
                let replaced = self
                    .pointing
                    .insert(record.key.clone(), object.name.clone());
                self.swap(record.key, records::encode_ref(&object)).await?;
                if let Some(old) = replaced.filter(|old| *old != object.name) {
                    let _ = self.objects.delete(&old).await;
                }
                written += 1;
            }
            if inline_records.len() == SWAPS_IN_FLIGHT {
                written += inline_records.len();
                self.swap_all(std::mem::take(&mut inline_records)).await?;
            }
        }
        written += inline_records.len();
        self.swap_all(inline_records).await?;
        // The marker last: it claims every record above is written.
        self.swap(self.marker_key.clone(), snapshot.marker).await?;
        Ok(written)
    }

    async fn swap(&mut self, key: String, value: Bytes) -> Result<(), SnapshotError> {
        self.swap_all(vec![(key, value)]).await
    }

    /// [`Self::swap`] for several keys at once (the caller keeps them to
    /// [`SWAPS_IN_FLIGHT`]): a snapshot of a partition's changed matches costs a few round
    /// trips, not one per match (the partition waits for it). Every key written is
    /// remembered even when another fails, so that a retry expects the revisions the
    /// bucket now holds.
    async fn swap_all(&mut self, entries: Vec<(String, Bytes)>) -> Result<(), SnapshotError> {
        let swaps = entries.iter().map(|(key, value)| {
            let expected = self.revisions.get(key).copied();
            swap_one(&self.kv, key, value.clone(), expected)
        });
        let results = futures::future::join_all(swaps).await;
        let mut first_error = None;
        for ((key, _), result) in entries.into_iter().zip(results) {
            match result {
                Ok(revision) => {
                    self.revisions.insert(key, revision);
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes a match's record (its events have aged out of the stream), if it is still
    /// the one this store wrote.
    pub async fn forget(&mut self, id: &MatchId) -> Result<(), SnapshotError> {
        let key = format!("{MATCH_PREFIX}{id}");
        let Some(revision) = self.revisions.remove(&key) else {
            return Ok(());
        };
        self.kv
            .delete_expect_revision(&key, Some(revision))
            .await
            .map_err(bucket_error)?;
        if let Some(object) = self.pointing.remove(&key) {
            let _ = self.objects.delete(&object).await;
        }
        Ok(())
    }
}

/// Key-value writes of one snapshot in flight at once (and records held encoded).
const SWAPS_IN_FLIGHT: usize = 16;

/// Writes `key` if it is still at `expected` (created when `None`): its new revision, or
/// [`SnapshotError::Stale`] when another writer got there first. A write that timed out
/// may still have been stored (a node lost mid-request): when the key holds exactly
/// what this write carried, it is this writer's, not another's.
async fn swap_one(
    kv: &kv::Store,
    key: &str,
    value: Bytes,
    expected: Option<u64>,
) -> Result<u64, SnapshotError> {
    // Only a conflict goes on past this match.
    match expected {
        None => match kv.create(key, value.clone()).await {
            Ok(revision) => return Ok(revision),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(bucket_error(e)),
        },
        Some(revision) => match kv.update(key, value.clone(), revision).await {
            Ok(revision) => return Ok(revision),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
            Err(e) => return Err(bucket_error(e)),
        },
    }
    match kv.entry(key).await.map_err(bucket_error)? {
        Some(entry) if entry.value == value && expected.is_none_or(|r| entry.revision > r) => {
            Ok(entry.revision)
        }
        _ => Err(SnapshotError::Stale {
            key: key.to_owned(),
            expected,
        }),
    }
}
