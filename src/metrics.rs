//! Every Prometheus series the service records: its name and its description (HELP), in
//! one table, registered once at start ([`describe`]). The read side's own series are in
//! `match_stats_queries::metrics`; [`describe`] registers those too.
//!
//! Code records a series through these constants, never a string literal, so a name
//! lives in one place.

use match_stats_queries::metrics::{DESCRIPTIONS as QUERY_SIDE, Kind};

/// Messages decided (the original service's name).
pub const EVENTS_RECEIVED: &str = "match_stats_events_received_total";
/// Events applied (the original service's name).
pub const EVENTS_PROCESSED: &str = "match_stats_events_processed_total";
/// Events dropped as duplicates.
pub const EVENTS_DUPLICATE: &str = "match_stats_events_duplicate_total";
/// Events rejected, by reason.
pub const EVENTS_REJECTED: &str = "match_stats_events_rejected_total";
/// Events parked: their effects could never be stored.
pub const EVENTS_PARKED: &str = "match_stats_events_parked_total";
/// Effects the streams refused for good (over a size limit).
pub const EFFECTS_PARKED: &str = "match_stats_effects_parked_total";
/// Redelivered or replayed messages already decided.
pub const REDELIVERED_SKIPPED: &str = "match_stats_redelivered_skipped_total";
/// Dead letters stored, by reason.
pub const DEAD_LETTERS: &str = "match_stats_dead_letters_total";
/// Delta messages stored.
pub const DELTAS_PUBLISHED: &str = "match_stats_deltas_published_total";
/// Delta entries in them.
pub const DELTA_ENTRIES_PUBLISHED: &str = "match_stats_delta_entries_published_total";
/// Effects a stream already held.
pub const EFFECTS_DEDUPLICATED: &str = "match_stats_effects_deduplicated_total";
/// Completed matches put into the completed-matches bucket.
pub const COMPLETED_MATCHES_STORED: &str = "match_stats_completed_matches_stored_total";
/// `match_end`s published for idle matches.
pub const IDLE_MATCHES_ENDED: &str = "match_stats_idle_matches_ended_total";
/// Retries of a batch's effects.
pub const PUBLISH_RETRIES: &str = "match_stats_publish_retries_total";
/// Seconds per batch (the original service's name).
pub const PROCESSING_LATENCY: &str = "match_stats_processing_latency";
/// Consumer figures, all partitions summed.
pub const CONSUMER_PENDING: &str = "match_stats_consumer_pending";
/// See [`CONSUMER_PENDING`].
pub const CONSUMER_ACK_PENDING: &str = "match_stats_consumer_ack_pending";
/// See [`CONSUMER_PENDING`].
pub const CONSUMER_REDELIVERED: &str = "match_stats_consumer_redelivered";
/// Partitions taken.
pub const PARTITION_ACQUISITIONS: &str = "match_stats_partition_acquisitions_total";
/// Partitions given up, by reason.
pub const PARTITION_RELEASES: &str = "match_stats_partition_releases_total";
/// Failed attempts to restore or catch up on a partition.
pub const PARTITION_RESTORE_RETRIES: &str = "match_stats_partition_restore_retries_total";
/// Deliveries to this replica that never arrived, read again, by consumer (`events`,
/// `history`).
pub const DELIVERIES_LOST: &str = "match_stats_deliveries_lost_total";
/// Per partition written here: seconds since a batch was last confirmed.
pub const PARTITION_SECONDS_SINCE_PROGRESS: &str = "match_stats_partition_seconds_since_progress";
/// Per partition written here: failed attempts in a row of its current publish or
/// restore.
pub const PARTITION_RETRY_STREAK: &str = "match_stats_partition_retry_streak";
/// Per partition written here: 1 when stalled.
pub const PARTITION_STALLED: &str = "match_stats_partition_stalled";
/// Live replicas.
pub const REPLICAS_LIVE: &str = "match_stats_replicas_live";
/// Matches in memory (the original service's name).
pub const MATCHES_ACTIVE: &str = "match_stats_matches_active";
/// Completed matches in memory.
pub const MATCHES_COMPLETED: &str = "match_stats_matches_completed";
/// Completed matches that left the command side's memory.
pub const MATCHES_EVICTED: &str = "match_stats_matches_evicted_total";
/// Completed matches brought back into memory by a late event.
pub const MATCHES_RELOADED: &str = "match_stats_matches_reloaded_total";
/// Snapshots written.
pub const SNAPSHOTS_WRITTEN: &str = "match_stats_snapshots_written_total";
/// Snapshot writes that failed.
pub const SNAPSHOT_ERRORS: &str = "match_stats_snapshot_errors_total";
/// Snapshot writes refused because another replica wrote first.
pub const SNAPSHOT_STALE: &str = "match_stats_snapshot_stale_total";
/// Unreadable snapshot values set aside.
pub const SNAPSHOT_QUARANTINED: &str = "match_stats_snapshot_quarantined_total";
/// Seconds per snapshot write, in the background of its partition.
pub const SNAPSHOT_WRITE_SECONDS: &str = "match_stats_snapshot_write_seconds";
/// Age of the last snapshot.
pub const SNAPSHOT_AGE: &str = "match_stats_snapshot_age_seconds";
/// Recoveries that needed events gone from the stream.
pub const RECOVERY_GAPS: &str = "match_stats_recovery_gaps_total";
/// Messages on the deltas stream that are not deltas.
pub const DELTAS_UNDECODABLE: &str = "match_stats_deltas_undecodable_total";
/// Deltas the projector read, by how it got them (`handed_off`, `decoded`).
pub const DELTAS_PROJECTED: &str = "match_stats_deltas_projected_total";
/// Deltas the projector could not apply.
pub const DELTA_GAPS: &str = "match_stats_delta_gaps_total";
/// Matches the projector rebuilt from their deltas after an error.
pub const PROJECTION_RESYNCS: &str = "match_stats_projection_resyncs_total";
/// Matches in the read model.
pub const READ_MODEL_MATCHES: &str = "match_stats_read_model_matches";
/// Delta messages stored and not yet read into the read model.
pub const READ_MODEL_PENDING: &str = "match_stats_read_model_pending_deltas";
/// Players in the read model.
pub const PLAYERS_HELD: &str = "match_stats_players_held";
/// Players and matches held, over what the replica is sized for.
pub const CAPACITY_USED_RATIO: &str = "match_stats_capacity_used_ratio";
/// Completed matches that left the read model.
pub const READ_MODEL_EVICTED: &str = "match_stats_read_model_evicted_total";
/// Redis write-through results.
pub const CACHE_WRITES: &str = "match_stats_cache_writes_total";
/// Failed Redis writes.
pub const REDIS_ERRORS: &str = "match_stats_redis_errors_total";
/// The Redis circuit breaker: 0 closed, 1 half-open, 2 open.
pub const CACHE_CIRCUIT_STATE: &str = "match_stats_cache_circuit_state";

