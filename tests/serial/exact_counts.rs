//! Counts exact through crashes: the small scenario four times over (5,416 messages, 12
//! matches over the partitions) published while the service is killed with SIGKILL at
//! least five times and restarted 0.2 s later, with one core kept busy by the test (a
//! shared node). Afterwards `/system/stats` says: received = what the events stream
//! stored; applied, duplicates and every rejection reason = the expected counts; per
//! partition, `received = applied + duplicates + rejected`. Then the same with two
//! replicas sharing the partitions, and with quiet kills, the Prometheus counters summed
//! over every process that ran.

use std::time::Duration;

use async_nats::jetstream;
use match_stats_harness::NatsServer;
use rand::{RngExt, SeedableRng};

use crate::support::{
    BusyCore, ServiceProcess, WAIT, Workload, assert_conservation, assert_counts_equal,
    publish_lines, scenario_copies,
};

/// Copies of the scenario.
const COPIES: usize = 4;
/// Kills during the publishing.
const KILLS: usize = 6;
/// Lines published between pauses; the pause.
const CHUNK: usize = 40;
const PAUSE: Duration = Duration::from_millis(50);

/// The services' settings. (To see a failing run's partitions hand over, add
/// `("LOG_LEVEL", "info,match_stats::command_side=debug")`: each restore, replay and
/// snapshot is logged with its sequence and count.)
fn env() -> Vec<(&'static str, String)> {
    vec![
        ("SNAPSHOT_EVERY_EVENTS", "200".to_owned()),
        ("SNAPSHOT_INTERVAL", "1s".to_owned()),
        ("ACK_WAIT", "2s".to_owned()),
        ("PARTITION_PIN_TIMEOUT", "2s".to_owned()),
    ]
}

/// Publishes the workload in chunks with pauses (about 7 s in all), in the background.
fn publish_slowly(js: &jetstream::Context, workload: &Workload) -> tokio::task::JoinHandle<()> {
    let (js, lines) = (js.clone(), workload.lines.clone());
    tokio::spawn(async move {
        for chunk in lines.chunks(CHUNK) {
            publish_lines(&js, chunk).await;
            tokio::time::sleep(PAUSE).await;
        }
    })
}

fn seeded() -> (u64, rand::rngs::StdRng) {
    let seed: u64 = std::env::var("EXACT_COUNTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    report(format!(
        "exact counts: seed {seed} (EXACT_COUNTS_SEED replays it)"
    ));
    (seed, rand::rngs::StdRng::seed_from_u64(seed))
}

fn report(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_stay_exact_through_kill_9s_on_a_busy_machine() {
    let _heavy = crate::support::one_heavy_test_at_a_time().await;
    let (seed, mut rng) = seeded();
    let workload = scenario_copies(COPIES);
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let busy = BusyCore::start();
    let mut service = ServiceProcess::start_with(&nats, &env()).await;
    let publisher = publish_slowly(&js, &workload);
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(400..1200))).await;
        service.kill9();
        tokio::time::sleep(Duration::from_millis(200)).await;
        service = ServiceProcess::start_with(&nats, &env()).await;
    }
    publisher.await.expect("publisher");
    drop(busy);
    let events = assert_conservation(service.http(), &js, "MATCH_EVENTS").await;
    assert_counts_equal(&events, &workload.expected);
    report(format!(
        "exact counts (seed {seed}, rerun with EXACT_COUNTS_SEED): {KILLS} kill -9s of one replica under a busy core; \
         {} messages stored, received {}, applied {}, duplicates {}, rejected {}",
        workload.lines.len(),
        events["received"],
        events["processed"],
        events["duplicates"],
        events["rejected"]
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_stay_exact_with_two_replicas_sharing_the_partitions() {
    let _heavy = crate::support::one_heavy_test_at_a_time().await;
    let (seed, mut rng) = seeded();
    let workload = scenario_copies(COPIES);
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let busy = BusyCore::start();
    let mut replicas = vec![
        ServiceProcess::start_with(&nats, &env()).await,
        ServiceProcess::start_with(&nats, &env()).await,
    ];
    let publisher = publish_slowly(&js, &workload);
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(400..1200))).await;
        let victim = replicas.swap_remove(kill % 2);
        victim.kill9();
        tokio::time::sleep(Duration::from_millis(200)).await;
        replicas.push(ServiceProcess::start_with(&nats, &env()).await);
    }
    publisher.await.expect("publisher");
    drop(busy);
    // Either replica answers for the whole deployment, the same.
    for replica in &replicas {
        let events = assert_conservation(replica.http(), &js, "MATCH_EVENTS").await;
        assert_counts_equal(&events, &workload.expected);
    }
    // No partition is written by both.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (a, b) = loop {
        let writing = |r: &ServiceProcess| {
            let url = format!("{}/api/v1/match-stats/system/stats", r.http());
            async move {
                let stats: serde_json::Value =
                    reqwest::get(url).await.unwrap().json().await.unwrap();
                stats["partitions"]["writing"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_u64().unwrap())
                    .collect::<Vec<_>>()
            }
        };
        let (a, b) = (writing(&replicas[0]).await, writing(&replicas[1]).await);
        if a.iter().all(|n| !b.contains(n)) {
            break (a, b);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a partition written by both: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    report(format!(
        "exact counts (seed {seed}): {KILLS} kill -9s alternating between two replicas under a busy core; \
         {} messages, counts exact on both; writing {a:?} and {b:?}",
        workload.lines.len()
    ));
}

