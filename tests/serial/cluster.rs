//! Scale-out: three service replicas on a three-node NATS cluster (streams, consumers and
//! buckets at replicas 3), through a replica's `kill -9` and a NATS node's crash.
//!
//! The workload is the small scenario eight times over, each copy with its own match ids
//! (same length, so every payload keeps its size), interleaved so that the 24 matches
//! spread over the 16 partitions and the replicas. Its expected results are the
//! contract's `expected.json`, renamed per copy. Phases: a third published with all up;
//! the replica writing the most partitions killed, a third published (failover measured:
//! from the kill until every one of its partitions is written by a survivor); a NATS node
//! killed, the last third published; both brought back. Then: every match's deltas are
//! gapless and stored once, fold into the expected objects, the dead-letter stream holds
//! every bad payload once, and every replica's REST answers equal the expected objects.
//!
//! A second test starts a replica while two of the three nodes are down: start-up waits
//! for JetStream to answer, and the replica is ready once they are back.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use match_stats_harness::{CLUSTER_USERS, NatsCluster, json};
use serde_json::Value;

use crate::support::deltas::{assert_gapless, assert_matches_expected, fold_deltas};
use crate::support::{ServiceProcess, WAIT, publish_lines, read_stream, scenario_copies};

/// Copies of the scenario.
const COPIES: usize = 8;
/// The partition count (the default).
const PARTITIONS: u16 = 16;
/// Pin timeout in this test: the failover time it allows.
const PIN_TIMEOUT: &str = "2s";

