//! The HTTP edge browsers and CDNs expect, over real HTTP against a service fed the small
//! scenario through real NATS: CORS preflight and headers, negotiated compression
//! (decoded and compared with the uncompressed body), weak ETags with `304`,
//! `Cache-Control` by match status, `HEAD`; and, when configured, API keys (`401`), the
//! per-client rate limit (`429` with `Retry-After`) and the stream client limit (`503`).

use std::io::Read as _;
use std::time::Duration;

use async_nats::jetstream;
use match_stats_harness::{NatsServer, contract};
use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::support::{ServiceProcess, WAIT, publish_all};

/// Publishes the small scenario and waits until the service shows every match; returns
/// (a completed match, an active match or none, the expected matches).
async fn scenario_in(
    nats: &NatsServer,
    service: &ServiceProcess,
    key: Option<&str>,
) -> (String, Option<String>, Value) {
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let scenario = contract::scenario("small");
    publish_all(
        &js,
        "match_stats.events",
        scenario.messages.iter().map(|m| &m.payload[..]),
    )
    .await;
    let expected = scenario.expected["matches"].clone();
    let client = Client::new();
    for (id, want) in expected.as_object().unwrap() {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut request = client.get(format!(
                "{}/api/v1/match-stats/matches/{id}",
                service.http()
            ));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.unwrap();
            if response.status() == 200 {
                let body: Value = response.json().await.unwrap();
                if body["event_count"] == want["event_count"] {
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} shown");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let by_status = |status: &str| {
        expected
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, m)| m["status"] == status)
            .map(|(id, _)| id.clone())
    };
    (
        by_status("completed").expect("a completed match"),
        by_status("active"),
        expected,
    )
}

fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(body).unwrap(),
        other => panic!("unexpected encoding {other}"),
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_compression_etags_cache_control_and_head() {
    let nats = NatsServer::start();
    let service =
        ServiceProcess::start_with(&nats, &[("COMPLETED_CACHE_MAX_AGE", "30s".into())]).await;
    let (completed, active, expected) = scenario_in(&nats, &service, None).await;
    let client = Client::new();
    let url = format!("{}/api/v1/match-stats/matches/{completed}", service.http());

    // A preflight from another origin, asking for the headers a stream client sends.
    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "https://overlay.example")
        .header("Access-Control-Request-Method", "GET")
        .header(
            "Access-Control-Request-Headers",
            "last-event-id, authorization",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200, "a preflight is answered, not 405");
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("GET") && methods.contains("HEAD"),
        "{methods}"
    );
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("last-event-id") && allowed.contains("authorization"));
    assert!(h.contains_key("access-control-max-age"));

    // The plain answer: the expected object, a weak ETag of its version, cacheable for
    // COMPLETED_CACHE_MAX_AGE since the match is completed; readable from another origin.
    let plain = client
        .get(&url)
        .header("Origin", "https://overlay.example")
        .header("Accept-Encoding", "identity")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    let h = plain.headers().clone();
    assert_eq!(h["access-control-allow-origin"], "*");
    let version = expected[&completed]["event_count"].as_u64().unwrap();
    assert_eq!(h["etag"], format!("W/\"{version}\""));
    assert!(h["vary"].to_str().unwrap().contains("Accept-Encoding"));
    assert_eq!(h["cache-control"], "public, max-age=30");
    assert!(h.get("content-encoding").is_none());
    let identity = plain.bytes().await.unwrap();

    // Each encoding, decoded, is the same object, and smaller.
    for encoding in ["gzip", "br", "zstd"] {
        let response = client
            .get(&url)
            .header("Accept-Encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-encoding"], encoding);
        assert_eq!(response.headers()["etag"], format!("W/\"{version}\""));
        let body = response.bytes().await.unwrap();
        assert!(body.len() < identity.len() / 2, "{encoding} compresses");
        assert_eq!(decode(encoding, &body), identity.to_vec(), "{encoding}");
    }

    // Revalidation: 304 without a body while the version holds, the list and * too.
    for tag in [
        format!("W/\"{version}\""),
        format!("\"1\", W/\"{version}\""),
        "*".into(),
    ] {
        let response = client
            .get(&url)
            .header("If-None-Match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{tag}");
        assert_eq!(response.headers()["etag"], format!("W/\"{version}\""));
        assert!(response.bytes().await.unwrap().is_empty());
    }
    let stale = client
        .get(&url)
        .header("If-None-Match", "W/\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200, "another version gets the object");
    // Leaderboards and players carry the same validators.
    let board = client
        .get(format!("{url}/leaderboard/kills"))
        .header("If-None-Match", format!("W/\"{version}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(board.status(), StatusCode::NOT_MODIFIED);

    // An active match is revalidated on every use.
    if let Some(active) = active {
        let response = client
            .get(format!(
                "{}/api/v1/match-stats/matches/{active}",
                service.http()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["cache-control"], "no-cache");
    }

    // HEAD: the headers of GET, no body.
    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["etag"], format!("W/\"{version}\""));
    assert!(head.bytes().await.unwrap().is_empty());

    // The page and its assets are served, compressed on request.
    let page = client
        .get(format!("{}/matches/{completed}", service.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let script = client
        .get(format!("{}/assets/scoreboard.js", service.http()))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(script.headers()["content-encoding"], "gzip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_rate_limit_and_the_stream_client_limit() {
    let nats = NatsServer::start();
    let service = ServiceProcess::start_with(
        &nats,
        &[
            ("API_KEYS", "key-one, key-two".into()),
            ("RATE_LIMIT_PER_SECOND", "1".into()),
            ("RATE_LIMIT_BURST", "200".into()),
            ("STREAM_MAX_CLIENTS", "2".into()),
            ("CORS_ALLOWED_ORIGINS", "https://overlay.example".into()),
        ],
    )
    .await;
    let (completed, _, _) = scenario_in(&nats, &service, Some("key-one")).await;
    let client = Client::new();
    let url = format!("{}/api/v1/match-stats/matches/{completed}", service.http());

    // Keys: none or an unknown one is a JSON 401 naming the scheme; either key works, as
    // a bearer token or (for EventSource) as access_token.
    let none = client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(
        none.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["status"], 401);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer")
    );
    let wrong = client
        .get(&url)
        .bearer_auth("key-three")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        client
            .get(&url)
            .bearer_auth("key-two")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{url}?access_token=key-two"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Operations and the page stay open.
    for open in ["/health", "/ready", "/metrics", "/", "/openapi.json"] {
        let status = client
            .get(format!("{}{open}", service.http()))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{open} needs no key");
    }

    // Streams: two clients at most on this replica; the third gets 503 + Retry-After.
    let stream = format!("{url}/stream");
    let first = client
        .get(&stream)
        .bearer_auth("key-one")
        .send()
        .await
        .unwrap();
    let second = client
        .get(format!("{stream}?access_token=key-two"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = client
        .get(&stream)
        .bearer_auth("key-one")
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(third.headers().contains_key("retry-after"));
    drop((first, second));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let again = client
            .get(&stream)
            .bearer_auth("key-one")
            .send()
            .await
            .unwrap();
        if again.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a slot frees up when a client leaves"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The rate limit: key-one spends its burst of 200, then 429 with Retry-After and
    // the CORS header (a browser can read why); key-two is another client.
    let mut limited = None;
    for n in 0..400 {
        let response = client
            .get(&url)
            .bearer_auth("key-one")
            .header("Origin", "https://overlay.example")
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((n, response));
            break;
        }
    }
    let (n, response) = limited.expect("the limit is reached");
    assert!(
        (150..=210).contains(&n),
        "about the burst went through: {n}"
    );
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://overlay.example"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 429);
    assert_eq!(
        client
            .get(&url)
            .bearer_auth("key-two")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        service
            .metric("match_stats_http_rate_limited_total", "")
            .await
            >= 1.0
    );
    assert!(
        service
            .metric("match_stats_http_unauthorized_total", "")
            .await
            >= 2.0
    );
    assert!(
        service
            .metric("match_stats_streams_refused_total", "")
            .await
            >= 1.0
    );
}
