//! `make load-test`: the service's throughput, freshness, query speed and memory, each
//! next to a baseline measured in the same run on the same machine.
//!
//! 1. Catch-up: LOAD_EVENTS (1,000,000) events of 1,000 matches x 64 players published
//!    first, then the service (release binary, a child process) started: events/s until
//!    every partition's consumer is drained. Baselines: a bare relay (pull-consume the
//!    same stream, republish one message per event to a stream, await the acks, ack),
//!    a bare consumer (pull-consume and ack, no work: what NATS can deliver here), and
//!    the bare pipeline (`support/pipeline.rs`: the service's NATS work, no domain work).
//!    The relay and the bare consumer run just before the service and again after it,
//!    and the service's ratios are to the mean of the two: on a shared machine the speed
//!    drifts over minutes, and a baseline measured only minutes later moved the ratio
//!    by as much as the service's own changes did.
//! 2. Memory: the service's RSS with those 1,000 live matches of 64 players, less an idle
//!    service's.
//! 3. Live freshness at 5k, 20k and 40k events/s: publish to delta (p50/p99/p99.9) and
//!    publish to visible over REST; the relay's publish to copy at the same rates, and the
//!    bare pipeline's (`support/pipeline.rs`, live: the service's NATS work per live
//!    event, partition consumers, batches, one fenced message per match per batch, read
//!    back). Each run's CPU per event: nats-server's and the clients' (the service's and
//!    the load generator's; for a baseline, this process: the baseline and the load
//!    generator together).
//!    Meanwhile, Redis's own counters (commands processed, bytes received) give the
//!    write-through's traffic, and the service's `match_stats_redis_errors_total` its
//!    failed writes.
//! 4. REST: `GET match` (64 players) and a leaderboard from 64 connections while 10k
//!    events/s are ingested; baseline: a bare axum handler returning static bodies of the
//!    same sizes, measured under the same ingest, in this process (beside the clients)
//!    and in a process of its own (`support/bare_http.rs`), as the service runs.
//!
//! Under `cargo test` (no `--bench`), a smoke run with small numbers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};

// Shared by the benchmarks; not every helper is used in each.
#[path = "support/bare_http.rs"]
mod bare_http;
#[path = "support/catch_up.rs"]
mod catch_up;
#[path = "support/pipeline.rs"]
#[allow(dead_code)]
mod pipeline;
#[path = "support/relay.rs"]
mod relay;
#[path = "support/rest.rs"]
mod rest;
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;
use match_stats::Config;
use match_stats::tools::loadgen::{self, Watch};
use match_stats_harness::{NatsServer, RedisServer};
use rest::{CONNECTIONS, RestResult, hammer};
use support::feed::{MATCHES, PLAYERS, config, load, load_watching_rest, redis_addr};
use support::{CpuMeter, CpuPerEvent, Service};

struct Sizes {
    events: u64,
    rates: Vec<u32>,
    live_seconds: u64,
    rest_seconds: u64,
}

fn sizes() -> Sizes {
    if std::env::args().any(|a| a == "--bench") {
        Sizes {
            events: support::env_number("LOAD_EVENTS", 1_000_000),
            rates: vec![5_000, 20_000, 40_000],
            live_seconds: 10,
            rest_seconds: 10,
        }
    } else {
        Sizes {
            events: 3_000,
            rates: vec![500],
            live_seconds: 1,
            rest_seconds: 1,
        }
    }
}

const REST_RATE: u32 = 10_000;

/// The service against `nats` (and `redis`).
async fn start_service(nats: &NatsServer, redis: Option<&RedisServer>) -> Service {
    Service::start(&[("NATS_URL", nats.url()), ("REDIS_ADDR", redis_addr(redis))]).await
}

/// `hammer` on `urls` for `seconds` while REST_RATE events/s are published (for a second
/// longer): each REST measurement runs under the same ingest.
async fn hammer_under_ingest(
    config: &Config,
    urls: Vec<String>,
    seconds: u64,
) -> anyhow::Result<RestResult> {
    let config = config.clone();
    let background = tokio::spawn(async move {
        loadgen::run(&config, &load(0, REST_RATE, Some(seconds + 1), false)).await
    });
    let result = hammer(urls, seconds).await;
    background.await??;
    Ok(result)
}

