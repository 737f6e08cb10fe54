//! [`ApiError`]: the one place errors become JSON responses
//! (`{"error", "status", "timestamp"}`), with `Retry-After` where it applies.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use match_stats_commands::view::rfc3339;
use serde_json::json;

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
