//! The REST API of contract section 5 (plus `around` leaderboards and `/openapi.json`).
//!
//! Handlers validate path ids and query parameters first, then look the match up:
//! the read model (one `load()`), else Redis, else the completed-matches bucket. While
//! the read model is still catching up, Redis is asked too and the newer object wins.
//! [`ApiError`] is the one place errors become JSON responses.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use match_stats_commands::view::rfc3339;
use match_stats_commands::{MatchId, MatchStatus, MatchView, PlayerId, PlayerView};
use serde::Serialize;
use serde_json::json;

use crate::cache::{CacheError, CompletedStore, RedisCache};
use crate::leaderboard::{Metric, Ranked};
use crate::read_model::{MatchSnapshot, ReadModel};

/// Longest accepted request target (path and query string), in bytes.
pub const MAX_URI_BYTES: usize = 2048;

/// Default and largest `limit` of the active-matches list.
pub const ACTIVE_LIMIT: (usize, usize) = (100, 1000);
/// Default and largest `limit` of a leaderboard.
pub const LEADERBOARD_LIMIT: (usize, usize) = (10, 100);
/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// A cache level, for hit/miss counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// This replica's read model.
    Memory,
    /// The shared Redis.
    Redis,
    /// The completed-matches key-value bucket.
    Kv,
}

impl Level {
    const ALL: [Level; 3] = [Level::Memory, Level::Redis, Level::Kv];

    /// `memory`, `redis`, `kv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Memory => "memory",
            Level::Redis => "redis",
            Level::Kv => "kv",
        }
    }
}

/// Hits and misses per level.
#[derive(Debug, Default)]
pub struct LookupStats {
    hits: [AtomicU64; 3],
    misses: [AtomicU64; 3],
}

impl LookupStats {
    fn record(&self, level: Level, hit: bool) {
        let i = level as usize;
        let (counter, result) = if hit {
            (&self.hits[i], "hit")
        } else {
            (&self.misses[i], "miss")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::CACHE_REQUESTS, "level" => level.as_str(), "result" => result)
            .increment(1);
    }

    fn ratio(&self, level: Level) -> (u64, u64, f64) {
        let i = level as usize;
        let (hits, misses) = (
            self.hits[i].load(Ordering::Relaxed),
            self.misses[i].load(Ordering::Relaxed),
        );
        (hits, misses, hits as f64 / (hits + misses).max(1) as f64)
    }

    /// Sets the hit-ratio gauge of every level (before `/metrics` renders).
    pub fn publish_hit_ratios(&self) {
        for level in Level::ALL {
            let (_, _, ratio) = self.ratio(level);
            metrics::gauge!(crate::metrics::CACHE_HIT_RATIO, "level" => level.as_str()).set(ratio);
        }
    }

    /// `{level: {hits, misses, hit_ratio}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let levels: serde_json::Map<_, _> = Level::ALL
            .iter()
            .map(|&level| {
                let (h, m, ratio) = self.ratio(level);
                (
                    level.as_str().to_owned(),
                    json!({"hits": h, "misses": m, "hit_ratio": ratio}),
                )
            })
            .collect();
        levels.into()
    }
}

/// How long an id that no tier knows is answered 404 without asking Redis and the object
/// store again (the read model is always asked: a match that appears is found at once).
pub const NEGATIVE_TTL: std::time::Duration = std::time::Duration::from_secs(2);
/// How many such ids are remembered.
pub const NEGATIVE_CAPACITY: usize = 10_000;

/// Ids no tier knew, and when that was found out.
#[derive(Clone)]
pub struct Misses(Arc<quick_cache::sync::Cache<MatchId, Instant>>);

impl Default for Misses {
    fn default() -> Self {
        Misses(Arc::new(quick_cache::sync::Cache::new(NEGATIVE_CAPACITY)))
    }
}

impl Misses {
    fn recent(&self, id: &MatchId) -> bool {
        self.0.get(id).is_some_and(|at| at.elapsed() < NEGATIVE_TTL)
    }