/// Redis's own counters: (commands processed, bytes received from clients).
async fn redis_counters(redis: &RedisServer) -> anyhow::Result<(u64, u64)> {
    let client = redis::Client::open(redis.url())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut connection)
        .await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok((
        field("total_commands_processed"),
        field("total_net_input_bytes"),
    ))
}

fn fresh(report: &loadgen::Report) -> String {
    match report.freshness {
        Some(l) => format!(
            "{:.0}/s: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            report.events_per_second, l.p50_ms, l.p99_ms, l.p999_ms
        ),
        None => "no samples".into(),
    }
}

fn visible(report: &loadgen::Report) -> String {
    match report.visible {
        Some(l) => format!("visible p50 {:.2} ms, p99 {:.2} ms", l.p50_ms, l.p99_ms),
        None => "visible: no samples".into(),
    }
}

/// A baseline running in this process, live at each rate: publish to copy (the copies,
/// carrying the events' message ids, watched on `copies`) and the CPU per event of
/// nats-server and of this process (the baseline and the load generator together).
async fn live_runs(
    config: &Config,
    sizes: &Sizes,
    nats_pid: u32,
    what: &str,
    copies: &str,
) -> anyhow::Result<Vec<(loadgen::Report, CpuPerEvent)>> {
    let mut reports = Vec::new();
    for &rate in &sizes.rates {
        eprintln!("load-test: {what} live at {rate} events/s...");
        let args = load(0, rate, Some(sizes.live_seconds), true);
        let watch = Watch::MessageIds(copies.into());
        let cpu = CpuMeter::start(nats_pid, std::process::id());
        let report = loadgen::run_watching(config, &args, watch).await?;
        let cpu = cpu.per_event(report.published);
        reports.push((report, cpu));
    }
    Ok(reports)
}

/// A live run's CPU per event: nats-server's, the client's and, for the service (a
/// process of its own), the load generator's (`load_generator`; a baseline's client is
/// itself and the load generator together).
fn live_cpu(cpu: &CpuPerEvent, load_generator: Option<&CpuPerEvent>) -> String {
    match load_generator {
        Some(g) => format!(
            "{:.1} µs an event: nats-server {:.1}, the service {:.1}, the load generator {:.1}",
            cpu.nats_us + cpu.client_us + g.client_us,
            cpu.nats_us,
            cpu.client_us,
            g.client_us
        ),
        None => format!(
            "{:.1} µs an event: nats-server {:.1}, baseline and load generator {:.1}",
            cpu.nats_us + cpu.client_us,
            cpu.nats_us,
            cpu.client_us
        ),
    }
}

