//! Heap allocations per event in steady state, counted by dhat's allocator: decode +
//! validate of each event type (the scenario's MessagePack payloads), and apply of each
//! type on a live match that already knows its players and weapons (the first sighting
//! of a player or weapon allocates its entry; that is not steady state), the change list
//! handed back from the previous event's delta as the service does. `make bench` prints
//! the table:
//! `cargo test --release -p match-stats-commands --test allocations -- --nocapture`.
//!
//! Counting allocations is deterministic, so the test holds the figure: none, for decode
//! and for apply.

use std::collections::BTreeMap;

use match_stats_commands::{DEDUP_WINDOW, Event, EventId, Match, Outcome, decode};
use match_stats_harness::contract;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const STORED_AT_MS: i64 = 1_767_312_000_000;
const ROUNDS: usize = 1000;

fn blocks() -> u64 {
    dhat::HeapStats::get().total_blocks
}

#[test]
fn heap_allocations_per_event_in_steady_state() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut by_type: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    for m in contract::scenario("small").messages {
        let json = m.payload.trim_ascii_start().starts_with(b"{");
        if let (Ok(event), false) = (decode(&m.payload, STORED_AT_MS), json) {
            by_type
                .entry(event.kind.event_type())
                .or_default()
                .push(m.payload);
        }
    }
    let events: Vec<Event> = by_type
        .values()
        .flatten()
        .map(|p| decode(p, STORED_AT_MS).unwrap())
        .collect();
    let match_id = events[0].match_id;
    let mut warm = Match::new(match_id);
    for (n, e) in events
        .iter()
        .filter(|e| e.match_id == match_id && e.kind.event_type() != "match_end")
        .enumerate()
    {
        warm.handle(e, n as u64);
    }

    println!("| event type | decode + validate: allocations/event | apply: allocations/event |");
    println!("|---|---|---|");
    let mut apply_allocations = BTreeMap::new();
    let mut decode_allocations = BTreeMap::new();
    for (event_type, payloads) in &by_type {
        let before = blocks();
        for i in 0..ROUNDS {
            std::hint::black_box(decode(&payloads[i % payloads.len()], STORED_AT_MS).unwrap());
        }
        let decode_per_event = (blocks() - before) as f64 / ROUNDS as f64;
        decode_allocations.insert(*event_type, decode_per_event);

        let samples: Vec<Event> = events
            .iter()
            .filter(|e| e.match_id == match_id && e.kind.event_type() == *event_type)
            .cloned()
            .collect();
        let apply = if samples.is_empty() || matches!(*event_type, "match_end" | "match_start") {
            "-".to_owned()
        } else {
            let mut aggregate = warm.clone();
            let batch: Vec<Event> = (0..DEDUP_WINDOW + ROUNDS)
                .map(|n| {
                    let mut e = samples[n % samples.len()].clone();
                    e.event_id = EventId::parse(&format!("alloc-{n}")).unwrap();
                    e
                })
                .collect();
            let mut buffer = Vec::new();
            let mut applied = 0;
            // A window's worth of events first: it gets the buffer its successors
            // reuse, fills the duplicate window, and passes each victim's first sighting
            // of each attacker (its damage window growing): none of that is steady state.
            let warm = DEDUP_WINDOW;
            for (n, e) in batch.iter().enumerate().take(warm) {
                match aggregate.handle_into(e, 9_000 + n as u64, buffer) {
                    Outcome::Applied(entry) => buffer = entry.changes,
                    other => panic!("{event_type}: every event applies: {other:?}"),
                }
            }
            let before = blocks();
            for (n, e) in batch.iter().enumerate().skip(warm) {
                match aggregate.handle_into(e, 10_000 + n as u64, buffer) {
                    Outcome::Applied(entry) => {
                        applied += 1;
                        buffer = entry.changes;
                    }
                    other => panic!("{event_type}: every event applies: {other:?}"),
                }
            }
            let per_event = (blocks() - before) as f64 / applied as f64;
            apply_allocations.insert(*event_type, per_event);
            format!("{per_event:.2}")
        };
        println!("| {event_type} | {decode_per_event:.2} | {apply} |");
    }
    for (event_type, per_event) in apply_allocations {
        assert!(
            per_event == 0.0,
            "{event_type}: apply allocates {per_event} blocks per event in steady state"
        );
    }
    for (event_type, per_event) in decode_allocations {
        assert!(
            per_event == 0.0,
            "{event_type}: MessagePack decode allocates {per_event} blocks per event"
        );
    }
}
