//! History's read routes: a player's matches (newest first, by cursor), their career
//! (totals over a period, a game mode, a map, with derived values recomputed from the
//! totals by the contract's formulas), and boards across matches. Without a database they
//! answer 501 saying history is not configured.

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use match_stats_commands::PlayerId;
use match_stats_commands::view::rfc3339;
use match_stats_queries::api::ApiError;
use match_stats_queries::leaderboard::Metric;
use match_stats_queries::params::{Params, limit, metric, params, path, player_id};
use serde_json::{Value, json};
use sqlx::{PgPool, Row};

/// Default and largest `limit` of a player's matches.
pub const MATCHES_LIMIT: (usize, usize) = (20, 100);
/// Default and largest `limit` of a board.
pub const BOARD_LIMIT: (usize, usize) = (10, 100);

/// What the routes read.
#[derive(Clone)]
pub struct HistoryState {
    /// The database, or `None`: history is not configured.
    pub pool: Option<PgPool>,
    /// Matches a player needs to appear on a ratio board (kd_ratio, kda, accuracy).
    pub min_matches: i64,
}

/// The routes.
pub fn router(state: HistoryState) -> Router {
    Router::new()
        .route(
            "/api/v1/match-stats/players/{player_id}/matches",
            get(player_matches),
        )
        .route(
            "/api/v1/match-stats/players/{player_id}/career",
            get(career),
        )
        .route("/api/v1/match-stats/leaderboards/{metric}", get(board))
        .with_state(state)
}

fn database(state: &HistoryState) -> Result<&PgPool, ApiError> {
    state.pool.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "match history is not configured on this deployment (set DATABASE_URL)",
        )
    })
}

fn db_error(error: sqlx::Error) -> ApiError {
    tracing::warn!(%error, "history query failed");
    ApiError::retry_after(
        StatusCode::SERVICE_UNAVAILABLE,
        "the history database is not answering; try again",
        5,
    )
}

fn player(raw: Result<Path<String>, PathRejection>) -> Result<PlayerId, ApiError> {
    player_id(&path(raw)?)
}

fn time(params: &HashMap<String, String>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    params
        .get(name)
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "invalid {name} {raw:?}: an RFC 3339 time, e.g. 2026-01-01T00:00:00Z"
                    ))
                })
        })
        .transpose()
}

/// The period and game mode (and map) filters shared by careers and boards.
#[derive(Debug, Default)]
pub struct Filters {
    /// Matches that ended at or after.
    pub since: Option<DateTime<Utc>>,
    /// Matches that ended before.
    pub until: Option<DateTime<Utc>>,
    /// One game mode.
    pub game_mode: Option<String>,
    /// One map.
    pub map: Option<String>,
}

impl Filters {
    fn of(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        Ok(Filters {
            since: time(params, "since")?,
            until: time(params, "until")?,
            game_mode: params.get("game_mode").cloned(),
            map: params.get("map").cloned(),
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "since": self.since.map(|t| rfc3339(t.timestamp_millis())),
            "until": self.until.map(|t| rfc3339(t.timestamp_millis())),
            "game_mode": self.game_mode,
            "map": self.map,
        })
    }
}

/// A player's matches: $1 player, $2/$3 the cursor (end time, match id; '' for the first
/// page), $4 rows.
pub const MATCHES_SQL: &str = "SELECT p.match_id, p.end_time,
             jsonb_build_object('match_id', m.match_id, 'map_name', m.map_name,
                 'game_mode', m.game_mode, 'start_time', m.start_time, 'end_time', m.end_time,
                 'duration_ms', m.duration_ms, 'end_reason', m.end_reason,
                 'event_count', m.version, 'player_count', m.player_count) AS match,
             to_jsonb(p) - 'match_id' - 'end_time' - 'game_mode' - 'map_name' AS line
         FROM match_players p JOIN matches m ON m.match_id = p.match_id
         WHERE p.player_id = $1 AND ($3 = '' OR (p.end_time, p.match_id) < ($2, $3))
         ORDER BY p.end_time DESC, p.match_id DESC
         LIMIT $4";