    fn note(&self, id: MatchId) {
        self.0.insert(id, Instant::now());
    }
}

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// This replica's read model.
    pub model: Arc<ReadModel>,
    /// The shared Redis, if configured.
    pub redis: Option<Arc<RedisCache>>,
    /// The completed-matches bucket (shared: the state is cloned for every request, and
    /// an object store handle carries its stream's whole description).
    pub completed: Option<Arc<CompletedStore>>,
    /// Hit/miss counters.
    pub lookups: Arc<LookupStats>,
    /// Ids no tier knew a moment ago (a negative cache).
    pub misses: Misses,
    /// Live channels of watched matches, for the streams.
    pub live: Arc<crate::live::Live>,
    /// `Cache-Control: max-age` of a completed match's responses.
    pub completed_max_age: std::time::Duration,
}

/// An error response: `{"error", "status", "timestamp"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds for a `Retry-After` header (503, 429).
    retry_after: Option<u32>,
}

impl ApiError {
    /// Any status, with its message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A status with `Retry-After: <seconds>`.
    pub fn retry_after(status: StatusCode, message: impl Into<String>, seconds: u32) -> Self {
        ApiError {
            retry_after: Some(seconds),
            ..ApiError::new(status, message)
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.message,
            "status": self.status.as_u16(),
            "timestamp": now(),
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                seconds.to_string().parse().expect("digits"),
            );
        }
        response
    }
}

pub(crate) fn now() -> String {
    rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    )
}

/// The API routes, with JSON 404/405 fallbacks and per-route metrics.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/match-stats/matches/active", get(active_matches))
        .route("/api/v1/match-stats/matches/{match_id}", get(match_object))
        .route(
            "/api/v1/match-stats/matches/{match_id}/players/{player_id}",
            get(player_object),
        )
        .route(
            "/api/v1/match-stats/matches/{match_id}/leaderboard/{metric}",
            get(leaderboard),
        )
        .route(
            "/api/v1/match-stats/matches/{match_id}/stream",
            get(crate::stream::match_stream),
        )
        .route(
            "/api/v1/match-stats/matches/{match_id}/leaderboard/{metric}/stream",
            get(crate::stream::leaderboard_stream),
        )
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

/// Bounds on requests.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// A request not answered within this gets 408.
    pub timeout: std::time::Duration,
    /// Requests handled at once; more get 503 with `Retry-After` at once.
    pub max_concurrent: usize,
}

/// Wraps a router with JSON 404/405 responses, a bound on the request target (414), a
/// request timeout (408), a bound on requests in flight (503), and request metrics by
/// route template and a fixed set of methods. The API is read-only: no route takes a
/// body.
pub fn with_api_layers(router: Router, limits: RequestLimits) -> Router {
    use tower::ServiceBuilder;
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: the API is read-only (GET)",
            )
        })
        .layer(middleware::from_fn(limit_uri))
        .layer(
            ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(|_| async {
                    ApiError::retry_after(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many requests in flight; try again",
                        1,
                    )
                }))
                .load_shed()
                .concurrency_limit(limits.max_concurrent),
        )
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.timeout,
        ))
        .layer(middleware::from_fn(record_request))
}

/// The method as a metrics label: the standard ones by name, anything else `OTHER` (a
/// method is any token a client sends: as a label, an unbounded set of series).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// Refuses over-long request targets before any routing or parsing.
async fn limit_uri(request: Request, next: Next) -> Response {
    let len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if len > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("request target of {len} bytes is over the limit of {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    next.run(request).await
}

async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(crate::metrics::HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(crate::metrics::HTTP_REQUEST_DURATION, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

pub(crate) fn match_id(raw: &str) -> Result<MatchId, ApiError> {
    MatchId::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid match id: {e}")))
}

pub(crate) fn player_id(raw: &str) -> Result<PlayerId, ApiError> {
    PlayerId::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid player id: {e}")))
}

pub(crate) type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub(crate) fn params(query: Params) -> Result<HashMap<String, String>, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}

pub(crate) fn limit(
    params: &HashMap<String, String>,
    (default, max): (usize, usize),
) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid limit {raw:?}: must be an integer from 1 to {max}"
                ))
            }),
    }
}

