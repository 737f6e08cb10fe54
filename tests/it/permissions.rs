//! NATS permissions as shipped (audit V8): with `nats/server.conf`'s users (the same
//! lists as the cluster configuration and the Helm values), the service alone writes
//! deltas and snapshots; a game server publishes events and nothing else; a delta reader
//! reads deltas and nothing else; a client without credentials is the development login.
//! The service connects with credentials in its URL (audit V15: they are used, and taken
//! out of the URL).

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt;
use match_stats_harness::NatsServer;
use serde_json::json;

use crate::support::{self, ServiceProcess};

async fn as_user(nats: &NatsServer, user: &str) -> jetstream::Context {
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), user.into())
        .connect(nats.url())
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(1));
    js
}

async fn stored(js: &jetstream::Context, subject: &str, payload: Vec<u8>) -> bool {
    match js
        .send_publish(
            subject.to_owned(),
            PublishMessage::build().payload(payload.into()),
        )
        .await
    {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v8_only_the_service_writes_deltas_and_snapshots() {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("nats/server.conf");
    let nats = NatsServer::start_with(&["-c", config.to_str().unwrap()], None);
    let url = nats
        .url()
        .replace("nats://", "nats://match-stats:match-stats@");
    let service = ServiceProcess::start_with(&nats, &[("NATS_URL", url)]).await;

    let game = as_user(&nats, "game-server").await;
    let event = serde_json::to_vec(&json!({
        "event_id": "e1", "match_id": "m1", "player_id": "p", "event_type": "weapon_fire",
        "timestamp": 1_767_225_600_000_i64,
    }))
    .unwrap();
    assert!(
        stored(&game, "match_stats.events.m1", event).await,
        "a game server publishes events"
    );
    service.wait_received(1).await;
    let forged_delta = rmp_serde::to_vec_named(&json!({"match_id": "m1", "entries": []})).unwrap();
    assert!(
        !stored(&game, "match_stats.deltas.m1", forged_delta.clone()).await,
        "not deltas"
    );
    assert!(
        !stored(&game, "match_stats.dead_letters.malformed", b"x".to_vec()).await,
        "not dead letters"
    );
    assert!(
        !stored(
            &game,
            "$KV.match_stats_snapshots.match.m1",
            b"junk".to_vec()
        )
        .await,
        "not snapshots"
    );
    assert!(
        !stored(
            &game,
            "$KV.match_stats_snapshots_keys.cache-signing",
            b"k".to_vec()
        )
        .await,
        "not keys"
    );

    // A delta reader reads the deltas stream, and writes nothing.
    let reader = as_user(&nats, "delta-reader").await;
    let stream = reader
        .get_stream("MATCH_DELTAS")
        .await
        .expect("the reader sees the deltas stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("and reads it");
    let mut messages = consumer.messages().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
    let delta = first
        .expect("a delta")
        .expect("a message")
        .expect("readable");
    assert!(
        delta
            .headers
            .as_ref()
            .unwrap()
            .get(async_nats::header::NATS_MESSAGE_ID)
            .is_some()
    );
    assert!(
        !stored(&reader, "match_stats.deltas.m1", forged_delta).await,
        "a reader writes no delta"
    );
    assert!(
        reader.get_stream("MATCH_EVENTS").await.is_err(),
        "nor reads events"
    );

    // Only the service's delta is in the stream.
    let service_js = as_user(&nats, "match-stats").await;
    assert_eq!(support::stored(&service_js, "MATCH_DELTAS").await, 1);

    // The development login: no credentials, every permission (make run).
    let dev = jetstream::new(
        async_nats::connect(nats.url())
            .await
            .expect("anonymous is dev"),
    );
    assert!(dev.get_stream("MATCH_EVENTS").await.is_ok());
}
