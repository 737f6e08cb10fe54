//! Optional read-API keys: with keys configured, `/api/` routes need
//! `Authorization: Bearer <key>` (or, for clients that cannot set headers such as a
//! browser's `EventSource`, `access_token=<key>` in the query string); anything else is
//! a JSON 401 with `WWW-Authenticate: Bearer`. Health, readiness, metrics, the
//! scoreboard page and the API description stay open.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The configured keys, kept as SHA-256 digests (compared without early exit).
#[derive(Debug)]
pub struct Keys(Vec<[u8; 32]>);

impl Keys {
    /// The keys.
    pub fn new(keys: &[String]) -> Self {
        Keys(keys.iter().map(|k| Sha256::digest(k).into()).collect())
    }

    /// Whether `key` is one of them.
    pub fn allows(&self, key: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(key).into();
        // Every key compared in full: the time taken says nothing about which matched.
        self.0.iter().fold(false, |found, k| {
            let diff = k.iter().zip(digest).fold(0u8, |d, (a, b)| d | (a ^ b));
            found | (diff == 0)
        })
    }
}

/// The key a request presents: its bearer token, else its `access_token` parameter.
pub fn presented(request: &Request) -> Option<String> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    let query = request.uri().query()?;
    url_param(query, "access_token")
}

fn url_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

/// Lets `/api/` requests with a configured key through, answers others 401.
pub async fn require(State(keys): State<Arc<Keys>>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    match presented(&request) {
        Some(key) if keys.allows(&key) => next.run(request).await,
        presented => {
            metrics::counter!(crate::metrics::UNAUTHORIZED).increment(1);
            let message = if presented.is_some() {
                "unknown API key"
            } else {
                "an API key is required: Authorization: Bearer <key>"
            };
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"match-stats\""),
            );
            response
        }
    }
}
