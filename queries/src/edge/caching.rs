//! Conditional requests and caching of responses derived from one match version: a weak
//! `ETag` `W/"<version>"` (weak: the bytes differ by encoding and by the leaderboard's
//! `timestamp`, the content does not), `Vary: Accept-Encoding`, `If-None-Match` -> 304,
//! and `Cache-Control`: a completed match may be kept for a bounded time (late events
//! can still change it), an active one is revalidated on every use.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The weak entity tag of a match version.
pub fn etag(version: u64) -> HeaderValue {
    format!("W/\"{version}\"").parse().expect("ascii")
}

/// Whether `If-None-Match` names this version (weak comparison) or is `*`.
pub fn not_modified(headers: &HeaderMap, version: u64) -> bool {
    let tag = format!("\"{version}\"");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == tag)
}

/// `Cache-Control` for a match's responses.
pub fn cache_control(completed: bool, completed_max_age: Duration) -> HeaderValue {
    if completed {
        format!("public, max-age={}", completed_max_age.as_secs())
            .parse()
            .expect("ascii")
    } else {
        HeaderValue::from_static("no-cache")
    }
}

/// The response to a request for something derived from a match version: 304 when the
/// client holds it, else `render()`; both with the validators and caching headers.
pub fn conditional(
    request: &HeaderMap,
    version: u64,
    completed: bool,
    completed_max_age: Duration,
    render: impl FnOnce() -> Response,
) -> Response {
    let mut response = if not_modified(request, version) {
        metrics::counter!(crate::metrics::NOT_MODIFIED).increment(1);
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        render()
    };
    if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
        let headers = response.headers_mut();
        headers.insert(header::ETAG, etag(version));
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        headers.insert(
            header::CACHE_CONTROL,
            cache_control(completed, completed_max_age),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_star() {
        let mut headers = HeaderMap::new();
        assert!(!not_modified(&headers, 7));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("W/\"7\""));
        assert!(not_modified(&headers, 7));
        assert!(!not_modified(&headers, 8));
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"3\", W/\"8\""),
        );
        assert!(not_modified(&headers, 8));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&headers, 1));
    }
}
