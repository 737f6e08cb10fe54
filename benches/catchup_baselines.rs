//! `make bench-catchup-baselines`: the service's catch-up next to the floors of its NATS
//! work, taking turns on one nats-server and one stream of CATCHUP_EVENTS (1,000,000)
//! pre-published events of 1,000 matches x 64 players, CATCHUP_ROUNDS (3) times, so that
//! the machine's drift falls on all of them alike; each round starts one step further
//! down this list than the round before:
//!
//! - **service**: the release binary as a child process, timed as in the load test (until
//!   its read model holds every delta), started on a NATS holding the events only (what
//!   an earlier round left is removed first; no Redis). Its deltas' stored bytes over the
//!   events' give the weight of the last baseline.
//! - **bare consumer**: pull and ack-all of the same stream, no work (the issue's
//!   baseline: the service's target is half its rate).
//! - **relay**: the load test's bare relay (`support/relay.rs`): one copy per event (the
//!   issue's other baseline: the service's target is 1.5 times its rate).
//! - **bare pipeline**: the load test's (`support/pipeline.rs`): the service's partition
//!   consumers and batches, one copy per match per batch, all to one subject, read back.
//! - **bare pipeline, fenced**: the same, each copy published as the service publishes a
//!   delta: to its match's own subject, fenced with `Nats-Expected-Last-Subject-Sequence`.
//! - **bare pipeline, fenced, delta weight**: the same with each copy as heavy as the
//!   service's deltas were against the events in its run of the round.
//! - **bare pipeline, fenced, the deltas decided**: the same with each copy the match's
//!   real delta: the events decoded, applied to the partition's aggregates and encoded
//!   as the service does, nothing else of the service's (no projection, snapshots, dead
//!   letters, metrics): the service's NATS work and its domain work alone.
//!
//! Each run prints events/s, its share of the round's bare consumer and the CPU per event
//! of nats-server and the client; a summary follows. DELTA_FORMAT and the service's other
//! settings pass through the environment. With CATCHUP_PERF=DIR, `perf record -g` of
//! nats-server during each run, into DIR/<round>-<step>.data (steps in the order above).
//!
//! Under `cargo test` (no `--bench`), a smoke run with small numbers.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::TryStreamExt;

#[path = "support/catch_up.rs"]
#[allow(dead_code)]
mod catch_up;
#[path = "support/pipeline.rs"]
#[allow(dead_code)]
mod pipeline;
#[path = "support/relay.rs"]
mod relay;
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;
use match_stats::Config;
use match_stats::tools::loadgen;
use match_stats_harness::NatsServer;
use pipeline::Copies;
use support::feed::{MATCHES, PLAYERS, config, load};
use support::{CpuPerEvent, Service, env_number};

struct Settings {
    events: u64,
    rounds: u32,
    perf: Option<std::path::PathBuf>,
}

fn settings() -> Settings {
    if std::env::args().any(|a| a == "--bench") {
        Settings {
            events: env_number("CATCHUP_EVENTS", 1_000_000),
            rounds: env_number("CATCHUP_ROUNDS", 3),
            perf: std::env::var_os("CATCHUP_PERF").map(Into::into),
        }
    } else {
        Settings {
            events: 3_000,
            rounds: 1,
            perf: None,
        }
    }
}

/// What catches up.
#[derive(Clone, Copy, PartialEq)]
enum Runner {
    Service,
    BareConsumer,
    Relay,
    Pipeline(Copies),
}

impl std::fmt::Display for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Runner::Service => write!(f, "service"),
            Runner::BareConsumer => write!(f, "bare consumer"),
            Runner::Relay => write!(f, "relay"),
            Runner::Pipeline(Copies::OneSubject) => write!(f, "bare pipeline"),
            Runner::Pipeline(Copies::Fenced { weight }) if *weight == 1.0 => {
                write!(f, "bare pipeline, fenced")
            }
            Runner::Pipeline(Copies::Fenced { weight }) => {
                write!(f, "bare pipeline, fenced, delta weight {weight:.2}")
            }
            Runner::Pipeline(Copies::Deltas(_)) => {
                write!(f, "bare pipeline, fenced, the deltas decided")
            }
        }
    }
}

