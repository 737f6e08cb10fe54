//! The history tables: connecting (migrations embedded and applied at start), the
//! batched, version-guarded writes, and erasing a player.
//!
//! A batch is one transaction: every match upserted with one multi-row statement
//! (`UNNEST` of one array per column), kept only where the stored version is older (or
//! absent), then the players of exactly those matches replaced, again with one statement.
//! A redelivered or replayed delta therefore never writes twice, and an older version
//! never overwrites a newer one.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use super::record::{MatchColumns, MatchRecord, PlayerColumns};

/// Connections of the pool.
pub const POOL_SIZE: u32 = 8;
/// How long a query may wait for a connection.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects (lazily: the pool opens connections when a query needs one, so a database
/// that is down does not stop start-up).
pub fn pool(url: &str) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a PostgreSQL URL: {e}"))?;
    Ok(PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options))
}

/// Applies the migrations not yet applied.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Writes a batch of completed matches; returns how many were newer than what was stored
/// (the others change nothing).
pub async fn write(pool: &PgPool, records: &[MatchRecord]) -> sqlx::Result<usize> {
    if records.is_empty() {
        return Ok(0);
    }
    // One record per match: the newest of the batch.
    let mut newest: std::collections::BTreeMap<String, &MatchRecord> = Default::default();
    for r in records {
        let entry = newest.entry(r.view.match_id.to_string()).or_insert(r);
        if entry.version() < r.version() {
            *entry = r;
        }
    }
    let records: Vec<MatchRecord> = newest.into_values().cloned().collect();
    let mut tx = pool.begin().await?;
    let written = upsert_matches(&mut tx, &records).await?;
    let written_records: Vec<&MatchRecord> = records
        .iter()
        .filter(|r| written.contains(&r.view.match_id.to_string()))
        .collect();
    replace_players(&mut tx, &written, &written_records).await?;
    tx.commit().await?;
    Ok(written.len())
}

async fn upsert_matches(
    tx: &mut Transaction<'_, Postgres>,
    records: &[MatchRecord],
) -> sqlx::Result<Vec<String>> {
    let c = MatchColumns::of(records);
    sqlx::query_scalar(
        "INSERT INTO matches (match_id, map_name, game_mode, max_players, start_time, end_time,
             duration_ms, end_reason, version, player_count, total_kills, total_deaths,
             total_assists, total_damage, total_healing, first_blood)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int[], $5::timestamptz[],
             $6::timestamptz[], $7::bigint[], $8::text[], $9::bigint[], $10::int[], $11::bigint[],
             $12::bigint[], $13::bigint[], $14::float8[], $15::float8[], $16::jsonb[])
         ON CONFLICT (match_id) DO UPDATE SET
             map_name = EXCLUDED.map_name, game_mode = EXCLUDED.game_mode,
             max_players = EXCLUDED.max_players, start_time = EXCLUDED.start_time,
             end_time = EXCLUDED.end_time, duration_ms = EXCLUDED.duration_ms,
             end_reason = COALESCE(EXCLUDED.end_reason, matches.end_reason),
             version = EXCLUDED.version, player_count = EXCLUDED.player_count,
             total_kills = EXCLUDED.total_kills, total_deaths = EXCLUDED.total_deaths,
             total_assists = EXCLUDED.total_assists, total_damage = EXCLUDED.total_damage,
             total_healing = EXCLUDED.total_healing, first_blood = EXCLUDED.first_blood,
             written_at = now()
         WHERE matches.version < EXCLUDED.version
         RETURNING match_id",
    )
    .bind(&c.match_id)
    .bind(&c.map_name)
    .bind(&c.game_mode)
    .bind(&c.max_players)
    .bind(&c.start_time)
    .bind(&c.end_time)
    .bind(&c.duration_ms)
    .bind(&c.end_reason)
    .bind(&c.version)
    .bind(&c.player_count)
    .bind(&c.total_kills)
    .bind(&c.total_deaths)
    .bind(&c.total_assists)
    .bind(&c.total_damage)
    .bind(&c.total_healing)
    .bind(&c.first_blood)
    .fetch_all(&mut **tx)
    .await
}

