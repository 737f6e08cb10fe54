//! The delta messages a batch publishes, against what decoding them gives and what
//! `rmp_serde` writes for them.

use bytes::Bytes;
use match_stats_commands::decode;

use super::*;
use crate::command_side::matches::{Decision, PartitionMatches, Source};

/// What a publisher hands its projector is what the projector would decode from the
/// message: every delta message of the small scenario, coalesced per batch of 64.
#[test]
fn each_delta_messages_copy_equals_its_decoded_payload() {
    let names = StreamNames::defaults();
    // As if the stream stored each line long after the scenario's day.
    let stored_at_ms = 4_102_444_800_000;
    let scenario = match_stats_harness::contract::scenario("small");
    let mut matches = PartitionMatches::restore(HashMap::new(), 0);
    let (mut checked, mut completed) = (0, 0);
    for batch in scenario.messages.chunks(64) {
        let mut deltas = DeltaBatch::default();
        for m in batch {
            let Ok(event) = decode(&m.payload, stored_at_ms) else {
                continue;
            };
            let subject = format!("{}.16.0.{}", names.events_subject, event.match_id);
            let source = Source {
                sequence: m.seq,
                stored_at_ms,
                subject: &subject,
            };
            let payload = Bytes::from(m.payload.clone());
            if let Decision::Applied(applied) = matches.process(&payload, source, &names) {
                deltas.push(applied, None);
            }
        }
        let named = deltas
            .effects(&names, Format::Named, &Published::new(), usize::MAX)
            .0;
        for effect in &named {
            let decoded: StatDelta = rmp_serde::from_slice(&effect.payload).unwrap();
            assert_eq!(Some(&decoded), effect.handoff.as_deref());
            // The writer's direct encoding is serde's, byte for byte.
            assert_eq!(effect.payload, rmp_serde::to_vec_named(&decoded).unwrap());
            assert_eq!(effect.headers.get(FORMAT_HEADER).unwrap().as_str(), "2");
            checked += 1;
            completed += usize::from(decoded.match_view.is_some());
        }
        // Format 3: the same deltas (read by the service's reader and by serde), in fewer
        // bytes, said so in the header.
        let compact = deltas
            .effects(&names, Format::Compact, &Published::new(), usize::MAX)
            .0;
        assert_eq!(compact.len(), named.len());
        for (effect, named) in compact.iter().zip(&named) {
            let decoded = StatDelta::from_msgpack(&effect.payload).unwrap();
            assert_eq!(Some(&decoded), named.handoff.as_deref());
            assert_eq!(decoded, rmp_serde::from_slice(&effect.payload).unwrap());
            assert_eq!(effect.headers.get(FORMAT_HEADER).unwrap().as_str(), "3");
        }
        let bytes = |effects: &[Effect]| effects.iter().map(|e| e.payload.len()).sum::<usize>();
        assert!(
            bytes(&compact) < bytes(&named),
            "{} against {}",
            bytes(&compact),
            bytes(&named)
        );
        let (effects, _) = deltas.effects(&names, Format::Named, &Published::new(), 0);
        assert!(
            effects.iter().all(|e| e.handoff.is_none()),
            "no room, no copy"
        );
        // Room for some: copies only while they fit, each still whole.
        let room = 40;
        let (effects, _) = deltas.effects(&names, Format::Named, &Published::new(), room);
        let weights: Vec<usize> = effects
            .iter()
            .filter_map(|e| e.handoff.as_deref())
            .map(|d| crate::handoff::weight(d.entries.iter().map(|e| e.changes.len()).sum()))
            .collect();
        assert!(weights.iter().sum::<usize>() <= room, "{weights:?}");
        if let Some(first) = effects.first() {
            let decoded: StatDelta = rmp_serde::from_slice(&first.payload).unwrap();
            let changes = decoded.entries.iter().map(|e| e.changes.len()).sum();
            if crate::handoff::weight(changes) <= room {
                assert!(first.handoff.is_some(), "the first copy fits");
            }
        }
    }
    assert!(
        checked > 50 && completed > 0,
        "{checked} messages, {completed} completed"
    );
}