/// Finds a match in the read model, else Redis, else the completed bucket.
pub(crate) async fn find(state: &ApiState, id: &MatchId) -> Result<Arc<MatchSnapshot>, ApiError> {
    let memory = state.model.get(id);
    let caught_up = state.model.is_caught_up();
    if let Some(snapshot) = &memory
        && caught_up
    {
        state.lookups.record(Level::Memory, true);
        return Ok(snapshot.clone());
    }
    state.lookups.record(Level::Memory, false);
    if memory.is_none() && state.misses.recent(id) {
        return Err(ApiError::not_found(format!("match {id} not found")));
    }
    let mut best = memory;
    // Only a miss every tier answered is remembered (an error says nothing).
    let mut answered = true;
    if let Some(redis) = &state.redis {
        match redis.get(id).await {
            Ok(Some(found)) => {
                state.lookups.record(Level::Redis, true);
                if best.as_ref().is_none_or(|b| b.version < found.version) {
                    best = Some(Arc::new(found));
                }
            }
            Ok(None) => state.lookups.record(Level::Redis, false),
            Err(error) => {
                state.lookups.record(Level::Redis, false);
                answered &= matches!(error, CacheError::Corrupt(_));
                tracing::debug!(%error, "redis lookup failed");
            }
        }
    }
    if best.is_none()
        && let Some(completed) = &state.completed
    {
        match completed.get(id).await {
            Ok(Some(found)) => {
                state.lookups.record(Level::Kv, true);
                best = Some(Arc::new(found));
            }
            Ok(None) => state.lookups.record(Level::Kv, false),
            Err(error) => {
                state.lookups.record(Level::Kv, false);
                answered &= matches!(error, CacheError::Corrupt(_));
                tracing::debug!(%error, "object store lookup failed");
            }
        }
    }
    best.ok_or_else(|| {
        if answered {
            state.misses.note(*id);
        }
        ApiError::not_found(format!("match {id} not found"))
    })
}

fn json_bytes(body: bytes::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The path's parameters, or a JSON 400 (bad percent-encoding, invalid UTF-8).
pub(crate) fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))
}

/// A response derived from `snapshot`: 304 when the client holds its version.
fn conditional(
    state: &ApiState,
    headers: &HeaderMap,
    snapshot: &MatchSnapshot,
    render: impl FnOnce() -> Response,
) -> Response {
    crate::edge::caching::conditional(
        headers,
        snapshot.version,
        snapshot.is_completed(),
        state.completed_max_age,
        render,
    )
}

async fn match_object(
    State(state): State<ApiState>,
    raw: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = match_id(&path(raw)?)?;
    let snapshot = find(&state, &id).await?;
    Ok(conditional(&state, &headers, &snapshot, || {
        json_bytes(snapshot.body().clone())
    }))
}

async fn player_object(
    State(state): State<ApiState>,
    raw: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (raw_match, raw_player) = path(raw)?;
    let (id, pid) = (match_id(&raw_match)?, player_id(&raw_player)?);
    let snapshot = find(&state, &id).await?;
    let player = snapshot
        .player(&pid)
        .ok_or_else(|| ApiError::not_found(format!("player {pid} not found in match {id}")))?;
    Ok(conditional(&state, &headers, &snapshot, || {
        json_bytes(
            serde_json::to_vec(player.as_ref())
                .expect("views serialize")
                .into(),
        )
    }))
}

#[derive(Serialize)]
struct ActiveMatches<'a> {
    matches: Vec<&'a MatchView>,
    count: usize,
    next_cursor: Option<String>,
    timestamp: String,
}