fn p99_ratio(service: &loadgen::Report, relay: &loadgen::Report) -> f64 {
    match (service.freshness, relay.freshness) {
        (Some(s), Some(r)) => s.p99_ms / r.p99_ms,
        _ => f64::NAN,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(dir) = std::env::var_os(bare_http::CHILD_ENV) {
        return bare_http::serve_child(std::path::Path::new(&dir)).await;
    }
    let sizes = sizes();
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let config = config(&nats, Some(&redis));
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    match_stats::nats::streams::ensure(&js, &config).await?;
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // 1. Catch-up.
    eprintln!(
        "load-test: publishing {} events of {MATCHES} matches x {PLAYERS} players...",
        sizes.events
    );
    let published = loadgen::run(&config, &load(sizes.events, 0, None, false)).await?;
    eprintln!(
        "load-test: published at {:.0} events/s; starting the service",
        published.events_per_second
    );
    let events = config.streams.events_stream.clone();
    eprintln!("load-test: bare relay and bare consumer catching up, before the service...");
    let nats_pid = nats.pid().expect("nats-server runs");
    let (relay_before, relay_cpu_before) =
        catch_up::baseline(&js, nats_pid, &events, true, vec![None]).await?;
    let (consumer_before, consumer_cpu_before) =
        catch_up::baseline(&js, nats_pid, &events, false, vec![None]).await?;
    eprintln!(
        "load-test: before the service: relay {relay_before:.0} events/s, bare consumer {consumer_before:.0} events/s"
    );
    let started = Instant::now();
    let service = start_service(&nats, Some(&redis)).await;
    let caught_up =
        catch_up::service(&js, &config, (&service, nats_pid), (sizes.events, started)).await?;
    let (catch_up, command_side, service_cpu) = (
        caught_up.events_per_second,
        caught_up.command_side,
        caught_up.cpu,
    );
    eprintln!(
        "load-test: catch-up {catch_up:.0} events/s with the read model, {command_side:.0} events/s for the command side"
    );
    // Memory holding the 1,000 live matches once both sides caught up and the catch-up's
    // batches are freed (the peak, during the catch-up, is reported beside it).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_loaded, rss_peak) = (service.rss_bytes(), service.hwm_bytes());

    // 3. Live freshness, service; what the Redis write-through sends meanwhile.
    let mut service_live = Vec::new();
    let mut redis_traffic = Vec::new();
    for &rate in &sizes.rates {
        eprintln!("load-test: service live at {rate} events/s...");
        let args = load_watching_rest(
            0,
            rate,
            Some(sizes.live_seconds),
            true,
            Some(service.http.clone()),
        );
        let before = redis_counters(&redis).await?;
        let cpu = CpuMeter::start(nats_pid, service.pid());
        let generator_cpu = CpuMeter::start(nats_pid, std::process::id());
        let report = loadgen::run(&config, &args).await?;
        let cpu = (
            cpu.per_event(report.published),
            generator_cpu.per_event(report.published),
        );
        let after = redis_counters(&redis).await?;
        redis_traffic.push((
            rate,
            (after.0 - before.0) as f64 / report.seconds,
            (after.1 - before.1) as f64 / report.seconds,
        ));
        service_live.push((report, cpu));
    }
    let redis_errors =
        catch_up::metric_total(&service.http, "match_stats_redis_errors_total").await?;

    // 4. REST while ingesting 10k events/s.
    let active: serde_json::Value = reqwest::get(format!(
        "{}/api/v1/match-stats/matches/active?limit=1",
        service.http
    ))
    .await?
    .json()
    .await?;
    let id = active["matches"][0]["match_id"]
        .as_str()
        .expect("an active match")
        .to_owned();
    let urls = vec![
        format!("{}/api/v1/match-stats/matches/{id}", service.http),
        format!(
            "{}/api/v1/match-stats/matches/{id}/leaderboard/kills",
            service.http
        ),
    ];
    let mut bodies = Vec::new();
    for url in &urls {
        bodies.push(reqwest::get(url).await?.bytes().await?);
    }
    eprintln!(
        "load-test: REST at {CONNECTIONS} connections while ingesting {REST_RATE} events/s..."
    );
    let service_rest = hammer_under_ingest(&config, urls, sizes.rest_seconds).await?;
    // 4'. The bare axum handler with bodies of the same sizes, under the same ingest (the
    // service still running, 10k events/s published).
    let bare = bare_http::router(bodies[0].clone(), bodies[1].clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, bare).await });
    let bare_rest = hammer_under_ingest(
        &config,
        vec![
            format!("http://{addr}/match"),
            format!("http://{addr}/leaderboard"),
        ],
        sizes.rest_seconds,
    )
    .await?;
    server.abort();
    // 4''. The same handler in a process of its own, as the service runs (the one above
    // shares this process's runtime with the clients).
    let child = bare_http::Child::start(&bodies[0], &bodies[1])?;
    let child_rest = hammer_under_ingest(
        &config,
        vec![
            format!("{}/match", child.url),
            format!("{}/leaderboard", child.url),
        ],
        sizes.rest_seconds,
    )
    .await?;
    drop(child);

    drop(service);

    // 2. Memory: an idle service on an empty NATS.
    let idle_nats = NatsServer::start();
    let idle = start_service(&idle_nats, None).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = idle.rss_bytes();
    drop(idle);

    // 1'. The bare relay and the bare consumer, catching up on the same stream (their
    // second runs; the first ran just before the service).
    eprintln!("load-test: bare relay catching up on the same stream...");
    let (relay_after, relay_cpu_after) =
        catch_up::baseline(&js, nats_pid, &events, true, vec![None]).await?;
    eprintln!("load-test: bare consumer catching up on the same stream...");
    let (consumer_after, consumer_cpu_after) =
        catch_up::baseline(&js, nats_pid, &events, false, vec![None]).await?;
    let relay_catch_up = (relay_before + relay_after) / 2.0;
    let consumer_catch_up = (consumer_before + consumer_after) / 2.0;
    eprintln!("load-test: bare consumers, one per partition, catching up on the same stream...");
    let partition_filters: Vec<Option<String>> =
        match_stats::nats::Partitioning::of(&config.streams)
            .all()
            .map(|p| Some(p.filter(&config.streams)))
            .collect();
    let (partitioned_catch_up, partitioned_cpu) =
        catch_up::baseline(&js, nats_pid, &events, false, partition_filters.clone()).await?;
    eprintln!("load-test: the bare pipeline (the service's NATS work, no domain work)...");
    let filters: Vec<String> = partition_filters.into_iter().flatten().collect();
    let bare_pipeline = pipeline::catch_up(
        &js,
        nats_pid,
        &events,
        filters.clone(),
        (config.batch_size as usize, config.batch_linger),
        pipeline::Copies::OneSubject,
    )
    .await?;

    // 3'. The relay live.
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(relay::run(
        js.clone(),
        config.streams.events_stream.clone(),
        consumer::DeliverPolicy::New,
        true,
        None,
        Arc::new(AtomicU64::new(0)),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let relay_live = live_runs(&config, &sizes, nats_pid, "relay", relay::COPIES).await?;
    stop.store(true, Ordering::Relaxed);
    task.await??;

    // 3''. The bare pipeline live: the service's NATS work per live event, no domain work.
    let running = pipeline::live(
        &js,
        &events,
        filters,
        (config.batch_size as usize, config.batch_linger),
        true,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pipeline_live = live_runs(
        &config,
        &sizes,
        nats_pid,
        "bare pipeline",
        pipeline::LIVE_COPIES,
    )
    .await?;
    running.stop().await?;

    // The table.
    rows.push((
        format!(
            "catch-up, {} events pre-published, until the read model holds every delta (the command side alone: until every event is acknowledged)",
            sizes.events
        ),
        format!("{catch_up:.0} events/s (command side {command_side:.0} events/s)"),
        format!(
            "relay {relay_catch_up:.0} events/s ({:.2}x; command side {:.2}x; {relay_before:.0} before the service, {relay_after:.0} after); bare consumer {consumer_catch_up:.0} events/s ({:.2}x; command side {:.2}x; {consumer_before:.0} before, {consumer_after:.0} after); bare consumers on the service's partition filters {partitioned_catch_up:.0} events/s ({:.2}x)",
            catch_up / relay_catch_up,
            command_side / relay_catch_up,
            catch_up / consumer_catch_up,
            command_side / consumer_catch_up,
            catch_up / partitioned_catch_up
        ),
    ));
    rows.push((
        "catch-up: the bare pipeline (the service's NATS work with no domain work)".into(),
        "-".into(),
        format!(
            "{:.0} events/s ({:.2}x the relay; {:.2} messages republished per event); the service reaches {:.2}x it",
            bare_pipeline.events_per_second,
            bare_pipeline.events_per_second / relay_catch_up,
            bare_pipeline.messages_per_event,
            catch_up / bare_pipeline.events_per_second
        ),
    ));
    rows.push((
        "catch-up: CPU per event, nats-server and the client together (on 2 cores, X µs caps the rate at 2,000,000/X events/s)".into(),
        format!("{service_cpu} (the service)"),
        format!(
            "relay {}; bare consumer {}; partitioned bare consumers {partitioned_cpu}; bare pipeline {}",
            relay_cpu_before.mean(relay_cpu_after),
            consumer_cpu_before.mean(consumer_cpu_after),
            bare_pipeline.cpu
        ),
    ));
    for (((rate, (service, service_cpu)), (relay, relay_cpu)), (bare, bare_cpu)) in sizes
        .rates
        .iter()
        .zip(&service_live)
        .zip(&relay_live)
        .zip(&pipeline_live)
    {
        rows.push((
            format!("live at {rate} events/s: CPU per event, nats-server and the clients together (the load generator's included)"),
            live_cpu(&service_cpu.0, Some(&service_cpu.1)),
            format!(
                "relay {}; bare pipeline {}",
                live_cpu(relay_cpu, None),
                live_cpu(bare_cpu, None)
            ),
        ));
        rows.push((
            format!("live at {rate} events/s: publish to delta (to visible over REST) / to copy"),
            format!("{} ({})", fresh(service), visible(service)),
            format!(
                "{} (p99 {:.2}x); bare pipeline {} (p99 {:.2}x; {:.2}x the relay's)",
                fresh(relay),
                p99_ratio(service, relay),
                fresh(bare),
                p99_ratio(service, bare),
                p99_ratio(bare, relay)
            ),
        ));
    }
    rows.push((
        format!(
            "REST, {CONNECTIONS} connections, match ({} B) + leaderboard ({} B), ingesting {REST_RATE} events/s",
            bodies[0].len(),
            bodies[1].len()
        ),
        format!(
            "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            service_rest.requests_per_second, service_rest.p50_ms, service_rest.p99_ms, service_rest.errors
        ),
        format!(
            "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({:.2}x the rate, p99 {:.2}x)",
            bare_rest.requests_per_second,
            bare_rest.p50_ms,
            bare_rest.p99_ms,
            service_rest.requests_per_second / bare_rest.requests_per_second,
            service_rest.p99_ms / bare_rest.p99_ms
        ),
    ));
    rows.push((
        "REST, the same, against the bare handler in a process of its own (as the service runs)"
            .into(),
        "(the row above)".into(),
        format!(
            "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({:.2}x the rate, p99 {:.2}x)",
            child_rest.requests_per_second,
            child_rest.p50_ms,
            child_rest.p99_ms,
            service_rest.requests_per_second / child_rest.requests_per_second,
            service_rest.p99_ms / child_rest.p99_ms
        ),
    ));
    let traffic: Vec<String> = redis_traffic
        .iter()
        .map(|(rate, commands, bytes)| {
            format!(
                "at {rate} events/s {commands:.0} commands/s, {:.0} KB/s",
                bytes / 1000.0
            )
        })
        .collect();
    rows.push((
        "Redis write-through during the live runs (Redis's own INFO counters)".into(),
        format!(
            "{}; write errors (`match_stats_redis_errors_total`, timeouts included) {redis_errors:.0}",
            traffic.join("; ")
        ),
        "-".into(),
    ));
    let matches_rss = rss_loaded.saturating_sub(rss_idle);
    rows.push((
        format!("memory, {MATCHES} live matches x {PLAYERS} players"),
        format!(
            "RSS {:.0} MiB (peak during the catch-up {:.0} MiB; {:.0} MiB idle): {:.1} KiB per match, {:.2} KiB per player",
            rss_loaded as f64 / 1048576.0,
            rss_peak as f64 / 1048576.0,
            rss_idle as f64 / 1048576.0,
            matches_rss as f64 / 1024.0 / f64::from(MATCHES),
            matches_rss as f64 / 1024.0 / f64::from(MATCHES * PLAYERS)
        ),
        "-".into(),
    ));
    println!("| measurement | match-stats | baseline (bare relay / bare axum) |");
    println!("|---|---|---|");
    for (what, ours, baseline) in rows {
        println!("| {what} | {ours} | {baseline} |");
    }
    Ok(())
}