/// Events waiting in each partition's consumer.
pub const PARTITION_PENDING: &str = "match_stats_partition_pending";
/// 1 while `/ready` says ready, 0 otherwise (as of its last call: the probes').
pub const READY: &str = "match_stats_ready";
/// 1, labelled with the version and the commit built from.
pub const BUILD_INFO: &str = "match_stats_build_info";
/// The delta format this process publishes (2 or 3).
pub const DELTA_FORMAT: &str = "match_stats_delta_format";

/// Completed matches the history writer wrote (newer than what the table held).
pub const HISTORY_MATCHES_WRITTEN: &str = "match_stats_history_matches_written_total";
/// Deltas waiting for the history writer.
pub const HISTORY_LAG: &str = "match_stats_history_lag_messages";
/// Seconds per history batch write.
pub const HISTORY_WRITE_DURATION: &str = "match_stats_history_write_duration_seconds";
/// History batch writes retried (the database away).
pub const HISTORY_WRITE_RETRIES: &str = "match_stats_history_write_retries_total";
/// Completed matches no source could give the history writer.
pub const HISTORY_UNRESOLVED: &str = "match_stats_history_unresolved_total";
/// Matches backfilled from the completed-matches bucket.
pub const HISTORY_BACKFILL_DONE: &str = "match_stats_history_backfill_matches";

/// Seconds per return of a runtime thread's free allocator pages to the system.
pub const MEMORY_COLLECTION_SECONDS: &str = "match_stats_memory_collection_seconds";

/// 1 while the read model's projection runs on a thread at a lower CPU priority (ingest
/// catching up).
pub const BACKGROUND_LOWERED: &str = "match_stats_background_priority_lowered";
/// Times the read model's projection moved to the lower-priority thread.
pub const BACKGROUND_LOWERINGS: &str = "match_stats_background_lowerings_total";