async fn replace_players(
    tx: &mut Transaction<'_, Postgres>,
    matches: &[String],
    records: &[&MatchRecord],
) -> sqlx::Result<()> {
    if matches.is_empty() {
        return Ok(());
    }
    // The old lines out, their sums taken off the players' totals.
    sqlx::query(&format!(
        "WITH old AS (DELETE FROM match_players WHERE match_id = ANY($1) RETURNING *),
         sums {TOTALS_COLUMNS} AS ({SUMS_OF} old, {MODES} GROUP BY player_id, mode)
         UPDATE player_totals t SET {}
         FROM sums s WHERE t.game_mode = s.game_mode AND t.player_id = s.player_id",
        subtract()
    ))
    .bind(matches)
    .execute(&mut **tx)
    .await?;
    let c = PlayerColumns::of(records);
    sqlx::query(
        &format!("WITH new AS (INSERT INTO match_players
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
             $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
             $12::bigint[], $13::float8[], $14::float8[], $15::float8[], $16::bigint[],
             $17::bigint[], $18::float8[], $19::bigint[], $20::bigint[], $21::bigint[],
             $22::bigint[], $23::bigint[], $24::bigint[], $25::float8[], $26::float8[],
             $27::float8[], $28::bigint[], $29::float8[], $30::float8[], $31::jsonb[],
             $32::jsonb[], $33::float8[], $34::float8[], $35::float8[])
             AS p(
                 match_id, player_id, end_time, game_mode, map_name, player_name, team_id, kills, deaths, assists, suicides, score, damage_dealt, damage_received, healing_done, shots_fired, shots_hit, accuracy_pct, headshots, longshots, multikills, best_multikill, current_streak, best_streak, kd_ratio, kda, performance_rating, playtime_ms, distance_traveled, avg_speed,
                 weapon_used, items_used, current_x, current_y, current_z)
         WHERE NOT EXISTS (SELECT 1 FROM erased_players e WHERE e.player_id = p.player_id)
         RETURNING *),
         sums {TOTALS_COLUMNS} AS ({SUMS_OF} new, {MODES} GROUP BY player_id, mode)
         INSERT INTO player_totals SELECT * FROM sums
         ON CONFLICT (game_mode, player_id) DO UPDATE SET {}", add()),
    )
    .bind(&c.match_id)
    .bind(&c.player_id)
    .bind(&c.end_time)
    .bind(&c.game_mode)
    .bind(&c.map_name)
    .bind(&c.player_name)
    .bind(&c.team_id)
    .bind(&c.kills)
    .bind(&c.deaths)
    .bind(&c.assists)
    .bind(&c.suicides)
    .bind(&c.score)
    .bind(&c.damage_dealt)
    .bind(&c.damage_received)
    .bind(&c.healing_done)
    .bind(&c.shots_fired)
    .bind(&c.shots_hit)
    .bind(&c.accuracy_pct)
    .bind(&c.headshots)
    .bind(&c.longshots)
    .bind(&c.multikills)
    .bind(&c.best_multikill)
    .bind(&c.current_streak)
    .bind(&c.best_streak)
    .bind(&c.kd_ratio)
    .bind(&c.kda)
    .bind(&c.performance_rating)
    .bind(&c.playtime_ms)
    .bind(&c.distance_traveled)
    .bind(&c.avg_speed)
    .bind(&c.weapon_used)
    .bind(&c.items_used)
    .bind(&c.current_x)
    .bind(&c.current_y)
    .bind(&c.current_z)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Each line counted under its game mode and under every mode (`*`).
const MODES: &str = "LATERAL (VALUES (coalesce(game_mode, '')), ('*')) AS modes (mode)";

/// A `player_totals` row per (player, mode) from lines: `{SUMS_OF} <lines>, {MODES}`.
const SUMS_OF: &str = "SELECT player_id, mode, (array_agg(player_name ORDER BY end_time DESC))[1],
    count(*), sum(kills), sum(deaths), sum(assists), sum(score), sum(damage_dealt),
    sum(damage_received), sum(healing_done), sum(shots_fired), sum(shots_hit), sum(headshots),
    sum(multikills), max(best_streak), max(best_multikill), sum(playtime_ms),
    sum(distance_traveled) FROM";

/// The columns of a `player_totals` row, in table order.
const TOTALS_COLUMNS: &str = "(player_id, game_mode, player_name, matches, kills, deaths,
    assists, score, damage_dealt, damage_received, healing_done, shots_fired, shots_hit,
    headshots, multikills, best_streak, best_multikill, playtime_ms, distance_traveled)";

/// The totals' summed columns.
const SUMMED: [&str; 13] = [
    "kills",
    "deaths",
    "assists",
    "score",
    "damage_dealt",
    "damage_received",
    "healing_done",
    "shots_fired",
    "shots_hit",
    "headshots",
    "multikills",
    "playtime_ms",
    "distance_traveled",
];

/// Subtracting `s` (a sums row, columns named as the table's) from `t`.
fn subtract() -> String {
    let mut set = vec!["matches = t.matches - s.matches".to_owned()];
    set.extend(SUMMED.iter().map(|c| format!("{c} = t.{c} - s.{c}")));
    set.join(", ")
}

/// Adding `EXCLUDED` to a totals row; the bests only grow.
fn add() -> String {
    let mut set = vec![
        "player_name = coalesce(EXCLUDED.player_name, player_totals.player_name)".to_owned(),
        "matches = player_totals.matches + EXCLUDED.matches".to_owned(),
        "best_streak = greatest(player_totals.best_streak, EXCLUDED.best_streak)".to_owned(),
        "best_multikill = greatest(player_totals.best_multikill, EXCLUDED.best_multikill)"
            .to_owned(),
    ];
    set.extend(
        SUMMED
            .iter()
            .map(|c| format!("{c} = player_totals.{c} + EXCLUDED.{c}")),
    );
    set.join(", ")
}

/// Rebuilds every player's totals from their lines (after a bulk load, or to take back
/// bests a correction lowered).
pub async fn rebuild_totals(pool: &PgPool) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM player_totals")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO player_totals {SUMS_OF} match_players, {MODES} GROUP BY player_id, mode"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Whether the first start's backfill is still to do.
pub async fn needs_backfill(pool: &PgPool) -> sqlx::Result<bool> {
    let done: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT backfilled_at FROM history_state")
            .fetch_one(pool)
            .await?;
    Ok(done.is_none())
}

/// Notes the backfill done.
pub async fn backfilled(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query("UPDATE history_state SET backfilled_at = now()")
        .execute(pool)
        .await?;
    Ok(())
}

/// Erases one player's lines from every match, and keeps them from being written again;
/// how many rows went.
pub async fn erase_player(pool: &PgPool, player_id: &str) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO erased_players (player_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(player_id)
        .execute(&mut *tx)
        .await?;
    let gone = sqlx::query("DELETE FROM match_players WHERE player_id = $1")
        .bind(player_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM player_totals WHERE player_id = $1")
        .bind(player_id)
        .execute(&mut *tx)
        .await?;
    // First blood names players too.
    sqlx::query(
        "UPDATE matches SET first_blood = NULL
         WHERE first_blood->>'killer_id' = $1 OR first_blood->>'victim_id' = $1",
    )
    .bind(player_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(gone)
}