/// Conditions on `match_players` for the filters present, bound as $2 (since), $3
/// (until), $4 (game mode), $5 (map): only those present are written, so that the planner
/// sees which index serves (a period: `end_time`).
fn filters_sql(filters: &Filters) -> String {
    let mut conditions = vec!["true"];
    if filters.since.is_some() {
        conditions.push("end_time >= $2");
    }
    if filters.until.is_some() {
        conditions.push("end_time < $3");
    }
    if filters.game_mode.is_some() {
        conditions.push("game_mode = $4");
    }
    if filters.map.is_some() {
        conditions.push("map_name = $5");
    }
    conditions.join(" AND ")
}

async fn player_matches(
    State(state): State<HistoryState>,
    raw: Result<Path<String>, PathRejection>,
    query: Params,
) -> Result<Response, ApiError> {
    let pool = database(&state)?;
    let pid = player(raw)?;
    let params = params(query)?;
    let limit = limit(&params, MATCHES_LIMIT)? as i64;
    // The cursor: the last row's (end_time in ms, match_id).
    let (before_ms, before_id) = match params.get("cursor") {
        None => (i64::MAX, String::new()),
        Some(cursor) => URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                let (ms, id) = s.split_once(':')?;
                Some((ms.parse().ok()?, id.to_owned()))
            })
            .ok_or_else(|| ApiError::bad_request(format!("invalid cursor {cursor:?}")))?,
    };
    let before =
        DateTime::<Utc>::from_timestamp_millis(before_ms).unwrap_or(DateTime::<Utc>::MAX_UTC);
    let rows = sqlx::query(MATCHES_SQL)
        .bind(pid.as_str())
        .bind(before)
        .bind(&before_id)
        .bind(limit + 1)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    if rows.is_empty() && !params.contains_key("cursor") {
        return Err(ApiError::not_found(format!(
            "player {pid} has no match history"
        )));
    }
    let mut matches = Vec::new();
    let mut next_cursor = None;
    for (i, row) in rows.iter().enumerate() {
        if i as i64 == limit {
            let (end, id): (DateTime<Utc>, String) = {
                let last = &rows[i - 1];
                (last.get("end_time"), last.get("match_id"))
            };
            next_cursor = Some(URL_SAFE_NO_PAD.encode(format!("{}:{id}", end.timestamp_millis())));
            break;
        }
        let mut summary: Value = row.get("match");
        for field in ["start_time", "end_time"] {
            summary[field] = normalize_time(&summary[field]);
        }
        matches.push(json!({"match": summary, "player": row.get::<Value, _>("line")}));
    }
    Ok(Json(json!({
        "player_id": pid.as_str(),
        "count": matches.len(),
        "matches": matches,
        "next_cursor": next_cursor,
        "timestamp": rfc3339(Utc::now().timestamp_millis()),
    }))
    .into_response())
}

/// PostgreSQL's JSON time (`2026-01-01T12:00:00.123+00:00`) as the API writes times.
fn normalize_time(value: &Value) -> Value {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map_or(Value::Null, |t| json!(rfc3339(t.timestamp_millis())))
}

/// A player's career: $1 player, $2..$5 the filters.
pub fn career_sql(filters: &Filters) -> String {
    let filters = filters_sql(filters);
    format!(
        "SELECT count(*) AS matches, sum(kills)::bigint AS kills, sum(deaths)::bigint AS deaths,
             sum(assists)::bigint AS assists, sum(suicides)::bigint AS suicides,
             sum(score)::bigint AS score, sum(damage_dealt) AS damage_dealt,
             sum(damage_received) AS damage_received, sum(healing_done) AS healing_done,
             sum(shots_fired)::bigint AS shots_fired, sum(shots_hit)::bigint AS shots_hit,
             sum(headshots)::bigint AS headshots, sum(longshots)::bigint AS longshots,
             sum(multikills)::bigint AS multikills, max(best_multikill) AS best_multikill,
             max(best_streak) AS best_streak, sum(playtime_ms)::bigint AS playtime_ms,
             sum(distance_traveled) AS distance_traveled,
             min(end_time) AS first_match, max(end_time) AS last_match
         FROM match_players WHERE player_id = $1 AND {filters}"
    )
}

