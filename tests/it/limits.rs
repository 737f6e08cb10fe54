//! The contract's limits through real NATS (contract section 3; audit V1, V4): a match of
//! 10,000 players with 64-character ids and its `match_end` (whose delta is megabytes of
//! changes) go through, the 10,001st player is `limit_exceeded`, snapshots of the match
//! are written, and the partition moves on; a player with 1,000 distinct weapons keeps 64
//! and counts the rest under `"other"`; many one-event matches (audit V3) cost a few
//! kilobytes each and show in the capacity gauge.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use match_stats_harness::NatsServer;
use serde_json::{Value, json};

use crate::support::{self, ServiceProcess, WAIT};

/// A 64-character id.
fn long_id(prefix: &str, n: usize) -> String {
    format!("{prefix}-{n:0>width$}", width = 63 - prefix.len())
}

fn event(
    event_id: String,
    match_id: &str,
    player: Option<&str>,
    kind: &str,
    data: Value,
) -> Vec<u8> {
    let mut e = json!({
        "event_id": event_id,
        "match_id": match_id,
        "event_type": kind,
        "timestamp": 1_767_225_600_000_i64,
        "event_data": data,
    });
    if let Some(player) = player {
        e["player_id"] = json!(player);
    }
    rmp_serde::to_vec_named(&e).unwrap()
}

async fn publish(js: &jetstream::Context, match_id: &str, payloads: Vec<Vec<u8>>) {
    let subject = format!("match_stats.events.{match_id}");
    publish_each(js, payloads.into_iter().map(|p| (subject.clone(), p))).await;
}

