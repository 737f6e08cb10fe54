//! The live streams over real HTTP against a service fed through real NATS: the small
//! scenario's match streams fold (snapshot, then deltas) into exactly the contract's
//! expected matches; reconnecting with `Last-Event-ID` at several points ends in the same
//! state with no gap and no repeat; a client that stops reading for 10 s while events
//! flow keeps the service's memory bounded and then catches up with the latest state.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use match_stats_harness::{NatsServer, contract, json};
use serde_json::{Value, json};

use crate::support::{ServiceProcess, WAIT, publish_all};

/// One received SSE event: its name, id (the match version) and data.
#[derive(Debug, Clone)]
struct Received {
    event: String,
    id: u64,
    data: Value,
}

type Events = std::pin::Pin<Box<dyn futures::Stream<Item = Received> + Send>>;

/// Opens a match's stream (`None` on 404: the match is not known yet).
async fn open(url: &str, last_event_id: Option<u64>) -> Option<Events> {
    let mut request = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.expect("GET stream");
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    assert_eq!(response.status(), 200, "{url}");
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{url}"
    );
    let events = response.bytes_stream().eventsource().map(|event| {
        let event = event.expect("well-formed SSE");
        Received {
            id: event.id.parse().expect("every event's id is a version"),
            data: serde_json::from_str(&event.data).expect("JSON data"),
            event: event.event,
        }
    });
    Some(Box::pin(events))
}

/// A stream client's view of a match, folded from the events it received; checks that
/// every delta follows on from the state it applies to and no version repeats.
#[derive(Debug, Default)]
struct Folded {
    summary: Value,
    players: BTreeMap<String, Value>,
    version: u64,
    ended: bool,
    snapshots: usize,
    deltas: usize,
    feed: Vec<Value>,
    /// Every event received, in order.
    log: Vec<Received>,
}

impl Folded {
    fn apply(&mut self, received: &Received) {
        self.log.push(received.clone());
        let Received { event, id, data } = received;
        match event.as_str() {
            "snapshot" => {
                assert!(
                    *id > self.version || self.snapshots == 0,
                    "a snapshot never goes back: {id} after {}",
                    self.version
                );
                let mut summary = data.clone();
                let players = summary
                    .as_object_mut()
                    .unwrap()
                    .remove("player_stats")
                    .unwrap();
                self.players = players
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p["player_id"].as_str().unwrap().to_owned(), p.clone()))
                    .collect();
                self.summary = summary;
                self.version = *id;
                self.snapshots += 1;
            }
            "delta" => {
                assert_eq!(
                    data["from_version"].as_u64().unwrap(),
                    self.version + 1,
                    "a delta follows on from the client's version (no gap, no repeat)"
                );
                assert_eq!(data["version"].as_u64().unwrap(), *id);
                self.summary = data["match"].clone();
                for player in data["players"].as_array().unwrap() {
                    let pid = player["player_id"].as_str().unwrap().to_owned();
                    self.players.insert(pid, player.clone());
                }
                for clock in data["clocks"].as_array().unwrap() {
                    let player = self
                        .players
                        .get_mut(clock["player_id"].as_str().unwrap())
                        .expect("a clock for a known player");
                    for field in ["playtime_ms", "avg_speed", "performance_rating"] {
                        player[field] = clock[field].clone();
                    }
                }
                self.feed
                    .extend(data["feed"].as_array().unwrap().iter().cloned());
                self.version = *id;
                self.deltas += 1;
            }
            "end" => {
                assert_eq!(*id, self.version, "end comes with the version it ends at");
                assert_eq!(data["status"], "completed");
                self.ended = true;
            }
            other => panic!("unexpected event {other}"),
        }
    }

    /// The match object the client holds.
    fn object(&self) -> Value {
        let mut object = self.summary.clone();
        object["player_stats"] = Value::Array(self.players.values().cloned().collect());
        object
    }
}

/// Reads events into `folded` until it holds `version` (and `end` for a completed
/// match).
async fn follow(events: &mut Events, folded: &mut Folded, version: u64, completed: bool) {
    tokio::time::timeout(WAIT, async {
        while folded.version < version || (completed && !folded.ended) {
            let received = events.next().await.expect("the stream stays open");
            folded.apply(&received);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "stream reached version {version} (completed: {completed}): at {}, ended {}, {} snapshots, {} deltas",
            folded.version, folded.ended, folded.snapshots, folded.deltas
        )
    });
}

