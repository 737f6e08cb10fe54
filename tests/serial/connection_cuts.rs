//! Connections cut under the service: a relay between the service and nats-server drops
//! every connection, again and again, while the events flow. The deliveries in flight are
//! lost with the connection; the partition's consumer numbers its deliveries, so the
//! writer sees the jump and replays the partition past it, instead of acknowledging the
//! lost events unseen with the next one (`AckPolicy::All`). Afterwards every message the
//! stream stored was decided once, and the counts are the contract's.

use std::time::Duration;

use async_nats::jetstream;
use match_stats_harness::NatsServer;

use crate::support::relay::Relay;
use crate::support::{
    ServiceProcess, assert_conservation, assert_counts_equal, publish_lines, scenario_copies,
};

/// Copies of the small scenario (1,354 lines each).
const COPIES: usize = 6;
/// Cuts, and the time between them: while the events are published and worked off.
const CUTS: usize = 40;
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
