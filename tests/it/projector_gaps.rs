//! A delta the read model cannot apply (a version missing before it) does not freeze its
//! match: the projector rebuilds the match from its deltas on the stream, jumping the
//! missing version, counts it, and then follows the stream again. The deltas here are
//! written by hand (one player's kills, each version's value known), as a stream that
//! lost a message (purged by an operator, a writer's fault) would leave them.

use async_nats::jetstream;
use match_stats_commands::delta::{Change, DeltaEntry, Field, FieldValue};
use match_stats_commands::{EventId, MatchId, PlayerId, StatDelta};
use match_stats_harness::NatsServer;

use crate::support::deltas::publish_delta;
use crate::support::{ServiceProcess, config, wait_for_json};

const MATCH: &str = "6f1c2d3e-0000-4000-8000-00000000a001";
const PLAYER: &str = "p-gap-1";

/// Version `version` of the match: its event count and the player's kills go to
/// `version`.
fn entry(version: u64) -> DeltaEntry {
    let change = |player_id, field| Change {
        player_id,
        field,
        key: None,
        before: FieldValue::Int(version as i64 - 1),
        after: FieldValue::Int(version as i64),
    };
    DeltaEntry {
        version,
        event_id: EventId::parse(&format!("gap-event-{version}")).unwrap(),
        stream_sequence: version,
        timestamp: 1_700_000_000_000 + version as i64,
        changes: vec![
            change(None, Field::EventCount),
            change(Some(PlayerId::parse(PLAYER).unwrap()), Field::Kills),
        ],
        part: 0,
        parts: 1,
    }
}

/// Publishes one delta message holding `versions` on the match's deltas subject.
async fn publish(js: &jetstream::Context, subject: &str, versions: &[u64]) {
    let delta = StatDelta {
        match_id: MatchId::parse(MATCH).unwrap(),
        entries: versions.iter().map(|&v| entry(v)).collect(),
        match_view: None,
    };
    publish_delta(js, subject.to_owned(), &delta).await;
}

/// Waits until the match is served with `version` events and the player's kills at
/// `kills`.
async fn wait_served(service: &ServiceProcess, version: u64, kills: u64) {
    let url = format!("{}/api/v1/match-stats/matches/{MATCH}", service.http());
    wait_for_json(&url, |body| {
        body["event_count"] == version
            && body["player_stats"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["player_id"] == PLAYER && p["kills"] == kills)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_version_rebuilds_the_match_from_its_deltas_and_the_projection_goes_on() {
    // given a service whose read model holds versions 1 and 2 of a match
    let nats = NatsServer::start();
    let service = ServiceProcess::start(&nats).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let subject = format!("{}.{MATCH}", config(&nats, None).streams.deltas_subject);
    publish(&js, &subject, &[1, 2]).await;
    wait_served(&service, 2, 2).await;

    // when the next delta on the stream is version 4 (version 3 never written)
    publish(&js, &subject, &[4]).await;

    // then the match is rebuilt from its deltas, the gap jumped: at version 4, with the
    // kills version 4 set, and the gap and the rebuild are counted
    wait_served(&service, 4, 4).await;
    assert_eq!(
        service.metric("match_stats_delta_gaps_total", "").await,
        1.0
    );
    assert_eq!(
        service
            .metric("match_stats_projection_resyncs_total", "")
            .await,
        1.0
    );

    // and the projection follows the stream again: version 5 applies as usual
    publish(&js, &subject, &[5]).await;
    wait_served(&service, 5, 5).await;
    assert_eq!(
        service.metric("match_stats_delta_gaps_total", "").await,
        1.0,
        "no second gap"
    );
}
