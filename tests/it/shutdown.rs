//! Shutdown always ends: after SIGTERM the process exits within `SHUTDOWN_GRACE` (plus
//! the time to get scheduled), whatever NATS and Redis do; non-zero when it abandoned
//! work in flight.

use std::time::Duration;

use async_nats::jetstream;
use match_stats_harness::{NatsServer, RedisServer, contract};

use crate::support::{ServiceProcess, publish_all};

/// The grace period the tests give the service.
const GRACE: Duration = Duration::from_secs(3);
/// What the issue allows on top of the grace period.
const SLACK: Duration = Duration::from_secs(2);

fn env(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![("SHUTDOWN_GRACE", "3s".to_owned())];
    env.extend(extra.iter().cloned());
    env
}

async fn exits_within_grace(mut service: ServiceProcess, what: &str) -> std::process::ExitStatus {
    service.sigterm();
    let Some((status, took)) = service.wait_exit(GRACE + SLACK).await else {
        panic!("{what}: still running {:?} after SIGTERM", GRACE + SLACK);
    };
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "shutdown ({what}): exited {status} {:.2} s after SIGTERM (grace {:?})",
        took.as_secs_f64(),
        GRACE
    );
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_nats_killed_first_exits_within_the_grace() {
    let mut nats = NatsServer::start();
    let service = ServiceProcess::start_with(&nats, &env(&[])).await;
    nats.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    exits_within_grace(service, "NATS killed first").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_redis_frozen_exits_within_the_grace() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let redis_addr = format!("127.0.0.1:{}", redis.port());
    let service = ServiceProcess::start_with(&nats, &env(&[("REDIS_ADDR", redis_addr)])).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let scenario = contract::scenario("small");
    publish_all(
        &js,
        "match_stats.events",
        scenario.messages[..100]
            .iter()
            .map(|m| m.payload.as_slice()),
    )
    .await;
    service.wait_received(100).await;
    redis.freeze();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = exits_within_grace(service, "Redis frozen").await;
    assert!(status.success(), "nothing abandoned: {status}");
    redis.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_publish_retry_exits_within_the_grace_saying_it_abandoned_work() {
    let nats = NatsServer::start();
    let service = ServiceProcess::start_with(&nats, &env(&[])).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    // Without the dead-letter stream, publishing a rejected event's dead letter fails and
    // is retried.
    js.delete_stream("MATCH_DEAD_LETTERS").await.unwrap();
    publish_all(&js, "match_stats.events", [b"\xc1 not an event".as_slice()]).await;
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    while service
        .metric("match_stats_publish_retries_total", "")
        .await
        < 2.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing was never retried"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exits_within_grace(service, "during a publish retry").await;
    // The batch in flight was never confirmed: it is abandoned (NATS redelivers it), and
    // the exit code says so (75, EX_TEMPFAIL).
    assert_eq!(status.code(), Some(75), "{status}");
}
