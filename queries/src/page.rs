//! The scoreboard pages served by the service: the active matches at `/`, one match's
//! live scoreboard at `/matches/{matchID}` (fed by its event stream). The HTML, script
//! and style sheet are embedded in the binary: no build step, nothing fetched from
//! another origin.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

const INDEX: &str = include_str!("../page/index.html");
const MATCH: &str = include_str!("../page/match.html");
const SCRIPT: &str = include_str!("../page/scoreboard.js");
const STYLE: &str = include_str!("../page/scoreboard.css");

/// Assets change only with the binary: browsers revalidate them after a minute.
const ASSET_CACHE: &str = "public, max-age=60";

/// The pages and their assets.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { page(INDEX) }))
        .route("/matches/{match_id}", get(|| async { page(MATCH) }))
        .route(
            "/assets/scoreboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/assets/scoreboard.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn page(html: &'static str) -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, ASSET_CACHE),
            // The page loads only its own script, style and API.
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'"),
        ],
        Html(html),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        body,
    )
}
