//! Regression tests of the reliability audit's findings (one test per finding, named by
//! its number), through real servers. V1's limits are in `limits.rs`, V6 in
//! `subjects.rs`, the HTTP edge's in `http_edge.rs`.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use match_stats_harness::{NatsServer, RedisServer, contract};
use serde_json::{Value, json};

use crate::support::events::{T0, event};
use crate::support::{self, ServiceProcess, WAIT, publish_all, read_stream};

async fn get(url: String) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls a match object until `done` holds.
async fn wait_match(base: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get(format!("{base}/api/v1/match-stats/matches/{id}")).await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "match {id}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// V2: an unreadable snapshot record (junk, or a record of another shape, as another
/// version could write) is set aside and its match rebuilt by replay: the partition goes
/// on and the replica becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_an_unreadable_snapshot_record_is_set_aside_and_its_match_rebuilt() {
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let service = ServiceProcess::start(&nats).await;
    let scenario = contract::scenario("small");
    publish_all(
        &js,
        "match_stats.events",
        scenario.messages.iter().map(|m| m.payload.as_slice()),
    )
    .await;
    service.wait_received(scenario.messages.len() as u64).await;
    service.terminate(); // the final snapshot
    let bucket = js.get_key_value("match_stats_snapshots").await.unwrap();
    let ids: Vec<&String> = scenario.expected["matches"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    bucket
        .put(format!("match.{}", ids[0]), b"0123456789".as_slice().into())
        .await
        .unwrap();
    let other_shape =
        lz4_flex::compress_prepend_size(&rmp_serde::to_vec_named(&json!({"stats": 1})).unwrap());
    bucket
        .put(format!("match.{}", ids[1]), other_shape.into())
        .await
        .unwrap();

    let service = ServiceProcess::start(&nats).await; // ready: nothing stalls
    for id in &ids {
        let want = &scenario.expected["matches"][id.as_str()];
        let got = wait_match(service.http(), id, |v| {
            v["event_count"] == want["event_count"]
        })
        .await;
        match_stats_harness::json::assert_close(&got, want, &format!("{id} after the restart"));
    }
    assert_eq!(
        service
            .metric("match_stats_snapshot_quarantined_total", "")
            .await,
        2.0
    );
    for id in &ids[..2] {
        assert!(
            bucket
                .get(format!("quarantine.match.{id}"))
                .await
                .unwrap()
                .is_some(),
            "set aside"
        );
    }
    support::assert_conservation(service.http(), &js, "MATCH_EVENTS").await;
}

/// V5: a player named `active`, a team `completed`, a map `active`: names, at every layer
/// (the read model, the deltas as a consumer folds them, Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_names_that_read_like_statuses_are_names_at_every_layer() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let env = [("REDIS_ADDR", format!("127.0.0.1:{}", redis.port()))];
    let service = ServiceProcess::start_with(&nats, &env).await;
    let cases = [
        ("v5-player", json!({"player_name": "active"}), json!({})),
        ("v5-team", json!({"team_id": "completed"}), json!({})),
        (
            "v5-map",
            json!({}),
            json!({"map_name": "active", "game_mode": "completed"}),
        ),
        ("v5-control", json!({"player_name": "Carol"}), json!({})),
    ];
    let mut payloads = Vec::new();
    for (id, join, start) in &cases {
        payloads.push(event(
            &format!("{id}-1"),
            id,
            None,
            "match_start",
            T0,
            start.clone(),
        ));
        payloads.push(event(
            &format!("{id}-2"),
            id,
            Some("a"),
            "player_join",
            T0 + 1,
            join.clone(),
        ));
        for k in 0..4 {
            let data = json!({"killer_id": "a", "victim_id": "b"});
            payloads.push(event(
                &format!("{id}-k{k}"),
                id,
                Some("a"),
                "kill",
                T0 + 10 + k,
                data,
            ));
        }
        payloads.push(event(
            &format!("{id}-end"),
            id,
            None,
            "match_end",
            T0 + 100,
            json!({}),
        ));
    }
    publish_all(
        &js,
        "match_stats.events",
        payloads.iter().map(Vec::as_slice),
    )
    .await;
    service.wait_received(payloads.len() as u64).await;
    for (id, _, _) in &cases {
        let got = wait_match(service.http(), id, |v| v["status"] == "completed").await;
        assert_eq!(got["event_count"], 7, "{id}: every event applied");
    }
    let (_, player) = get(format!(
        "{}/api/v1/match-stats/matches/v5-player/players/a",
        service.http()
    ))
    .await;
    assert_eq!(player["player_name"], "active");
    let (_, player) = get(format!(
        "{}/api/v1/match-stats/matches/v5-team/players/a",
        service.http()
    ))
    .await;
    assert_eq!(player["team_id"], "completed");
    let (_, m) = get(format!(
        "{}/api/v1/match-stats/matches/v5-map",
        service.http()
    ))
    .await;
    assert_eq!(
        (&m["map_name"], &m["game_mode"]),
        (&json!("active"), &json!("completed"))
    );

    // A consumer folding the deltas sees the same.
    let deltas = crate::support::deltas::fold_deltas(&js, "MATCH_DELTAS").await;
    let folded = &deltas.projections[&match_stats_commands::MatchId::parse("v5-player").unwrap()];
    let a = folded
        .player(&match_stats_commands::PlayerId::parse("a").unwrap())
        .unwrap();
    assert_eq!(
        a.player_name.map(|n| n.to_string()),
        Some("active".to_owned())
    );
    assert_eq!(
        folded.stats().status,
        match_stats_commands::MatchStatus::Completed
    );
    // Redis holds the names, and a reader of it decodes them as names.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port())).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let cached = loop {
        let value: Option<Vec<u8>> = redis::cmd("HGET")
            .arg("match_stats:match:v5-player")
            .arg("b")
            .query_async(&mut connection)
            .await
            .unwrap();
        if let Some(value) = value {
            break value;
        }
        assert!(tokio::time::Instant::now() < deadline, "written to Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let view = match_stats_commands::view::stored::decode(&cached).unwrap();
    assert_eq!(view.status, match_stats_commands::MatchStatus::Completed);
    let players = view.player_stats.unwrap();
    assert_eq!(
        players[0].player_name.map(|n| n.to_string()),
        Some("active".to_owned())
    );
}

/// V9: a match whose id is 64 characters long is ended on idle like any other; the
/// service's own `match_end` has a UUID v5 id, never rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v9_an_idle_match_with_a_64_character_id_is_ended() {
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let env = [("MATCH_IDLE_TIMEOUT", "1s".to_owned())];
    let service = ServiceProcess::start_with(&nats, &env).await;
    let long = "m".repeat(64);
    let payloads: Vec<Vec<u8>> = (0..12)
        .map(|i| {
            event(
                &format!("e{i}"),
                &long,
                Some("p"),
                "weapon_fire",
                T0 + i,
                json!({}),
            )
        })
        .collect();
    publish_all(
        &js,
        "match_stats.events",
        payloads.iter().map(Vec::as_slice),
    )
    .await;
    let got = wait_match(service.http(), &long, |v| v["status"] == "completed").await;
    assert_eq!(got["event_count"], 13);
    let events = read_stream(&js, "MATCH_EVENTS").await;
    let end: Value = serde_json::from_slice(&events.last().unwrap().payload).unwrap();
    let id = end["event_id"].as_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 5),
        "{id}"
    );
    assert_eq!(
        crate::support::stored(&js, "MATCH_DEAD_LETTERS").await,
        0,
        "nothing rejected"
    );
}

