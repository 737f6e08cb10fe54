//! `make bench-streams`: live streams at scale and the `304` path, each next to a
//! baseline measured in the same run.
//!
//! 1. 100 live matches of 16 players; the service ingests 5,000 events/s for 10 s with no
//!    stream client (baseline: its CPU and RSS), then again with 1,000 match-stream
//!    clients (10 per match): publish to client p50/p99 (the client's clock minus the
//!    `last_update` of the delta's match, i.e. the newest event it carries, whose
//!    timestamp is its publish time), RSS per client, the service's CPU, and the bench's
//!    own (the clients') CPU.
//! 2. `304`: `GET match` with `If-None-Match` of its current version from 64 connections,
//!    no ingest; baseline: a bare axum handler answering `304` with the same headers.
//!
//! Under `cargo test` (no `--bench`), a smoke run with small numbers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use hdrhistogram::Histogram;

// Shared by the benchmarks; not every helper is used in each.
#[allow(dead_code)]
#[path = "support/rest.rs"]
mod rest;
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;
use match_stats::cli::Cli;
use match_stats::tools::loadgen::{self, LoadArgs};
use match_stats_harness::NatsServer;
use rest::CONNECTIONS;
use support::{Service, cpu_seconds};

struct Sizes {
    matches: u32,
    clients: usize,
    rate: u32,
    seconds: u64,
}

fn sizes() -> Sizes {
    if std::env::args().any(|a| a == "--bench") {
        Sizes {
            matches: 100,
            clients: 1000,
            rate: 5000,
            seconds: 10,
        }
    } else {
        Sizes {
            matches: 4,
            clients: 8,
            rate: 200,
            seconds: 1,
        }
    }
}

const PLAYERS: u32 = 16;

fn load(matches: u32, rate: u32, events: u64, seconds: Option<u64>) -> LoadArgs {
    // (`events` 0 and a duration: at `rate` for that long.)
    LoadArgs {
        matches,
        players: PLAYERS,
        rate,
        events,
        duration: seconds.map(Duration::from_secs),
        events_per_match: 10_000_000,
        no_freshness: true,
        rest: None,
        json: false,
        samples: None,
    }
}

/// A phase's figures.
struct Phase {
    service_cpu: f64,
    bench_cpu: f64,
    rss: u64,
}

/// CPU of the service and of this process over `seconds`, then the service's RSS.
async fn measure(service: &Service, seconds: u64) -> Phase {
    let (cpu, own) = (service.cpu_seconds(), cpu_seconds(std::process::id()));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    Phase {
        service_cpu: (service.cpu_seconds() - cpu) / seconds as f64 * 100.0,
        bench_cpu: (cpu_seconds(std::process::id()) - own) / seconds as f64 * 100.0,
        rss: service.rss_bytes(),
    }
}

