//! `make bench-live-baselines`: how far down the live publish-to-delta latency can go on
//! this machine with the NATS work alone, before the service does anything of its own.
//!
//! Four baselines take turns on one nats-server, each in turn at every rate (LIVE_RATES,
//! by default 5,000 and 20,000 events/s, of 1,000 matches x 64 players, 10 s each),
//! LIVE_ROUNDS (3) times, so that the machine's drift falls on all of them alike:
//!
//! - **relay**: the load test's bare relay (`support/relay.rs`): one unfiltered pull
//!   consumer, one copy per event to one subject, the acks awaited, one ack-all.
//! - **partitioned relay**: the same, with one consumer per partition filter of the
//!   service (16): what reading the events stream by partition costs nats-server.
//! - **bare pipeline, linger L**: the service's NATS work per live event with no domain
//!   work (`support/pipeline.rs`): its partition consumers and batches (`BATCH_LINGER` L:
//!   0, the default 1 ms, 3 and 6 ms), one message per match per batch to the match's own
//!   subject, fenced with `Nats-Expected-Last-Subject-Sequence` as a delta is, and every
//!   message read back by an ordered consumer as the query side reads the deltas.
//!   LIVE_LINGERS (comma-separated milliseconds) replaces the four lingers.
//! - **bare pipeline, nothing read back** (at the service's linger): the same without the
//!   ordered consumer, the NATS work of a layout whose query side took this replica's
//!   own deltas from memory alone: what reading every delta back adds.
//!
//! Each run prints publish to copy (p50, p99, p99.9, measured by the load generator as in
//! the load test) and the CPU seconds of nats-server and of this process (the load
//! generator and the baseline) over the run; the summary gives each baseline's p99 as a
//! multiple of the relay's in the same round. LIVE_PRELOAD events (0) are published
//! first, for a stream the size of the load test's (1,000,000).
//!
//! Under `cargo test` (no `--bench`), a smoke run with small numbers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};

#[path = "support/pipeline.rs"]
#[allow(dead_code)]
mod pipeline;
#[path = "support/relay.rs"]
mod relay;
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;
use match_stats::Config;
use match_stats::tools::loadgen::{self, Watch};
use match_stats_harness::NatsServer;
use support::feed::{config, load};
use support::{env_list, env_number};

struct Settings {
    rates: Vec<u32>,
    rounds: u32,
    seconds: u64,
    lingers_ms: Vec<u64>,
    preload: u64,
}

fn settings() -> Settings {
    if std::env::args().any(|a| a == "--bench") {
        Settings {
            rates: env_list("LIVE_RATES").unwrap_or_else(|| vec![5_000, 20_000]),
            rounds: env_number("LIVE_ROUNDS", 3),
            seconds: 10,
            lingers_ms: env_list("LIVE_LINGERS").unwrap_or_else(|| vec![0, 1, 3, 6]),
            preload: env_number("LIVE_PRELOAD", 0),
        }
    } else {
        Settings {
            rates: vec![500],
            rounds: 1,
            seconds: 1,
            lingers_ms: vec![1],
            preload: 0,
        }
    }
}

/// What takes the events and publishes their copies.
#[derive(Clone, Copy, PartialEq)]
enum Baseline {
    Relay,
    PartitionedRelay,
    Pipeline { linger_ms: u64, read_back: bool },
}

impl std::fmt::Display for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Baseline::Relay => write!(f, "relay"),
            Baseline::PartitionedRelay => write!(f, "partitioned relay"),
            Baseline::Pipeline {
                linger_ms,
                read_back: true,
            } => write!(f, "bare pipeline, linger {linger_ms} ms"),
            Baseline::Pipeline {
                linger_ms,
                read_back: false,
            } => write!(f, "bare pipeline, nothing read back, linger {linger_ms} ms"),
        }
    }
}

/// One baseline at one rate in one round.
struct Run {
    baseline: Baseline,
    rate: u32,
    round: u32,
    p99_ms: f64,
}

