//! Subject and payload agree (contract section 1): an event published on a subject that
//! names another match is dead-lettered `invalid_field`, counted, and touches no
//! aggregate, so every other event of its match still applies and no partition gets a
//! second writer for it. With exact re-sends mixed in, every message the stream stored is
//! applied, a duplicate or rejected: the counts add up.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use match_stats::command_side::{HEADER_DETAIL, HEADER_REASON, HEADER_SOURCE_SUBJECT};
use match_stats_harness::{NatsServer, contract, json};
use serde_json::Value;

use crate::support::{self, Service, WAIT, read_stream, subject_for};

/// One message of the mix: its subject, payload and `Nats-Msg-Id` (if any).
struct Publish {
    subject: String,
    payload: Vec<u8>,
    msg_id: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_naming_another_match_is_dead_lettered_and_every_message_is_accounted_for() {
    let nats = NatsServer::start();
    let mut config = support::config(&nats, None);
    config.lifecycle.snapshot_interval = Duration::from_secs(1);
    let service = Service::start(config.clone()).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let scenario = contract::scenario("small");
    let prefix = config.streams.events_subject.clone();

    // Every line with its own Nats-Msg-Id; after every 10th applied line, three more:
    // its payload on a subject naming another match, an exact re-send with the same
    // Nats-Msg-Id (the stream drops it) and one without (a duplicate).
    let (mut mix, mut mismatched, mut resent_without_id, mut resent_with_id) =
        (Vec::new(), 0u64, 0u64, 0u64);
    let mut first_decoy = None;
    for (i, m) in scenario.messages.iter().enumerate() {
        let subject = subject_for(&prefix, &m.payload);
        let msg_id = format!("line-{}", m.seq);
        mix.push(Publish {
            subject: subject.clone(),
            payload: m.payload.clone(),
            msg_id: Some(msg_id.clone()),
        });
        if m.expect == "applied" && i % 10 == 0 {
            first_decoy.get_or_insert(format!("decoy-{i}"));
            mix.push(Publish {
                subject: format!("{prefix}.decoy-{i}"),
                payload: m.payload.clone(),
                msg_id: Some(format!("decoy-{}", m.seq)),
            });
            mix.push(Publish {
                subject: subject.clone(),
                payload: m.payload.clone(),
                msg_id: Some(msg_id),
            });
            mix.push(Publish {
                subject,
                payload: m.payload.clone(),
                msg_id: None,
            });
            (mismatched, resent_with_id, resent_without_id) =
                (mismatched + 1, resent_with_id + 1, resent_without_id + 1);
        }
    }
    for p in &mix {
        let mut message = PublishMessage::build().payload(p.payload.clone().into());
        if let Some(id) = &p.msg_id {
            message = message.message_id(id);
        }
        js.send_publish(p.subject.clone(), message)
            .await
            .unwrap()
            .await
            .expect("stored (or dropped as a duplicate by the stream)");
    }
    let stored = support::stored(&js, &config.streams.events_stream).await;
    assert_eq!(
        stored,
        mix.len() as u64 - resent_with_id,
        "the stream drops re-sends with the same Nats-Msg-Id"
    );
    service.wait_received(stored).await;

    // The counts: the contract's, plus the duplicates and mismatches the mix added.
    let counts = service.counts();
    let e = &scenario.expected["counts"];
    assert_eq!(counts.applied, e["applied"].as_u64().unwrap());
    assert_eq!(
        counts.duplicates,
        e["duplicates"].as_u64().unwrap() + resent_without_id
    );
    for (reason, n) in &counts.rejected {
        let want = e["rejected"]
            .get(*reason)
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let extra = if *reason == "invalid_field" {
            mismatched
        } else {
            0
        };
        assert_eq!(*n, want + extra, "rejected as {reason}");
    }
    support::assert_conservation(&service.http, &js, &config.streams.events_stream).await;

    // The dead-letter stream holds exactly the rejected messages; a mismatch names both
    // ids and the subject it was published on.
    let dead = read_stream(&js, &config.streams.dead_letter_stream).await;
    let rejected: u64 = counts.rejected.values().sum();
    assert_eq!(dead.len() as u64, rejected, "one dead letter per rejection");
    let decoys: Vec<_> = dead
        .iter()
        .filter(|m| {
            m.headers
                .as_ref()
                .unwrap()
                .get(HEADER_SOURCE_SUBJECT)
                .unwrap()
                .as_str()
                .contains(".decoy-")
        })
        .collect();
    assert_eq!(decoys.len() as u64, mismatched);
    for d in decoys {
        let headers = d.headers.as_ref().unwrap();
        assert_eq!(
            headers.get(HEADER_REASON).unwrap().as_str(),
            "invalid_field"
        );
        let subject = headers.get(HEADER_SOURCE_SUBJECT).unwrap().as_str();
        assert!(
            subject.starts_with("match_stats.events.decoy-") && subject.split('.').count() == 3,
            "the subject as published, not as stored: {subject}"
        );
        let detail = headers.get(HEADER_DETAIL).unwrap().as_str();
        let decoy = subject.rsplit('.').next().unwrap();
        assert!(
            detail.contains(decoy) && detail.contains("match_id"),
            "{detail}"
        );
    }

    // Every match equals the contract's expected object; no decoy match exists.
    for (id, want) in scenario.expected["matches"].as_object().unwrap() {
        let url = format!("{}/api/v1/match-stats/matches/{id}", service.http);
        let deadline = tokio::time::Instant::now() + WAIT;
        let got = loop {
            let got: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
            if got["event_count"] == want["event_count"] || tokio::time::Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        json::assert_close(&got, want, &format!("REST {id}"));
    }
    let first_decoy = first_decoy.expect("decoys published");
    let decoy = reqwest::get(format!(
        "{}/api/v1/match-stats/matches/{first_decoy}",
        service.http
    ))
    .await
    .unwrap();
    assert_eq!(decoy.status(), 404);

    // Snapshots ran meanwhile (every second): no partition was given up or fenced.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(service.counts().snapshots_written > 0);
    assert_eq!(
        service.stats.releases.load(Ordering::Relaxed),
        0,
        "no partition of a single replica is ever given up"
    );
    service.stop().await;
}
