//! Path and query parameters, validated before any lookup: a JSON 400 naming what is
//! wrong otherwise.

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use match_stats_commands::{MatchId, PlayerId};

use crate::error::ApiError;
use crate::leaderboard::Metric;

/// Default and largest `limit` of the active-matches list.
pub const ACTIVE_LIMIT: (usize, usize) = (100, 1000);
/// Default and largest `limit` of a leaderboard.
pub const LEADERBOARD_LIMIT: (usize, usize) = (10, 100);

/// A match id from a path segment, or a 400.
pub fn match_id(raw: &str) -> Result<MatchId, ApiError> {
    MatchId::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid match id: {e}")))
}

/// A player id from a path segment or parameter, or a 400.
pub fn player_id(raw: &str) -> Result<PlayerId, ApiError> {
    PlayerId::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid player id: {e}")))
}

/// The query string, or why it could not be read.
pub type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// The query string's parameters, or a 400.
pub fn params(query: Params) -> Result<HashMap<String, String>, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}

/// `limit` between 1 and `max` (`default` when absent), or a 400.
pub fn limit(
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

/// The path's parameters, or a JSON 400 (bad percent-encoding, invalid UTF-8).
pub fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))
}

/// A metric from its path segment, or a 400 naming the valid ones.
pub fn metric(raw: &str) -> Result<Metric, ApiError> {
    Metric::parse(raw).ok_or_else(|| {
        let valid: Vec<_> = Metric::ALL.iter().map(|m| m.as_str()).collect();
        ApiError::bad_request(format!(
            "unknown metric {raw:?}; valid metrics: {}",
            valid.join(", ")
        ))
    })
}