async fn career(
    State(state): State<HistoryState>,
    raw: Result<Path<String>, PathRejection>,
    query: Params,
) -> Result<Response, ApiError> {
    let pool = database(&state)?;
    let pid = player(raw)?;
    let filters = Filters::of(&params(query)?)?;
    let row = sqlx::query(&career_sql(&filters))
        .bind(pid.as_str())
        .bind(filters.since)
        .bind(filters.until)
        .bind(&filters.game_mode)
        .bind(&filters.map)
        .fetch_one(pool)
        .await
        .map_err(db_error)?;
    let matches: i64 = row.get("matches");
    if matches == 0 {
        let known: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM match_players WHERE player_id = $1)")
                .bind(pid.as_str())
                .fetch_one(pool)
                .await
                .map_err(db_error)?;
        if !known {
            return Err(ApiError::not_found(format!(
                "player {pid} has no match history"
            )));
        }
    }
    let int = |name: &str| row.get::<Option<i64>, _>(name).unwrap_or(0);
    let float = |name: &str| row.get::<Option<f64>, _>(name).unwrap_or(0.0);
    let (kills, deaths, assists) = (int("kills"), int("deaths"), int("assists"));
    let (fired, hit, playtime) = (int("shots_fired"), int("shots_hit"), int("playtime_ms"));
    let (score, distance) = (int("score"), float("distance_traveled"));
    let when = |name: &str| {
        row.get::<Option<DateTime<Utc>>, _>(name)
            .map(|t| rfc3339(t.timestamp_millis()))
    };
    Ok(Json(json!({
        "player_id": pid.as_str(),
        "filters": filters.to_json(),
        "matches": matches,
        "first_match": when("first_match"),
        "last_match": when("last_match"),
        "totals": {
            "kills": kills, "deaths": deaths, "assists": assists,
            "suicides": int("suicides"), "score": score,
            "damage_dealt": float("damage_dealt"), "damage_received": float("damage_received"),
            "healing_done": float("healing_done"), "shots_fired": fired, "shots_hit": hit,
            "headshots": int("headshots"), "longshots": int("longshots"),
            "multikills": int("multikills"), "playtime_ms": playtime,
            "distance_traveled": distance,
        },
        "best": {"best_streak": int("best_streak"), "best_multikill": int("best_multikill")},
        // The contract's formulas, over the totals.
        "derived": {
            "kd_ratio": if deaths == 0 { kills as f64 } else { kills as f64 / deaths as f64 },
            "kda": (kills + assists) as f64 / deaths.max(1) as f64,
            "accuracy_pct": if fired == 0 { 0.0 } else { (100.0 * hit as f64 / fired as f64).min(100.0) },
            "avg_speed": if playtime == 0 { 0.0 } else { distance / (playtime as f64 / 1000.0) },
            "performance_rating": score as f64 * 60_000.0 / playtime.max(60_000) as f64,
        },
        "timestamp": rfc3339(Utc::now().timestamp_millis()),
    }))
    .into_response())
}

/// A board's value per player, as SQL over its rows, and whether it is a ratio (held to
/// the minimum-matches rule).
pub fn board_value(metric: Metric) -> (&'static str, bool) {
    match metric {
        Metric::Kills => ("sum(kills)", false),
        Metric::Deaths => ("sum(deaths)", false),
        Metric::Assists => ("sum(assists)", false),
        Metric::Score => ("sum(score)", false),
        Metric::Damage => ("sum(damage_dealt)", false),
        Metric::DamageReceived => ("sum(damage_received)", false),
        Metric::Headshots => ("sum(headshots)", false),
        Metric::Healing => ("sum(healing_done)", false),
        Metric::Distance => ("sum(distance_traveled)", false),
        Metric::BestStreak => ("max(best_streak)", false),
        Metric::Multikills => ("sum(multikills)", false),
        Metric::Playtime => ("sum(playtime_ms)", false),
        Metric::KdRatio => (
            "CASE WHEN sum(deaths) = 0 THEN sum(kills)::float8 ELSE sum(kills)::float8 / sum(deaths) END",
            true,
        ),
        Metric::Kda => (
            "(sum(kills) + sum(assists))::float8 / greatest(sum(deaths), 1)",
            true,
        ),
        Metric::Accuracy => (
            "CASE WHEN sum(shots_fired) = 0 THEN 0 ELSE least(100, 100 * sum(shots_hit)::float8 / sum(shots_fired)) END",
            true,
        ),
    }
}