fn stream_url(base: &str, id: &str) -> String {
    format!("{base}/api/v1/match-stats/matches/{id}/stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_streams_fold_into_the_expected_matches_and_reconnects_miss_nothing() {
    let nats = NatsServer::start();
    let service = ServiceProcess::start(&nats).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let scenario = contract::scenario("small");
    let expected = scenario.expected["matches"].as_object().unwrap().clone();

    // A client per match, connecting as soon as its match exists.
    let mut clients = Vec::new();
    for (id, want) in &expected {
        let (url, id) = (stream_url(service.http(), id), id.clone());
        let version = want["event_count"].as_u64().unwrap();
        let completed = want["status"] == "completed";
        clients.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            let mut events = loop {
                if let Some(events) = open(&url, None).await {
                    break events;
                }
                assert!(tokio::time::Instant::now() < deadline, "{id} appears");
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            let mut folded = Folded::default();
            follow(&mut events, &mut folded, version, completed).await;
            (id, folded)
        }));
    }
    // Published a few messages at a time, so that the clients see many deltas.
    for chunk in scenario.messages.chunks(10) {
        publish_all(
            &js,
            "match_stats.events",
            chunk.iter().map(|m| &m.payload[..]),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let mut deltas = 0;
    let mut logs = BTreeMap::new();
    for client in clients {
        let (id, folded) = client.await.unwrap();
        assert_eq!(folded.snapshots, 1, "{id}: one snapshot, then deltas");
        deltas += folded.deltas;
        json::assert_close(&folded.object(), &expected[&id], &format!("stream of {id}"));
        logs.insert(id, folded.log);
    }
    assert!(
        deltas > expected.len() * 5,
        "the clients followed the matches delta by delta ({deltas} deltas)"
    );

    // Reconnects: a live client's events up to a point, then the rest from a new
    // connection with that point's Last-Event-ID: the same final state, with the
    // retained deltas when they follow on from that point, else one snapshot.
    let (id, log) = logs.iter().max_by_key(|(_, log)| log.len()).unwrap();
    let want = &expected[id];
    let version = want["event_count"].as_u64().unwrap();
    let completed = want["status"] == "completed";
    let mut by_deltas = 0;
    let mut by_snapshot = 0;
    let cuts = [
        1,
        log.len() / 4,
        log.len() / 2,
        log.len() - 5,
        log.len() - 2,
    ];
    for cut in cuts {
        let mut folded = Folded::default();
        log[..cut].iter().for_each(|r| folded.apply(r));
        let before = (folded.snapshots, folded.version);
        let mut events = open(&stream_url(service.http(), id), Some(folded.version))
            .await
            .unwrap();
        follow(&mut events, &mut folded, version, completed).await;
        if folded.snapshots == before.0 {
            by_deltas += 1;
        } else {
            by_snapshot += 1;
        }
        json::assert_close(
            &folded.object(),
            want,
            &format!("{id} resumed after {cut} events (version {})", before.1),
        );
    }
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "streams: {} matches followed live ({deltas} deltas); {id} resumed at {} points: \
         {by_deltas} by retained deltas, {by_snapshot} by a snapshot, each ending equal to expected",
        expected.len(),
        cuts.len()
    );
    assert!(
        by_deltas >= 2,
        "recent points resume with the retained deltas"
    );
    // Up to date: only `end` again for a completed match (it carries no change), then
    // nothing (heartbeats only).
    let mut events = open(&stream_url(service.http(), id), Some(version))
        .await
        .unwrap();
    if completed {
        let end = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("end again")
            .unwrap();
        assert_eq!((end.event.as_str(), end.id), ("end", version));
    }
    let more = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
    assert!(
        more.is_err(),
        "nothing more for a client that is up to date"
    );
}

/// Players of the slow client's match.
const PLAYERS: usize = 200;