/// Starts publishing `sizes.rate` events/s to new matches for `seconds`, and returns
/// once the service lists them, with their ids.
async fn start_ingest(
    config: &match_stats::Config,
    service: &Service,
    sizes: &Sizes,
    seconds: u64,
) -> (tokio::task::JoinHandle<()>, Vec<String>) {
    let known = active_ids(service).await;
    let publisher = {
        let (config, args) = (
            config.clone(),
            load(sizes.matches, sizes.rate, 0, Some(seconds)),
        );
        tokio::spawn(async move {
            loadgen::run(&config, &args).await.expect("ingest");
        })
    };
    loop {
        let fresh: Vec<String> = active_ids(service)
            .await
            .into_iter()
            .filter(|id| !known.contains(id))
            .collect();
        if fresh.len() == sizes.matches as usize {
            return (publisher, fresh);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn active_ids(service: &Service) -> Vec<String> {
    let active: serde_json::Value = reqwest::get(format!(
        "{}/api/v1/match-stats/matches/active?limit=1000",
        service.http
    ))
    .await
    .expect("active")
    .json()
    .await
    .expect("JSON");
    active["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["match_id"].as_str().unwrap().to_owned())
        .collect()
}

#[derive(serde::Deserialize)]
struct DeltaHead {
    #[serde(rename = "match")]
    summary: Summary,
}

#[derive(serde::Deserialize)]
struct Summary {
    last_update: String,
}

/// `GET url` with `If-None-Match: tag` for `seconds`; a `304` is wanted (anything else
/// counts in `errors`).
async fn hammer_304(url: String, tag: String, seconds: u64) -> rest::RestResult {
    rest::load(
        CONNECTIONS,
        seconds,
        move |client, _| client.get(&url).header("If-None-Match", &tag),
        |status| status == 304,
    )
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes = sizes();
    let nats = NatsServer::start();
    let config = Cli::try_parse_from([
        "match-stats",
        "--nats-url",
        &nats.url(),
        "--log-level",
        "warn",
    ])?
    .config;
    let service = Service::start(&[
        ("NATS_URL", nats.url()),
        ("STREAM_MAX_CLIENTS", "5000".into()),
    ])
    .await;
    let rss_idle = service.rss_bytes();
    // Every phase publishes to new matches: time to start them, and to connect, is not
    // measured.
    let settle = 3;

    // 1. Ingest without clients, then with them.
    eprintln!(
        "bench-streams: {} events/s, no stream client...",
        sizes.rate
    );
    let (publisher, _) = start_ingest(&config, &service, &sizes, sizes.seconds + settle).await;
    let without = measure(&service, sizes.seconds).await;
    publisher.await?;

    let rss_before_clients = service.rss_bytes();
    eprintln!(
        "bench-streams: {} events/s with {} stream clients...",
        sizes.rate, sizes.clients
    );
    let (publisher, ids) = start_ingest(&config, &service, &sizes, sizes.seconds + settle).await;
    let latencies = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(sizes.clients)
        .build()?;
    let mut readers = Vec::new();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(sizes.clients);
    for c in 0..sizes.clients {
        let url = format!(
            "{}/api/v1/match-stats/matches/{}/stream",
            service.http,
            ids[c % ids.len()]
        );
        let (client, latencies, measuring, opened) = (
            client.clone(),
            latencies.clone(),
            measuring.clone(),
            opened_tx.clone(),
        );
        readers.push(tokio::spawn(async move {
            let response = client.get(&url).send().await.expect("stream");
            assert_eq!(response.status(), 200, "{url}");
            let mut events = response.bytes_stream().eventsource();
            let _ = opened.send(()).await;
            while let Some(Ok(event)) = events.next().await {
                if event.event != "delta" || !measuring.load(std::sync::atomic::Ordering::Relaxed) {
                    continue;
                }
                let now = chrono::Utc::now().timestamp_millis();
                if let Ok(head) = serde_json::from_str::<DeltaHead>(&event.data)
                    && let Ok(at) = chrono::DateTime::parse_from_rfc3339(&head.summary.last_update)
                {
                    let micros = ((now - at.timestamp_millis()).max(0) as u64) * 1000;
                    latencies.lock().unwrap().saturating_record(micros);
                }
            }
        }));
    }
    for _ in 0..sizes.clients {
        opened_rx.recv().await;
    }
    let rss_with_clients = service.rss_bytes();
    measuring.store(true, std::sync::atomic::Ordering::Relaxed);
    let with = measure(&service, sizes.seconds).await;
    measuring.store(false, std::sync::atomic::Ordering::Relaxed);
    publisher.await?;
    let rss_end = service.rss_bytes();
    for reader in &readers {
        reader.abort();
    }
    let latency = latencies.lock().unwrap().clone();

    // 2. The 304 path, no ingest: the service, then a bare axum handler.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = format!("{}/api/v1/match-stats/matches/{}", service.http, ids[0]);
    let tag = reqwest::get(&url).await?.headers()["etag"]
        .to_str()?
        .to_owned();
    let rest_seconds = sizes.seconds.min(5);
    let service_304 = hammer_304(url, tag.clone(), rest_seconds).await;
    let bare = axum::Router::new().route(
        "/match",
        axum::routing::get({
            let tag = tag.clone();
            move || async move {
                (
                    axum::http::StatusCode::NOT_MODIFIED,
                    [
                        ("etag", tag),
                        ("vary", "Accept-Encoding".to_owned()),
                        ("cache-control", "no-cache".to_owned()),
                    ],
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, bare).await });
    let bare_304 = hammer_304(format!("http://{addr}/match"), tag, rest_seconds).await;
    server.abort();

    let mib = |b: u64| b as f64 / 1_048_576.0;
    println!();
    println!(
        "## Streams: {} clients on {} matches of {PLAYERS} players, {} events/s for {} s",
        sizes.clients, sizes.matches, sizes.rate, sizes.seconds
    );
    println!();
    println!(
        "| measurement | with {} stream clients | baseline (no client) |",
        sizes.clients
    );
    println!("|---|---|---|");
    println!(
        "| publish to client (newest event of each delta) | p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} deltas received) | - |",
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.max() as f64 / 1000.0,
        latency.len()
    );
    println!(
        "| service CPU (of 200%) | {:.0}% | {:.0}% |",
        with.service_cpu, without.service_cpu
    );
    println!(
        "| bench process CPU (publisher, and the clients' parsing) | {:.0}% | {:.0}% |",
        with.bench_cpu, without.bench_cpu
    );
    println!(
        "| service RSS | {:.1} MiB during the ingest ({:.1} with the clients just connected; {:.1} at the end) | {:.1} MiB during the ingest ({:.1} idle) |",
        mib(with.rss),
        mib(rss_with_clients),
        mib(rss_end),
        mib(without.rss),
        mib(rss_idle)
    );
    println!(
        "| RSS per stream client | {:.1} KiB just connected, {:.1} KiB during the ingest (vs the phase without clients) | - |",
        rss_with_clients.saturating_sub(rss_before_clients) as f64 / 1024.0 / sizes.clients as f64,
        with.rss.saturating_sub(without.rss) as f64 / 1024.0 / sizes.clients as f64,
    );
    println!();
    println!("| `304` path, {CONNECTIONS} connections | match-stats | bare axum |");
    println!("|---|---|---|");
    println!(
        "| requests/s | {:.0} | {:.0} ({:.2}x) |",
        service_304.requests_per_second,
        bare_304.requests_per_second,
        service_304.requests_per_second / bare_304.requests_per_second.max(1.0)
    );
    println!(
        "| p50 / p99 | {:.2} / {:.2} ms | {:.2} / {:.2} ms |",
        service_304.p50_ms, service_304.p99_ms, bare_304.p50_ms, bare_304.p99_ms
    );
    println!("| not 304 | {} | {} |", service_304.errors, bare_304.errors);
    Ok(())
}
