//! The HTTP edge under slow, many or odd clients (audit V11, V12, V14, V16, V17), and a
//! stuck partition made visible (V13), through a service process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use match_stats_harness::{NatsServer, RedisServer};
use serde_json::Value;

use crate::support::{ServiceProcess, WAIT, publish_all};

fn port_of(http: &str) -> u16 {
    http.rsplit(':').next().unwrap().parse().unwrap()
}

/// Whether the server closed the connection within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 512];
    matches!(stream.read(&mut buf), Ok(0) | Ok(_))
}

/// V11: a connection that never finishes its headers is closed after
/// `HTTP_HEADER_READ_TIMEOUT`; at most `HTTP_MAX_CONNECTIONS` are open at once, and a
/// request still gets through once the slow ones are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v11_slow_connections_are_closed_and_bounded() {
    let nats = NatsServer::start();
    let env = [
        ("HTTP_HEADER_READ_TIMEOUT", "1s".to_owned()),
        ("HTTP_MAX_CONNECTIONS", "8".to_owned()),
    ];
    let service = ServiceProcess::start_with(&nats, &env).await;
    let port = port_of(service.http());
    let mut slow: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Half: ")
                .unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let health = reqwest::Client::new()
        .get(format!("{}/health", service.http()))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("served once a slot frees");
    assert_eq!(health.status(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "it waited for a slot: {waited:?}"
    );
    for s in &mut slow {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "a half-sent request is closed"
        );
    }
}

/// V12: the HTTP method is a label from a fixed set: odd methods all count as `OTHER`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v12_odd_methods_do_not_grow_the_metrics() {
    let nats = NatsServer::start();
    let service = ServiceProcess::start(&nats).await;
    let client = reqwest::Client::new();
    for i in 0..50 {
        let method =
            reqwest::Method::from_bytes(format!("M{i}{}", "X".repeat(200)).as_bytes()).unwrap();
        let response = client
            .request(method, format!("{}/health", service.http()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405);
    }
    let metrics = reqwest::get(format!("{}/metrics", service.http()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("XXXXX"), "no method as a label");
    assert!(metrics.contains(r#"method="OTHER""#));
    assert!(metrics.len() < 200_000, "{} bytes", metrics.len());
}

/// V14: a profile whose client went away stops, so the next one is served; pprof is
/// off unless enabled, and with ADMIN_ADDR it is served there only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v14_an_abandoned_profile_stops_and_pprof_lives_on_the_admin_port() {
    let nats = NatsServer::start();
    let admin_port = match_stats_harness::free_port();
    let env = [
        ("PPROF_ENABLED", "true".to_owned()),
        ("ADMIN_ADDR", format!("127.0.0.1:{admin_port}")),
    ];
    let service = ServiceProcess::start_with(&nats, &env).await;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let public = reqwest::get(format!("{}/debug/pprof/profile?seconds=1", service.http()))
        .await
        .unwrap();
    assert_eq!(public.status(), 404, "not on the public port");
    let public_metrics = reqwest::get(format!("{}/metrics", service.http()))
        .await
        .unwrap();
    assert_eq!(
        public_metrics.status(),
        404,
        "metrics on the admin port only"
    );
    assert_eq!(
        reqwest::get(format!("{admin}/metrics"))
            .await
            .unwrap()
            .status(),
        200
    );
    // A 20 s profile abandoned after 1 s...
    let abandoned = reqwest::Client::new()
        .get(format!("{admin}/debug/pprof/profile?seconds=20"))
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    assert!(abandoned.is_err());
    // ...does not keep the profiler: the next one is served, well before the abandoned
    // one's 20 s would have ended. (Noticing the disconnect takes the server a moment,
    // longer on a busy machine: asked again until then, not after a fixed pause.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let next = loop {
        let next = reqwest::get(format!("{admin}/debug/pprof/profile?seconds=1"))
            .await
            .unwrap();
        if next.status() == 200 || tokio::time::Instant::now() > deadline {
            break next;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(next.status(), 200);
}

/// V16: lookups of an unknown id do not reach Redis again and again (a short negative
/// cache; the read model is always asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v16_repeated_misses_are_answered_without_asking_redis_each_time() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let env = [("REDIS_ADDR", format!("127.0.0.1:{}", redis.port()))];
    let service = ServiceProcess::start_with(&nats, &env).await;
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port())).unwrap();
    let mut r = client.get_multiplexed_async_connection().await.unwrap();
    let calls = |info: String| -> u64 {
        info.lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let before: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut r)
        .await
        .unwrap();
    for _ in 0..100 {
        let response = reqwest::get(format!(
            "{}/api/v1/match-stats/matches/nobody-knows",
            service.http()
        ))
        .await
        .unwrap();
        assert_eq!(response.status(), 404);
    }
    let after: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut r)
        .await
        .unwrap();
    let asked = calls(after) - calls(before);
    assert!(
        asked <= 5,
        "Redis asked {asked} times for 100 lookups of one unknown id"
    );
}

/// V17: a path that is not UTF-8 is a JSON 400 like every other error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v17_a_bad_path_is_a_json_error() {
    let nats = NatsServer::start();
    let service = ServiceProcess::start(&nats).await;
    let response = reqwest::get(format!("{}/api/v1/match-stats/matches/%FF", service.http()))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["status"], 400);
    assert!(body["error"].as_str().unwrap().contains("path"), "{body}");
}

/// V13: a partition that cannot make progress (here its dead letters have nowhere to go)
/// is shown: `/ready`'s details, `/system/stats` and the per-partition gauges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v13_a_stuck_partition_is_visible() {
    let nats = NatsServer::start();
    let env = [("PARTITION_STALL_AFTER", "2s".to_owned())];
    let service = ServiceProcess::start_with(&nats, &env).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.delete_stream("MATCH_DEAD_LETTERS").await.unwrap();
    publish_all(&js, "match_stats.events", [b"\xc1 junk".as_slice()]).await;
    let partition = match_stats::nats::partition_of("unknown", 16);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ready = service.ready().await;
        if ready["partitions_stalled"] == serde_json::json!([partition]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let label = format!("partition=\"{partition}\"");
    assert_eq!(
        service
            .metric("match_stats_partition_stalled", &label)
            .await,
        1.0
    );
    assert!(
        service
            .metric("match_stats_partition_retry_streak", &label)
            .await
            >= 1.0
    );
    let stats: Value = reqwest::get(format!(
        "{}/api/v1/match-stats/system/stats",
        service.http()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let figures = &stats["partitions"]["figures"][usize::from(partition)];
    assert_eq!(figures["stalled"], true, "{figures}");
}
