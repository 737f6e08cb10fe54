//! The load generator: simulated game servers publishing N matches of P players (the
//! demo feed's event mix: positions, shots, damage, kills with mirrored deaths, items,
//! joins, match ends) in MessagePack with `Nats-Msg-Id`, flat out or at a fixed rate,
//! with a progress line. It measures freshness: from each event's publish to the delta
//! that carries it (p50, p99, p99.9), and optionally, by polling the REST API, from
//! publish to visible.
//!
//! `match-stats loadgen --help` lists the settings; `make load-test` uses it as a library.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage};
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use match_stats_commands::StatDelta;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::sim::SimMatch;
use crate::config::Config;

/// Publish acknowledgements awaited at once (a sliding window).
const ACK_WINDOW: usize = 1024;
/// How often progress is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// How often the REST sampler checks one match, and how long it waits for it.
const VISIBLE_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the load generator.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Matches played at the same time.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub matches: u32,
    /// Players per match.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(2..=1_000))]
    pub players: u32,
    /// Events per second across all matches; 0 publishes flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Events to publish in all (0: until --duration).
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Stop after this long (e.g. 30s), whichever comes first with --events.
    #[arg(long, value_parser = crate::config::parse_duration)]
    pub duration: Option<Duration>,
    /// Events per match before its `match_end` (a large number keeps matches live).
    #[arg(long, default_value_t = 1_000_000)]
    pub events_per_match: u32,
    /// Do not subscribe to the deltas (no freshness figures; for pre-loading a stream).
    #[arg(long)]
    pub no_freshness: bool,
    /// Base URL of the REST API to poll for publish-to-visible latency (e.g.
    /// http://127.0.0.1:8080).
    #[arg(long)]
    pub rest: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write every publish-to-delta sample to this CSV file (`sent_s,latency_ms`:
    /// when the event was published, seconds after the run's start, and its latency), to
    /// see when the slow ones happened.
    #[arg(long, value_name = "FILE")]
    pub samples: Option<std::path::PathBuf>,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latencies {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Events published and confirmed by the stream.
    pub published: u64,
    /// Seconds from the first publish to the last confirmation.
    pub seconds: f64,
    /// `published / seconds`.
    pub events_per_second: f64,
    /// Publish to the delta carrying the event.
    pub freshness: Option<Latencies>,
    /// Publish to the REST API showing the event.
    pub visible: Option<Latencies>,
}

/// Send times of events in flight, and the latencies of those seen again.
#[derive(Debug)]
pub struct Freshness {
    sent: Mutex<HashMap<String, Instant>>,
    histogram: Mutex<Histogram<u64>>,
    /// Every sample (sent at, latency), when asked for.
    samples: Option<Mutex<Vec<(Instant, Duration)>>>,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            sent: Mutex::default(),
            histogram: Mutex::new(histogram()),
            samples: None,
        }
    }
}

impl Freshness {
    /// Notes that event `id` is being published now.
    pub fn sent(&self, id: String) {
        self.sent.lock().expect("sent").insert(id, Instant::now());
    }

    /// Notes that event `id` has come back (in a delta, or relayed).
    pub fn seen(&self, id: &str) {
        let sent = self.sent.lock().expect("sent").remove(id);
        if let Some(sent) = sent {
            let latency = sent.elapsed();
            record(&self.histogram, latency);
            if let Some(samples) = &self.samples {
                samples.lock().expect("samples").push((sent, latency));
            }
        }
    }

    /// Also keeps every sample, for [`Freshness::write_samples`].
    pub fn keeping_samples() -> Self {
        Freshness {
            samples: Some(Mutex::default()),
            ..Freshness::default()
        }
    }

