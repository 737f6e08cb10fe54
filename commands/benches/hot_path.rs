//! Decode+validate and apply, per event type, on the small scenario's own payloads; and
//! encoding a delta message the way the writer does against `rmp_serde` (and in format 3).
//!
//! Apply is measured on a match already warmed by the whole scenario's first match (its
//! players and weapons exist), with fresh event ids so nothing is a duplicate. The delta
//! message holds the first match's first 16 applied events, as a catch-up coalesces them;
//! it is read back both ways too.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use match_stats_commands::delta::Format;
use match_stats_commands::{Event, EventId, Match, Outcome, StatDelta, StatDeltaRef, decode};
use match_stats_harness::contract;

const STORED_AT_MS: i64 = 1_767_312_000_000;

fn payloads_by_type() -> BTreeMap<&'static str, Vec<Vec<u8>>> {
    let mut by_type: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    for m in contract::scenario("small").messages {
        if let Ok(event) = decode(&m.payload, STORED_AT_MS) {
            by_type
                .entry(event.kind.event_type())
                .or_default()
                .push(m.payload);
        }
    }
    by_type
}

fn bench(c: &mut Criterion) {
    let by_type = payloads_by_type();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (event_type, payloads) in &by_type {
        let mut i = 0;
        group.bench_function(*event_type, |b| {
            b.iter(|| {
                i = (i + 1) % payloads.len();
                decode(&payloads[i], STORED_AT_MS).unwrap()
            })
        });
    }
    group.finish();

    // A live match (no match_end) warmed with every event of the first scenario match.
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
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(1));
    for event_type in by_type
        .keys()
        .filter(|t| !matches!(**t, "match_end" | "match_start"))
    {
        let samples: Vec<Event> = events
            .iter()
            .filter(|e| e.match_id == match_id && e.kind.event_type() == *event_type)
            .cloned()
            .collect();
        group.bench_function(*event_type, |b| {
            b.iter_custom(|iters| {
                let mut aggregate = warm.clone();
                let batch: Vec<Event> = (0..iters)
                    .map(|n| {
                        let mut e = samples[n as usize % samples.len()].clone();
                        e.event_id = EventId::parse(&format!("bench-{n}")).unwrap();
                        e
                    })
                    .collect();
                let start = Instant::now();
                for (n, e) in batch.iter().enumerate() {
                    std::hint::black_box(aggregate.handle(e, n as u64));
                }
                start.elapsed()
            })
        });
    }
    group.finish();

    let mut fresh = Match::new(match_id);
    let entries: Vec<_> = events
        .iter()
        .filter(|e| e.match_id == match_id)
        .enumerate()
        .filter_map(|(n, e)| match fresh.handle(e, n as u64) {
            Outcome::Applied(entry) => Some(entry),
            _ => None,
        })
        .take(16)
        .collect();
    let delta = StatDeltaRef {
        match_id,
        entries: entries.iter().map(Cow::Borrowed).collect(),
        match_view: None,
    };
    let changes: usize = entries.iter().map(|e| e.changes.len()).sum();
    let mut group = c.benchmark_group(format!("encode a delta of 16 events, {changes} changes"));
    group.throughput(Throughput::Elements(1));
    group.bench_function("rmp_serde::to_vec_named", |b| {
        b.iter(|| rmp_serde::to_vec_named(&delta).unwrap())
    });
    group.bench_function("StatDeltaRef::to_msgpack", |b| {
        b.iter(|| delta.to_msgpack())
    });
    let bytes = delta.to_msgpack();
    group.bench_function("decoded: rmp_serde::from_slice", |b| {
        b.iter(|| rmp_serde::from_slice::<StatDelta>(&bytes).unwrap())
    });
    group.bench_function("decoded: StatDelta::from_msgpack", |b| {
        b.iter(|| StatDelta::from_msgpack(&bytes).unwrap())
    });
    group.bench_function("skimmed: StatDelta::carries_match", |b| {
        b.iter(|| StatDelta::carries_match(&bytes).unwrap())
    });
    // Format 3: the same delta with entries and changes as arrays.
    group.bench_function("format 3: StatDeltaRef::encode", |b| {
        b.iter(|| delta.encode(Format::Compact))
    });
    let compact = delta.encode(Format::Compact);
    group.bench_function("format 3 decoded: StatDelta::from_msgpack", |b| {
        b.iter(|| StatDelta::from_msgpack(&compact).unwrap())
    });
    group.finish();
    println!(
        "a delta of 16 events, {changes} changes: {} bytes in format 2, {} in format 3",
        bytes.len(),
        compact.len()
    );
}

criterion_group! {
    name = hot_path;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench
}
criterion_main!(hot_path);
