//! The scoreboard page in a real headless Chromium: a match's page shows its players,
//! then the events published meanwhile (a kill in the table and the kill feed, the end)
//! within 2 seconds; the index lists the match. A screenshot of the page is saved as a
//! test artefact (`<target>/tmp/scoreboard.png`, its path printed).

use std::time::{Duration, Instant};

use async_nats::jetstream;
use fantoccini::{ClientBuilder, Locator};
use match_stats_harness::NatsServer;
use match_stats_harness::browser::Chromedriver;
use serde_json::{Value, json};

use crate::support::{ServiceProcess, WAIT, publish_all};

/// How soon a published event must show on the page.
const VISIBLE_WITHIN: Duration = Duration::from_secs(2);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Events {
    match_id: String,
    n: usize,
}

impl Events {
    fn event(&mut self, kind: &str, player: Option<&str>, data: Value) -> Vec<u8> {
        self.n += 1;
        let mut event = json!({
            "event_id": format!("{}-{:04}", self.match_id, self.n),
            "match_id": self.match_id,
            "event_type": kind,
            "timestamp": now_ms(),
            "event_data": data,
        });
        if let Some(player) = player {
            event["player_id"] = json!(player);
        }
        serde_json::to_vec(&event).unwrap()
    }
}

async fn publish(js: &jetstream::Context, payloads: &[Vec<u8>]) {
    publish_all(js, "match_stats.events", payloads.iter().map(Vec::as_slice)).await;
}

/// Polls the page until `script` (returning a boolean) is true; how long it took.
async fn until(client: &fantoccini::Client, what: &str, script: &str) -> Duration {
    let started = Instant::now();
    loop {
        let done = client.execute(script, vec![]).await.expect("script runs");
        if done == Value::Bool(true) {
            return started.elapsed();
        }
        assert!(started.elapsed() < WAIT, "the page shows {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scoreboard_page_shows_published_events_within_two_seconds() {
    let _heavy = crate::support::one_heavy_test_at_a_time().await;
    let nats = NatsServer::start();
    let service = ServiceProcess::start(&nats).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let mut events = Events {
        match_id: "browser-match-1".into(),
        n: 0,
    };
    let players = ["ana", "ben", "cho", "dev"];
    let mut opening = vec![events.event(
        "match_start",
        None,
        json!({"map_name": "harbor", "game_mode": "deathmatch", "max_players": 8}),
    )];
    for name in players {
        opening.push(events.event(
            "player_join",
            Some(name),
            json!({"player_name": format!("{name} <b>bold</b>"), "team_id": "red"}),
        ));
    }
    publish(&js, &opening).await;
    let api = format!(
        "{}/api/v1/match-stats/matches/browser-match-1",
        service.http()
    );
    let deadline = Instant::now() + WAIT;
    while reqwest::get(&api).await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "the match appears");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let driver = Chromedriver::start();
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(driver.capabilities(420, 860))
        .connect(&driver.url())
        .await
        .expect("a headless Chromium session");

    // The index lists the match.
    client.goto(&format!("{}/", service.http())).await.unwrap();
    until(
        &client,
        "the match in the index",
        "return [...document.querySelectorAll('#matches tbody a')].some(a => a.textContent === 'browser-match-1');",
    )
    .await;

    // The match page: four rows; names shown as text, never as HTML.
    client
        .goto(&format!("{}/matches/browser-match-1", service.http()))
        .await
        .unwrap();
    until(
        &client,
        "four players",
        "return document.querySelectorAll('#scoreboard tbody tr').length === 4;",
    )
    .await;
    let bold = client
        .find_all(Locator::Css("#scoreboard b"))
        .await
        .unwrap();
    assert!(bold.is_empty(), "a player name is text, not markup");

    // A kill: the killer's row and the feed, within 2 s of publishing.
    let kill = events.event(
        "kill",
        Some("ana"),
        json!({"killer_id": "ana", "victim_id": "ben", "weapon": "railgun", "headshot": true}),
    );
    let published = Instant::now();
    publish(&js, &[kill]).await;
    until(
        &client,
        "the kill",
        "const row = document.querySelector('#scoreboard tr[data-player=ana]'); \
         const feed = document.querySelector('#feed li'); \
         return !!row && row.querySelector('.kills').textContent === '1' \
           && !!feed && feed.textContent.includes('killed') && feed.textContent.includes('railgun');",
    )
    .await;
    let kill_visible = published.elapsed();
    let deaths = client
        .execute(
            "return document.querySelector('#scoreboard tr[data-player=ben] .deaths').textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(deaths, json!("1"));

    // The end: the status says so.
    let end = events.event("match_end", None, json!({}));
    let published = Instant::now();
    publish(&js, &[end]).await;
    until(
        &client,
        "the end",
        "return document.getElementById('match-status').textContent === 'completed';",
    )
    .await;
    let end_visible = published.elapsed();

    let png = client.screenshot().await.expect("a screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scoreboard.png");
    std::fs::write(&path, &png).expect("write the screenshot");
    client.close().await.unwrap();

    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "browser: headless Chromium showed a kill {:.0} ms and the end {:.0} ms after publishing; \
         screenshot {}",
        kill_visible.as_secs_f64() * 1000.0,
        end_visible.as_secs_f64() * 1000.0,
        path.display()
    );
    assert!(
        kill_visible < VISIBLE_WITHIN && end_visible < VISIBLE_WITHIN,
        "events show within {VISIBLE_WITHIN:?}: kill {kill_visible:?}, end {end_visible:?}"
    );
}
