//! `make bench-history`: the history writer's rate and the history routes' latency, on a
//! PostgreSQL with its default durability (fsync on).
//!
//! 1. Writer: HISTORY_MATCHES (1,000) matches of 64 players played to their end (loadgen,
//!    100 events each after the joins) and ingested by a service without a database; then
//!    a service with `DATABASE_URL` started against the empty database: its history
//!    consumer starts at the beginning of the deltas stream. Matches (and player rows)
//!    written per second, from its start until the table holds every match.
//! 2. Reads: the tables filled to 100,000 matches x 64 players (6.4 million player rows,
//!    50,000 players, three game modes, 90 days) with SQL, then each route from 8
//!    connections for 5 s: p50/p99 and requests/s, and each query's plan
//!    (`EXPLAIN ANALYZE`).
//!
//! Under `cargo test` (no `--bench`), a smoke run with small numbers.

use std::time::{Duration, Instant};

use match_stats::history::routes;
use match_stats::tools::loadgen::{self, LoadArgs};
use match_stats_harness::{NatsServer, PostgresServer};
use rand::RngExt;

// Shared by the benchmarks; not every helper is used in each.
#[allow(dead_code)]
#[path = "support/rest.rs"]
mod rest;
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;
use support::Service;

struct Sizes {
    matches: u32,
    history_matches: i64,
    players: i64,
    seconds: u64,
}

fn sizes() -> Sizes {
    if std::env::args().any(|a| a == "--bench") {
        Sizes {
            matches: support::env_number("HISTORY_MATCHES", 1000),
            history_matches: 100_000,
            players: 50_000,
            seconds: 5,
        }
    } else {
        Sizes {
            matches: 8,
            history_matches: 200,
            players: 100,
            seconds: 1,
        }
    }
}

const PLAYERS: u32 = 64;
const CONNECTIONS: usize = 8;

