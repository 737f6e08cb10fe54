//! The command side end to end: the small scenario published to a real nats-server,
//! checked against `expected.json` through the service's counters, the deltas stream
//! (folded independently of the service) and the dead-letter stream.

use async_nats::jetstream;
use match_stats::command_side::{HEADER_DETAIL, HEADER_REASON, HEADER_SOURCE_SEQUENCE};
use match_stats_harness::{NatsServer, contract};

use crate::support::deltas::{assert_counts, assert_gapless, assert_matches_expected, fold_deltas};
use crate::support::events::{T0, event};
use crate::support::{self, Service, ServiceProcess, publish_all, read_stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_scenario_through_real_nats_equals_expected_and_a_second_pass_changes_nothing() {
    small_scenario_in_delta_format(2).await;
}

/// The same with the compact deltas (`DELTA_FORMAT=3`): what the stream holds folds to
/// the same expected results, and each message says its format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_scenario_with_compact_deltas_equals_expected() {
    small_scenario_in_delta_format(3).await;
}

async fn small_scenario_in_delta_format(delta_format: u32) {
    let nats = NatsServer::start();
    let mut config = support::config(&nats, None);
    config.delta_format =
        match_stats_commands::delta::Format::from_version(delta_format).expect("a delta format");
    let service = Service::start(config.clone()).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let scenario = contract::scenario("small");
    let payloads = || scenario.messages.iter().map(|m| m.payload.as_slice());
    let published = scenario.messages.len() as u64;

    publish_all(&js, &config.streams.events_subject, payloads()).await;
    service.wait_received(published).await;
    assert_counts(&service, &scenario.expected, 1);
    support::assert_conservation(&service.http, &js, &config.streams.events_stream).await;

    // The stream stores each event on its partition's subject (`<prefix>.16.<n>.<match>`),
    // the partition NATS computed being the one `partition_of` gives.
    let events = read_stream(&js, &config.streams.events_stream).await;
    let mut partitions = std::collections::BTreeSet::new();
    for event in &events {
        let tokens: Vec<&str> = event.subject.split('.').collect();
        assert_eq!(tokens.len(), 5, "{}", event.subject);
        let n: u16 = tokens[3].parse().unwrap();
        assert_eq!(tokens[2], "16");
        assert_eq!(
            n,
            match_stats::nats::partition_of(tokens[4], 16),
            "{}",
            event.subject
        );
        partitions.insert(n);
    }
    assert!(partitions.len() > 1, "matches spread over partitions");

    let deltas = fold_deltas(&js, &config.streams.deltas_stream).await;
    for message in read_stream(&js, &config.streams.deltas_stream).await {
        let headers = message.headers.as_ref().expect("deltas have headers");
        let format = headers.get(match_stats_commands::delta::FORMAT_HEADER);
        assert_eq!(
            format.map(|v| v.as_str()),
            Some(delta_format.to_string().as_str())
        );
    }
    assert_eq!(
        deltas.entries as u64,
        service.counts().applied,
        "one delta entry per applied event"
    );
    assert!(
        deltas.messages <= deltas.entries,
        "a batch's entries for one match share a message"
    );
    assert_eq!(
        service.counts().delta_entries_published,
        service.counts().applied
    );
    assert_gapless(&deltas);
    assert_matches_expected(&deltas, &scenario.expected);

    // The dead-letter stream holds exactly the rejected payloads, with their reasons and
    // source sequences (one stream message per scenario line, so sequence == seq).
    let rejected: Vec<_> = scenario
        .messages
        .iter()
        .filter(|m| m.expect != "applied" && m.expect != "duplicate")
        .collect();
    // Partitions dead-letter independently: order by source sequence.
    let mut dead = read_stream(&js, &config.streams.dead_letter_stream).await;
    dead.sort_by_key(|letter| {
        let headers = letter.headers.as_ref().expect("dead letters have headers");
        let sequence = headers
            .get(HEADER_SOURCE_SEQUENCE)
            .expect("source sequence");
        sequence.as_str().parse::<u64>().expect("a number")
    });
    assert_eq!(dead.len(), rejected.len());
    for (letter, want) in dead.iter().zip(&rejected) {
        let headers = letter.headers.as_ref().expect("dead letters have headers");
        assert_eq!(
            letter.payload.as_ref(),
            want.payload.as_slice(),
            "original bytes of seq {}",
            want.seq
        );
        assert_eq!(
            headers.get(HEADER_REASON).unwrap().as_str(),
            want.expect,
            "reason of seq {}",
            want.seq
        );
        assert_eq!(
            headers.get(HEADER_SOURCE_SEQUENCE).unwrap().as_str(),
            want.seq.to_string()
        );
        assert!(
            !headers.get(HEADER_DETAIL).unwrap().as_str().is_empty(),
            "a detail says what was wrong"
        );
        assert_eq!(
            letter.subject.as_str(),
            format!("match_stats.dead_letters.{}", want.expect)
        );
    }

    // Published again: every applied event is now a duplicate; nothing changes.
    publish_all(&js, &config.streams.events_subject, payloads()).await;
    service.wait_received(2 * published).await;
    assert_counts(&service, &scenario.expected, 2);
    support::assert_conservation(&service.http, &js, &config.streams.events_stream).await;
    let again = fold_deltas(&js, &config.streams.deltas_stream).await;
    assert_eq!(
        (again.messages, again.entries),
        (deltas.messages, deltas.entries),
        "no delta for a duplicate"
    );
    assert_matches_expected(&again, &scenario.expected);
    assert_eq!(
        read_stream(&js, &config.streams.dead_letter_stream)
            .await
            .len(),
        2 * rejected.len(),
        "bad payloads are rejected again (they were never applied)"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_sigterm_mid_scenario_lose_nothing_and_publish_nothing_twice() {
    let nats = NatsServer::start();
    let config = support::config(&nats, None);
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let scenario = contract::scenario("small");
    let thirds: Vec<&[_]> = scenario
        .messages
        .chunks(scenario.messages.len() / 3 + 1)
        .collect();
    let publish = |part: &[contract::ScenarioMessage]| {
        let payloads: Vec<Vec<u8>> = part.iter().map(|m| m.payload.clone()).collect();
        let js = js.clone();
        let prefix = config.streams.events_subject.clone();
        async move { publish_all(&js, &prefix, payloads.iter().map(Vec::as_slice)).await }
    };

    // First third applied; kill -9 while the second third flows.
    let service = ServiceProcess::start(&nats).await;
    publish(thirds[0]).await;
    service.wait_received(thirds[0].len() as u64).await;
    publish(thirds[1]).await;
    service.kill9();

    // A new process replays the stream, takes the last third, and stops on SIGTERM.
    let service = ServiceProcess::start(&nats).await;
    let published = (thirds[0].len() + thirds[1].len()) as u64;
    service.wait_received(published).await;
    publish(thirds[2]).await;
    let published = scenario.messages.len() as u64;
    service.wait_received(published).await;
    service.terminate();

    // A third process only replays: same counts, nothing left to publish.
    let service = ServiceProcess::start(&nats).await;
    service.wait_received(published).await;
    support::assert_conservation(service.http(), &js, "MATCH_EVENTS").await;
    let counts = service.counts().await;
    let e = &scenario.expected["counts"];
    assert_eq!(counts["applied"], e["applied"]);
    assert_eq!(counts["duplicates"], e["duplicates"]);
    for (reason, n) in e["rejected"].as_object().unwrap() {
        assert_eq!(&counts["rejected"][reason], n, "rejected as {reason}");
    }
    assert_eq!(
        counts["deltas_published"], 0,
        "no new delta: the stream already held every one"
    );
    assert_eq!(counts["dead_letters"], 0, "no new dead letter");

    let deltas = fold_deltas(&js, &config.streams.deltas_stream).await;
    assert_gapless(&deltas);
    assert_eq!(
        deltas.entries as u64,
        e["applied"].as_u64().unwrap(),
        "no delta published twice"
    );
    assert_matches_expected(&deltas, &scenario.expected);
    let dead = read_stream(&js, &config.streams.dead_letter_stream).await;
    assert_eq!(
        dead.len() as u64,
        e["rejected"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum::<u64>(),
        "each dead letter once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_created_idempotently_and_a_missing_nats_is_a_clear_error() {
    let nats = NatsServer::start();
    let config = support::config(&nats, None);
    // Twice against the same server: create, then update with the same definitions.
    Service::start(config.clone()).await.stop().await;
    Service::start(config.clone()).await.stop().await;

    let mut unreachable = config;
    unreachable.nats_url = format!("nats://127.0.0.1:{}", match_stats_harness::free_port());
    let error = match match_stats::App::build(unreachable).await {
        Ok(_) => panic!("no NATS server there"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("cannot connect to NATS at nats://127.0.0.1:"),
        "{error}"
    );
}

/// A new match's first delta skips the lookup of its deltas subject and expects the
/// subject empty. When another writer stored it already (here, by hand: what a writer
/// that crashed before its ack leaves when the consumer's delivery count lags; batched
/// with the next event, so its message id differs and only the expectation stops a
/// second copy), the stream refuses the second copy and the writer looks the match up
/// instead: the subject holds the earlier delta alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_matchs_first_delta_is_not_stored_twice_when_another_writer_stored_it() {
    use match_stats_commands::{Match, MatchId, Outcome, StatDelta};

    let nats = NatsServer::start();
    let config = support::config(&nats, None);
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    match_stats::nats::streams::ensure(&js, &config)
        .await
        .unwrap();
    let id = "0c5a3b1e-6f2d-4e8a-9b7c-1d2e3f4a5b6c";
    let start = event("s1", id, None, "match_start", T0, serde_json::json!({}));
    let join = event(
        "j1",
        id,
        Some("p1"),
        "player_join",
        T0 + 1,
        serde_json::json!({}),
    );

    // The delta an earlier writer stored for both events, from the rules alone.
    let mut aggregate = Match::new(MatchId::parse(id).unwrap());
    let entries = [&start, &join]
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            let decoded = match_stats_commands::decode(payload, T0).unwrap();
            match aggregate.handle(&decoded, i as u64 + 1) {
                Outcome::Applied(entry) => entry,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    let earlier = StatDelta {
        match_id: MatchId::parse(id).unwrap(),
        entries,
        match_view: None,
    };
    let subject = format!("{}.{id}", config.streams.deltas_subject);
    crate::support::deltas::publish_delta(&js, subject.clone(), &earlier).await;

    // A first match on the same partition makes its writer live (a writer's first
    // message is replayed, and a replay always looks matches up).
    let partition = match_stats::nats::partition_of(id, 16);
    let other = (0..)
        .map(|n| format!("0c5a3b1e-6f2d-4e8a-9b7c-{n:012}"))
        .find(|other| match_stats::nats::partition_of(other, 16) == partition)
        .unwrap();
    let warm_up = event("w1", &other, None, "match_start", T0, serde_json::json!({}));
    let service = Service::start(config.clone()).await;
    publish_all(&js, &config.streams.events_subject, [warm_up.as_slice()]).await;
    service.wait_received(1).await;
    publish_all(&js, &config.streams.events_subject, [start.as_slice()]).await;
    service.wait_received(2).await;
    assert_eq!(service.counts().applied, 2);
    assert_eq!(
        service.counts().deltas_published,
        1,
        "the warm-up's; the stream held the other"
    );
    let on_subject: Vec<_> = read_stream(&js, &config.streams.deltas_stream)
        .await
        .into_iter()
        .filter(|m| m.subject.as_str() == subject)
        .collect();
    assert_eq!(on_subject.len(), 1, "the earlier delta alone");
    service.stop().await;
}
