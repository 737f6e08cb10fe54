//! The REST API of contract section 5 (plus `around` leaderboards and `/openapi.json`).
//!
//! Handlers validate path ids and query parameters first ([`crate::params`]), then look
//! the match up ([`crate::lookup`]); errors are [`ApiError`]s. The routes, the layers
//! every request passes (limits, metrics) and the handlers are here; the streams are
//! [`crate::stream`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use match_stats_commands::{MatchId, MatchStatus, MatchView};
use serde::Serialize;

use crate::board::{self, around_body, top_body};
pub use crate::error::ApiError;
use crate::error::now;
use crate::lookup::find;
pub use crate::lookup::{ApiState, Level, LookupStats, Misses, NEGATIVE_CAPACITY, NEGATIVE_TTL};
pub use crate::params::{ACTIVE_LIMIT, LEADERBOARD_LIMIT};
use crate::params::{Params, limit, match_id, metric, params, path, player_id};
use crate::read_model::MatchSnapshot;

/// Longest accepted request target (path and query string), in bytes.
pub const MAX_URI_BYTES: usize = 2048;

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The API routes, with JSON 404/405 fallbacks and per-route metrics. The state is
/// shared behind one `Arc`: axum clones it for every request.
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
        .with_state(Arc::new(state))
}

/// Bounds on requests.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// A request not answered within this gets 408.
    pub timeout: std::time::Duration,
    /// Requests handled at once, all routes of the router together (the exempt ones
    /// aside); more get 503 with `Retry-After` at once.
    pub max_concurrent: usize,
}

/// Wraps a router with JSON 404/405 responses, a bound on the request target (414), a
/// request timeout (408), a bound on requests in flight (503), and request metrics by
/// route template and a fixed set of methods. The API is read-only: no route takes a
/// body. `exempt` joins the router outside the bound on requests in flight: the probes
/// (`/health`, `/ready`) answer however busy the API is.
pub fn with_api_layers(router: Router, limits: RequestLimits, exempt: Router) -> Router {
    with_request_bound(router, limits.max_concurrent)
        .merge(exempt)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: the API is read-only (GET)",
            )
        })
        .layer(middleware::from_fn(limit_uri))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.timeout,
        ))
        .layer(middleware::from_fn(record_request))
}

/// At most `max_concurrent` requests in flight across all of `router`'s routes together;
/// more get 503 with `Retry-After` at once. One semaphore for the router:
/// `Router::layer` builds a layer once per route, so a plain concurrency limit would
/// bound each route alone. A request holds its place until its response's headers are
/// ready (an event stream's body streams after it).
fn with_request_bound(router: Router, max_concurrent: usize) -> Router {
    use tower::ServiceBuilder;
    router.layer(
        ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(|_| async {
                ApiError::retry_after(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many requests in flight; try again",
                    1,
                )
            }))
            .load_shed()
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                max_concurrent,
            )),
    )
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

fn json_bytes(body: bytes::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
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
    State(state): State<Arc<ApiState>>,
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
    State(state): State<Arc<ApiState>>,
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
    State(state): State<Arc<ApiState>>,
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

async fn leaderboard(
    State(state): State<Arc<ApiState>>,
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
    let window = match around {
        None => None,
        Some(pid) => {
            let window = board::around(&snapshot, metric, limit, &pid).ok_or_else(|| {
                ApiError::not_found(format!("player {pid} not found in match {id}"))
            })?;
            Some((pid, window))
        }
    };
    Ok(conditional(&state, &headers, &snapshot, || {
        json_bytes(match &window {
            Some((pid, window)) => around_body(&snapshot, metric, limit, window, pid),
            None => top_body(&snapshot, metric, limit),
        })
    }))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use tokio::sync::Notify;
    use tower::ServiceExt as _;

    use super::*;

    /// The bound is the router's, not each route's: with room for one request, a request
    /// held on one route makes a request to another route a 503; an exempt probe answers.
    #[tokio::test]
    async fn the_bound_on_requests_in_flight_covers_every_route_together() {
        let release = Arc::new(Notify::new());
        let held = release.clone();
        let router = Router::new()
            .route(
                "/slow",
                get(move || {
                    let held = held.clone();
                    async move {
                        held.notified().await;
                        "slow"
                    }
                }),
            )
            .route("/fast", get(|| async { "fast" }));
        let limits = RequestLimits {
            timeout: std::time::Duration::from_secs(30),
            max_concurrent: 1,
        };
        let probe = Router::new().route("/health", get(|| async { "ok" }));
        let router = with_api_layers(router, limits, probe);
        let get_path = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let slow = tokio::spawn(router.clone().oneshot(get_path("/slow")));
        // On this one-threaded runtime the spawned request runs at the test's first
        // yield, takes the one place and waits for `release`.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let busy = router.clone().oneshot(get_path("/fast")).await.unwrap();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(busy.headers().contains_key("retry-after"));
        let probe = router.clone().oneshot(get_path("/health")).await.unwrap();
        assert_eq!(probe.status(), StatusCode::OK, "the probe is exempt");
        release.notify_one();
        let done = slow.await.unwrap().unwrap();
        assert_eq!(done.status(), StatusCode::OK);
        let after = router.oneshot(get_path("/fast")).await.unwrap();
        assert_eq!(after.status(), StatusCode::OK, "the place is free again");
    }
}
