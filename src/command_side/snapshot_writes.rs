//! A partition's snapshot store with its snapshot writes in the background
//! ([`SnapshotWrites`]). A snapshot is encoded by its partition at a batch boundary (the
//! state as of its marker), a few records between yields to the runtime
//! ([`RECORDS_PER_SLICE`]), then a task of its own writes it while the partition goes on
//! processing. Measured with 125 matches of 64 players: the bucket's round trips took
//! 57-83 ms, and every one of that partition's events used to wait for them; encoding
//! takes about 15 ms of CPU, which held a runtime thread (and every task queued on it)
//! when done in one go. (Copying the matches to encode them in the write task instead
//! spares the partition its encoding; it was measured with more RSS after a catch-up,
//! but so was the code without background writes once the post-catch-up collection is
//! missed (`crate::memory`), and it has not been measured again since that was fixed.)
//! One write at a time, in order; its outcome is settled by the partition
//! (`held::settle_finished`) at its next batch boundary or housekeeping tick.

use std::time::{Duration, Instant};

use futures::FutureExt;
use match_stats_commands::MatchId;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use super::snapshots::{Encoded, SnapshotError, SnapshotStore};

/// Records encoded between two yields to the runtime: about 0.5 ms of a runtime thread
/// with 64 players a match (about 110 µs a record), so the tasks queued behind it wait no
/// longer than that.
pub const RECORDS_PER_SLICE: usize = 4;

/// What a snapshot covers, to settle its write.
#[derive(Debug)]
pub struct Covered {
    /// The matches it carries (changed again if the write fails).
    pub changed: Vec<MatchId>,
    /// Events decided since the snapshot before it (counted again if the write fails).
    pub events: u64,
    /// When the snapshot before it was written (kept if the write fails).
    pub previous_at: Instant,
    /// Its marker's sequence.
    pub sequence: u64,
    /// Its marker's count of received messages.
    pub received: u64,
}

/// A finished write.
#[derive(Debug)]
pub struct Written {
    /// Matches written, or why not.
    pub result: Result<usize, SnapshotError>,
    /// What it covered.
    pub covered: Covered,
    /// Bytes it wrote (records and marker).
    pub bytes: usize,
    /// How long it took.
    pub took: Duration,
}

/// (The store is boxed: its NATS handles make it some 3 KB.)
enum State {
    Idle(Box<SnapshotStore>),
    Writing(JoinHandle<(Box<SnapshotStore>, Written)>),
}

/// The store, idle or writing one snapshot in the background.
pub struct SnapshotWrites {
    /// `None` only inside [`Self::start`].
    state: Option<State>,
    /// A write finished and not yet settled.
    finished: Option<Written>,
}

impl SnapshotWrites {
    /// Idle, over `store`.
    pub fn new(store: SnapshotStore) -> Self {
        SnapshotWrites {
            state: Some(State::Idle(Box::new(store))),
            finished: None,
        }
    }

    /// Whether a write is in progress.
    pub fn is_writing(&self) -> bool {
        matches!(self.state, Some(State::Writing(_)))
    }

    /// Starts writing `snapshot` in the background, holding `slot` until done. The write
    /// before it must be over (the caller checks [`Self::is_writing`], or waited with
    /// [`Self::store`]).
    pub fn start(&mut self, snapshot: Encoded, covered: Covered, slot: OwnedSemaphorePermit) {
        let Some(State::Idle(mut store)) = self.state.take() else {
            unreachable!("a snapshot write started while another is in progress")
        };
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let bytes = snapshot.bytes();
            let result = store.write(snapshot).await;
            let took = started.elapsed();
            drop(slot);
            metrics::histogram!(crate::metrics::SNAPSHOT_WRITE_SECONDS).record(took.as_secs_f64());
            let written = Written {
                result,
                covered,
                bytes,
                took,
            };
            (store, written)
        });
        self.state = Some(State::Writing(task));
    }

    /// The write finished since the last call, if any, without waiting.
    pub fn take_finished(&mut self) -> Option<Written> {
        if let Some(State::Writing(task)) = self.state.as_mut()
            && let Some(joined) = task.now_or_never()
        {
            self.joined(joined);
        }
        self.finished.take()
    }

    /// The store, once the write in progress (if any) is over; its outcome waits for
    /// [`Self::take_finished`].
    pub async fn store(&mut self) -> &mut SnapshotStore {
        if let Some(State::Writing(task)) = self.state.as_mut() {
            let joined = task.await;
            self.joined(joined);
        }
        self.idle().expect("idle once the write is over")
    }

    /// The store, if no write is in progress.
    pub fn idle(&mut self) -> Option<&mut SnapshotStore> {
        match self.state.as_mut() {
            Some(State::Idle(store)) => Some(&mut **store),
            _ => None,
        }
    }

    fn joined(&mut self, joined: Result<(Box<SnapshotStore>, Written), tokio::task::JoinError>) {
        match joined {
            Ok((store, written)) => {
                self.state = Some(State::Idle(store));
                self.finished = Some(written);
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels the task; this partition's own task
            // goes with it.
            Err(_) => unreachable!("the snapshot write was cancelled outside a shutdown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_nats::jetstream::{self, kv, object_store};
    use match_stats_commands::RULES_VERSION;

    use super::*;
    use crate::command_side::records;
    use crate::command_side::snapshots::Marker;
    use crate::nats::Partition;

    fn marker(sequence: u64) -> Marker {
        Marker {
            sequence,
            counters: Default::default(),
            written_at_ms: 0,
        }
    }

    fn slot() -> OwnedSemaphorePermit {
        std::sync::Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap()
    }

    fn covered(sequence: u64) -> Covered {
        Covered {
            changed: Vec::new(),
            events: 1,
            previous_at: Instant::now(),
            sequence,
            received: 0,
        }
    }

    #[tokio::test]
    async fn a_snapshot_is_written_in_the_background_and_its_outcome_taken_once() {
        let nats = match_stats_harness::NatsServer::start();
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let kv = js
            .create_key_value(kv::Config {
                bucket: "snapshots".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let objects = js
            .create_object_store(object_store::Config {
                bucket: "records".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let partition = Partition { n: 3, of: 16 };
        let load = || SnapshotStore::load(kv.clone(), objects.clone(), partition);
        let (store, _) = load().await.unwrap();
        let mut writes = SnapshotWrites::new(store);

        writes.start(Encoded::new(&marker(7)), covered(7), slot());
        assert!(writes.is_writing());
        assert!(
            writes.idle().is_none(),
            "the store is the write's meanwhile"
        );
        writes.store().await;
        assert!(!writes.is_writing());
        let written = writes.take_finished().expect("the write finished");
        assert_eq!(written.result.unwrap(), 0, "no match changed");
        assert_eq!(written.covered.sequence, 7);
        assert!(writes.take_finished().is_none(), "an outcome is taken once");
        let (_, restored) = load().await.unwrap();
        assert_eq!(restored.marker.unwrap().sequence, 7, "the bucket holds it");

        // Another replica writes the marker since: the next write, polled without
        // waiting, is refused as stale and the bucket keeps the other's.
        kv.put(
            partition.marker_key(),
            records::encode(&marker(9), RULES_VERSION),
        )
        .await
        .unwrap();
        writes.start(Encoded::new(&marker(8)), covered(8), slot());
        let written = loop {
            if let Some(written) = writes.take_finished() {
                break written;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        assert!(
            matches!(written.result, Err(SnapshotError::Stale { .. })),
            "{:?}",
            written.result
        );
        let (_, restored) = load().await.unwrap();
        assert_eq!(restored.marker.unwrap().sequence, 9);
    }
}
