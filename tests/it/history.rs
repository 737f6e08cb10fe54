//! Match history in a real PostgreSQL: the small scenario three times over (same players
//! in every copy) through real NATS; the tables hold each completed match's final object
//! as `expected.json` says, careers equal the sums computed here from `expected.json`,
//! boards across matches order and rank as the contract's board rules say; a player's
//! erasure removes their lines; without `DATABASE_URL` the routes answer 501.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use match_stats_harness::{NatsServer, PostgresServer, json};
use serde_json::Value;
use sqlx::Row;

use crate::support::{ServiceProcess, WAIT, publish_lines, scenario_copies};

const COPIES: usize = 3;
const PREFIX: &str = "/api/v1/match-stats";

/// The completed matches of the workload's expected results.
fn completed(expected: &Value) -> BTreeMap<String, Value> {
    expected["matches"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, m)| m["status"] == "completed")
        .map(|(id, m)| (id.clone(), m.clone()))
        .collect()
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Each player's lines in the completed matches.
fn lines(completed: &BTreeMap<String, Value>) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in completed.values() {
        for p in m["player_stats"].as_array().unwrap() {
            out.entry(p["player_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(p.clone());
        }
    }
    out
}

fn sum(lines: &[Value], field: &str) -> f64 {
    lines.iter().map(|l| l[field].as_f64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_matches_careers_and_boards_in_postgresql() {
    let postgres = PostgresServer::start();
    let nats = NatsServer::start();
    let service = ServiceProcess::start_with(
        &nats,
        &[
            ("DATABASE_URL", postgres.url()),
            ("HISTORY_MIN_MATCHES", "2".into()),
        ],
    )
    .await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let workload = scenario_copies(COPIES);
    publish_lines(&js, &workload.lines).await;
    let completed = completed(&workload.expected);
    assert!(
        completed.len() >= 2 * COPIES,
        "the scenario completes matches"
    );

    // Every completed match lands once, at its final version.
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();
    crate::support::wait_history_matches(&pool, completed.len() as i64).await;
    for (id, want) in &completed {
        let row = sqlx::query("SELECT version, duration_ms, total_kills, player_count, end_reason FROM matches WHERE match_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            row.get::<i64, _>("version"),
            want["event_count"].as_i64().unwrap(),
            "{id}"
        );
        assert_eq!(
            row.get::<i64, _>("duration_ms"),
            want["duration_ms"].as_i64().unwrap()
        );
        assert_eq!(
            row.get::<i64, _>("total_kills"),
            want["total_kills"].as_i64().unwrap()
        );
        let players = want["player_stats"].as_array().unwrap();
        assert_eq!(row.get::<i32, _>("player_count") as usize, players.len());
        assert_eq!(
            row.get::<Option<String>, _>("end_reason").as_deref(),
            Some("match_end")
        );
        // Each player's line: every field the player object has, equal.
        for player in players {
            let pid = player["player_id"].as_str().unwrap();
            let stored: Value = sqlx::query_scalar(
                "SELECT to_jsonb(p) FROM match_players p WHERE match_id = $1 AND player_id = $2",
            )
            .bind(id)
            .bind(pid)
            .fetch_one(&pool)
            .await
            .unwrap();
            let mut got = serde_json::Map::new();
            for (field, value) in stored.as_object().unwrap() {
                if player.get(field).is_some() {
                    got.insert(field.clone(), value.clone());
                }
            }
            let mut want_line = player.clone();
            want_line.as_object_mut().unwrap().remove("online");
            json::assert_close(&Value::Object(got), &want_line, &format!("{id}/{pid}"));
        }
    }

    // A player's matches, newest first, one page at a time.
    let by_player = lines(&completed);
    let (pid, played) = by_player.iter().max_by_key(|(_, l)| l.len()).unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("{PREFIX}/players/{pid}/matches?limit=2"),
            Some(c) => format!("{PREFIX}/players/{pid}/matches?limit=2&cursor={c}"),
        };
        let (status, page) = get(service.http(), &path).await;
        assert_eq!(status, 200, "{page}");
        for entry in page["matches"].as_array().unwrap() {
            seen.push((
                entry["match"]["end_time"].as_str().unwrap().to_owned(),
                entry["match"]["match_id"].as_str().unwrap().to_owned(),
            ));
            let want = &completed[entry["match"]["match_id"].as_str().unwrap()];
            let line = want["player_stats"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["player_id"] == pid.as_str())
                .unwrap();
            assert_eq!(entry["player"]["kills"], line["kills"]);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), played.len(), "every match of {pid}, once");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first (then match id)");

    // Careers: the sums of the lines, derived values from the sums.
    for (pid, mine) in &by_player {
        let (status, career) = get(service.http(), &format!("{PREFIX}/players/{pid}/career")).await;
        assert_eq!(status, 200, "{career}");
        assert_eq!(career["matches"], mine.len(), "{pid}");
        let (kills, deaths, assists) = (
            sum(mine, "kills"),
            sum(mine, "deaths"),
            sum(mine, "assists"),
        );
        let (fired, hit) = (sum(mine, "shots_fired"), sum(mine, "shots_hit"));
        let want = serde_json::json!({
            "totals": {
                "kills": kills, "deaths": deaths, "assists": assists, "score": sum(mine, "score"),
                "damage_dealt": sum(mine, "damage_dealt"), "shots_fired": fired, "shots_hit": hit,
                "playtime_ms": sum(mine, "playtime_ms"), "distance_traveled": sum(mine, "distance_traveled"),
            },
            "best": {
                "best_streak": mine.iter().map(|l| l["best_streak"].as_u64().unwrap()).max().unwrap(),
            },
            "derived": {
                "kd_ratio": if deaths == 0.0 { kills } else { kills / deaths },
                "kda": (kills + assists) / deaths.max(1.0),
                "accuracy_pct": if fired == 0.0 { 0.0 } else { (100.0 * hit / fired).min(100.0) },
            },
        });
        for section in ["totals", "best", "derived"] {
            for (field, value) in want[section].as_object().unwrap() {
                json::assert_close(
                    &career[section][field],
                    value,
                    &format!("{pid} {section}.{field}"),
                );
            }
        }
    }

    // Boards across matches: value descending, then player id; ties share a rank.
    let (status, board) = get(
        service.http(),
        &format!("{PREFIX}/leaderboards/kills?limit=100"),
    )
    .await;
    assert_eq!(status, 200, "{board}");
    let mut want: Vec<(String, u64)> = by_player
        .iter()
        .map(|(pid, mine)| (pid.clone(), sum(mine, "kills") as u64))
        .collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let ranks: Vec<u64> = want
        .iter()
        .enumerate()
        .map(|(i, (_, v))| 1 + want[..i].iter().filter(|(_, w)| w > v).count() as u64)
        .collect();
    let got: Vec<(String, u64, u64)> = board["players"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["player_id"].as_str().unwrap().to_owned(),
                p["value"].as_u64().unwrap(),
                p["rank"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64, u64)> = want
        .into_iter()
        .zip(ranks)
        .map(|((p, v), r)| (p, v, r))
        .collect();
    assert_eq!(got, want, "the kills board across matches");
    // The same board summed from the lines of a period (all of them here).
    let (_, period) = get(
        service.http(),
        &format!("{PREFIX}/leaderboards/kills?limit=100&since=2000-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(
        period["players"], board["players"],
        "totals and lines agree"
    );
    // A ratio board holds players with at least HISTORY_MIN_MATCHES matches.
    let (_, kd) = get(
        service.http(),
        &format!("{PREFIX}/leaderboards/kd_ratio?limit=100"),
    )
    .await;
    assert_eq!(kd["min_matches"], 2);
    for entry in kd["players"].as_array().unwrap() {
        assert!(entry["matches"].as_u64().unwrap() >= 2);
    }
    // Around a player: them and their neighbours.
    let (_, around) = get(
        service.http(),
        &format!("{PREFIX}/leaderboards/kills?limit=1&around={pid}"),
    )
    .await;
    assert!(
        around["players"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["player_id"] == pid.as_str())
    );
    assert!(around["players"].as_array().unwrap().len() <= 3);

    // Unknown player: 404; bad metric: 400 listing the valid ones.
    assert_eq!(
        get(service.http(), &format!("{PREFIX}/players/nobody/career"))
            .await
            .0,
        404
    );
    let (status, bad) = get(service.http(), &format!("{PREFIX}/leaderboards/luck")).await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().contains("kd_ratio"));

    // A late event (at the match's end time, so the contract applies it): the match's
    // rows move to the new version.
    let (late_id, late_match) = completed.iter().next().unwrap();
    let players = late_match["player_stats"].as_array().unwrap();
    let (killer, victim) = (
        players[0]["player_id"].as_str().unwrap(),
        players[1]["player_id"].as_str().unwrap(),
    );
    let late = serde_json::json!({
        "event_id": "late-kill-1", "match_id": late_id, "player_id": killer,
        "event_type": "kill", "timestamp": late_match["end_time"],
        "event_data": {"killer_id": killer, "victim_id": victim, "weapon": "late"},
    });
    crate::support::publish_all(
        &js,
        "match_stats.events",
        [&serde_json::to_vec(&late).unwrap()[..]],
    )
    .await;
    let version = late_match["event_count"].as_i64().unwrap() + 1;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT version FROM matches WHERE match_id = $1")
            .bind(late_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        if stored == version {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "late correction written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kills: i64 = sqlx::query_scalar(
        "SELECT kills FROM match_players WHERE match_id = $1 AND player_id = $2",
    )
    .bind(late_id)
    .bind(killer)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        kills,
        players[0]["kills"].as_i64().unwrap() + 1,
        "the late kill counted"
    );
    // The all-time board (the players' totals) moved with it.
    let lines: i64 =
        sqlx::query_scalar("SELECT sum(kills)::bigint FROM match_players WHERE player_id = $1")
            .bind(killer)
            .fetch_one(&pool)
            .await
            .unwrap();
    let (_, board) = get(
        service.http(),
        &format!("{PREFIX}/leaderboards/kills?limit=100"),
    )
    .await;
    let entry = board["players"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["player_id"] == killer)
        .unwrap();
    assert_eq!(
        entry["value"].as_i64().unwrap(),
        lines,
        "totals follow a correction"
    );

    // Erasure: the player's lines go, and the routes no longer know them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_match-stats"))
        .args(["erase-player", pid])
        .env("DATABASE_URL", postgres.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("erased {} match lines", played.len()))
    );
    assert_eq!(
        get(service.http(), &format!("{PREFIX}/players/{pid}/matches"))
            .await
            .0,
        404
    );
    let stats = get(service.http(), &format!("{PREFIX}/system/stats"))
        .await
        .1;
    assert_eq!(stats["history"]["enabled"], true);
    assert_eq!(
        stats["history"]["matches_written"],
        completed.len() + 1,
        "each match once, and the corrected one again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_history_routes_say_it_is_not_configured() {
    let nats = NatsServer::start();
    let service = ServiceProcess::start(&nats).await;
    for path in [
        "/players/p1/matches",
        "/players/p1/career",
        "/leaderboards/kills",
    ] {
        let (status, body) = get(service.http(), &format!("{PREFIX}{path}")).await;
        assert_eq!(status, 501, "{path}");
        assert!(body["error"].as_str().unwrap().contains("not configured"));
    }
    let stats = get(service.http(), &format!("{PREFIX}/system/stats"))
        .await
        .1;
    assert_eq!(stats["history"]["enabled"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_backfills_from_the_completed_matches_bucket() {
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let workload = scenario_copies(2);
    let completed = completed(&workload.expected);
    // History off while the matches are played; then the deltas stream is purged, so
    // that only the completed-matches bucket still has them.
    let service = ServiceProcess::start(&nats).await;
    publish_lines(&js, &workload.lines).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, stats) = get(service.http(), &format!("{PREFIX}/system/stats")).await;
        if stats["matches"]["completed"].as_u64() == Some(completed.len() as u64) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "matches completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (The bucket is written once the final delta is confirmed.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(service);
    js.get_stream("MATCH_DELTAS")
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();

    let postgres = PostgresServer::start();
    let service = ServiceProcess::start_with(&nats, &[("DATABASE_URL", postgres.url())]).await;
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();
    crate::support::wait_history_matches(&pool, completed.len() as i64).await;
    for (id, want) in &completed {
        let row = sqlx::query(
            "SELECT version, end_reason, (SELECT count(*) FROM match_players p WHERE p.match_id = m.match_id) AS players FROM matches m WHERE match_id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            row.get::<i64, _>("version"),
            want["event_count"].as_i64().unwrap()
        );
        assert_eq!(
            row.get::<Option<String>, _>("end_reason"),
            None,
            "not known from the bucket"
        );
        assert_eq!(
            row.get::<i64, _>("players") as usize,
            want["player_stats"].as_array().unwrap().len()
        );
    }
    let (_, ready) = get(service.http(), "/ready").await;
    let backfill = &ready["history"]["backfill"];
    assert_eq!(backfill["running"], false, "{ready}");
    assert_eq!(backfill["done"], completed.len(), "{ready}");
    assert_eq!(backfill["total"], completed.len(), "{ready}");
}