/// V10: a completed match that left memory is reloaded from its record when an event of
/// it arrives: a late event still applies, a later one is `match_closed`; never a new
/// match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v10_a_late_event_after_the_match_left_memory_reloads_it() {
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let env = [
        ("COMPLETED_MEMORY_RETENTION", "1s".to_owned()),
        ("SNAPSHOT_INTERVAL", "1s".to_owned()),
    ];
    let service = ServiceProcess::start_with(&nats, &env).await;
    let id = "v10-match";
    let now = chrono::Utc::now().timestamp_millis();
    let mut first = vec![event("s", id, None, "match_start", now, json!({}))];
    for k in 0..2 {
        let data = json!({"killer_id": "a", "victim_id": "b"});
        first.push(event(
            &format!("k{k}"),
            id,
            Some("a"),
            "kill",
            now + 10 + k,
            data,
        ));
    }
    first.push(event("end", id, None, "match_end", now + 100, json!({})));
    publish_all(&js, "match_stats.events", first.iter().map(Vec::as_slice)).await;
    wait_match(service.http(), id, |v| v["status"] == "completed").await;
    // The stream's clock moves on (another match of the same partition, 2 s later): the
    // completed match leaves memory.
    let partition = match_stats::nats::partition_of(id, 16);
    let other = (0..)
        .map(|n| format!("v10-other-{n}"))
        .find(|o| match_stats::nats::partition_of(o, 16) == partition)
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 0;
    while service
        .metric("match_stats_matches_evicted_total", "")
        .await
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the completed match left memory"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        n += 1;
        let tick = event(
            &format!("t{n}"),
            &other,
            Some("x"),
            "weapon_fire",
            now,
            json!({}),
        );
        publish_all(&js, "match_stats.events", [tick.as_slice()]).await;
    }
    let late = [
        event(
            "late",
            id,
            Some("a"),
            "kill",
            now + 50,
            json!({"killer_id": "a", "victim_id": "b"}),
        ),
        event(
            "after",
            id,
            Some("a"),
            "kill",
            now + 5_000,
            json!({"killer_id": "a", "victim_id": "b"}),
        ),
    ];
    publish_all(&js, "match_stats.events", late.iter().map(Vec::as_slice)).await;
    let got = wait_match(service.http(), id, |v| v["event_count"] == 5).await;
    assert_eq!(
        (got["status"].as_str(), got["total_kills"].as_u64()),
        (Some("completed"), Some(3))
    );
    assert!(
        service
            .metric("match_stats_matches_reloaded_total", "")
            .await
            >= 1.0
    );
    let events = support::assert_conservation(service.http(), &js, "MATCH_EVENTS").await;
    assert_eq!(
        events["rejected"]["match_closed"], 1,
        "the event after the end"
    );
}

