//! A message's NATS headers are bytes another client wrote, which nats-server stores and
//! delivers as they are. A malformed header block (a line break inside a value, a line
//! without a colon, a name with a space, bytes that are not UTF-8, a first line that is
//! not `NATS/1.0`, no block at all) must not stop anything or lose the event it carries:
//! the event is decided by its payload like any other. Before the async-nats patch
//! (vendor/README.md) such a block ended the service's NATS connection: the delivery was
//! lost in flight and acknowledged with the next one, counted nowhere (with a carriage
//! return, async-nats 0.51 panicked instead and the service stopped, on every restart).

use async_nats::jetstream;
use match_stats_harness::NatsServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::events::{T0, event};
use crate::support::{self, Service, wait_for};

/// The header blocks published, each with one event: every kind of damage the client's
/// parser turned into a lost connection, and one well-formed block.
const BLOCKS: [(&str, &[u8]); 9] = [
    ("well formed", b"NATS/1.0\r\nX-Game: arena\r\n\r\n"),
    (
        "carriage return in a value",
        b"NATS/1.0\r\nX-Bad: a\rb\r\n\r\n",
    ),
    ("line feed in a value", b"NATS/1.0\r\nX-Bad: a\nb\r\n\r\n"),
    ("line without a colon", b"NATS/1.0\r\nno colon here\r\n\r\n"),
    ("space in a name", b"NATS/1.0\r\nX Bad: v\r\n\r\n"),
    ("not UTF-8", b"NATS/1.0\r\nX-Bad: \xff\xfe\r\n\r\n"),
    ("first line not NATS/1.0", b"NATS/9.9 garbage\r\n\r\n"),
    ("status that is no number", b"NATS/1.0 abc\r\n\r\n"),
    ("no block", b"hello"),
];

/// Publishes `payload` on `subject` with `header` as its raw header block, over a plain
/// TCP connection (a client library would refuse or repair such a block), and waits
/// for the server's PONG: the publish has been processed.
async fn publish_raw(port: u16, subject: &str, header: &[u8], payload: &[u8]) {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut reply = vec![0u8; 4096];
    let _info = socket.read(&mut reply).await.unwrap();
    let mut frame =
        br#"CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}"#.to_vec();
    frame.extend_from_slice(
        format!(
            "\r\nHPUB {subject} {} {}\r\n",
            header.len(),
            header.len() + payload.len()
        )
        .as_bytes(),
    );
    frame.extend_from_slice(header);
    frame.extend_from_slice(payload);
    frame.extend_from_slice(b"\r\nPING\r\n");
    socket.write_all(&frame).await.unwrap();
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"PONG") {
        let n = socket.read(&mut reply).await.unwrap();
        assert!(n > 0, "nats-server closed the connection: {seen:?}");
        seen.extend_from_slice(&reply[..n]);
        assert!(
            !seen.windows(4).any(|w| w == b"-ERR"),
            "nats-server refused the publish: {}",
            String::from_utf8_lossy(&seen)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_malformed_header_blocks_are_decided_and_none_is_lost() {
    let nats = NatsServer::start();
    let config = support::config(&nats, None);
    let service = Service::start(config.clone()).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let subject = format!("{}.hdr-m1", config.streams.events_subject);

    // The match starts (a well-formed block), one player joins per block, and a last
    // one with a well-formed block.
    let start = event(
        "hdr-start",
        "hdr-m1",
        None,
        "match_start",
        T0,
        json!({"map_name": "neon_city", "game_mode": "tdm", "max_players": 16}),
    );
    publish_raw(nats.port(), &subject, BLOCKS[0].1, &start).await;
    let last_join = [("well formed", BLOCKS[0].1)];
    for (i, (_, block)) in BLOCKS.iter().chain(&last_join).enumerate() {
        let player = format!("p{i}");
        let join = event(
            &format!("hdr-join-{i}"),
            "hdr-m1",
            Some(&player),
            "player_join",
            T0 + 1_000 + i as i64,
            json!({"player_name": player, "team_id": "red"}),
        );
        publish_raw(nats.port(), &subject, block, &join).await;
    }
    let joins = BLOCKS.len() + 1;
    let published = 1 + joins as u64;
    let mut stream = js.get_stream(&config.streams.events_stream).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    assert_eq!(last, published, "the stream stored every publish");

    // Once the partition has decided up to the last message, every one was received:
    // a delivery lost in the client would be acknowledged with the one after it.
    wait_for("the last event decided", || {
        service.counts().applied_sequence >= last
    })
    .await;
    let counts = service.counts();
    assert_eq!(counts.received, published, "every event reached the rules");
    assert_eq!(counts.applied, published, "every event applied: {counts:?}");
    assert!(counts.conserved);

    // The match holds every player who joined (an independent count).
    let url = format!("{}/api/v1/match-stats/matches/hdr-m1", service.http);
    support::wait_for_json(&url, |v| v["current_players"] == json!(joins)).await;
    let body: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    for (i, (what, _)) in BLOCKS.iter().enumerate() {
        assert!(
            body.to_string().contains(&format!("\"p{i}\"")),
            "the player whose join had a header block with {what} is in the match: {body}"
        );
    }
    service.stop().await;
}