/// Publishes each payload on its subject, up to 1,000 acknowledgements in flight.
async fn publish_each(
    js: &jetstream::Context,
    messages: impl IntoIterator<Item = (String, Vec<u8>)>,
) {
    let mut acks = Vec::new();
    for (subject, payload) in messages {
        let message = PublishMessage::build().payload(payload.into());
        acks.push(js.send_publish(subject, message).await.unwrap());
        if acks.len() >= 1000 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

/// `n` matches of one event each (a player joining), ids `<prefix>-000000` on.
fn one_event_matches(prefix: &str, n: usize) -> impl Iterator<Item = (String, Vec<u8>)> {
    (0..n).map(move |i| {
        let id = format!("{prefix}-{i:06}");
        let payload = event(
            format!("{id}-join"),
            &id,
            Some("p1"),
            "player_join",
            json!({"player_name": "P1", "team_id": "red"}),
        );
        (format!("match_stats.events.{id}"), payload)
    })
}

async fn get(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_player_match_and_its_end_go_through_and_the_partition_moves_on() {
    let _heavy = support::one_heavy_test_at_a_time().await;
    let nats = NatsServer::start();
    let env = [("SNAPSHOT_INTERVAL", "1s".to_owned())];
    let service = ServiceProcess::start_with(&nats, &env).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let big = long_id("big", 0);
    let mut payloads: Vec<Vec<u8>> = (0..10_000)
        .map(|i| {
            let player = long_id("p", i);
            event(
                format!("join-{i}"),
                &big,
                Some(&player),
                "player_join",
                json!({}),
            )
        })
        .collect();
    payloads.push(event("end".into(), &big, None, "match_end", json!({})));
    payloads.push(event(
        "one-too-many".into(),
        &big,
        Some("late-player"),
        "player_join",
        json!({}),
    ));
    publish(&js, &big, payloads).await;
    // A probe in the same partition, after the big match's end.
    let partition = match_stats::nats::partition_of(&big, 16);
    let probe = (0..)
        .map(|n| format!("probe-{n}"))
        .find(|id| match_stats::nats::partition_of(id, 16) == partition)
        .unwrap();
    publish(
        &js,
        &probe,
        vec![event(
            "probe-1".into(),
            &probe,
            Some("x"),
            "player_join",
            json!({}),
        )],
    )
    .await;
    service.wait_received(10_003).await;
    let events = support::assert_conservation(service.http(), &js, "MATCH_EVENTS").await;
    assert_eq!(
        events["rejected"]["limit_exceeded"], 1,
        "the 10,001st player"
    );
    assert_eq!(events["parked"], 0, "nothing too large to publish");

    // The match completed with its 10,000 players, everywhere.
    let base = service.http().to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    let summary = loop {
        let active = get(format!("{base}/api/v1/match-stats/matches/{probe}")).await;
        let players = get(format!(
            "{base}/api/v1/match-stats/matches/{big}/leaderboard/kills?limit=1"
        ))
        .await;
        if active["event_count"] == 1
            && players["players"].as_array().is_some_and(|p| !p.is_empty())
        {
            break get(format!(
                "{base}/api/v1/match-stats/matches/active?limit=1000"
            ))
            .await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the probe and the big match are served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        summary["matches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["match_id"] != big.as_str()),
        "the big match is no longer active"
    );
    let object = get(format!("{base}/api/v1/match-stats/matches/{big}")).await;
    assert_eq!(object["status"], "completed");
    assert_eq!(object["event_count"], 10_001);
    assert_eq!(object["current_players"], 0);
    assert_eq!(object["player_stats"].as_array().unwrap().len(), 10_000);

    // The match_end's changes went out in parts, each under NATS's 1 MiB.
    let deltas = support::read_stream(&js, "MATCH_DELTAS").await;
    let parts: Vec<_> = deltas
        .iter()
        .filter(|m| {
            m.headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .is_some_and(|id| id.as_str().starts_with(&format!("{big}:10001#")))
        })
        .collect();
    assert!(
        parts.len() >= 10,
        "the match_end split into parts: {}",
        parts.len()
    );
    assert!(deltas.iter().all(|m| m.payload.len() < 1 << 20));

    // Snapshots of the big match are written (no error), and a restart restores it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        service
            .metric("match_stats_snapshot_errors_total", "")
            .await,
        0.0
    );
    assert!(
        service
            .metric("match_stats_snapshots_written_total", "")
            .await
            >= 1.0
    );
    service.terminate();
    let service = ServiceProcess::start_with(&nats, &env).await;
    let ready = service.ready().await;
    assert_eq!(
        ready["recovery"]["total"], 0,
        "restored from the snapshot, nothing replayed: {ready}"
    );
    support::assert_conservation(service.http(), &js, "MATCH_EVENTS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_with_a_thousand_distinct_weapons_keeps_sixty_four_and_other() {
    let nats = NatsServer::start();
    let service = ServiceProcess::start(&nats).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let payloads = (0..1_000)
        .map(|i| {
            event(
                format!("k{i}"),
                "arsenal",
                Some("k"),
                "kill",
                json!({"killer_id": "k", "victim_id": "v", "weapon": format!("weapon-{i:04}-{}", "x".repeat(40))}),
            )
        })
        .collect();
    publish(&js, "arsenal", payloads).await;
    service.wait_received(1_000).await;
    let url = format!(
        "{}/api/v1/match-stats/matches/arsenal/players/k",
        service.http()
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let player = loop {
        let player = get(url.clone()).await;
        if player["kills"] == 1_000 {
            break player;
        }
        assert!(tokio::time::Instant::now() < deadline, "{player}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let weapons = player["weapon_used"].as_object().unwrap();
    assert_eq!(weapons.len(), 65, "64 weapons and other");
    assert_eq!(weapons["other"], 1_000 - 64);
    assert!(weapons.contains_key(&format!("weapon-0063-{}", "x".repeat(40))));
}

/// Audit V3: 100,000 one-event matches took 1.6 GB (15-18 KiB each) on every replica.
/// Each now costs a few KiB (one aggregate, one projection shared with its snapshot,
/// nothing rendered until asked), and the capacity gauge counts matches as well as
/// players, so an alert fires before memory runs out. Nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_one_event_matches_cost_a_few_kilobytes_each_and_fill_the_capacity_gauge() {
    const MATCHES: usize = 20_000;
    let _heavy = support::one_heavy_test_at_a_time().await;
    let nats = NatsServer::start();
    let service = ServiceProcess::start_with(
        &nats,
        &[
            ("CAPACITY_PLAYERS", "100000".into()),
            ("CAPACITY_MATCHES", "50000".into()),
        ],
    )
    .await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = service.rss_bytes();
    publish_each(&js, one_event_matches("v3", MATCHES)).await;
    service.wait_received(MATCHES as u64).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while service.metric("match_stats_read_model_matches", "").await < MATCHES as f64 {
        assert!(tokio::time::Instant::now() < deadline, "read model");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The gauge is set on the projector's eviction tick (every second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Freed memory stays resident until its runtime thread next collects its heap (at
    // most every 10 s, `match_stats::memory`): the RSS is read until it is within the
    // bound or every thread has had a collection.
    let settled = tokio::time::Instant::now() + Duration::from_secs(12);
    let (after, per_match) = loop {
        let after = service.rss_bytes();
        let per_match = after.saturating_sub(before) as f64 / MATCHES as f64 / 1024.0;
        if per_match <= 12.0 || tokio::time::Instant::now() >= settled {
            break (after, per_match);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "{MATCHES} one-event matches: RSS {:.0} -> {:.0} MiB, {per_match:.1} KiB per match (audit: 15-18 KiB)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    assert!(per_match <= 12.0, "{per_match:.1} KiB per one-event match");
    assert_eq!(
        service.metric("match_stats_players_held", "").await,
        MATCHES as f64
    );
    let used = service.metric("match_stats_capacity_used_ratio", "").await;
    let expected = MATCHES as f64 / 100_000.0 + MATCHES as f64 / 50_000.0;
    assert!(
        (used - expected).abs() < 1e-9,
        "capacity used {used}, expected {expected}"
    );
    let counts = service.counts().await;
    assert_eq!(
        counts["applied"], MATCHES as u64,
        "every one applied: {counts}"
    );
    assert_eq!(counts["effects_deduplicated"], 0, "{counts}");
}

/// A catch-up on many distinct matches: every partition's batches name hundreds of them,
/// so every writer sends hundreds of deltas at once. async-nats's context admits a bounded
/// number of publishes awaiting acks and makes the next one wait; when writers sent a whole
/// batch before awaiting it, they could wait on each other for ever and every partition
/// stopped (the test above, run beside the rest of this binary on a loaded machine,
/// stalled at 4,823 of 20,000 in two runs of two; with the context's bound set to 500,
/// this test stalls every time). Now each writer sends in windows the context always
/// admits (`nats::writers_context`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_on_twenty_thousand_distinct_matches_goes_through() {
    const MATCHES: usize = 20_000;
    let _heavy = support::one_heavy_test_at_a_time().await;
    let nats = NatsServer::start();
    // The first service creates the streams and is gone before anything is published.
    ServiceProcess::start(&nats).await.kill9();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    publish_each(&js, one_event_matches("c", MATCHES)).await;
    // A busy core makes the writers' batches overlap, as on a shared node.
    let busy = support::BusyCore::start();
    let service = ServiceProcess::start(&nats).await;
    service.wait_received(MATCHES as u64).await;
    drop(busy);
    let counts = service.counts().await;
    assert_eq!(counts["applied"], MATCHES as u64, "{counts}");
    assert_eq!(counts["deltas_published"], MATCHES as u64, "{counts}");
}