/// `(name, kind, HELP)` of every series the service crate records.
pub const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (
        PARTITION_PENDING,
        Kind::Gauge,
        "Events waiting in each partition's consumer (label partition), as last read (every second).",
    ),
    (
        READY,
        Kind::Gauge,
        "1 while this replica's /ready says ready, 0 otherwise (as of the last readiness probe).",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        "Always 1; its labels say which version and commit this process runs.",
    ),
    (
        DELTA_FORMAT,
        Kind::Gauge,
        "The stat delta format this process publishes: 2 (maps with string keys) or 3 (entries and changes as arrays; DELTA_FORMAT).",
    ),
    (
        HISTORY_MATCHES_WRITTEN,
        Kind::Counter,
        "Completed matches written to the history database (newer than the stored version).",
    ),
    (
        HISTORY_LAG,
        Kind::Gauge,
        "Deltas waiting for (or delivered to and not yet acknowledged by) the history writer.",
    ),
    (
        HISTORY_WRITE_DURATION,
        Kind::Histogram,
        "Seconds per history batch write (one transaction).",
    ),
    (
        HISTORY_WRITE_RETRIES,
        Kind::Counter,
        "History batch writes retried while the database was away.",
    ),
    (
        HISTORY_UNRESOLVED,
        Kind::Counter,
        "Completed matches whose object no source (read model, bucket, deltas) could give the history writer.",
    ),
    (
        HISTORY_BACKFILL_DONE,
        Kind::Gauge,
        "Matches backfilled from the completed-matches bucket at the first start against an empty database.",
    ),
    (
        EVENTS_RECEIVED,
        Kind::Counter,
        "Event messages decided (applied, duplicate or rejected), each stream message once.",
    ),
    (
        EVENTS_PROCESSED,
        Kind::Counter,
        "Events applied to a match.",
    ),
    (
        EVENTS_DUPLICATE,
        Kind::Counter,
        "Events dropped because their event_id was already applied to the match.",
    ),
    (
        EVENTS_REJECTED,
        Kind::Counter,
        "Events rejected and dead-lettered, by contract reason.",
    ),
    (
        EVENTS_PARKED,
        Kind::Counter,
        "Events decided but parked: an effect of theirs could never be stored (over a size limit); acknowledged so the partition moves on.",
    ),
    (
        EFFECTS_PARKED,
        Kind::Counter,
        "Effects a stream refused for good (over max_payload or the stream's max_msg_size).",
    ),
    (
        REDELIVERED_SKIPPED,
        Kind::Counter,
        "Redelivered or replayed messages already decided, acknowledged without effect.",
    ),
    (
        DEAD_LETTERS,
        Kind::Counter,
        "Dead letters stored by the dead-letter stream, by reason.",
    ),
    (
        DELTAS_PUBLISHED,
        Kind::Counter,
        "Stat delta messages stored by the deltas stream.",
    ),
    (
        DELTA_ENTRIES_PUBLISHED,
        Kind::Counter,
        "Delta entries (applied events) in the stored delta messages.",
    ),
    (
        EFFECTS_DEDUPLICATED,
        Kind::Counter,
        "Effects published again that a stream already held (dropped by Nats-Msg-Id or by version).",
    ),
    (
        COMPLETED_MATCHES_STORED,
        Kind::Counter,
        "Final match objects put into the completed-matches object store.",
    ),
    (
        IDLE_MATCHES_ENDED,
        Kind::Counter,
        "match_end events published for matches idle past MATCH_IDLE_TIMEOUT.",
    ),
    (
        PUBLISH_RETRIES,
        Kind::Counter,
        "Failed attempts to publish a batch's effects, retried with back-off.",
    ),
    (
        PROCESSING_LATENCY,
        Kind::Histogram,
        "Seconds to decide, publish and acknowledge one batch of events.",
    ),
    (
        CONSUMER_PENDING,
        Kind::Gauge,
        "Events waiting in the partitions' consumers, summed.",
    ),
    (
        CONSUMER_ACK_PENDING,
        Kind::Gauge,
        "Events delivered and not yet acknowledged, summed over the partitions.",
    ),
    (
        CONSUMER_REDELIVERED,
        Kind::Gauge,
        "Events redelivered at least once, summed over the partitions.",
    ),
    (
        PARTITION_ACQUISITIONS,
        Kind::Counter,
        "Times this replica became a partition's writer.",
    ),
    (
        PARTITION_RELEASES,
        Kind::Counter,
        "Partitions this replica gave up, by reason.",
    ),
    (
        PARTITION_RESTORE_RETRIES,
        Kind::Counter,
        "Failed attempts to restore or catch up on a partition, retried with back-off.",
    ),
    (
        DELIVERIES_LOST,
        Kind::Counter,
        "Messages a consumer delivered here that never arrived (a connection dropped with them in flight), by consumer: events (the partition was replayed past them) or history (the deltas were read from the stream); never acknowledged unseen.",
    ),
    (
        PARTITION_SECONDS_SINCE_PROGRESS,
        Kind::Gauge,
        "Per partition this replica writes: seconds since a batch was last confirmed.",
    ),
    (
        PARTITION_RETRY_STREAK,
        Kind::Gauge,
        "Per partition this replica writes: failed attempts in a row of its current publish, restore or catch-up.",
    ),
    (
        PARTITION_STALLED,
        Kind::Gauge,
        "Per partition this replica writes: 1 when events wait and no batch was confirmed for 30 s.",
    ),
    (
        MEMORY_COLLECTION_SECONDS,
        Kind::Histogram,
        "Seconds per return of a runtime thread's free allocator pages to the system, when it runs out of work: at most every 10 s per thread, and every 250 ms at most for 3 s after a catch-up (of the read model, or a partition's backlog of 10,000 events or more).",
    ),
    (
        BACKGROUND_LOWERED,
        Kind::Gauge,
        "1 while the read model's projection runs on a thread BACKGROUND_NICE lower in CPU priority because a partition is catching up; 0 otherwise.",
    ),
    (
        BACKGROUND_LOWERINGS,
        Kind::Counter,
        "Times the read model's projection moved to a thread of lower CPU priority because a partition began catching up.",
    ),
    (
        REPLICAS_LIVE,
        Kind::Gauge,
        "Live replicas sharing the partitions, as this replica counts them.",
    ),
    (
        MATCHES_ACTIVE,
        Kind::Gauge,
        "Active matches in this replica's command side.",
    ),
    (
        MATCHES_COMPLETED,
        Kind::Gauge,
        "Completed matches still in this replica's command side.",
    ),
    (
        MATCHES_EVICTED,
        Kind::Counter,
        "Completed matches that left the command side's memory (their records stay in the snapshot bucket).",
    ),
    (
        MATCHES_RELOADED,
        Kind::Counter,
        "Completed matches brought back into memory from their records by an event of theirs.",
    ),
    (
        SNAPSHOTS_WRITTEN,
        Kind::Counter,
        "Partition snapshots written.",
    ),
    (
        SNAPSHOT_ERRORS,
        Kind::Counter,
        "Snapshot writes that failed and will be retried.",
    ),
    (
        SNAPSHOT_STALE,
        Kind::Counter,
        "Snapshot writes refused because another replica wrote the partition since.",
    ),
    (
        SNAPSHOT_QUARANTINED,
        Kind::Counter,
        "Unreadable snapshot values (junk, another version, a missing object) set aside under quarantine.<key>; the match is rebuilt by replay.",
    ),
    (
        SNAPSHOT_WRITE_SECONDS,
        Kind::Histogram,
        "Seconds per partition snapshot write (its changed matches and marker into the bucket), written in the background while the partition goes on processing.",
    ),
    (
        SNAPSHOT_AGE,
        Kind::Gauge,
        "Seconds since partition 0's last snapshot.",
    ),
    (
        RECOVERY_GAPS,
        Kind::Counter,
        "Recoveries that needed events already gone from the events stream.",
    ),
    (
        DELTAS_UNDECODABLE,
        Kind::Counter,
        "Messages on the deltas stream that are not stat deltas (met by the projector, or by a writer looking up where a match stands).",
    ),
    (
        DELTAS_PROJECTED,
        Kind::Counter,
        "Delta messages the projector read from the deltas stream, by how: handed_off (published by this replica and passed in memory, not decoded again) or decoded.",
    ),
    (
        DELTA_GAPS,
        Kind::Counter,
        "Deltas the projector could not apply (a version gap or a bad value).",
    ),
    (
        PROJECTION_RESYNCS,
        Kind::Counter,
        "Matches the projector rebuilt from their deltas after a delta it could not apply.",
    ),
    (
        READ_MODEL_MATCHES,
        Kind::Gauge,
        "Matches in this replica's read model.",
    ),
    (
        READ_MODEL_PENDING,
        Kind::Gauge,
        "Delta messages on the deltas stream that the read model has not read yet, as of its last read (the consumer's delivery metadata): how far it trails the command side, e.g. at the end of a catch-up.",
    ),
    (
        PLAYERS_HELD,
        Kind::Gauge,
        "Players in this replica's read model (every match's, active and completed within retention).",
    ),
    (
        CAPACITY_USED_RATIO,
        Kind::Gauge,
        "Share of the replica's sizing in use: players held / CAPACITY_PLAYERS + matches held / CAPACITY_MATCHES. Alert above 0.8, before memory runs out.",
    ),
    (
        READ_MODEL_EVICTED,
        Kind::Counter,
        "Completed matches that left the read model after COMPLETED_RETENTION.",
    ),
    (
        CACHE_WRITES,
        Kind::Counter,
        "Redis write-through results (written, older).",
    ),
    (REDIS_ERRORS, Kind::Counter, "Redis writes that failed."),
    (
        CACHE_CIRCUIT_STATE,
        Kind::Gauge,
        "The Redis circuit breaker: 0 closed, 1 half-open, 2 open.",
    ),
];

