//! The HTTP edge browsers, CDNs and API clients expect, as layers around the router:
//! CORS with configured origins, negotiated compression (gzip, br, zstd; never for
//! event streams), optional read-API keys ([`auth`]) and an optional per-client rate
//! limit ([`rate`]). Conditional requests and `Cache-Control` are per response
//! ([`caching`]), since they depend on the match's version and status.

pub mod auth;
pub mod caching;
pub mod rate;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Method, header};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The edge's settings (off: no keys, no rate limit).
#[derive(Debug, Clone, Default)]
pub struct EdgeSettings {
    /// Origins allowed to read responses: `["*"]` for any, empty for none (no CORS).
    pub cors_origins: Vec<String>,
    /// Read-API keys; empty: open.
    pub api_keys: Vec<String>,
    /// Requests per second and burst per client; `None`: unlimited.
    pub rate_limit: Option<(u32, u32)>,
}

/// How long browsers may cache a preflight's answer.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

fn cors(origins: &[String]) -> Option<CorsLayer> {
    let allow = if origins.is_empty() {
        return None;
    } else if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::IF_NONE_MATCH,
                header::CACHE_CONTROL,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::ETAG, header::RETRY_AFTER])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// Wraps a router (already carrying the API layers) with the edge: CORS outermost, so
/// that a browser can read every answer, a 401 or 429 included.
pub fn with_edge_layers(router: Router, settings: &EdgeSettings) -> Router {
    let mut router = router.layer(CompressionLayer::new());
    if let Some((per_second, burst)) = settings.rate_limit {
        let limiter = Arc::new(rate::Limiter::new(per_second, burst));
        router = router.layer(axum::middleware::from_fn_with_state(limiter, rate::limit));
    }
    if !settings.api_keys.is_empty() {
        let keys = Arc::new(auth::Keys::new(&settings.api_keys));
        router = router.layer(axum::middleware::from_fn_with_state(keys, auth::require));
    }
    match cors(&settings.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Splits a comma-separated setting into its trimmed, non-empty items.
pub fn list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