/// Starts `baseline`, runs every rate through it, stops it.
async fn measure(
    baseline: Baseline,
    round: u32,
    (js, config, nats): (&jetstream::Context, &Config, &NatsServer),
    settings: &Settings,
) -> anyhow::Result<Vec<Run>> {
    let events = config.streams.events_stream.clone();
    let filters: Vec<String> = match_stats::nats::Partitioning::of(&config.streams)
        .all()
        .map(|p| p.filter(&config.streams))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut relays = Vec::new();
    let mut pipeline = None;
    let copies = match baseline {
        Baseline::Relay | Baseline::PartitionedRelay => {
            let filters: Vec<Option<String>> = if baseline == Baseline::Relay {
                vec![None]
            } else {
                filters.into_iter().map(Some).collect()
            };
            for filter in filters {
                relays.push(tokio::spawn(relay::run(
                    js.clone(),
                    events.clone(),
                    consumer::DeliverPolicy::New,
                    true,
                    filter,
                    Arc::new(AtomicU64::new(0)),
                    stop.clone(),
                )));
            }
            relay::COPIES
        }
        Baseline::Pipeline {
            linger_ms,
            read_back,
        } => {
            let linger = Duration::from_millis(linger_ms);
            let batch = config.batch_size as usize;
            pipeline =
                Some(pipeline::live(js, &events, filters, (batch, linger), read_back).await?);
            pipeline::LIVE_COPIES
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let nats_pid = nats.pid().expect("nats-server runs");
    let mut runs = Vec::new();
    for &rate in &settings.rates {
        let (nats_before, own_before) = (
            support::cpu_seconds(nats_pid),
            support::cpu_seconds(std::process::id()),
        );
        let watch = Watch::MessageIds(copies.into());
        let args = load(0, rate, Some(settings.seconds), true);
        let report = loadgen::run_watching(config, &args, watch).await?;
        let nats_cpu = support::cpu_seconds(nats_pid) - nats_before;
        let own_cpu = support::cpu_seconds(std::process::id()) - own_before;
        let latency = report
            .freshness
            .ok_or_else(|| anyhow::anyhow!("{baseline}: no copy seen"))?;
        println!(
            "round {round}, {baseline}, {rate} events/s: reached {:.0}/s; publish to copy p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; CPU nats-server {nats_cpu:.2} s, load generator and baseline {own_cpu:.2} s",
            report.events_per_second, latency.p50_ms, latency.p99_ms, latency.p999_ms
        );
        runs.push(Run {
            baseline,
            rate,
            round,
            p99_ms: latency.p99_ms,
        });
    }
    stop.store(true, Ordering::Relaxed);
    for task in relays {
        task.await??;
    }
    if let Some(pipeline) = pipeline {
        pipeline.stop().await?;
    }
    Ok(runs)
}

/// Per baseline and rate, each round's p99 and its multiple of the relay's.
fn summary(runs: &[Run], baselines: &[Baseline], settings: &Settings) {
    println!("\n| baseline | rate | p99 per round (x the relay's in that round) |");
    println!("|---|---|---|");
    for baseline in baselines {
        for &rate in &settings.rates {
            let cells: Vec<String> = (0..settings.rounds)
                .filter_map(|round| {
                    let find = |b: Baseline| {
                        runs.iter()
                            .find(|r| r.baseline == b && r.rate == rate && r.round == round)
                    };
                    let run = find(*baseline)?;
                    let relay = find(Baseline::Relay)?;
                    Some(format!(
                        "{:.2} ms ({:.2}x)",
                        run.p99_ms,
                        run.p99_ms / relay.p99_ms
                    ))
                })
                .collect();
            println!("| {baseline} | {rate}/s | {} |", cells.join(", "));
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = settings();
    let nats = NatsServer::start();
    let config = config(&nats, None);
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    match_stats::nats::streams::ensure(&js, &config).await?;
    if settings.preload > 0 {
        eprintln!(
            "live-baselines: publishing {} events first...",
            settings.preload
        );
        loadgen::run(&config, &load(settings.preload, 0, None, false)).await?;
    }
    let mut baselines = vec![Baseline::Relay, Baseline::PartitionedRelay];
    baselines.extend(
        settings
            .lingers_ms
            .iter()
            .map(|&linger_ms| Baseline::Pipeline {
                linger_ms,
                read_back: true,
            }),
    );
    // The same at the service's linger with nothing read back: what the query side
    // reading every delta from the stream adds to a live event.
    baselines.push(Baseline::Pipeline {
        linger_ms: config.batch_linger.as_millis() as u64,
        read_back: false,
    });
    let mut runs = Vec::new();
    for round in 0..settings.rounds {
        for &baseline in &baselines {
            eprintln!("live-baselines: round {round}, {baseline}...");
            runs.extend(measure(baseline, round, (&js, &config, &nats), &settings).await?);
        }
    }
    summary(&runs, &baselines, &settings);
    Ok(())
}