/// Registers the HELP text of every series, the service's and the read side's.
pub fn describe() {
    match_stats_queries::metrics::describe(DESCRIPTIONS);
    match_stats_queries::metrics::describe(QUERY_SIDE);
    zero_counters();
    metrics::gauge!(READY).set(0.0);
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => env!("MATCH_STATS_COMMIT"))
        .set(1.0);
    // CPU, memory, open file descriptors, threads (process_* series).
    metrics_process::Collector::default().describe();
}

/// Counters labelled by a fixed set of values, and those values.
fn labelled() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    use match_stats_commands::Reason;
    use match_stats_queries::metrics as q;
    let reasons: Vec<&'static str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    vec![
        (EVENTS_REJECTED, "reason", reasons.clone()),
        (DEAD_LETTERS, "reason", reasons),
        (CACHE_WRITES, "result", vec!["written", "older"]),
        (DELTAS_PROJECTED, "how", vec!["handed_off", "decoded"]),
        (q::STREAMS_OPENED, "stream", vec!["match", "leaderboard"]),
    ]
}

/// Registers every counter at 0 from the start (and every histogram without a label) (an increment of 0 leaves a counter that
/// already counts as it is), so that `increase()` sees its first occurrence: unlabelled
/// counters once, labelled ones for each known value (the partition-release reasons are
/// registered by the command side, which names them; HTTP requests by route as they
/// come).
fn zero_counters() {
    let labelled = labelled();
    for (name, kind, _) in DESCRIPTIONS.iter().chain(QUERY_SIDE) {
        // Histograms are rendered from their registration on (empty until observed).
        if *kind == Kind::Histogram && *name != match_stats_queries::metrics::HTTP_REQUEST_DURATION
        {
            let _ = metrics::histogram!(*name);
            continue;
        }
        if *kind != Kind::Counter
            || *name == PARTITION_RELEASES
            || *name == match_stats_queries::metrics::HTTP_REQUESTS
        {
            continue;
        }
        if *name == match_stats_queries::metrics::CACHE_REQUESTS {
            for level in ["memory", "redis", "kv"] {
                for result in ["hit", "miss"] {
                    metrics::counter!(*name, "level" => level, "result" => result).increment(0);
                }
            }
            continue;
        }
        match labelled.iter().find(|(n, _, _)| n == name) {
            Some((_, label, values)) => {
                for value in values {
                    metrics::counter!(*name, *label => *value).increment(0);
                }
            }
            None => metrics::counter!(*name).increment(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_described_once() {
        let mut names: Vec<&str> = DESCRIPTIONS
            .iter()
            .chain(QUERY_SIDE)
            .map(|(name, _, _)| *name)
            .collect();
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total, "a name described twice");
        assert!(names.iter().all(|n| n.starts_with("match_stats_")));
    }

    #[test]
    fn the_readme_documents_every_series() {
        let readme = include_str!("../README.md");
        let missing: Vec<&str> = DESCRIPTIONS
            .iter()
            .chain(QUERY_SIDE)
            .map(|(name, _, _)| *name)
            .filter(|name| !readme.contains(&format!("`{name}")))
            .collect();
        assert!(missing.is_empty(), "not in README.md: {missing:?}");
    }
}