/// JSON events of one match with `players` players: joins, then moves and damage.
fn busy_match(id: &str, players: usize, events: usize, start_ms: i64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut t = start_ms;
    let mut event = |kind: &str, player: Option<String>, data: Value, t: i64| {
        let n = out.len();
        let mut event = json!({
            "event_id": format!("{id}-{n:06}"),
            "match_id": id,
            "event_type": kind,
            "timestamp": t,
            "event_data": data,
        });
        if let Some(player) = player {
            event["player_id"] = json!(player);
        }
        out.push(serde_json::to_vec(&event).unwrap());
    };
    event(
        "match_start",
        None,
        json!({"map_name": "dust", "game_mode": "ffa", "max_players": players}),
        t,
    );
    for p in 0..players {
        t += 1;
        let player = format!("{id}-p{p:03}");
        event(
            "player_join",
            Some(player),
            json!({"player_name": format!("Player {p}")}),
            t,
        );
    }
    for n in 0..events {
        t += 10;
        let player = format!("{id}-p{:03}", n % players);
        event(
            "position",
            Some(player),
            json!({"x": n as f64, "y": 1.0, "z": 0.0}),
            t,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_stays_bounded_and_catches_up_with_the_latest_state() {
    let nats = NatsServer::start();
    let service = ServiceProcess::start(&nats).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let id = "slow-client-match";
    let now = chrono_now_ms();
    let events = busy_match(id, PLAYERS, 6000, now - 60_000);
    let (head, tail) = events.split_at(PLAYERS + 1);
    publish_all(&js, "match_stats.events", head.iter().map(|e| &e[..])).await;
    let url = stream_url(service.http(), id);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut stream = loop {
        if let Some(events) = open(&url, None).await {
            break events;
        }
        assert!(tokio::time::Instant::now() < deadline, "the match appears");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut folded = Folded::default();
    folded.apply(&stream.next().await.unwrap());
    assert_eq!(folded.snapshots, 1);
    let rss_before = service.rss_bytes();

    // About 10 s of events, a few at a time (a delta each, about 20 KB with 200 online
    // players' clocks: more than the sockets buffer) while the client reads nothing.
    let publisher = {
        let js = js.clone();
        let tail: Vec<Vec<u8>> = tail.to_vec();
        tokio::spawn(async move {
            for chunk in tail.chunks(6) {
                let payloads: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
                publish_all(&js, "match_stats.events", payloads).await;
                tokio::time::sleep(Duration::from_millis(8)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_paused = service.rss_bytes();
    publisher.await.unwrap();

    let last = events.len() as u64;
    let want: Value = loop {
        let body: Value = reqwest::get(format!(
            "{}/api/v1/match-stats/matches/{id}",
            service.http()
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        if body["event_count"].as_u64() == Some(last) {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    follow(&mut stream, &mut folded, last, false).await;
    json::assert_close(&folded.object(), &want, "the slow client caught up");
    let resnapshots = service
        .metric("match_stats_stream_resnapshots_total", "")
        .await;
    let grown = rss_paused.saturating_sub(rss_before) as f64 / 1048576.0;
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "slow stream client: paused 10 s while {} events flowed; service RSS {:.1} -> {:.1} MiB \
         (+{grown:.1}); on resuming: {} snapshot(s) in place of what it missed, then {} deltas, \
         final state equal to REST at version {last}",
        tail.len(),
        rss_before as f64 / 1048576.0,
        rss_paused as f64 / 1048576.0,
        folded.snapshots - 1,
        folded.deltas,
    );
    assert!(
        folded.snapshots >= 2 && resnapshots >= 1.0,
        "the client fell behind and got a snapshot in place of what it missed"
    );
    assert!(
        grown < 64.0,
        "memory stays bounded while a client does not read: grew {grown:.1} MiB"
    );
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaderboard_stream_sends_the_top_n_when_it_changes_and_an_overtake_when_one_passes_another()
 {
    let nats = NatsServer::start();
    let service = ServiceProcess::start(&nats).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let id = "board-match";
    let now = chrono_now_ms();
    let mut n = 0;
    let mut event = |kind: &str, player: &str, data: Value| {
        n += 1;
        serde_json::to_vec(&json!({
            "event_id": format!("{id}-{n}"), "match_id": id, "player_id": player,
            "event_type": kind, "timestamp": now + n, "event_data": data,
        }))
        .unwrap()
    };
    let kill = |k: &str, v: &str| json!({"killer_id": k, "victim_id": v, "weapon": "ak"});
    // ana 2 kills, ben 1, cho 0.
    let opening = [
        event("player_join", "ana", json!({})),
        event("player_join", "ben", json!({})),
        event("player_join", "cho", json!({})),
        event("kill", "ana", kill("ana", "cho")),
        event("kill", "ana", kill("ana", "cho")),
        event("kill", "ben", kill("ben", "cho")),
    ];
    publish_all(&js, "match_stats.events", opening.iter().map(|e| &e[..])).await;
    let url = format!(
        "{}/api/v1/match-stats/matches/{id}/leaderboard/kills/stream?limit=2",
        service.http()
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut events = loop {
        if let Some(events) = open(&url, None).await {
            let mut events = events;
            let first = events.next().await.unwrap();
            assert_eq!(first.event, "leaderboard");
            if first.id == 6 {
                let top: Vec<(&str, u64)> = first.data["players"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        (
                            p["player_id"].as_str().unwrap(),
                            p["rank"].as_u64().unwrap(),
                        )
                    })
                    .collect();
                assert_eq!(top, [("ana", 1), ("ben", 2)]);
                assert_eq!(first.data["limit"], 2);
                break events;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the match appears");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // ben draws level (a change of the top, no overtake), then passes ana.
    publish_all(
        &js,
        "match_stats.events",
        [&event("kill", "ben", kill("ben", "cho"))[..]],
    )
    .await;
    let level = events.next().await.unwrap();
    assert_eq!((level.event.as_str(), level.id), ("leaderboard", 7));
    let ranks: Vec<u64> = level.data["players"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks, [1, 1], "level: a shared rank");
    publish_all(
        &js,
        "match_stats.events",
        [&event("kill", "ben", kill("ben", "cho"))[..]],
    )
    .await;
    let overtake = events.next().await.unwrap();
    assert_eq!((overtake.event.as_str(), overtake.id), ("overtake", 8));
    assert_eq!(
        overtake.data,
        json!({
            "match_id": id, "metric": "kills", "player_id": "ben", "passed_player_id": "ana",
            "old_rank": 1, "new_rank": 1, "passed_old_rank": 1, "passed_new_rank": 2,
        })
    );
    let board = events.next().await.unwrap();
    assert_eq!((board.event.as_str(), board.id), ("leaderboard", 8));
    assert_eq!(board.data["players"][0]["player_id"], "ben");
    assert_eq!(board.data["players"][0]["value"], 3);
    // A change below the top 2 sends nothing.
    publish_all(
        &js,
        "match_stats.events",
        [&event("player_join", "dev", json!({}))[..]],
    )
    .await;
    let quiet = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
    assert!(quiet.is_err(), "no event when the top 2 stays the same");
}
