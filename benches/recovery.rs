//! Recovery benchmark: with RECOVERY_EVENTS (default 1,000,000) events of 1,000 matches
//! in the events stream, the time from start to ready:
//! 1. first start: nothing processed yet (catch-up: every event applied, every delta
//!    published);
//! 2. restart after a graceful stop: from the final snapshot;
//! 3. restart with the snapshot bucket deleted: the whole stream replayed, nothing
//!    re-published.
//!
//! Reports when the command side is ready (partitions restored and replayed up to their
//! consumers' ack floors), when it has caught up (every partition consumer drained, as
//! read every second) and when the read model has caught up with the deltas stream
//! (`/ready`). Run with `make bench-recovery`; under
//! `cargo test` it runs once with 5,000 events as a smoke test.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use clap::Parser;
use match_stats::App;
use match_stats::cli::Cli;
use match_stats::tools::sim::SimMatch;
use match_stats_harness::NatsServer;

const MATCHES: u32 = 1000;
const PLAYERS: u32 = 64;
const ACK_WINDOW: usize = 4096;

struct Start {
    command_ready: Duration,
    caught_up: Duration,
    read_model_ready: Duration,
}

async fn start_and_measure(
    config: &match_stats::Config,
) -> (
    Start,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let started = Instant::now();
    let app = App::build(config.clone()).await.expect("app builds");
    let stats = app.stats();
    let api = app.api_state();
    let token = app.shutdown_token();
    let task = tokio::spawn(app.run_until_stopped());
    let mut command_ready = None;
    let mut caught_up = None;
    let mut last_print = Instant::now();
    loop {
        if command_ready.is_none() && stats.recovered.load(Ordering::Relaxed) {
            command_ready = Some(started.elapsed());
        }
        // Every partition's consumer drained (as last read, every second).
        if command_ready.is_some()
            && caught_up.is_none()
            && stats
                .consumer_lag()
                .is_some_and(|lag| lag.pending == 0 && lag.ack_pending == 0)
        {
            caught_up = Some(started.elapsed());
        }
        if let (Some(command_ready), Some(caught_up)) = (command_ready, caught_up)
            && api.model.is_caught_up()
        {
            let start = Start {
                command_ready,
                caught_up,
                read_model_ready: started.elapsed(),
            };
            return (start, token, task);
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "  ... {:.0} s: replayed {} of {}, applied {}",
                started.elapsed().as_secs_f64(),
                stats.recovery_done.load(Ordering::Relaxed),
                stats.recovery_total.load(Ordering::Relaxed),
                stats.decided().applied
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: then this is a
    // quick smoke run that checks the benchmark works.
    let default = if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        5_000
    };
    let total: u64 = std::env::var("RECOVERY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let nats = NatsServer::start();
    let config = Cli::try_parse_from([
        "match-stats",
        "--nats-url",
        &nats.url(),
        "--http-addr",
        "127.0.0.1:0",
        "--redis-addr",
        "",
        "--log-level",
        "warn",
    ])?
    .config;
    let client = async_nats::connect(nats.url()).await?;
    let js = jetstream::new(client);
    match_stats::nats::streams::ensure(&js, &config).await?;

    // Publish: 1000 matches interleaved round-robin, pipelined acks.
    let per_match = (total / u64::from(MATCHES)) as u32;
    let mut sims: Vec<SimMatch> = (0..MATCHES)
        .map(|n| {
            SimMatch::new(
                "bench",
                n,
                PLAYERS,
                per_match.saturating_sub(PLAYERS + 1).max(10),
            )
        })
        .collect();
    let mut rng = rand::rng();
    let started = Instant::now();
    let mut published = 0u64;
    let mut pending = Vec::with_capacity(ACK_WINDOW);
    'publish: while published < total {
        let mut progressed = false;
        for sim in sims.iter_mut() {
            let Some((event_id, payload)) = sim.next(&mut rng) else {
                continue;
            };
            progressed = true;
            let subject = format!("{}.{}", config.streams.events_subject, sim.id());
            let message = PublishMessage::build()
                .payload(payload.into())
                .message_id(event_id);
            pending.push(js.send_publish(subject, message).await?);
            published += 1;
            if pending.len() >= ACK_WINDOW {
                for ack in pending.drain(..) {
                    ack.await?;
                }
            }
            if published >= total {
                break 'publish;
            }
        }
        if !progressed {
            break;
        }
    }
    for ack in pending.drain(..) {
        ack.await?;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "published {published} events of {MATCHES} matches in {publish_secs:.1} s ({:.0}/s)",
        published as f64 / publish_secs
    );

    eprintln!("1/3 first start (catch-up)...");
    let (first, token, task) = start_and_measure(&config).await;
    token.cancel();
    task.await??;
    eprintln!("2/3 restart from the final snapshot...");
    let (snapshot, token, task) = start_and_measure(&config).await;
    token.cancel();
    task.await??;
    eprintln!("3/3 restart without snapshots...");
    js.delete_key_value(&config.streams.snapshot_bucket).await?;
    let (replay, token, task) = start_and_measure(&config).await;
    token.cancel();
    task.await??;

    println!(
        "\nrecovery with {published} events of {MATCHES} matches ({PLAYERS} players) in the stream"
    );
    println!(
        "| start | command side ready (restored) | command side caught up (consumers drained) | read model caught up (/ready) |"
    );
    println!("|---|---|---|---|");
    for (name, s) in [
        ("first start: catch-up, every delta published", &first),
        ("restart from the final snapshot", &snapshot),
        (
            "restart without snapshots: full replay, nothing re-published",
            &replay,
        ),
    ] {
        println!(
            "| {name} | {:.2} s | {:.2} s | {:.2} s |",
            s.command_ready.as_secs_f64(),
            s.caught_up.as_secs_f64(),
            s.read_model_ready.as_secs_f64()
        );
    }
    Ok(())
}