async fn count(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// GETs of `path()` from CONNECTIONS connections for `seconds`.
async fn hammer(
    base: &str,
    seconds: u64,
    path: impl Fn(&mut rand::rngs::ThreadRng) -> String + Send + Sync + Clone + 'static,
) -> rest::RestResult {
    let base = base.to_owned();
    rest::load(
        CONNECTIONS,
        seconds,
        move |client, _| client.get(format!("{base}{}", path(&mut rand::rng()))),
        |status| status.is_success(),
    )
    .await
}

/// Fills the tables with `matches` matches of 64 of `players` players over 90 days.
async fn fill(pool: &sqlx::PgPool, matches: i64, players: i64) {
    sqlx::query(
        "INSERT INTO matches
         SELECT 'bench-m' || i, 'map' || (i % 10), 'mode' || (i % 3), 64,
                now() - (i * 77) * interval '1 second' - interval '10 minutes',
                now() - (i * 77) * interval '1 second', 600000, 'match_end', 500, 64,
                200, 200, 100, 30000, 500, NULL, now()
         FROM generate_series(1, $1::bigint) AS i",
    )
    .bind(matches)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO match_players
         SELECT m.match_id, 'bench-p' || ((i * 64 + j) * 7919 % $2::bigint), m.end_time,
                m.game_mode, m.map_name, 'Player', 'red',
                (i + j) % 9, (i * j) % 7, j % 5, 0, 100 * ((i + j) % 9) + 50 * (j % 5),
                150.5, 120.25, 10, 40 + j, 20 + j % 20, 50.0, j % 3, j % 2, 0, 1, 0, 3,
                1.2, 2.3, 800.0, 600000, 1234.5, 2.05, '{\"ak\": 3}', '{}', 1, 2, 3
         FROM generate_series(1, $1::bigint) AS i
         CROSS JOIN generate_series(0, 63) AS j
         JOIN matches m ON m.match_id = 'bench-m' || i",
    )
    .bind(matches)
    .bind(players)
    .execute(pool)
    .await
    .unwrap();
    match_stats::history::store::rebuild_totals(pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE").execute(pool).await.unwrap();
}

async fn plan(pool: &sqlx::PgPool, sql: &str) -> String {
    sqlx::query_scalar::<_, String>(sql)
        .fetch_all(pool)
        .await
        .unwrap()
        .join("\n")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes = sizes();
    let postgres = PostgresServer::start_durable();
    let nats = NatsServer::start();
    let config = {
        use clap::Parser;
        match_stats::cli::Cli::try_parse_from(["match-stats", "--nats-url", &nats.url()])?.config
    };

    // 1. The writer.
    eprintln!(
        "bench-history: {} matches of {PLAYERS} players to their end, ingested without a database...",
        sizes.matches
    );
    let plain = Service::start(&[("NATS_URL", nats.url())]).await;
    loadgen::run(
        &config,
        &LoadArgs {
            matches: sizes.matches,
            players: PLAYERS,
            rate: 0,
            events: 0,
            duration: None,
            events_per_match: 100,
            no_freshness: true,
            rest: None,
            json: false,
            samples: None,
        },
    )
    .await?;
    loop {
        let stats: serde_json::Value =
            reqwest::get(format!("{}/api/v1/match-stats/system/stats", plain.http))
                .await?
                .json()
                .await?;
        if stats["matches"]["completed"].as_u64() == Some(u64::from(sizes.matches)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(plain);
    // The deltas path alone: the database migrated and marked backfilled (a first start
    // would also read the completed-matches bucket; that one-time backfill is not the
    // writer's rate).
    {
        let pool = match_stats::history::store::pool(&postgres.url())?;
        match_stats::history::store::migrate(&pool).await?;
        match_stats::history::store::backfilled(&pool).await?;
    }
    eprintln!("bench-history: the history writer on an empty database...");
    let started = Instant::now();
    let service = Service::start(&[
        ("NATS_URL", nats.url()),
        ("DATABASE_URL", postgres.url()),
        ("HISTORY_MIN_MATCHES", "5".into()),
    ])
    .await;
    let pool = sqlx::PgPool::connect(&postgres.url()).await?;
    let mut first = None;
    loop {
        let written = count(&pool, "matches").await;
        if written > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        if written == i64::from(sizes.matches) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let rows = count(&pool, "match_players").await;
    let first = first.unwrap_or_default();
    let writing = (elapsed - first).as_secs_f64().max(0.001);
    let service_cpu = service.cpu_seconds();

    // 2. The reads, over 100,000 matches.
    eprintln!(
        "bench-history: filling {} matches x 64 players...",
        sizes.history_matches
    );
    let filling = Instant::now();
    fill(&pool, sizes.history_matches, sizes.players).await;
    let filled = filling.elapsed();
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('match_players'))")
            .fetch_one(&pool)
            .await?;
    let players = sizes.players;
    let player =
        move |rng: &mut rand::rngs::ThreadRng| format!("bench-p{}", rng.random_range(0..players));
    let p = player;
    let matches_route = hammer(&service.http, sizes.seconds, move |rng| {
        format!("/api/v1/match-stats/players/{}/matches?limit=20", p(rng))
    })
    .await;
    let p = player;
    let career_route = hammer(&service.http, sizes.seconds, move |rng| {
        format!("/api/v1/match-stats/players/{}/career", p(rng))
    })
    .await;
    let p = player;
    let career_filtered = hammer(&service.http, sizes.seconds, move |rng| {
        format!(
            "/api/v1/match-stats/players/{}/career?game_mode=mode1&since=2026-01-01T00:00:00Z",
            p(rng)
        )
    })
    .await;
    let board_all = hammer(&service.http, sizes.seconds, |_| {
        "/api/v1/match-stats/leaderboards/kills?limit=10".to_owned()
    })
    .await;
    let since = (chrono::Utc::now() - chrono::Duration::days(7))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let week = since.clone();
    let board_week = hammer(&service.http, sizes.seconds, move |_| {
        format!("/api/v1/match-stats/leaderboards/kd_ratio?limit=10&game_mode=mode1&since={week}")
    })
    .await;

    // The plans of the routes' own SQL, its parameters written in (the routes run it as
    // a prepared statement).
    let literal = |sql: String, values: &[&str]| {
        values
            .iter()
            .enumerate()
            .rev()
            .fold(sql, |sql, (i, v)| sql.replace(&format!("${}", i + 1), v))
    };
    let matches_plan = plan(
        &pool,
        &literal(
            format!(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {}",
                routes::MATCHES_SQL
            ),
            &["'bench-p42'", "now()", "''", "21"],
        ),
    )
    .await;
    let career_plan = plan(
        &pool,
        &literal(
            format!(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {}",
                routes::career_sql(&routes::Filters::default())
            ),
            &["'bench-p42'", "NULL", "NULL", "NULL", "NULL"],
        ),
    )
    .await;
    let kills = routes::board_value(match_stats_queries::leaderboard::Metric::Kills).0;
    let board_plan = plan(
        &pool,
        &literal(
            format!(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {}",
                routes::board_sql(kills, &routes::Filters::default(), false)
            ),
            &["''", "NULL", "NULL", "NULL", "NULL", "1", "10"],
        ),
    )
    .await;
    let kd = routes::board_value(match_stats_queries::leaderboard::Metric::KdRatio).0;
    let window = routes::Filters {
        since: Some(chrono::Utc::now() - chrono::Duration::days(7)),
        game_mode: Some("mode1".into()),
        ..Default::default()
    };
    let week_plan = plan(
        &pool,
        &literal(
            format!(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {}",
                routes::board_sql(kd, &window, false)
            ),
            &[
                "''",
                "now() - interval '7 days'",
                "NULL",
                "'mode1'",
                "NULL",
                "5",
                "10",
            ],
        ),
    )
    .await;

    let route = |name: &str, r: rest::RestResult| {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.0} | {} |",
            r.p50_ms, r.p99_ms, r.requests_per_second, r.errors
        )
    };
    println!();
    println!("## History: the writer and the read routes (PostgreSQL, fsync on)");
    println!();
    println!(
        "| writer | {} matches of {PLAYERS} players ({rows} player rows) |",
        sizes.matches
    );
    println!("|---|---|");
    println!(
        "| from the service's start to the last match written | {:.1} s (first written after {:.1} s) |",
        elapsed.as_secs_f64(),
        first.as_secs_f64()
    );
    println!(
        "| rate over the whole run (start-up and the read model's catch-up included) | **{:.0} matches/s**, {:.0} player rows/s |",
        f64::from(sizes.matches) / elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64()
    );
    println!(
        "| rate from the first match written to the last | {:.0} matches/s, {:.0} player rows/s |",
        f64::from(sizes.matches) / writing,
        rows as f64 / writing
    );
    println!("| service CPU over that time | {service_cpu:.1} s |");
    println!();
    println!(
        "Reads: {} matches x 64 players, {} players ({size} for match_players with its indexes; filled in {:.0} s), {CONNECTIONS} connections, {} s each:",
        sizes.history_matches,
        sizes.players,
        filled.as_secs_f64(),
        sizes.seconds
    );
    println!();
    println!("| route | p50 | p99 | requests/s | errors |");
    println!("|---|---|---|---|---|");
    route("player's matches, newest 20", matches_route);
    route("career, all time", career_route);
    route("career, a game mode since a date", career_filtered);
    route("board across matches: kills, all time, top 10", board_all);
    route("board: kd_ratio, a game mode, last 7 days", board_week);
    println!();
    println!("Plan, player's matches:\n```\n{matches_plan}\n```");
    println!("Plan, career:\n```\n{career_plan}\n```");
    println!("Plan, board all time (the players' totals):\n```\n{board_plan}\n```");
    println!("Plan, board over a week and a game mode (the lines):\n```\n{week_plan}\n```");
    Ok(())
}
