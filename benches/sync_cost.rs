//! The cost of `sync_interval: always` (BENCHMARKS.md, "Cluster publishing"): three
//! nats-servers clustered on loopback from `nats/cluster/node.conf`, an R3 stream, events
//! of 200 bytes published with 256 acks in flight; then the same with the line removed
//! (NATS's default: fsync every 2 minutes). `make bench-cluster`; under `cargo test` a
//! smoke run with 2,000 events.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use match_stats_harness::NatsCluster;

/// Publishes `count` events to a new R3 stream and returns events/s.
async fn publish_rate(cluster: &NatsCluster, count: usize) -> anyhow::Result<f64> {
    let servers: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (_, user, password) = match_stats_harness::CLUSTER_USERS[0];
    // The stream can be created once the cluster has elected a leader and knows all three
    // peers; asked earlier, the request times out (seen on every run here) or is refused.
    // On a slow machine that takes a while, so every error is retried until the deadline,
    // and the last one is reported.
    let js = loop {
        let attempt = async {
            let options =
                async_nats::ConnectOptions::with_user_and_password(user.into(), password.into());
            let client = options.connect(servers.clone()).await?;
            jetstream::new(client.clone())
                .create_stream(jetstream::stream::Config {
                    name: "RATE".into(),
                    subjects: vec!["rate.*".into()],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await?;
            // Acks under `sync_interval: always` wait for three fsyncs; a loaded machine can
            // take longer than the 5 s default.
            let js = jetstream::ContextBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(client);
            anyhow::Ok(js)
        };
        match attempt.await {
            Ok(js) => break js,
            Err(error) if Instant::now() < deadline => {
                eprintln!("the cluster is not ready yet ({error}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error.context("no R3 stream within 60 s")),
        }
    };
    let payload = bytes::Bytes::from(vec![b'x'; 200]);
    let started = Instant::now();
    let mut acks = VecDeque::new();
    for i in 0..count {
        acks.push_back(
            js.publish(format!("rate.{}", i % 64), payload.clone())
                .await?,
        );
        if acks.len() >= 256 {
            acks.pop_front().expect("window").await?;
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events = if std::env::args().any(|a| a == "--bench") {
        50_000
    } else {
        2_000
    };
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("nats/cluster/node.conf");
    let always = NatsCluster::start();
    let synced = publish_rate(&always, events)
        .await
        .context("publishing with sync_interval always")?;
    drop(always);
    // The same configuration without the fsync setting, laid out like `nats/` (NATS reads
    // an include relative to the including file).
    let relaxed = tempfile::tempdir()?;
    std::fs::create_dir(relaxed.path().join("cluster"))?;
    std::fs::copy(
        config.with_file_name("../permissions.conf"),
        relaxed.path().join("permissions.conf"),
    )?;
    let relaxed_config = relaxed.path().join("cluster/node.conf");
    std::fs::write(
        &relaxed_config,
        std::fs::read_to_string(&config)?.replace("sync_interval: always", ""),
    )?;
    let default = publish_rate(&NatsCluster::start_with(&relaxed_config), events)
        .await
        .context("publishing with the default sync_interval")?;
    println!(
        "3-node cluster on loopback, R3 stream, {events} events of 200 bytes, 256 in flight: \
         sync_interval always {synced:.0} events/s, default (2 min) {default:.0} events/s ({:.2}x)",
        synced / default
    );
    Ok(())
}
