//! Decode and apply per event on one match against many matches interleaved, as a
//! partition writer sees them in a catch-up: what the aggregates cost once they no
//! longer sit in the CPU's caches (BENCHMARKS.md, "Decode and apply over many matches").
//!
//! `cargo bench --bench aggregates` (part of `make bench`). The load generator's events
//! (`PLAYERS`, default 64, players a match), 1,000,000 in all, round-robin over the
//! matches; each match an aggregate of its own, one change list handed from event to
//! event as the service does. Prints nanoseconds an event; in-process, no NATS. Run by
//! `cargo test` (no `--bench` argument), it checks itself on 10,000 events.

use std::collections::HashMap;
use std::time::Instant;

use match_stats::tools::sim::SimMatch;
use match_stats_commands::{Match, Outcome, decode};
use rand::SeedableRng;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (total, spreads): (u32, &[u32]) = if bench {
        (1_000_000, &[1, 16, 62, 250, 1000])
    } else {
        (10_000, &[1, 16])
    };
    let players: u32 = std::env::var("PLAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    println!("| matches interleaved | events | decode + validate | apply |");
    println!("|---|---|---|---|");
    for &matches in spreads {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut sims: Vec<SimMatch> = (0..matches)
            .map(|n| SimMatch::new("bench", n, players, total / matches))
            .collect();
        let mut payloads = Vec::with_capacity(total as usize);
        loop {
            let before = payloads.len();
            payloads.extend(
                sims.iter_mut()
                    .filter_map(|s| s.next(&mut rng))
                    .map(|(_, p)| p),
            );
            if payloads.len() == before {
                break;
            }
        }
        let stored_at = chrono::Utc::now().timestamp_millis();
        let started = Instant::now();
        let events: Vec<_> = payloads
            .iter()
            .map(|p| decode(p, stored_at).expect("the load generator's events are valid"))
            .collect();
        let decode_ns = started.elapsed().as_nanos() as f64 / events.len() as f64;
        let mut aggregates: HashMap<_, Match> = HashMap::new();
        let mut buffer = Vec::new();
        let mut applied = 0;
        let started = Instant::now();
        for (n, event) in events.iter().enumerate() {
            let aggregate = aggregates
                .entry(event.match_id)
                .or_insert_with(|| Match::new(event.match_id));
            if let Outcome::Applied(entry) =
                aggregate.handle_into(event, n as u64, std::mem::take(&mut buffer))
            {
                applied += 1;
                buffer = entry.changes;
            }
        }
        let apply_ns = started.elapsed().as_nanos() as f64 / events.len() as f64;
        assert_eq!(applied, events.len(), "every generated event applies");
        println!(
            "| {matches} x {players} players | {} | {decode_ns:.0} ns | {apply_ns:.0} ns |",
            events.len()
        );
    }
}