    /// Writes the kept samples as CSV, in the order they were sent: `sent_s` (seconds
    /// after `started`) and `latency_ms`.
    pub fn write_samples(&self, path: &std::path::Path, started: Instant) -> anyhow::Result<()> {
        let mut samples = self
            .samples
            .as_ref()
            .map_or_else(Vec::new, |s| s.lock().expect("samples").clone());
        samples.sort_unstable_by_key(|&(sent, _)| sent);
        let mut csv = String::from("sent_s,latency_ms\n");
        for (sent, latency) in samples {
            let at = sent.saturating_duration_since(started).as_secs_f64();
            let ms = latency.as_secs_f64() * 1000.0;
            csv.push_str(&format!("{at:.6},{ms:.3}\n"));
        }
        std::fs::write(path, csv).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Latencies so far.
    pub fn latencies(&self) -> Option<Latencies> {
        latencies(&self.histogram.lock().expect("histogram"))
    }

    /// Events sent and not seen yet.
    pub fn outstanding(&self) -> usize {
        self.sent.lock().expect("sent").len()
    }
}

/// Microseconds from 1 µs to 10 minutes, 3 significant digits (longer is recorded as 10
/// minutes).
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

fn record(histogram: &Mutex<Histogram<u64>>, latency: Duration) {
    let micros = latency.as_micros().max(1) as u64;
    histogram
        .lock()
        .expect("histogram")
        .saturating_record(micros);
}

fn latencies(h: &Histogram<u64>) -> Option<Latencies> {
    (!h.is_empty()).then(|| Latencies {
        count: h.len(),
        p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        p999_ms: h.value_at_quantile(0.999) as f64 / 1000.0,
        max_ms: h.max() as f64 / 1000.0,
    })
}

/// Marks every event of every delta arriving on `deltas` as seen.
pub async fn watch_deltas(mut deltas: async_nats::Subscriber, freshness: Arc<Freshness>) {
    while let Some(message) = deltas.next().await {
        if let Ok(delta) = StatDelta::from_msgpack(&message.payload) {
            for entry in &delta.entries {
                freshness.seen(entry.event_id.as_str());
            }
        }
    }
}

/// Per match: events published so far and when the last one was sent.
type Published = Mutex<Vec<(u64, Instant)>>;

/// Every [`VISIBLE_SAMPLE_INTERVAL`], picks a match and polls its REST object until its
/// `event_count` reaches what had been published: the time since that last publish.
async fn sample_visible(
    base: String,
    ids: Vec<String>,
    published: Arc<Published>,
    histogram: Arc<Mutex<Histogram<u64>>>,
) {
    let client = reqwest::Client::new();
    loop {
        tokio::time::sleep(VISIBLE_SAMPLE_INTERVAL).await;
        let i = rand::random_range(0..ids.len());
        let (count, sent) = published.lock().expect("published")[i];
        if count == 0 {
            continue;
        }
        let url = format!("{base}/api/v1/match-stats/matches/{}", ids[i]);
        while sent.elapsed() < VISIBLE_TIMEOUT {
            let shown = match client.get(&url).send().await {
                Ok(response) => response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["event_count"].as_u64())
                    .unwrap_or(0),
                Err(_) => 0,
            };
            if shown >= count {
                record(&histogram, sent.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Marks the event named by each message's `Nats-Msg-Id` as seen (a relay's copies).
pub async fn watch_message_ids(mut messages: async_nats::Subscriber, freshness: Arc<Freshness>) {
    while let Some(message) = messages.next().await {
        if let Some(id) = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        {
            freshness.seen(id.as_str());
        }
    }
}

/// Where an event comes back, for freshness.
#[derive(Debug, Clone)]
pub enum Watch {
    /// In a delta on the deltas subject (the service).
    Deltas,
    /// As a message on this subject carrying the event's `Nats-Msg-Id` (a bare relay).
    MessageIds(String),
}

/// Publishes the load and reports what it measured (freshness from the deltas).
pub async fn run(config: &Config, args: &LoadArgs) -> anyhow::Result<Report> {
    run_watching(config, args, Watch::Deltas).await
}

/// Publishes the load and reports what it measured, freshness from `watch`.
pub async fn run_watching(
    config: &Config,
    args: &LoadArgs,
    watch: Watch,
) -> anyhow::Result<Report> {
    let nats = crate::nats::connect(config).await?;
    let js = jetstream::new(nats.clone());
    // The streams exist before the service first starts (idempotent).
    crate::nats::streams::ensure(&js, config).await?;
    let names = &config.streams;
    let freshness = Arc::new(match args.samples {
        Some(_) => Freshness::keeping_samples(),
        None => Freshness::default(),
    });
    let watcher = match (args.no_freshness, watch) {
        (true, _) => None,
        (false, Watch::Deltas) => {
            let deltas = nats
                .subscribe(format!("{}.*", names.deltas_subject))
                .await?;
            Some(tokio::spawn(watch_deltas(deltas, freshness.clone())))
        }
        (false, Watch::MessageIds(subject)) => {
            let copies = nats.subscribe(subject).await?;
            Some(tokio::spawn(watch_message_ids(copies, freshness.clone())))
        }
    };
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let run_id = format!("{:04x}", rng.random::<u16>());
    let mut sims: Vec<SimMatch> = (0..args.matches)
        .map(|n| SimMatch::new(&run_id, n, args.players, args.events_per_match))
        .collect();
    let ids: Vec<String> = sims.iter().map(|s| s.id().to_owned()).collect();
    let published_per_match: Arc<Published> =
        Arc::new(Mutex::new(vec![(0, Instant::now()); sims.len()]));
    let visible = Arc::new(Mutex::new(histogram()));
    let sampler = args.rest.clone().map(|base| {
        tokio::spawn(sample_visible(
            base,
            ids.clone(),
            published_per_match.clone(),
            visible.clone(),
        ))
    });
    eprintln!(
        "loadgen: {} matches of {} players, {} on {}.<match_id> (run {run_id})",
        args.matches,
        args.players,
        match args.rate {
            0 => "flat out".to_owned(),
            r => format!("{r} events/s"),
        },
        names.events_subject
    );

    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let mut pending = VecDeque::with_capacity(ACK_WINDOW);
    let mut published = 0u64;
    let mut last_progress = Instant::now();
    let mut next = 0usize;
    'publish: loop {
        if args.events > 0 && published >= args.events {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if args.rate > 0 {
            // Publish what is due by now, then wait a millisecond.
            let due = (started.elapsed().as_secs_f64() * f64::from(args.rate)) as u64;
            if published >= due {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        }
        // Round robin over the live matches.
        let mut tries = 0;
        let (i, (event_id, payload)) = loop {
            if sims.is_empty() || tries == sims.len() {
                break 'publish;
            }
            let i = next % sims.len();
            next = next.wrapping_add(1);
            tries += 1;
            if let Some(event) = sims[i].next(&mut rng) {
                break (i, event);
            }
        };
        let subject = format!("{}.{}", names.events_subject, ids[i]);
        if watcher.is_some() {
            freshness.sent(event_id.clone());
        }
        let message = PublishMessage::build()
            .payload(payload.into())
            .message_id(event_id);
        pending.push_back(js.send_publish(subject, message).await?);
        {
            let mut per_match = published_per_match.lock().expect("published");
            per_match[i] = (per_match[i].0 + 1, Instant::now());
        }
        published += 1;
        if pending.len() >= ACK_WINDOW {
            pending
                .pop_front()
                .expect("window")
                .await
                .context("the events stream did not confirm a publish")?;
        }
        if last_progress.elapsed() >= PROGRESS_INTERVAL {
            last_progress = Instant::now();
            let rate = published as f64 / started.elapsed().as_secs_f64();
            let fresh = freshness
                .latencies()
                .map(|l| {
                    format!(
                        "; publish to delta p50 {:.1} ms p99 {:.1} ms",
                        l.p50_ms, l.p99_ms
                    )
                })
                .unwrap_or_default();
            eprintln!("loadgen: published {published} ({rate:.0}/s){fresh}");
        }
    }
    for ack in pending {
        ack.await
            .context("the events stream did not confirm a publish")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if watcher.is_some() {
        // The last deltas: wait until they stop arriving (at most 10 s).
        let wait = Instant::now();
        let mut last = freshness.outstanding();
        while last > 0 && wait.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = freshness.outstanding();
            if now == last && wait.elapsed() > Duration::from_secs(2) {
                break;
            }
            last = now;
        }
    }
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    if let Some(path) = &args.samples {
        freshness.write_samples(path, started)?;
    }
    let report = Report {
        published,
        seconds,
        events_per_second: published as f64 / seconds,
        freshness: freshness.latencies(),
        visible: latencies(&visible.lock().expect("histogram")),
    };
    Ok(report)
}

/// `match-stats loadgen`: runs and prints the report.
pub async fn main(config: &Config, args: LoadArgs) -> anyhow::Result<()> {
    let report = run(config, &args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "loadgen: published {} events in {:.1} s ({:.0} events/s)",
        report.published, report.seconds, report.events_per_second
    );
    for (what, l) in [
        ("publish to delta", report.freshness),
        ("publish to visible (REST)", report.visible),
    ] {
        if let Some(l) = l {
            println!(
                "loadgen: {what}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
                l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_samples_are_written_in_send_order_as_csv() {
        let freshness = Freshness::keeping_samples();
        let started = Instant::now();
        freshness.sent("b".into());
        std::thread::sleep(Duration::from_millis(5));
        freshness.sent("a".into());
        freshness.seen("a");
        freshness.seen("b");
        let path = std::env::temp_dir().join(format!("samples-{}.csv", std::process::id()));
        freshness.write_samples(&path, started).unwrap();
        let csv = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "sent_s,latency_ms");
        assert_eq!(lines.len(), 3);
        let row = |l: &str| -> (f64, f64) {
            let (a, b) = l.split_once(',').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        };
        let (b_at, b_ms) = row(lines[1]);
        let (a_at, a_ms) = row(lines[2]);
        assert!(b_at < a_at, "sent first, listed first");
        assert!(a_at - b_at >= 0.005);
        assert!(b_ms >= 5.0 && b_ms > a_ms, "b waited for a's 5 ms");
    }

    #[test]
    fn latencies_are_the_time_from_sent_to_seen() {
        let freshness = Freshness::default();
        freshness.sent("a".into());
        freshness.sent("b".into());
        std::thread::sleep(Duration::from_millis(20));
        freshness.seen("a");
        freshness.seen("unknown");
        let l = freshness.latencies().expect("one sample");
        assert_eq!(l.count, 1);
        assert!(l.p50_ms >= 20.0 && l.p50_ms < 1000.0, "{l:?}");
        assert_eq!(freshness.outstanding(), 1);
    }
}
