//! The pure library against the contract's test data: every vector decodes or rejects
//! as `vectors/expected.json` says, and folding the small scenario gives each message's
//! expected outcome and `expected.json`'s match objects.

use std::collections::BTreeMap;

use match_stats_commands::{Event, EventKind, Match, MatchId, Outcome, decode};
use match_stats_harness::{contract, json};
use serde_json::{Value, json};

/// The events stream's stored time used for the scenario: a day after its events.
const SCENARIO_STORED_AT_MS: i64 = 1_767_312_000_000;

/// The contract's normalized form of an event, written independently of the decoder's
/// own types: only keys that were present, timestamps as Unix milliseconds.
fn normalized(e: &Event) -> Value {
    let mut data = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        data.insert(k.to_owned(), v);
    };
    match &e.kind {
        EventKind::Kill {
            killer_id,
            victim_id,
            weapon,
            headshot,
            distance,
        } => {
            put("killer_id", json!(killer_id.as_str()));
            put("victim_id", json!(victim_id.as_str()));
            if let Some(w) = weapon {
                put("weapon", json!(w.as_str()));
            }
            put("headshot", json!(headshot));
            if let Some(d) = distance {
                put("distance", json!(d));
            }
        }
        other => panic!("no normalized form written for {other:?}"),
    }
    json!({
        "event_id": e.event_id.as_str(),
        "match_id": e.match_id.as_str(),
        "player_id": e.player_id.map(|p| p.as_str().to_owned()),
        "event_type": e.kind.event_type(),
        "timestamp_ms": e.timestamp_ms,
        "event_data": data,
    })
}

#[test]
fn every_vector_decodes_or_rejects_as_expected() {
    let vectors = contract::vectors();
    assert!(vectors.vectors.len() >= 43, "all vectors listed");
    let mut failures = Vec::new();
    for v in &vectors.vectors {
        let got = match decode(&v.payload(), vectors.stored_at_ms) {
            Ok(event) => {
                if let Some(expected) = &v.normalized {
                    let diffs = json::differences(&normalized(&event), expected);
                    if !diffs.is_empty() {
                        failures.push(format!("{}: normalized differs: {diffs:?}", v.file));
                    }
                }
                "accept".to_owned()
            }
            Err(rejection) => rejection.reason.as_str().to_owned(),
        };
        if got != v.expect {
            failures.push(format!("{}: got {got}, expected {}", v.file, v.expect));
        }
    }
    assert!(
        failures.is_empty(),
        "{} vectors differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn accepted_vectors_carry_the_typed_values() {
    let vectors = contract::vectors();
    let by_file = |name: &str| {
        let v = vectors
            .vectors
            .iter()
            .find(|v| v.file.starts_with(name))
            .expect("vector");
        decode(&v.payload(), vectors.stored_at_ms).expect("accepted")
    };
    assert!(matches!(by_file("09-").kind, EventKind::Damage { damage, .. } if damage == 42.5));
    assert!(
        matches!(by_file("16-").kind, EventKind::WeaponFire { shots: 1, .. }),
        "default shots is 1"
    );
    assert!(
        by_file("13-").player_id.is_none(),
        "match_start needs no player"
    );
}

/// Folds a scenario through decode and the aggregate, as the service does.
fn fold(scenario: &contract::Scenario) -> (BTreeMap<MatchId, Match>, Vec<String>) {
    let mut matches = BTreeMap::new();
    let mut mismatches = Vec::new();
    for m in &scenario.messages {
        let outcome = match decode(&m.payload, SCENARIO_STORED_AT_MS) {
            Err(r) => r.reason.as_str().to_owned(),
            Ok(event) => {
                let aggregate = matches
                    .entry(event.match_id)
                    .or_insert_with(|| Match::new(event.match_id));
                match aggregate.handle(&event, m.seq) {
                    Outcome::Applied(_) => "applied".to_owned(),
                    Outcome::Duplicate => "duplicate".to_owned(),
                    Outcome::Rejected(r) => r.reason.as_str().to_owned(),
                }
            }
        };
        if outcome != m.expect {
            mismatches.push(format!(
                "seq {}: got {outcome}, expected {}",
                m.seq, m.expect
            ));
        }
    }
    (matches, mismatches)
}

#[test]
fn small_scenario_every_message_has_its_expected_outcome() {
    let scenario = contract::scenario("small");
    let (_, mismatches) = fold(&scenario);
    assert!(
        mismatches.is_empty(),
        "{} messages differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn small_scenario_match_objects_equal_expected() {
    let scenario = contract::scenario("small");
    let (matches, _) = fold(&scenario);
    let expected = scenario.expected["matches"].as_object().expect("matches");
    assert_eq!(matches.len(), expected.len());
    for (id, m) in &matches {
        let actual = serde_json::to_value(m.view()).unwrap();
        json::assert_close(&actual, &expected[id.as_str()], &format!("match {id}"));
    }
}