/// One catch-up.
struct Run {
    runner: Runner,
    round: u32,
    caught: Caught,
}

/// What one catch-up measured.
struct Caught {
    events_per_second: f64,
    cpu: CpuPerEvent,
    /// Messages published (deltas, copies) per event.
    messages_per_event: f64,
    /// The service's only: its deltas' stored bytes over the events'.
    delta_weight: Option<f64>,
}

/// Everything on `js` but the events stream and its messages: what a service run leaves
/// (its deltas, dead letters, buckets, partition consumers), so that the next starts as
/// the first did.
async fn clear(js: &jetstream::Context, config: &Config) -> anyhow::Result<()> {
    let events = &config.streams.events_stream;
    let names: Vec<String> = js.stream_names().try_collect().await?;
    for name in names.iter().filter(|n| *n != events) {
        js.delete_stream(name).await?;
    }
    let stream = js.get_stream(events).await?;
    let consumers: Vec<String> = stream.consumer_names().try_collect().await?;
    for name in consumers {
        stream.delete_consumer(&name).await?;
    }
    Ok(())
}

/// The service's catch-up on a NATS holding the events only.
async fn service(
    js: &jetstream::Context,
    config: &Config,
    (nats, nats_pid): (&NatsServer, u32),
    events: u64,
) -> anyhow::Result<Caught> {
    clear(js, config).await?;
    let started = Instant::now();
    let service = Service::start(&[("NATS_URL", nats.url())]).await;
    let run = catch_up::service(js, config, (&service, nats_pid), (events, started)).await?;
    drop(service);
    let deltas = support::stored(js, &config.streams.deltas_stream).await?;
    let events_stored = support::stored(js, &config.streams.events_stream).await?;
    clear(js, config).await?;
    Ok(Caught {
        events_per_second: run.events_per_second,
        cpu: run.cpu,
        messages_per_event: deltas.messages as f64 / events as f64,
        delta_weight: Some(deltas.bytes as f64 / events_stored.bytes as f64),
    })
}

/// One catch-up of `runner` on the whole events stream.
async fn measure(
    runner: Runner,
    (js, config, nats): (&jetstream::Context, &Config, &NatsServer),
    events: u64,
) -> anyhow::Result<Caught> {
    let nats_pid = nats.pid().expect("nats-server runs");
    let stream = &config.streams.events_stream;
    let filters = || {
        match_stats::nats::Partitioning::of(&config.streams)
            .all()
            .map(|p| p.filter(&config.streams))
            .collect::<Vec<_>>()
    };
    let batches = (config.batch_size as usize, config.batch_linger);
    Ok(match runner {
        Runner::Service => service(js, config, (nats, nats_pid), events).await?,
        Runner::BareConsumer | Runner::Relay => {
            let republish = runner == Runner::Relay;
            let (rate, cpu) =
                catch_up::baseline(js, nats_pid, stream, republish, vec![None]).await?;
            Caught {
                events_per_second: rate,
                cpu,
                messages_per_event: if republish { 1.0 } else { 0.0 },
                delta_weight: None,
            }
        }
        Runner::Pipeline(copies) => {
            let run = pipeline::catch_up(js, nats_pid, stream, filters(), batches, copies).await?;
            Caught {
                events_per_second: run.events_per_second,
                cpu: run.cpu,
                messages_per_event: run.messages_per_event,
                delta_weight: None,
            }
        }
    })
}

