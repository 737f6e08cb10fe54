//! Connections cut under the service: a relay between the service and nats-server drops
//! every connection, again and again, while the events flow. The deliveries in flight are
//! lost with the connection; the partition's consumer numbers its deliveries, so the
//! writer sees the jump and replays the partition past it, instead of acknowledging the
//! lost events unseen with the next one (`AckPolicy::All`); the acknowledgements of the
//! deltas it published are lost too, and a writer waits one JetStream timeout for a
//! window of them, not one per message. Afterwards every message the stream stored was
//! decided once, and the counts are the contract's; with match history on, every
//! completed match is in PostgreSQL at its final version.

use std::time::Duration;

use async_nats::jetstream;
use match_stats_harness::{NatsServer, PostgresServer};
use serde_json::json;

use crate::support::events::{T0, event};
use crate::support::relay::Relay;
use crate::support::{
    ServiceProcess, assert_conservation, assert_counts_equal, publish_lines, scenario_copies,
};

/// Copies of the small scenario (1,354 lines each).
const COPIES: usize = 6;
/// Cuts, and the time between them: while the events are published and worked off (80
/// in 6 s: a writer that awaited a lost window's acknowledgements one by one stalled past
/// the test's wait in 2 runs of 25).
const CUTS: usize = 80;
const EVERY: Duration = Duration::from_millis(75);

/// Cuts the relay's connections [`CUTS`] times, [`EVERY`] apart, in the background.
fn cut_repeatedly(relay: &Relay) -> tokio::task::JoinHandle<()> {
    let cutter = relay.cutter();
    tokio::spawn(async move {
        for _ in 0..CUTS {
            tokio::time::sleep(EVERY).await;
            cutter.cut();
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_flight_when_a_connection_drops_are_decided_not_acknowledged_unseen() {
    let _heavy = crate::support::one_heavy_test_at_a_time().await;
    let workload = scenario_copies(COPIES);
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let relay = Relay::start(nats.port()).await;
    // The default ack wait (30 s): a lost delivery is not sent again before the writer
    // acknowledges later ones.
    let service = ServiceProcess::start_with(&nats, &[("NATS_URL", relay.nats_url())]).await;
    let cutting = cut_repeatedly(&relay);
    publish_lines(&js, &workload.lines).await;
    cutting.await.unwrap();
    let events = assert_conservation(service.http(), &js, "MATCH_EVENTS").await;
    assert_counts_equal(&events, &workload.expected);
    let lost = service
        .metric("match_stats_deliveries_lost_total", "")
        .await;
    eprintln!(
        "connection cuts: {CUTS} cuts {EVERY:?} apart; {} messages stored and received {}; {} deliveries lost in flight and replayed past",
        workload.lines.len(),
        events["received"],
        lost as u64
    );
}

/// Short matches for the history test: each starts, takes two players and ends (four
/// events, so its final version is 4), one delta message of the four carrying it
/// completed: a lost delta is often the one that completes a match.
const SHORT_MATCHES: usize = 600;

fn short_matches() -> Vec<(String, Vec<u8>)> {
    let mut lines = Vec::new();
    for i in 0..SHORT_MATCHES {
        let id = format!("short-{i}");
        let at = T0 + i as i64;
        let events = [
            event(
                &format!("{id}-start"),
                &id,
                None,
                "match_start",
                at,
                json!({"map_name": "neon_city", "game_mode": "tdm", "max_players": 4}),
            ),
            event(
                &format!("{id}-p1"),
                &id,
                Some("p1"),
                "player_join",
                at + 1,
                json!({"player_name": "p1", "team_id": "red"}),
            ),
            event(
                &format!("{id}-p2"),
                &id,
                Some("p2"),
                "player_join",
                at + 2,
                json!({"player_name": "p2", "team_id": "blue"}),
            ),
            event(
                &format!("{id}-end"),
                &id,
                None,
                "match_end",
                at + 3,
                json!({}),
            ),
        ];
        for (n, payload) in events.into_iter().enumerate() {
            lines.push((format!("{id}-{n}"), payload));
        }
    }
    lines
}

/// The same cuts with match history on: every completed match reaches PostgreSQL at its
/// final version (the history writer acknowledges its deltas a chunk at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_holds_every_completed_match_when_connections_drop() {
    let _heavy = crate::support::one_heavy_test_at_a_time().await;
    let lines = short_matches();
    let postgres = PostgresServer::start();
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let relay = Relay::start(nats.port()).await;
    let service = ServiceProcess::start_with(
        &nats,
        &[
            ("NATS_URL", relay.nats_url()),
            ("DATABASE_URL", postgres.url()),
        ],
    )
    .await;
    let cutting = cut_repeatedly(&relay);
    publish_lines(&js, &lines).await;
    cutting.await.unwrap();
    let events = assert_conservation(service.http(), &js, "MATCH_EVENTS").await;
    assert_eq!(
        events["processed"],
        json!(lines.len()),
        "every event applied"
    );
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();
    crate::support::wait_history_matches(&pool, SHORT_MATCHES as i64).await;
    let at_four: i64 = sqlx::query_scalar("SELECT count(*) FROM matches WHERE version = 4")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        at_four, SHORT_MATCHES as i64,
        "every match at its final version"
    );
    let lost = service
        .metric("match_stats_deliveries_lost_total", "consumer=\"history\"")
        .await;
    eprintln!(
        "connection cuts with history: {SHORT_MATCHES} completed matches in PostgreSQL at their final versions; {} deltas the history consumer lost in flight and read again",
        lost as u64
    );
}
