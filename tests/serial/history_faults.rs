//! Match history through faults: the service killed with SIGKILL three times while the
//! history writer is writing (and restarted), then PostgreSQL stopped for 30 s while the
//! rest of the workload flows. Ingest and REST carry on without the database; once it is
//! back, history holds every completed match exactly once, at its final version, with
//! each of its players once.

use std::time::Duration;

use async_nats::jetstream;
use match_stats_harness::{NatsServer, PostgresServer};
use serde_json::Value;
use sqlx::Row;

use crate::support::{ServiceProcess, WAIT, publish_lines, scenario_copies};

const COPIES: usize = 8;
/// How long the database stays down.
const OUTAGE: Duration = Duration::from_secs(30);

async fn start(nats: &NatsServer, postgres: &PostgresServer) -> ServiceProcess {
    ServiceProcess::start_with(nats, &[("DATABASE_URL", postgres.url())]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_complete_after_kill_9s_and_a_database_outage() {
    let _heavy = crate::support::one_heavy_test_at_a_time().await;
    let mut postgres = PostgresServer::start();
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let workload = scenario_copies(COPIES);
    let completed: Vec<(String, Value)> = workload.expected["matches"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, m)| m["status"] == "completed")
        .map(|(id, m)| (id.clone(), m.clone()))
        .collect();
    let half = workload.lines.len() / 2;

    // 1. The first half, with three kill -9s while matches end and history is written.
    let mut service = start(&nats, &postgres).await;
    let publisher = {
        let (js, lines) = (js.clone(), workload.lines[..half].to_vec());
        tokio::spawn(async move {
            for chunk in lines.chunks(40) {
                publish_lines(&js, chunk).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    for pause in [400, 700, 900] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        service.kill9();
        service = start(&nats, &postgres).await;
    }
    publisher.await.unwrap();
    // (Ready again after the last restart.)
    let deadline = tokio::time::Instant::now() + WAIT;
    while reqwest::get(format!("{}/ready", service.http()))
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ready after the restarts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2. The database down for 30 s while the second half flows: ingest and REST go on.
    postgres.kill();
    publish_lines(&js, &workload.lines[half..]).await;
    let published = workload.lines.len() as u64;
    let deadline = tokio::time::Instant::now() + OUTAGE;
    let (mut checks, mut ready_at) = (0, None);
    while tokio::time::Instant::now() < deadline {
        // Ready once the burst just published is consumed (READY_MAX_PENDING), database
        // or not; REST answers throughout.
        let ready = reqwest::get(format!("{}/ready", service.http()))
            .await
            .unwrap();
        if ready.status() == 200 && ready_at.is_none() {
            ready_at = Some(OUTAGE - (deadline - tokio::time::Instant::now()));
        }
        let (id, _) = &completed[checks % completed.len()];
        let url = format!("{}/api/v1/match-stats/matches/{id}", service.http());
        assert_eq!(
            reqwest::get(&url).await.unwrap().status(),
            200,
            "REST without the database"
        );
        checks += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ready: Value = reqwest::get(format!("{}/ready", service.http()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "ready without the database: {ready}");
    assert_eq!(
        ready["consumer_pending"], 0,
        "every event consumed without the database"
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
    // Duplicates (Nats-Msg-Id) are dropped by the stream, so received counts what it stored.
    assert!(
        stats["events"]["received"].as_u64().unwrap() <= published
            && stats["events"]["conserved"] == true,
        "ingest went on: {}",
        stats["events"]
    );
    let lag = stats["history"]["lag"].as_u64().unwrap();

    // 3. The database back: every completed match once, at its final version.
    postgres.restart();
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();
    crate::support::wait_history_matches(&pool, completed.len() as i64).await;
    for (id, want) in &completed {
        let row = sqlx::query(
            "SELECT m.version, (SELECT count(*) FROM match_players p WHERE p.match_id = m.match_id) AS players
             FROM matches m WHERE m.match_id = $1",
        )
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
            row.get::<i64, _>("players") as usize,
            want["player_stats"].as_array().unwrap().len(),
            "{id}: each player once"
        );
    }
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "history faults: 3 kill -9s while writing, then PostgreSQL down {} s ({checks} REST and \
         /ready checks answered, ready again {:.1} s into it once the burst was consumed, \
         history lag {lag} deltas at its end); {} \
         completed matches each written once at its final version",
        OUTAGE.as_secs(),
        ready_at.unwrap_or_default().as_secs_f64(),
        completed.len()
    );
}
