//! `match-stats demo-feed`: simulated matches ([`SimMatch`]) published as game servers
//! would, in MessagePack with `Nats-Msg-Id`, at a steady rate. A few deliberately bad
//! payloads show dead-lettering. It prints progress, and a summary of each match when its
//! final delta arrives.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage};
use clap::Args;
use futures::StreamExt;
use match_stats_commands::{MatchStatus, StatDelta};
use match_stats_queries::MatchProjection;
use rand::RngExt;

use super::sim::SimMatch;
use crate::config::Config;

/// How often the feed prints its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// Most publish acknowledgements awaited at once.
const MAX_PENDING_ACKS: usize = 256;

/// Settings of the demo feed.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Matches played at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub matches: u32,
    /// Players per match.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..=1_000))]
    pub players: u32,
    /// Events published per second, across all matches.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// Events per match before its `match_end`.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(10..=10_000_000))]
    pub events_per_match: u32,
    /// One message in this many is a bad payload (0: none).
    #[arg(long, default_value_t = 250)]
    pub bad_every: u32,
    /// Start a new match whenever one ends, until stopped (Ctrl-C).
    #[arg(long)]
    pub forever: bool,
}

/// Runs the feed until every match has ended (or forever, with `--forever`).
pub async fn run(config: &Config, args: DemoArgs) -> anyhow::Result<()> {
    let nats = crate::nats::connect(config).await?;
    let js = jetstream::new(nats.clone());
    let names = config.streams.clone();
    let summaries = nats
        .subscribe(format!("{}.*", names.deltas_subject))
        .await?;
    tokio::spawn(print_summaries(summaries));

    let mut rng = rand::rng();
    let run_id = format!("{:04x}", rng.random::<u16>());
    let mut started = 0;
    let mut matches: Vec<SimMatch> = (0..args.matches)
        .map(|_| {
            started += 1;
            SimMatch::new(&run_id, started, args.players, args.events_per_match)
        })
        .collect();
    println!(
        "demo feed: {} matches of {} players at {} events/s on {}.<match_id> (run {run_id})",
        args.matches, args.players, args.rate, names.events_subject
    );

    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = Vec::with_capacity(MAX_PENDING_ACKS);
    let (mut published, mut bad, mut completed) = (0u64, 0u64, 0u64);
    let mut last_progress = Instant::now();
    while !matches.is_empty() {
        ticker.tick().await;
        let i = rng.random_range(0..matches.len());
        let subject = format!("{}.{}", names.events_subject, matches[i].id());
        let (event_id, payload) =
            if args.bad_every > 0 && (published + 1) % u64::from(args.bad_every) == 0 {
                bad += 1;
                (format!("bad-{run_id}-{bad}"), b"\xc1 not an event".to_vec())
            } else {
                match matches[i].next(&mut rng) {
                    Some(event) => event,
                    None => {
                        completed += 1;
                        matches.swap_remove(i);
                        if args.forever {
                            started += 1;
                            matches.push(SimMatch::new(
                                &run_id,
                                started,
                                args.players,
                                args.events_per_match,
                            ));
                        }
                        continue;
                    }
                }
            };
        let message = PublishMessage::build()
            .payload(payload.into())
            .message_id(event_id);
        pending.push(js.send_publish(subject, message).await?);
        published += 1;
        if pending.len() >= MAX_PENDING_ACKS {
            for ack in pending.drain(..) {
                ack.await
                    .context("the events stream did not confirm a publish")?;
            }
        }
        if last_progress.elapsed() >= PROGRESS_INTERVAL {
            last_progress = Instant::now();
            println!(
                "demo feed: published {published} events ({bad} bad payloads); {} matches live, {completed} ended",
                matches.len()
            );
        }
    }
    for ack in pending {
        ack.await
            .context("the events stream did not confirm a publish")?;
    }
    println!(
        "demo feed: done: published {published} events ({bad} bad payloads); {completed} matches ended"
    );
    // Let the last summaries arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// Folds the deltas of each match and prints one line per match as its first completed
/// delta arrives.
async fn print_summaries(mut deltas: async_nats::Subscriber) {
    let mut seen = std::collections::HashSet::new();
    let mut projections = std::collections::HashMap::new();
    while let Some(message) = deltas.next().await {
        let Ok(delta) = StatDelta::from_msgpack(&message.payload) else {
            continue;
        };
        let projection = projections
            .entry(delta.match_id)
            .or_insert_with(|| MatchProjection::new(delta.match_id));
        projection.apply_lenient(&delta);
        let Some(view) = delta.match_view else {
            continue;
        };
        if view.status != MatchStatus::Completed || !seen.insert(view.match_id) {
            continue;
        }
        let top = projection
            .players()
            .max_by_key(|(id, p)| (p.score(), std::cmp::Reverse(**id)));
        println!(
            "match {} ended after {:.1} s: {} kills, {} assists, {:.0} damage; top score {}",
            view.match_id,
            view.duration_ms as f64 / 1000.0,
            view.total_kills,
            view.total_assists,
            view.total_damage,
            top.map(|(id, p)| format!("{id} ({} pts, {} kills)", p.score(), p.kills))
                .unwrap_or_default(),
        );
    }
}
