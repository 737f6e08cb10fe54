//! What operators see: `/metrics` after the small scenario (names, types and values, from
//! a service process of its own so no other test's counts mix in) and `/ready`.

use std::time::Duration;

use async_nats::jetstream;
use match_stats_harness::{NatsServer, contract};

use crate::support::{ServiceProcess, WAIT, publish_all};

/// The value of the sample `series` (name with labels, exactly as exported).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn metric_type<'a>(metrics: &'a str, name: &str) -> Option<&'a str> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("# TYPE {name} ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_the_small_scenario_have_the_right_names_types_and_values() {
    let nats = NatsServer::start();
    let service = ServiceProcess::start(&nats).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let scenario = contract::scenario("small");
    publish_all(
        &js,
        "match_stats.events",
        scenario.messages.iter().map(|m| m.payload.as_slice()),
    )
    .await;
    service.wait_received(scenario.messages.len() as u64).await;
    service.wait_read_model_caught_up().await;
    crate::support::assert_conservation(service.http(), &js, "MATCH_EVENTS").await;
    let id = scenario.expected["matches"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap();
    let url = format!("{}/api/v1/match-stats/matches/{id}", service.http());
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);

    // Wait for the consumer-lag gauges (refreshed every 2 s) to see the drained consumer:
    // nothing waiting and nothing unacknowledged (a refresh can land after the last
    // delivery and before its batch's ack).
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics = loop {
        let metrics = reqwest::get(format!("{}/metrics", service.http()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if sample(&metrics, "match_stats_consumer_pending") == Some(0.0)
            && sample(&metrics, "match_stats_consumer_ack_pending") == Some(0.0)
        {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer lag never exported:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let counts = &scenario.expected["counts"];
    let count = |key: &str| counts[key].as_f64().unwrap();
    let want = [
        (
            "match_stats_events_received_total",
            "counter",
            count("published"),
        ),
        (
            "match_stats_events_processed_total",
            "counter",
            count("applied"),
        ),
        (
            "match_stats_events_duplicate_total",
            "counter",
            count("duplicates"),
        ),
        (
            "match_stats_delta_entries_published_total",
            "counter",
            count("applied"),
        ),
        ("match_stats_matches_active", "gauge", 0.0),
        ("match_stats_matches_completed", "gauge", 3.0),
        ("match_stats_consumer_pending", "gauge", 0.0),
        ("match_stats_consumer_ack_pending", "gauge", 0.0),
    ];
    for (name, kind, value) in want {
        assert_eq!(metric_type(&metrics, name), Some(kind), "{name} type");
        assert_eq!(sample(&metrics, name), Some(value), "{name} value");
    }
    for (reason, n) in counts["rejected"].as_object().unwrap() {
        let n = n.as_f64().unwrap();
        assert_eq!(
            sample(
                &metrics,
                &format!("match_stats_events_rejected_total{{reason=\"{reason}\"}}")
            ),
            Some(n),
            "{reason}"
        );
        assert_eq!(
            sample(
                &metrics,
                &format!("match_stats_dead_letters_total{{reason=\"{reason}\"}}")
            ),
            Some(n),
            "{reason}"
        );
    }
    // One publish of each delta: nothing was published again.
    assert!(
        matches!(
            sample(&metrics, "match_stats_effects_deduplicated_total"),
            None | Some(0.0)
        ),
        "effects deduplicated on a plain run"
    );
    // The projector read every delta message once: handed off in memory (this replica
    // published it) or decoded from the stream (the counter's two series, summed).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let read = service
            .metric("match_stats_deltas_projected_total", "")
            .await;
        let published = service
            .metric("match_stats_deltas_published_total", "")
            .await;
        if read == published && published > 0.0 {
            break;
        }
        assert!(
            read < published && tokio::time::Instant::now() < deadline,
            "{read} delta messages projected, {published} published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric_type(&metrics, "match_stats_processing_latency"),
        Some("histogram")
    );
    assert!(sample(&metrics, "match_stats_processing_latency_count").unwrap() > 0.0);
    assert_eq!(
        metric_type(&metrics, "match_stats_cache_hit_ratio"),
        Some("gauge")
    );
    assert_eq!(
        sample(&metrics, "match_stats_cache_hit_ratio{level=\"memory\"}"),
        Some(1.0)
    );
    let route = "match_stats_http_requests_total{route=\"/api/v1/match-stats/matches/{match_id}\",method=\"GET\",status=\"200\"}";
    assert_eq!(
        sample(&metrics, route),
        Some(1.0),
        "requests by route template, not raw path"
    );
    assert_eq!(
        metric_type(&metrics, "match_stats_http_request_duration_seconds"),
        Some("histogram")
    );
    assert!(metrics.contains("match_stats_snapshot_age_seconds"));

    let ready = service.ready().await;
    assert_eq!(ready["ready"].as_bool(), Some(true), "{ready}");
    assert_eq!(ready["consumer_pending"].as_u64(), Some(0), "{ready}");

    // The durable consumer deleted under the running service: /ready says so, or the
    // service stops with an error so that a restart recreates it.
    js.get_stream("MATCH_EVENTS")
        .await
        .unwrap()
        .delete_consumer("match-stats-0-of-16")
        .await
        .unwrap();
    let mut service = service;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = service.exited() {
            assert!(!status.success(), "stopped with an error");
            break;
        }
        if let Ok(response) = reqwest::get(format!("{}/ready", service.http())).await
            && let Ok(ready) = response.json::<serde_json::Value>().await
            && ready["ready"] == false
        {
            assert!(
                ready["reason"]
                    .as_str()
                    .unwrap()
                    .contains("consumer is missing"),
                "{ready}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready without its consumer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_traceparent_continues_onto_its_delta() {
    use async_nats::jetstream::message::PublishMessage;

    let nats = NatsServer::start();
    let service = ServiceProcess::start(&nats).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let scenario = contract::scenario("small");
    let first = &scenario.messages[0];
    let (trace_id, parent_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traced = PublishMessage::build()
        .payload(first.payload.clone().into())
        .header(
            "traceparent",
            format!("00-{trace_id}-{parent_span}-01").as_str(),
        );
    js.send_publish(
        crate::support::subject_for("match_stats.events", &first.payload),
        traced,
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // And one event without a trace: its delta carries none.
    let second = &scenario.messages[1];
    publish_all(&js, "match_stats.events", [second.payload.as_slice()]).await;
    service.wait_received(2).await;

    let mut deltas = crate::support::read_stream(&js, "MATCH_DELTAS").await;
    assert_eq!(deltas.len(), 2);
    // The two events may be in different partitions: put the traced one's delta first.
    let first_id = rmpv::decode::read_value(&mut first.payload.as_slice()).unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    deltas.sort_by_key(|d| {
        let delta: match_stats_commands::StatDelta = rmp_serde::from_slice(&d.payload).unwrap();
        delta.entries[0].event_id.as_str() != first_id
    });
    let traceparent = deltas[0]
        .headers
        .as_ref()
        .and_then(|h| h.get("traceparent"))
        .map(|v| v.to_string())
        .expect("the delta carries a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", trace_id, "01"),
        "same trace, sampled: {traceparent}"
    );
    assert_ne!(
        parts[2], parent_span,
        "a span of its own, child of the event's"
    );
    assert!(
        deltas[1]
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .is_none(),
        "untraced event, untraced delta"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_profile_is_served_in_pprof_format_only_when_enabled() {
    use pprof::protos::Message as _;

    let nats = NatsServer::start();
    let service = ServiceProcess::start_with(&nats, &[("PPROF_ENABLED", "true".to_owned())]).await;
    let response = reqwest::get(format!("{}/debug/pprof/profile?seconds=1", service.http()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    let profile = pprof::protos::Profile::parse_from_bytes(&bytes).expect("pprof protobuf");
    assert!(
        !profile.sample_type.is_empty() && !profile.string_table.is_empty(),
        "a real profile"
    );
    let bad = reqwest::get(format!("{}/debug/pprof/profile?seconds=0", service.http()))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    drop(service);

    let service = ServiceProcess::start(&nats).await;
    let off = reqwest::get(format!("{}/debug/pprof/profile?seconds=1", service.http()))
        .await
        .unwrap();
    assert_eq!(off.status(), 404, "off unless PPROF_ENABLED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_exported_over_otlp_http_when_an_endpoint_is_set() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_nats::jetstream::message::PublishMessage;

    // A stand-in collector: keeps every OTLP/HTTP trace export (protobuf: names and
    // strings appear as they are, trace ids as their 16 bytes).
    let exports = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let (seen, kept) = (exports.clone(), bodies.clone());
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (seen, kept) = (seen.clone(), kept.clone());
            async move {
                if !body.is_empty() {
                    seen.fetch_add(1, Ordering::SeqCst);
                    kept.lock().unwrap().extend_from_slice(&body);
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let nats = NatsServer::start();
    let service =
        ServiceProcess::start_with(&nats, &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let first = &contract::scenario("small").messages[0];
    let traced = PublishMessage::build()
        .payload(first.payload.clone().into())
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    js.send_publish(
        crate::support::subject_for("match_stats.events", &first.payload),
        traced,
    )
    .await
    .unwrap()
    .await
    .unwrap();
    service.wait_received(1).await;
    // A REST request carrying a traceparent: its server span continues that trace.
    let response = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/match-stats/matches/active",
            service.http()
        ))
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The batch exporter sends within its schedule (5 s) or at shutdown.
    service.terminate();
    let deadline = tokio::time::Instant::now() + WAIT;
    while exports.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no OTLP export arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let contains = |needle: &[u8]| {
        let body = bodies.lock().unwrap();
        body.windows(needle.len()).any(|w| w == needle)
    };
    let rest_trace: Vec<u8> = (0..16)
        .map(|i| {
            u8::from_str_radix(&"0af7651916cd43dd8448eb211c80319c"[2 * i..2 * i + 2], 16).unwrap()
        })
        .collect();
    // Shutdown flushes: wait for the REST span too.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !contains(b"http_request") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a REST span was exported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        contains(b"service.name") && contains(b"match-stats"),
        "the resource names the service"
    );
    assert!(contains(b"service.version") && contains(env!("CARGO_PKG_VERSION").as_bytes()));
    assert!(
        contains(&rest_trace),
        "the REST span continues the request's trace"
    );
}

/// Series that exist only with a feature this test does not configure.
const CONDITIONAL: &[&str] = &[
    // Redis.
    "match_stats_cache_circuit_state",
    // DATABASE_URL.
    "match_stats_history_lag_messages",
    "match_stats_history_backfill_matches",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_service_has_every_series_from_the_start_and_passes_promtool() {
    use std::io::Write as _;
    let nats = NatsServer::start();
    let service = ServiceProcess::start(&nats).await;
    let url = format!("{}/metrics", service.http());
    // The second scrape also holds the first one's request series.
    let _ = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool: `make deps` installs Debian's prometheus package");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let families: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for (name, _, _) in match_stats::metrics::DESCRIPTIONS
        .iter()
        .chain(match_stats_queries::metrics::DESCRIPTIONS)
    {
        if CONDITIONAL.contains(name) {
            continue;
        }
        assert!(families.contains(name), "{name} exists from the start");
    }
    // Counters at 0 for each known label value, the delta format, build information,
    // process figures.
    for line in [
        "match_stats_events_received_total 0",
        "match_stats_recovery_gaps_total 0",
        "match_stats_snapshot_errors_total 0",
        "match_stats_events_rejected_total{reason=\"malformed\"} 0",
        "match_stats_dead_letters_total{reason=\"limit_exceeded\"} 0",
        "match_stats_partition_releases_total{reason=\"stale_snapshot\"} 0",
        "match_stats_cache_requests_total{level=\"redis\",result=\"hit\"} 0",
        "match_stats_delta_format 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}");
    }
    let build = format!(
        "match_stats_build_info{{version=\"{}\",commit=",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&build) && l.ends_with(" 1")),
        "build info"
    );
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(families.contains(family), "{family}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_trace_and_span_ids_of_a_request() {
    use std::io::BufRead as _;
    let nats = NatsServer::start();
    let port = match_stats_harness::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_match-stats"))
        .env("NATS_URL", nats.url())
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("REDIS_ADDR", "")
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "warn,match_stats::telemetry=debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while reqwest::get(format!("{base}/health")).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the service starts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let status = reqwest::Client::new()
        .get(format!("{base}/api/v1/match-stats/matches/active"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let found = loop {
        let line = received
            .recv_timeout(Duration::from_secs(10))
            .expect("a log line for the request");
        assert!(!line.contains('\u{1b}'), "no colour codes: {line}");
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if entry["span"]["trace_id"] == trace {
            break entry;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(found["fields"]["message"], "request served", "{found}");
    assert_eq!(found["fields"]["status"], 200, "{found}");
    let span_id = found["span"]["span_id"].as_str().unwrap();
    assert_eq!(span_id.len(), 16, "the request's own span: {found}");
    assert_ne!(span_id, "00f067aa0ba902b7", "a child of the caller's span");
}