/// Runners in a round.
const STEPS: usize = 7;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = settings();
    let nats = NatsServer::start();
    let config = config(&nats, None);
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    match_stats::nats::streams::ensure(&js, &config).await?;
    eprintln!(
        "catchup-baselines: publishing {} events of {MATCHES} matches x {PLAYERS} players...",
        settings.events
    );
    let published = loadgen::run(&config, &load(settings.events, 0, None, false)).await?;
    eprintln!(
        "catchup-baselines: published at {:.0} events/s",
        published.events_per_second
    );
    let mut weight = 1.0;
    let mut runs = Vec::new();
    for round in 1..=settings.rounds {
        // In turn, each round starting one step later than the one before (what runs
        // right after a service's catch-up may pay for its leftovers); the first round
        // starts with the service, whose deltas' weight the last step takes.
        for k in 0..STEPS {
            let step = (k + round as usize - 1) % STEPS;
            let runner = match step {
                0 => Runner::Service,
                1 => Runner::BareConsumer,
                2 => Runner::Relay,
                3 => Runner::Pipeline(Copies::OneSubject),
                4 => Runner::Pipeline(Copies::Fenced { weight: 1.0 }),
                5 => Runner::Pipeline(Copies::Fenced { weight }),
                _ => Runner::Pipeline(Copies::Deltas(config.delta_format)),
            };
            let perf = settings
                .perf
                .as_ref()
                .map(|dir| Perf::start(&nats, &dir.join(format!("{round}-{}.data", step + 1))));
            let caught = measure(runner, (&js, &config, &nats), settings.events).await?;
            drop(perf);
            weight = caught.delta_weight.unwrap_or(weight);
            println!(
                "round {round}: {runner}: {:.0} events/s, {:.3} messages an event, {}",
                caught.events_per_second, caught.messages_per_event, caught.cpu
            );
            runs.push(Run {
                runner,
                round,
                caught,
            });
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    summary(&runs);
    Ok(())
}

/// `perf record` of nats-server until dropped.
struct Perf(std::process::Child);

impl Perf {
    fn start(nats: &NatsServer, out: &std::path::Path) -> Perf {
        let pid = nats.pid().expect("nats-server runs").to_string();
        let out = out.to_str().expect("a UTF-8 path");
        let args = ["record", "-F", "199", "-g", "-o", out, "-p", &pid];
        Perf(
            std::process::Command::new("perf")
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("perf runs"),
        )
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Each run's rate as a share of its round's bare consumer and relay, with its CPU per
/// event; then the service's and the floors' shares of the bare consumer over the rounds.
fn summary(runs: &[Run]) {
    let rate_of = |round: u32, runner: Runner| {
        runs.iter()
            .find(|r| r.round == round && r.runner == runner)
            .map_or(f64::NAN, |r| r.caught.events_per_second)
    };
    println!();
    println!(
        "| round | runner | events/s | x bare consumer | x relay | messages an event | CPU µs an event (nats-server + client) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for run in runs {
        let (caught, cpu) = (&run.caught, &run.caught.cpu);
        let rate = caught.events_per_second;
        println!(
            "| {} | {} | {rate:.0} | {:.2}x | {:.2}x | {:.3} | {:.1} + {:.1} = {:.1} |",
            run.round,
            run.runner,
            rate / rate_of(run.round, Runner::BareConsumer),
            rate / rate_of(run.round, Runner::Relay),
            caught.messages_per_event,
            cpu.nats_us,
            cpu.client_us,
            cpu.nats_us + cpu.client_us
        );
    }
    println!();
    let mut seen = Vec::new();
    for run in runs.iter().filter(|r| r.runner != Runner::BareConsumer) {
        let name = run.runner.to_string();
        if seen.contains(&name) {
            continue;
        }
        let shares: Vec<String> = runs
            .iter()
            .filter(|r| r.runner.to_string() == name)
            .map(|r| {
                let share = r.caught.events_per_second / rate_of(r.round, Runner::BareConsumer);
                format!("{share:.2}x")
            })
            .collect();
        println!("{name}: {} the bare consumer", shares.join(", "));
        seen.push(name);
    }
}