/// The Prometheus counters count what a process decides and acknowledges first: a
/// restart's replay and a hand-over's catch-up count nothing again. Kills come at quiet
/// moments (everything acknowledged and scraped), as a Prometheus scrape would see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_counters_summed_over_processes_equal_what_the_stream_received() {
    let _heavy = crate::support::one_heavy_test_at_a_time().await;
    let workload = scenario_copies(COPIES);
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let _busy = BusyCore::start();
    let mut replicas = vec![
        ServiceProcess::start_with(&nats, &env()).await,
        ServiceProcess::start_with(&nats, &env()).await,
    ];
    // Per series: the last scrape of every process that was killed.
    let series = [
        ("match_stats_events_received_total", ""),
        ("match_stats_events_processed_total", ""),
        ("match_stats_events_duplicate_total", ""),
        ("match_stats_events_rejected_total", ""),
    ];
    let mut of_killed = [0.0; 4];
    let chunks: Vec<_> = workload
        .lines
        .chunks(workload.lines.len() / KILLS + 1)
        .collect();
    for (kill, chunk) in chunks.iter().enumerate() {
        publish_lines(&js, chunk).await;
        let stored = crate::support::stored(&js, "MATCH_EVENTS").await;
        // Quiet: every stored message decided (and acknowledged) somewhere.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut received = 0.0;
            for r in &replicas {
                received += r.metric(series[0].0, series[0].1).await;
            }
            if received + of_killed[0] >= stored as f64 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{stored} messages never decided"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let victim = replicas.swap_remove(kill % 2);
        for (i, (name, labels)) in series.iter().enumerate() {
            of_killed[i] += victim.metric(name, labels).await;
        }
        victim.kill9();
        replicas.push(ServiceProcess::start_with(&nats, &env()).await);
    }
    let stored = crate::support::stored(&js, "MATCH_EVENTS").await;
    let events = assert_conservation(replicas[0].http(), &js, "MATCH_EVENTS").await;
    // Let every process acknowledge what it caught up on, then add the survivors up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut sums = of_killed;
    for r in &replicas {
        for (i, (name, labels)) in series.iter().enumerate() {
            sums[i] += r.metric(name, labels).await;
        }
    }
    assert_eq!(
        sums[0], stored as f64,
        "received_total summed over every process"
    );
    assert_eq!(sums[1], events["processed"].as_u64().unwrap() as f64);
    assert_eq!(sums[2], events["duplicates"].as_u64().unwrap() as f64);
    let rejected: u64 = events["rejected"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(sums[3], rejected as f64);
    report(format!(
        "exact counts: Prometheus received_total summed over {} processes ({KILLS} killed at quiet moments) = {} = messages stored",
        KILLS + 2,
        sums[0]
    ));
}
