//! The deltas stream folded independently of the service (through the query side's
//! projection), and checks of what it says against the contract's expected results; and
//! a delta published by hand, as an earlier writer (or a damaged stream) leaves one.

use std::collections::BTreeMap;

use async_nats::jetstream;
use match_stats_commands::{MatchId, StatDelta};
use match_stats_harness::json;
use match_stats_queries::MatchProjection;
use serde_json::Value;

use super::{Service, read_stream};

/// Everything the deltas stream says, folded: the projections, each match's versions in
/// stream order, and the last full match object per match.
pub struct Deltas {
    pub projections: BTreeMap<MatchId, MatchProjection>,
    versions: BTreeMap<MatchId, Vec<u64>>,
    final_views: BTreeMap<MatchId, Value>,
    pub messages: usize,
    /// Delta entries (applied events) in all messages.
    pub entries: usize,
}

pub async fn fold_deltas(js: &jetstream::Context, stream: &str) -> Deltas {
    let mut deltas = Deltas {
        projections: BTreeMap::new(),
        versions: BTreeMap::new(),
        final_views: BTreeMap::new(),
        messages: 0,
        entries: 0,
    };
    for message in read_stream(js, stream).await {
        deltas.messages += 1;
        deltas.entries += delta_entries(&message.payload);
        let delta: StatDelta =
            rmp_serde::from_slice(&message.payload).expect("deltas are MessagePack StatDelta");
        assert_eq!(
            message.subject.as_str(),
            format!("match_stats.deltas.{}", delta.match_id),
            "one subject per match"
        );
        let versions = deltas.versions.entry(delta.match_id).or_default();
        versions.extend(delta.entries.iter().map(|e| e.version));
        deltas
            .projections
            .entry(delta.match_id)
            .or_insert_with(|| MatchProjection::new(delta.match_id))
            .apply(&delta)
            .expect("versions follow each other");
        if let Some(view) = &delta.match_view {
            deltas
                .final_views
                .insert(delta.match_id, serde_json::to_value(view).unwrap());
        }
    }
    deltas
}

fn delta_entries(payload: &[u8]) -> usize {
    rmp_serde::from_slice::<StatDelta>(payload)
        .map(|d| d.entries.len())
        .unwrap_or(0)
}

pub fn assert_gapless(deltas: &Deltas) {
    for (id, versions) in &deltas.versions {
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(
            versions, &expected,
            "match {id}: every version once, in order"
        );
    }
}

pub fn assert_matches_expected(deltas: &Deltas, expected: &Value) {
    let expected = expected["matches"].as_object().unwrap();
    assert_eq!(deltas.projections.len(), expected.len());
    for (id, projection) in &deltas.projections {
        let want = &expected[id.as_str()];
        json::assert_close(
            &serde_json::to_value(projection.view()).unwrap(),
            want,
            &format!("deltas folded for {id}"),
        );
        // The final delta carries the service's own aggregate as the active-matches
        // list renders it: the match object without its players.
        let mut summary = want.clone();
        summary.as_object_mut().unwrap().remove("player_stats");
        json::assert_close(
            &deltas.final_views[id],
            &summary,
            &format!("final match object of {id}"),
        );
    }
}

pub fn assert_counts(service: &Service, expected: &Value, times: u64) {
    let counts = service.counts();
    let e = &expected["counts"];
    assert_eq!(counts.received, times * e["published"].as_u64().unwrap());
    assert_eq!(
        counts.applied,
        e["applied"].as_u64().unwrap(),
        "applied once, whatever the repeats"
    );
    let duplicates = e["duplicates"].as_u64().unwrap();
    assert_eq!(
        counts.duplicates,
        duplicates + (times - 1) * (duplicates + counts.applied)
    );
    for (reason, n) in &counts.rejected {
        let want = e["rejected"]
            .get(*reason)
            .and_then(Value::as_u64)
            .unwrap_or(0);
        assert_eq!(*n, times * want, "rejected as {reason}");
    }
}

/// Publishes `delta` on `subject` as the service's writers do (format 2, its message id),
/// and waits for the stream's acknowledgement.
pub async fn publish_delta(js: &jetstream::Context, subject: String, delta: &StatDelta) {
    use match_stats_commands::delta::{FORMAT_HEADER, Format};
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(FORMAT_HEADER, Format::Named.version().to_string().as_str());
    headers.insert(async_nats::header::NATS_MESSAGE_ID, delta.msg_id().as_str());
    js.publish_with_headers(
        subject,
        headers,
        rmp_serde::to_vec_named(delta).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}