/// Waits until JetStream answers (a meta leader is elected), with the stream at R3.
async fn jetstream_ready(url: &str) -> jetstream::Context {
    let deadline = Instant::now() + WAIT;
    loop {
        let servers: Vec<&str> = url.split(',').collect();
        let (_, user, password) = CLUSTER_USERS[0];
        let options =
            async_nats::ConnectOptions::with_user_and_password(user.into(), password.into());
        if let Ok(client) = options.connect(servers).await {
            let js = jetstream::new(client);
            if js.query_account().await.is_ok() {
                return js;
            }
        }
        assert!(Instant::now() < deadline, "the cluster elects a leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Events waiting or unacknowledged in all partitions' consumers.
async fn backlog(js: &jetstream::Context) -> Option<u64> {
    let stream = js.get_stream("MATCH_EVENTS").await.ok()?;
    let mut waiting = 0;
    for n in 0..PARTITIONS {
        let info = stream
            .consumer_info(format!("match-stats-{n}-of-{PARTITIONS}"))
            .await
            .ok()?;
        waiting += info.num_pending + info.num_ack_pending as u64;
    }
    Some(waiting)
}

async fn wait_drained(js: &jetstream::Context, what: &str) {
    let deadline = Instant::now() + WAIT * 4;
    loop {
        if backlog(js).await == Some(0) {
            return;
        }
        assert!(Instant::now() < deadline, "partitions drained {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The partitions a replica writes, per its `/system/stats`.
async fn writing(replica: &ServiceProcess) -> Vec<u16> {
    let stats: Value = match reqwest::get(format!(
        "{}/api/v1/match-stats/system/stats",
        replica.http()
    ))
    .await
    {
        Ok(response) => response.json().await.unwrap_or_default(),
        Err(_) => return Vec::new(),
    };
    stats["partitions"]["writing"]
        .as_array()
        .map(|a| a.iter().map(|n| n.as_u64().unwrap() as u16).collect())
        .unwrap_or_default()
}

async fn start_replica(cluster: &NatsCluster) -> ServiceProcess {
    ServiceProcess::start_with(
        &cluster.nodes[0],
        &[
            ("NATS_URL", cluster.url()),
            ("NATS_USER", CLUSTER_USERS[0].1.into()),
            ("NATS_PASSWORD", CLUSTER_USERS[0].2.into()),
            ("STREAM_REPLICAS", "3".into()),
            ("PARTITION_PIN_TIMEOUT", PIN_TIMEOUT.into()),
            ("SNAPSHOT_EVERY_EVENTS", "500".into()),
            ("SNAPSHOT_INTERVAL", "2s".into()),
            // Who wrote which partition when, for a failure's log tail.
            ("LOG_LEVEL", "info,match_stats::command_side=debug".into()),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_a_three_node_cluster_survive_a_replica_kill_and_a_node_crash() {
    let _heavy = crate::support::one_heavy_test_at_a_time().await;
    let mut cluster = NatsCluster::start();
    let js = jetstream_ready(&cluster.url()).await;
    let workload = scenario_copies(COPIES);
    let (lines, expected, dead_letters) = (
        workload.lines.clone(),
        workload.expected.clone(),
        workload.rejected(),
    );
    let applied: u64 = expected["matches"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| m["event_count"].as_u64().unwrap())
        .sum();

    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(start_replica(&cluster).await);
    }
    let third = lines.len() / 3;

    // 1. All up: the replicas share the partitions (none writes more than 16 / 3,
    // rounded up, once the balancer has run), then more events flow.
    let share = usize::from(PARTITIONS).div_ceil(3);
    publish_lines(&js, &lines[..third / 2]).await;
    wait_drained(&js, "with every replica up").await;
    let balancing = Instant::now();
    loop {
        let mut most = 0;
        for replica in &replicas {
            most = most.max(writing(replica).await.len());
        }
        if most <= share {
            break;
        }
        assert!(balancing.elapsed() < WAIT, "partitions shared out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish_lines(&js, &lines[third / 2..third]).await;
    wait_drained(&js, "with every replica up").await;
    // Partitions that got their first events meanwhile may have landed on one replica
    // at once; the balancer hands the excess over.
    let writers = loop {
        let mut writers = Vec::new();
        for replica in &replicas {
            writers.push(writing(replica).await);
        }
        let shared = writers.iter().all(|w| w.len() <= share)
            && writers.iter().filter(|w| !w.is_empty()).count() >= 2;
        if shared {
            break writers;
        }
        assert!(
            balancing.elapsed() < WAIT * 4,
            "partitions shared out: {writers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let balanced = balancing.elapsed();

    // 2. The replica writing the most partitions is killed while events keep coming.
    let victim = (0..3).max_by_key(|&i| writers[i].len()).unwrap();
    let orphaned = writers[victim].clone();
    replicas.remove(victim).kill9();
    let killed = Instant::now();
    let publisher = {
        let js = js.clone();
        let lines = lines[third..2 * third].to_vec();
        tokio::spawn(async move { publish_lines(&js, &lines).await })
    };
    let failover = loop {
        let mut taken = Vec::new();
        for replica in &replicas {
            taken.extend(writing(replica).await);
        }
        if orphaned.iter().all(|n| taken.contains(n)) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < WAIT,
            "partitions {orphaned:?} taken over (now written: {taken:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    publisher.await.unwrap();
    wait_drained(&js, "after the replica's kill").await;

    // 3. A NATS node crashes (not the last); the last third is published meanwhile.
    cluster.nodes[2].kill();
    let node_killed = Instant::now();
    publish_lines(&js, &lines[2 * third..]).await;
    wait_drained(&js, "with a NATS node down").await;
    let with_node_down = node_killed.elapsed();

    // 4. Both come back.
    cluster.nodes[2].restart();
    replicas.push(start_replica(&cluster).await);

    // Every match's deltas gapless and stored once, folding into the expected objects.
    wait_drained(&js, "after both came back").await;
    let deadline = Instant::now() + WAIT;
    let deltas = loop {
        let deltas = fold_deltas(&js, "MATCH_DELTAS").await;
        if deltas.entries as u64 >= applied || Instant::now() > deadline {
            break deltas;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        deltas.entries as u64, applied,
        "one delta entry per applied event"
    );
    assert_gapless(&deltas);
    assert_matches_expected(&deltas, &expected);
    let dead = read_stream(&js, "MATCH_DEAD_LETTERS").await;
    assert_eq!(dead.len() as u64, dead_letters, "each bad payload once");

    // Every replica shows the whole deployment's counts, conserved.
    for replica in &replicas {
        crate::support::assert_conservation(replica.http(), &js, "MATCH_EVENTS").await;
    }

    // Any replica answers for any match, the same.
    let ids: Vec<&String> = expected["matches"].as_object().unwrap().keys().collect();
    for replica in &replicas {
        replica.wait_read_model_caught_up().await;
        for id in &ids {
            let url = format!("{}/api/v1/match-stats/matches/{id}", replica.http());
            let deadline = Instant::now() + WAIT;
            let body = loop {
                let body: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
                if body["event_count"] == expected["matches"][id.as_str()]["event_count"]
                    || Instant::now() > deadline
                {
                    break body;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            json::assert_close(&body, &expected["matches"][id.as_str()], &url);
        }
    }
    // Straight to stderr (not captured by the test harness): CI's log shows it.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "cluster: 3 nats-servers (R3, sync_interval always), 3 replicas, {PARTITIONS} partitions \
         shared out within {:.1} s (written per replica: {writers:?}); \
         replica killed while writing partitions {orphaned:?}: failover (kill to every one written \
         by a survivor) {:.2} s with PARTITION_PIN_TIMEOUT={PIN_TIMEOUT}; a NATS node down for {:.1} s; \
         checked {} events ({applied} applied, {dead_letters} dead letters), {} delta entries in {} messages over \
         {} matches, gapless and once each; {} replicas x {} matches answered over REST",
        balanced.as_secs_f64(),
        failover.as_secs_f64(),
        with_node_down.as_secs_f64(),
        lines.len(),
        deltas.entries,
        deltas.messages,
        ids.len(),
        replicas.len(),
        ids.len(),
    );
}

/// A replica started while the cluster has no JetStream leader (two of three nodes down)
/// waits for one (`PROVISION_PATIENCE`), instead of exiting on its provisioning's first
/// time-out, and becomes ready once the nodes are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_while_the_cluster_has_no_leader_becomes_ready_when_it_has_one() {
    let _heavy = crate::support::one_heavy_test_at_a_time().await;
    let mut cluster = NatsCluster::start();
    jetstream_ready(&cluster.url()).await;
    let url = cluster.url();
    let (first, others) = cluster.nodes.split_at_mut(1);
    for node in others.iter_mut() {
        node.kill();
    }
    let started = Instant::now();
    // Longer than one JetStream request's time-out (5 s, or the server's 10 s answer
    // "temporarily unavailable"), so the first provisioning attempt fails.
    let back_after = Duration::from_secs(15);
    let env = [
        ("NATS_URL", url),
        ("NATS_USER", CLUSTER_USERS[0].1.into()),
        ("NATS_PASSWORD", CLUSTER_USERS[0].2.into()),
        ("STREAM_REPLICAS", "3".into()),
        ("LOG_LEVEL", "info".into()),
    ];
    let starting = ServiceProcess::start_with(&first[0], &env);
    let restarting = async {
        tokio::time::sleep(back_after).await;
        for node in others.iter_mut() {
            node.restart();
        }
    };
    // ServiceProcess::start_with panics unless /ready answers ready within its wait; the
    // process would have exited at its first failed attempt without the patience.
    let (mut replica, ()) = tokio::join!(starting, restarting);
    let ready_after = started.elapsed();
    assert!(replica.exited().is_none(), "the replica is running");
    assert!(
        ready_after >= back_after,
        "ready only once the cluster had a leader again ({ready_after:?})"
    );
    assert_eq!(replica.ready().await["ready"], true);
}