/// V1 (parking): an effect the stream can never store (here the dead-letter stream's
/// max_msg_size set below a dead letter) parks its event: counted, acknowledged, and the
/// partition moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_an_effect_the_stream_can_never_store_parks_its_event_and_the_partition_moves_on() {
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let service = ServiceProcess::start(&nats).await;
    let mut dead = js.get_stream("MATCH_DEAD_LETTERS").await.unwrap();
    let mut config = dead.info().await.unwrap().config.clone();
    config.max_message_size = 256;
    js.update_stream(config).await.unwrap();
    let garbage = vec![0xc1u8; 1_000];
    let probe = event("p1", "unknown", Some("x"), "weapon_fire", T0, json!({}));
    for (payload, subject) in [
        (garbage, "match_stats.events.unknown"),
        (probe, "match_stats.events.unknown"),
    ] {
        js.send_publish(
            subject.to_owned(),
            PublishMessage::build().payload(payload.into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    service.wait_received(2).await;
    let events = support::assert_conservation(service.http(), &js, "MATCH_EVENTS").await;
    assert_eq!(
        (events["parked"].as_u64(), events["processed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        service.metric("match_stats_events_parked_total", "").await,
        1.0
    );
    assert_eq!(dead.info().await.unwrap().state.messages, 0);
}

/// V7: Redis is not trusted: a forged match, a decompression bomb, a key of the wrong
/// type and a non-numeric version are misses (and the next write replaces them); none
/// opens the breaker for everyone or stops the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v7_values_in_redis_are_verified_before_they_are_served() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let env = [("REDIS_ADDR", format!("127.0.0.1:{}", redis.port()))];
    let service = ServiceProcess::start_with(&nats, &env).await;
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port())).unwrap();
    let mut r = client.get_multiplexed_async_connection().await.unwrap();
    let forged = br#"J{"match_id":"forged","status":"active","start_time":"2026-01-01T00:00:00.000Z","end_time":null,"duration_ms":-5,"map_name":"<script>","game_mode":null,"max_players":null,"current_players":4294967295,"total_kills":9999,"total_deaths":0,"total_assists":0,"total_damage":0.0,"total_healing":0.0,"first_blood":null,"event_count":1,"last_update":"2026-01-01T00:00:00.000Z","player_stats":[]}"#;
    let _: () = redis::cmd("HSET")
        .arg("match_stats:match:forged")
        .arg("v")
        .arg(1)
        .arg("b")
        .arg(&forged[..])
        .query_async(&mut r)
        .await
        .unwrap();
    let mut bomb = vec![b'Z'];
    bomb.extend((1u32 << 30).to_le_bytes());
    bomb.extend(vec![0u8; 1 << 20]);
    let _: () = redis::cmd("HSET")
        .arg("match_stats:match:bomb")
        .arg("v")
        .arg(1)
        .arg("b")
        .arg(bomb)
        .arg("s")
        .arg("x")
        .query_async(&mut r)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("match_stats:match:wrongtype")
        .arg("x")
        .query_async(&mut r)
        .await
        .unwrap();
    for _ in 0..5 {
        for id in ["forged", "bomb", "wrongtype"] {
            let (status, body) = get(format!(
                "{}/api/v1/match-stats/matches/{id}",
                service.http()
            ))
            .await;
            assert_eq!(status, 404, "{id}: {body}");
        }
    }
    let (_, stats) = get(format!(
        "{}/api/v1/match-stats/system/stats",
        service.http()
    ))
    .await;
    assert_eq!(
        stats["cache"]["redis"]["state"], "closed",
        "no failure opened the breaker"
    );

    // A real match whose hash was tampered with (a version that is not a number, a key
    // of another type) is written again by the writer, and the others with it.
    let payloads = [
        event("a1", "real-a", Some("p"), "weapon_fire", T0, json!({})),
        event("b1", "real-b", Some("p"), "weapon_fire", T0, json!({})),
    ];
    let _: () = redis::cmd("HSET")
        .arg("match_stats:match:real-a")
        .arg("v")
        .arg("junk")
        .query_async(&mut r)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("match_stats:match:real-b")
        .arg("x")
        .query_async(&mut r)
        .await
        .unwrap();
    publish_all(
        &js,
        "match_stats.events",
        payloads.iter().map(Vec::as_slice),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let a: Option<String> = redis::cmd("HGET")
            .arg("match_stats:match:real-a")
            .arg("v")
            .query_async(&mut r)
            .await
            .unwrap();
        let b: Option<String> = redis::cmd("HGET")
            .arg("match_stats:match:real-b")
            .arg("v")
            .query_async(&mut r)
            .await
            .unwrap_or(None);
        if a.as_deref() == Some("1") && b.as_deref() == Some("1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rewritten: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// V8 (the writer's side): a message on a match's deltas subject that is not a stat
/// delta (only a client without the shipped permissions can put one there) is counted
/// and the writer publishes after it: the match's events are applied, nothing waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v8_a_foreign_last_delta_does_not_stop_the_writer() {
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let service = ServiceProcess::start(&nats).await;
    js.send_publish(
        "match_stats.deltas.v8".to_owned(),
        PublishMessage::build().payload(b"not a stat delta".to_vec().into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let payloads = [
        event("v8-1", "v8", Some("a"), "player_join", T0, json!({})),
        event("v8-2", "v8", Some("b"), "player_join", T0 + 1, json!({})),
        event(
            "v8-3",
            "v8",
            Some("a"),
            "kill",
            T0 + 2,
            json!({"killer_id": "a", "victim_id": "b"}),
        ),
    ];
    publish_all(
        &js,
        "match_stats.events",
        payloads.iter().map(Vec::as_slice),
    )
    .await;
    service.wait_received(3).await;
    let got = wait_match(service.http(), "v8", |v| v["event_count"] == 3).await;
    assert_eq!(got["total_kills"], 1);
    assert_eq!(got["current_players"], 2);
    support::assert_conservation(service.http(), &js, "MATCH_EVENTS").await;
    assert!(
        service
            .metric("match_stats_deltas_undecodable_total", "")
            .await
            >= 1.0
    );
}
