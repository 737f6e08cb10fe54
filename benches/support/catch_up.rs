//! Catch-ups timed on a stream of pre-published events, as the load benchmarks time them:
//! the bare relay and the bare consumer (`relay.rs`), and the service (a child process)
//! until its read model holds every delta; each with the CPU nats-server and the client
//! used for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use match_stats::Config;

use crate::relay;
use crate::support::{self, CpuMeter, CpuPerEvent, Service};

/// Catch-up of a relay (or, without `republish`, a bare consumer) on the whole events
/// stream: events/s. With `filters`, one consumer per filter (the service's partitions),
/// all at once. With the CPU nats-server (`nats_pid`) and this process used for it.
pub async fn baseline(
    js: &jetstream::Context,
    nats_pid: u32,
    events_stream: &str,
    republish: bool,
    filters: Vec<Option<String>>,
) -> anyhow::Result<(f64, CpuPerEvent)> {
    let relayed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // A fresh RELAY stream each relay run: a second run inside its duplicate window would
    // find every message id stored and store nothing (a cheaper run).
    if republish && js.get_stream(relay::STREAM).await.is_ok() {
        js.delete_stream(relay::STREAM).await?;
    }
    let stored = support::stored_messages(js, events_stream).await?;
    let cpu = CpuMeter::start(nats_pid, std::process::id());
    let started = Instant::now();
    let tasks: Vec<_> = filters
        .into_iter()
        .map(|filter| {
            tokio::spawn(relay::run(
                js.clone(),
                events_stream.to_owned(),
                consumer::DeliverPolicy::All,
                republish,
                filter,
                relayed.clone(),
                stop.clone(),
            ))
        })
        .collect();
    while relayed.load(Ordering::Relaxed) < stored {
        anyhow::ensure!(
            !tasks.iter().any(|t| t.is_finished()),
            "the baseline stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = stored as f64 / started.elapsed().as_secs_f64();
    let used = cpu.per_event(stored);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok((rate, used))
}

/// What the service's catch-up measured.
pub struct ServiceRun {
    /// Events/s until the read model held every delta.
    pub events_per_second: f64,
    /// Events/s until the command side had decided every event and stored every delta.
    pub command_side: f64,
    /// The CPU nats-server and the service used, per event.
    pub cpu: CpuPerEvent,
}

/// Times the catch-up of `service`, started at `started` on the `events` events of
/// `config`'s stream: until every event is decided and acknowledged, then until the read
/// model holds every delta. Progress on stderr every 5 s.
pub async fn service(
    js: &jetstream::Context,
    config: &Config,
    (service, nats_pid): (&Service, u32),
    (events, started): (u64, Instant),
) -> anyhow::Result<ServiceRun> {
    let cpu = CpuMeter::start(nats_pid, service.pid());
    let mut last = Instant::now();
    loop {
        // The service's own count of events decided (cheap: `/ready` reads counters);
        // the partition consumers' backlog, a consumer info request to nats-server per
        // partition, only once every event is decided. Asked every 50 ms throughout,
        // those requests took a share of nats-server's CPU from the catch-up they timed.
        let decided = ready(&service.http).await?["counts"]["received"]
            .as_u64()
            .unwrap_or(0);
        if decided >= events && backlog(js, config).await == 0 {
            break;
        }
        if last.elapsed() > Duration::from_secs(5) {
            last = Instant::now();
            eprintln!(
                "catch-up: {} events left after {:.0} s",
                events.saturating_sub(decided),
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The command side is done: every event decided and acknowledged, every delta
    // stored. The read model's projection may still trail it (it gives way to ingest
    // while partitions catch up); the catch-up counts until it holds every delta too,
    // as the bare pipeline's counts until its copies are read back.
    let command_side = events as f64 / started.elapsed().as_secs_f64();
    loop {
        let text = metrics_text(&service.http).await?;
        let projected = total(&text, "match_stats_deltas_projected_total");
        if projected >= total(&text, "match_stats_deltas_published_total")
            && ready(&service.http).await?["read_model_caught_up"] == true
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(ServiceRun {
        events_per_second: events as f64 / started.elapsed().as_secs_f64(),
        command_side,
        // (counted from when the service first answered `/health`: its start-up, inside
        // the timed window, is left out of its CPU)
        cpu: cpu.per_event(events),
    })
}

/// The service's `/ready` body.
async fn ready(http: &str) -> anyhow::Result<serde_json::Value> {
    Ok(reqwest::get(format!("{http}/ready")).await?.json().await?)
}

/// The sum of a counter's series on the service's `/metrics`.
pub async fn metric_total(http: &str, name: &str) -> anyhow::Result<f64> {
    Ok(total(&metrics_text(http).await?, name))
}

/// The service's `/metrics` page.
async fn metrics_text(http: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("{http}/metrics"))
        .await?
        .text()
        .await?)
}

/// The sum of a counter's series in a `/metrics` page.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Events waiting or unacknowledged in the service's partition consumers.
async fn backlog(js: &jetstream::Context, config: &Config) -> u64 {
    let Ok(stream) = js.get_stream(&config.streams.events_stream).await else {
        return u64::MAX;
    };
    let mut waiting = 0;
    for partition in match_stats::nats::Partitioning::of(&config.streams).all() {
        match stream
            .consumer_info(partition.consumer_name(&config.streams))
            .await
        {
            Ok(info) => waiting += info.num_pending + info.num_ack_pending as u64,
            Err(_) => return u64::MAX,
        }
    }
    waiting
}
