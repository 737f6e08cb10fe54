//! Snapshots and the match lifecycle: a restart from a snapshot replays only what came
//! after it; a stale writer's snapshot is refused and it gives its partition up; a batch
//! that changed no match is snapshotted too (other replicas count from the marker); idle
//! matches are ended by a `match_end` published to the events stream, so a replay decides
//! the same.

use std::time::Duration;

use async_nats::jetstream;
use match_stats_harness::{NatsServer, contract};

use crate::support::events::{T0, event};
use crate::support::{
    self, Service, ServiceProcess, publish_all, read_stream, wait_for, wait_for_json,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_the_final_snapshot_replays_nothing_and_keeps_the_counts() {
    let nats = NatsServer::start();
    let mut config = support::config(&nats, None);
    config.lifecycle.snapshot_every_events = 100;
    config.batch_size = 10;
    let service = Service::start(config.clone()).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let scenario = contract::scenario("small");
    publish_all(
        &js,
        &config.streams.events_subject,
        scenario.messages.iter().map(|m| m.payload.as_slice()),
    )
    .await;
    service.wait_received(scenario.messages.len() as u64).await;
    support::assert_conservation(&service.http, &js, &config.streams.events_stream).await;
    let before = service.counts();
    // Each partition snapshots after every 100 of its events.
    let mut per_partition = std::collections::HashMap::<u16, u64>::new();
    for m in &scenario.messages {
        let subject = support::subject_for("e", &m.payload);
        let match_id = subject.strip_prefix("e.").unwrap();
        *per_partition
            .entry(match_stats::nats::partition_of(match_id, 16))
            .or_default() += 1;
    }
    // (checked after each batch of up to 10)
    let expected: u64 = per_partition.values().map(|n| n / 110).sum();
    assert!(
        before.snapshots_written >= expected,
        "a snapshot every 100 events of a partition: {} < {expected}",
        before.snapshots_written
    );
    service.stop().await; // writes the final snapshot

    let service = Service::start(config.clone()).await;
    let after = service.counts();
    assert_eq!(
        service
            .stats
            .recovery_total
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing to replay"
    );
    assert_eq!(
        (
            after.received,
            after.applied,
            after.duplicates,
            &after.rejected
        ),
        (
            before.received,
            before.applied,
            before.duplicates,
            &before.rejected
        )
    );
    assert_eq!(
        after.applied,
        scenario.expected["counts"]["applied"].as_u64().unwrap()
    );
    assert_eq!(after.matches_completed, 3);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_gives_its_partition_up_and_takes_it_back_from_the_newer_snapshot() {
    let nats = NatsServer::start();
    let mut config = support::config(&nats, None);
    config.lifecycle.snapshot_every_events = 50;
    // Giving a partition up lets its pin lapse before pulling again: kept short here.
    config.streams.pin_timeout = Duration::from_secs(2);
    let service = Service::start(config.clone()).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let scenario = contract::scenario("small");
    let (first, rest) = scenario.messages.split_at(200);
    publish_all(
        &js,
        &config.streams.events_subject,
        first.iter().map(|m| m.payload.as_slice()),
    )
    .await;
    service.wait_received(200).await;
    // The snapshot follows the batch that crossed 50 events (after it was counted).
    wait_for("a snapshot written", || {
        service.counts().snapshots_written >= 1
    })
    .await;

    // Another replica snapshots a partition (its marker and a match record): this one's
    // next snapshot of that partition is refused.
    let bucket = js
        .get_key_value(&config.streams.snapshot_bucket)
        .await
        .unwrap();
    let keys: Vec<String> = {
        use futures::TryStreamExt;
        bucket.keys().await.unwrap().try_collect().await.unwrap()
    };
    let record_key = keys
        .iter()
        .find(|k| k.starts_with("match."))
        .expect("match records written");
    let match_id = record_key.strip_prefix("match.").unwrap();
    let partition = match_stats::nats::partition_of(match_id, 16);
    let marker_key = match_stats::nats::Partition {
        n: partition,
        of: 16,
    }
    .marker_key();
    for key in [marker_key.as_str(), record_key.as_str()] {
        let entry = bucket.entry(key).await.unwrap().expect("written");
        bucket.put(key, entry.value).await.unwrap();
    }

    // Half the rest (each of the scenario's partitions gets over 50 events of it): the
    // partition's next snapshot is refused and the partition given up, waited for here
    // rather than assumed done by the time the events are counted.
    let (half, last) = rest.split_at(rest.len() / 2);
    publish_all(
        &js,
        &config.streams.events_subject,
        half.iter().map(|m| m.payload.as_slice()),
    )
    .await;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    wait_for("the stale writer gave the partition up", || {
        count(&service.stats.releases) >= 1
    })
    .await;
    // The other half: the partition's next batch takes it back from the newer snapshot.
    publish_all(
        &js,
        &config.streams.events_subject,
        last.iter().map(|m| m.payload.as_slice()),
    )
    .await;
    service.wait_received(scenario.messages.len() as u64).await;
    support::assert_conservation(&service.http, &js, &config.streams.events_stream).await;
    wait_for("and took it back", || {
        count(&service.stats.acquisitions) >= 2
    })
    .await;
    assert!(!service.task.is_finished(), "the service keeps running");
    // Nothing lost, nothing counted or published twice.
    crate::support::deltas::assert_counts(&service, &scenario.expected, 1);
    let deltas = crate::support::deltas::fold_deltas(&js, &config.streams.deltas_stream).await;
    assert_eq!(deltas.entries as u64, service.counts().applied);
    crate::support::deltas::assert_gapless(&deltas);
    crate::support::deltas::assert_matches_expected(&deltas, &scenario.expected);
    service.stop().await;
}

/// A snapshot writes its matches, then its marker: a crash between the two leaves records
/// newer than the marker. Simulated by putting back older markers after a later snapshot:
/// the restart rolls those records back, replays from the marker, and every count stays
/// exact (each stream message counted once) and every statistic expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_newer_than_their_marker_are_rolled_back_and_counts_stay_exact() {
    let nats = NatsServer::start();
    let config = support::config(&nats, None);
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let scenario = contract::scenario("small");
    let (first, rest) = scenario.messages.split_at(scenario.messages.len() / 2);
    let publish = |lines: &'static [contract::ScenarioMessage]| {
        let js = js.clone();
        let prefix = config.streams.events_subject.clone();
        async move { publish_all(&js, &prefix, lines.iter().map(|m| m.payload.as_slice())).await }
    };
    let (first, rest): (&'static [_], &'static [_]) =
        (Vec::leak(first.to_vec()), Vec::leak(rest.to_vec()));

    let service = Service::start(config.clone()).await;
    publish(first).await;
    service.wait_received(first.len() as u64).await;
    service.stop().await; // snapshot 1: records and markers
    let bucket = js
        .get_key_value(&config.streams.snapshot_bucket)
        .await
        .unwrap();
    let keys: Vec<String> = {
        use futures::TryStreamExt;
        bucket.keys().await.unwrap().try_collect().await.unwrap()
    };
    let mut old_markers = Vec::new();
    for key in keys.iter().filter(|k| k.starts_with("partition.")) {
        old_markers.push((key.clone(), bucket.get(key).await.unwrap().unwrap()));
    }
    assert!(!old_markers.is_empty());

    let service = Service::start(config.clone()).await;
    publish(rest).await;
    service.wait_received(scenario.messages.len() as u64).await;
    service.stop().await; // snapshot 2: newer records, then newer markers
    for (key, value) in old_markers {
        bucket.put(&key, value).await.unwrap(); // as if snapshot 2 stopped before them
    }

    let service = Service::start(config.clone()).await;
    service.wait_received(scenario.messages.len() as u64).await;
    let events =
        support::assert_conservation(&service.http, &js, &config.streams.events_stream).await;
    support::assert_counts_equal(&events, &scenario.expected);
    crate::support::deltas::assert_counts(&service, &scenario.expected, 1);
    let deltas = crate::support::deltas::fold_deltas(&js, &config.streams.deltas_stream).await;
    crate::support::deltas::assert_gapless(&deltas);
    crate::support::deltas::assert_matches_expected(&deltas, &scenario.expected);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_matches_are_ended_through_the_stream_and_a_replay_decides_the_same() {
    let nats = NatsServer::start();
    let mut config = support::config(&nats, None);
    config.lifecycle.idle_timeout = Duration::from_secs(1);
    let service = Service::start(config.clone()).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let scenario = contract::scenario("small");
    // The first 300 messages start all three matches and end none.
    publish_all(
        &js,
        &config.streams.events_subject,
        scenario.messages[..300]
            .iter()
            .map(|m| m.payload.as_slice()),
    )
    .await;
    service.wait_received(300).await;
    wait_for("three idle matches ended", || {
        service.counts().matches_completed == 3
    })
    .await;
    let counts = service.counts();
    assert_eq!((counts.idle_matches_ended, counts.matches_active), (3, 0));
    let ids: Vec<String> = scenario.expected["matches"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let views = |base: String| {
        let ids = ids.clone();
        async move {
            let mut out = Vec::new();
            for id in ids {
                let url = format!("{base}/api/v1/match-stats/matches/{id}");
                wait_for_json(&url, |v| v["status"] == "completed").await;
                out.push(
                    reqwest::get(url)
                        .await
                        .unwrap()
                        .json::<serde_json::Value>()
                        .await
                        .unwrap(),
                );
            }
            out
        }
    };
    let original = views(service.http.clone()).await;
    for view in &original {
        assert_eq!(
            view["end_time"], view["last_update"],
            "ended at its last event's time"
        );
    }

    // The match_end events are in the events stream, with the reason.
    let events = read_stream(&js, &config.streams.events_stream).await;
    let ends: Vec<serde_json::Value> = events[300..]
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("JSON match_end"))
        .collect();
    assert_eq!(
        ends.len(),
        3,
        "one match_end per idle match, published once"
    );
    for end in &ends {
        assert_eq!(
            (
                end["event_type"].as_str(),
                end["event_data"]["reason"].as_str()
            ),
            (Some("match_end"), Some("idle_timeout"))
        );
    }
    service.stop().await;

    // A fresh replay (no snapshot bucket carried over) ends them the same way.
    let mut replay = config.clone();
    replay.streams.snapshot_bucket = "match_stats_snapshots_replay".into();
    replay.streams.consumer_name = "replay".into();
    let service = Service::start(replay).await;
    let applied_lines = scenario.messages[..300]
        .iter()
        .filter(|m| m.expect == "applied")
        .count() as u64;
    // (a new consumer delivers the whole stream)
    wait_for("the replay processed the stream", || {
        service.counts().applied >= applied_lines + 3
    })
    .await;
    let counts = service.counts();
    assert_eq!(
        (counts.matches_completed, counts.applied),
        (3, applied_lines + 3)
    );
    assert_eq!(
        views(service.http.clone()).await,
        original,
        "the replay decides the same"
    );
    service.stop().await;
}

/// A batch that changes no match (here one rejected event) still changes the partition's
/// counters, and a replica that does not write the partition counts it from the marker:
/// the writer snapshots such a batch like any other. (It used to wait for a changed
/// match, so the other replica stayed one short until the partition's next applied
/// event, for ever if none came.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_only_rejections_reaches_the_other_replicas_counts() {
    let nats = NatsServer::start();
    let env = [("SNAPSHOT_INTERVAL", "1s".to_owned())];
    let replicas = [
        ServiceProcess::start_with(&nats, &env).await,
        ServiceProcess::start_with(&nats, &env).await,
    ];
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let (id, player) = ("m-rejections-alone", Some("p1"));
    let join = event(
        "e-join",
        id,
        player,
        "player_join",
        T0,
        serde_json::json!({"player_name": "P1", "team_id": "red"}),
    );
    let unknown = event(
        "e-unknown",
        id,
        player,
        "teleport",
        T0,
        serde_json::json!({}),
    );
    publish_all(&js, "match_stats.events", [join.as_slice()]).await;
    // One replica writes the match's partition; the other counts it through the marker.
    for replica in &replicas {
        replica.wait_received(1).await;
    }
    publish_all(&js, "match_stats.events", [unknown.as_slice()]).await;
    for replica in &replicas {
        replica.wait_received(2).await;
        let counts = replica.counts().await;
        assert_eq!(
            (
                &counts["applied"],
                &counts["rejected"]["unknown_event_type"]
            ),
            (&serde_json::json!(1), &serde_json::json!(1))
        );
    }
}