async fn active_matches(
    State(state): State<ApiState>,
    query: Params,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let limit = limit(&params, ACTIVE_LIMIT)?;
    let after = match params.get("cursor") {
        None => None,
        Some(cursor) => {
            let decoded = URL_SAFE_NO_PAD
                .decode(cursor)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| MatchId::parse(&s).ok());
            Some(
                decoded
                    .ok_or_else(|| ApiError::bad_request(format!("invalid cursor {cursor:?}")))?,
            )
        }
    };
    let mut page: Vec<Arc<MatchSnapshot>> = Vec::with_capacity(limit + 1);
    if state.model.is_caught_up() || state.redis.is_none() {
        let all = state.model.matches();
        let lower = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        page.extend(
            all.range((lower, std::ops::Bound::Unbounded))
                .filter(|(_, s)| s.summary.status == MatchStatus::Active)
                .take(limit + 1)
                .map(|(_, s)| s.clone()),
        );
    } else if let Some(redis) = &state.redis {
        // Catching up: the shared list of active matches.
        let ids = redis
            .active_ids(after.as_ref(), limit + 1)
            .await
            .unwrap_or_default();
        for id in ids {
            if let Ok(snapshot) = find(&state, &id).await
                && snapshot.summary.status == MatchStatus::Active
            {
                page.push(snapshot);
            }
        }
    }
    let next_cursor = (page.len() > limit).then(|| {
        page.truncate(limit);
        URL_SAFE_NO_PAD.encode(page[limit - 1].summary.match_id.as_str())
    });
    let body = ActiveMatches {
        matches: page.iter().map(|s| &s.summary).collect(),
        count: page.len(),
        next_cursor,
        timestamp: now(),
    };
    Ok(Json(body).into_response())
}

#[derive(Serialize)]
struct Entry<'a> {
    #[serde(flatten)]
    player: &'a PlayerView,
    rank: usize,
    value: serde_json::Value,
}

/// A leaderboard response, serialized straight to its bytes.
#[derive(Serialize)]
struct LeaderboardBody<'a> {
    match_id: &'a str,
    metric: &'static str,
    limit: usize,
    count: usize,
    players: Vec<Entry<'a>>,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    around: Option<&'a str>,
}

/// A metric from its path segment, or a 400 naming the valid ones.
pub(crate) fn metric(raw: &str) -> Result<Metric, ApiError> {
    Metric::parse(raw).ok_or_else(|| {
        let valid: Vec<_> = Metric::ALL.iter().map(|m| m.as_str()).collect();
        ApiError::bad_request(format!(
            "unknown metric {raw:?}; valid metrics: {}",
            valid.join(", ")
        ))
    })
}

async fn leaderboard(
    State(state): State<ApiState>,
    raw: Result<Path<(String, String)>, PathRejection>,
    query: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (raw_match, raw_metric) = path(raw)?;
    let id = match_id(&raw_match)?;
    let metric = metric(&raw_metric)?;
    let params = params(query)?;
    let limit = limit(&params, LEADERBOARD_LIMIT)?;
    let around = params.get("around").map(|p| player_id(p)).transpose()?;
    let snapshot = find(&state, &id).await?;
    let ranked: Vec<Ranked> = match around {
        None => snapshot.ranked(metric).take(limit).collect(),
        Some(pid) => {
            let all: Vec<Ranked> = snapshot.ranked(metric).collect();
            let at = all
                .iter()
                .position(|r| r.standing.player_id == pid)
                .ok_or_else(|| {
                    ApiError::not_found(format!("player {pid} not found in match {id}"))
                })?;
            all[at.saturating_sub(limit)..(at + limit + 1).min(all.len())].to_vec()
        }
    };
    Ok(conditional(&state, &headers, &snapshot, || {
        json_bytes(leaderboard_body(
            &snapshot,
            metric,
            limit,
            &ranked,
            around.as_ref(),
        ))
    }))
}

/// A leaderboard response for `ranked` (a slice of the snapshot's standings).
pub(crate) fn leaderboard_body(
    snapshot: &MatchSnapshot,
    metric: Metric,
    limit: usize,
    ranked: &[Ranked],
    around: Option<&PlayerId>,
) -> bytes::Bytes {
    let players: Vec<Entry> = ranked
        .iter()
        .filter_map(|r| {
            let player = snapshot.players().get(&r.standing.player_id)?;
            let value = if metric.is_count() {
                json!(r.standing.value as u64)
            } else {
                json!(r.standing.value)
            };
            Some(Entry {
                player,
                rank: r.rank,
                value,
            })
        })
        .collect();
    let body = LeaderboardBody {
        match_id: snapshot.summary.match_id.as_str(),
        metric: metric.as_str(),
        limit,
        count: players.len(),
        players,
        timestamp: now(),
        around: around.map(|p| p.as_str()),
    };
    serde_json::to_vec(&body).expect("views serialize").into()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
