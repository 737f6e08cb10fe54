//! Folding the deltas of the small scenario, after a MessagePack round trip, reproduces
//! `expected.json`'s match objects; replayed deltas change nothing; a gap is reported.

use std::collections::BTreeMap;

use match_stats_commands::{Match, MatchId, Outcome, StatDelta, decode};
use match_stats_harness::{contract, json};
use match_stats_queries::{MatchProjection, ProjectionError};

const STORED_AT_MS: i64 = 1_767_312_000_000;

/// The small scenario's deltas, one message per applied event, encoded and decoded as
/// they travel on the deltas stream.
fn scenario_deltas() -> (contract::Scenario, Vec<StatDelta>) {
    let scenario = contract::scenario("small");
    let mut matches: BTreeMap<MatchId, Match> = BTreeMap::new();
    let mut deltas = Vec::new();
    for m in &scenario.messages {
        let Ok(event) = decode(&m.payload, STORED_AT_MS) else {
            continue;
        };
        let aggregate = matches
            .entry(event.match_id)
            .or_insert_with(|| Match::new(event.match_id));
        if let Outcome::Applied(entry) = aggregate.handle(&event, m.seq) {
            let delta = StatDelta {
                match_id: event.match_id,
                entries: vec![entry],
                match_view: None,
            };
            let bytes = rmp_serde::to_vec_named(&delta).expect("encode");
            deltas.push(rmp_serde::from_slice(&bytes).expect("decode"));
        }
    }
    (scenario, deltas)
}

fn project(deltas: &[StatDelta]) -> BTreeMap<MatchId, MatchProjection> {
    let mut projections: BTreeMap<MatchId, MatchProjection> = BTreeMap::new();
    for d in deltas {
        projections
            .entry(d.match_id)
            .or_insert_with(|| MatchProjection::new(d.match_id))
            .apply(d)
            .expect("gapless");
    }
    projections
}

#[test]
fn folding_deltas_reproduces_expected_matches() {
    let (scenario, deltas) = scenario_deltas();
    let projections = project(&deltas);
    let expected = scenario.expected["matches"].as_object().unwrap();
    assert_eq!(projections.len(), expected.len());
    for (id, p) in &projections {
        let actual = serde_json::to_value(p.view()).unwrap();
        json::assert_close(
            &actual,
            &expected[id.as_str()],
            &format!("projected match {id}"),
        );
    }
    let applied: u64 = projections.values().map(|p| p.version()).sum();
    assert_eq!(
        applied,
        scenario.expected["counts"]["applied"].as_u64().unwrap()
    );
}

#[test]
fn replayed_deltas_change_nothing() {
    let (_, deltas) = scenario_deltas();
    let mut projections = project(&deltas);
    let before: Vec<_> = projections
        .values()
        .map(|p| serde_json::to_value(p.view()).unwrap())
        .collect();
    for d in &deltas {
        assert_eq!(projections.get_mut(&d.match_id).unwrap().apply(d), Ok(0));
    }
    let after: Vec<_> = projections
        .values()
        .map(|p| serde_json::to_value(p.view()).unwrap())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn a_missing_version_is_an_error() {
    let (_, deltas) = scenario_deltas();
    let first = &deltas[0];
    let third = deltas
        .iter()
        .filter(|d| d.match_id == first.match_id)
        .nth(2)
        .unwrap();
    let mut p = MatchProjection::new(first.match_id);
    p.apply(first).unwrap();
    assert!(matches!(
        p.apply(third),
        Err(ProjectionError::Gap {
            have: 1,
            got: 3,
            ..
        })
    ));
}

#[test]
fn incremental_snapshots_equal_a_full_render_after_every_delta() {
    use match_stats_queries::leaderboard::Metric;
    use match_stats_queries::{MatchBuilder, MatchSnapshot};

    let (_, deltas) = scenario_deltas();
    let mut builders: BTreeMap<MatchId, MatchBuilder> = BTreeMap::new();
    let mut projections: BTreeMap<MatchId, MatchProjection> = BTreeMap::new();
    for d in &deltas {
        builders
            .entry(d.match_id)
            .or_insert_with(|| MatchBuilder::new(d.match_id))
            .apply(d)
            .unwrap();
        let projection = projections
            .entry(d.match_id)
            .or_insert_with(|| MatchProjection::new(d.match_id));
        projection.apply(d).unwrap();
        let incremental = builders.get_mut(&d.match_id).unwrap().snapshot();
        let full = MatchSnapshot::from_view(projection.view());
        let body: serde_json::Value = serde_json::from_slice(incremental.body()).unwrap();
        assert_eq!(
            body,
            serde_json::to_value(projection.view()).unwrap(),
            "version {}",
            projection.version()
        );
        for metric in Metric::ALL {
            let a: Vec<_> = incremental.ranked(metric).collect();
            let b: Vec<_> = full.ranked(metric).collect();
            assert_eq!(a, b, "{metric:?} at version {}", projection.version());
        }
    }
}