/// A board over `value` (see [`board_value`]): $1 the `around` player ('' for the top),
/// $2..$5 the filters, $6 the minimum matches, $7 the limit. Ties share a rank (1, 2, 2,
/// 4), then player_id orders them. Over all time (no period, no map) it reads the
/// players' totals ($4: the game mode, or `*` for all), else it sums the period's lines.
pub fn board_sql(value: &str, filters: &Filters, around: bool) -> String {
    let totals = if filters.since.is_none() && filters.until.is_none() && filters.map.is_none() {
        // The same expression over the totals' columns: sum(x) and max(x) are x there.
        let value = value.replace("sum(", "(").replace("max(", "(");
        format!(
            "SELECT player_id, matches, ({value})::float8 AS value, player_name
             FROM player_totals WHERE game_mode = coalesce($4, '*') AND matches >= $6"
        )
    } else {
        format!(
            "SELECT player_id, count(*) AS matches, ({value})::float8 AS value,
                    (array_agg(player_name ORDER BY end_time DESC))[1] AS player_name
             FROM match_players WHERE {}
             GROUP BY player_id HAVING count(*) >= $6",
            filters_sql(filters)
        )
    };
    if !around {
        // The top: a bounded sort; ranks follow from the values in order (every player
        // ahead of one on the board is in the top too).
        return format!(
            "WITH totals AS ({totals})
             SELECT player_id, player_name, matches, value, 0::bigint AS rank FROM totals
             ORDER BY value DESC, player_id LIMIT $7"
        );
    }
    format!(
        "WITH totals AS ({totals}), ranked AS (
             SELECT *, rank() OVER (ORDER BY value DESC) AS rank,
                    row_number() OVER (ORDER BY value DESC, player_id) AS position
             FROM totals
         ), focus AS (
             SELECT coalesce((SELECT position FROM ranked WHERE player_id = $1), 0) AS at
         )
         SELECT player_id, player_name, matches, value, rank, position FROM ranked, focus
         WHERE CASE WHEN $1 = '' THEN position <= $7
                    ELSE position BETWEEN focus.at - $7 AND focus.at + $7 AND focus.at > 0 END
         ORDER BY position"
    )
}

async fn board(
    State(state): State<HistoryState>,
    raw: Result<Path<String>, PathRejection>,
    query: Params,
) -> Result<Response, ApiError> {
    let pool = database(&state)?;
    let metric = metric(&path(raw)?)?;
    let params = params(query)?;
    let limit = limit(&params, BOARD_LIMIT)? as i64;
    let filters = Filters::of(&params)?;
    let around = params.get("around").map(|p| player_id(p)).transpose()?;
    let (value, ratio) = board_value(metric);
    let min_matches = if ratio { state.min_matches } else { 1 };
    let sql = board_sql(value, &filters, around.is_some());
    let mut tx = pool.begin().await.map_err(db_error)?;
    // Sorting a period's players in memory rather than on disk.
    sqlx::query("SET LOCAL work_mem = '64MB'")
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let rows = sqlx::query(&sql)
        .bind(around.as_ref().map_or("", |p| p.as_str()).to_owned())
        .bind(filters.since)
        .bind(filters.until)
        .bind(&filters.game_mode)
        .bind(&filters.map)
        .bind(min_matches)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    if let Some(pid) = &around
        && rows.is_empty()
    {
        return Err(ApiError::not_found(format!(
            "player {pid} is not on this board"
        )));
    }
    let values: Vec<f64> = rows.iter().map(|row| row.get("value")).collect();
    let players: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let value = values[i];
            // The top: 1 + how many are ahead with a greater value (ties share a rank).
            let rank = match around {
                Some(_) => row.get::<i64, _>("rank"),
                None => 1 + values[..i].iter().filter(|v| **v > value).count() as i64,
            };
            json!({
                "player_id": row.get::<String, _>("player_id"),
                "player_name": row.get::<Option<String>, _>("player_name"),
                "matches": row.get::<i64, _>("matches"),
                "rank": rank,
                "value": if metric.is_count() { json!(value as u64) } else { json!(value) },
            })
        })
        .collect();
    let mut body = json!({
        "metric": metric.as_str(),
        "filters": filters.to_json(),
        "limit": limit,
        "min_matches": min_matches,
        "count": players.len(),
        "players": players,
        "timestamp": rfc3339(Utc::now().timestamp_millis()),
    });
    if let Some(pid) = around {
        body["around"] = json!(pid.as_str());
    }
    Ok(Json(body).into_response())
}
