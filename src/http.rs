//! The service's own HTTP routes: `/health` (liveness), `/ready` (readiness, with
//! recovery progress) and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::ingest::IngestStats;

/// What the routes read.
#[derive(Clone)]
pub struct HttpState {
    /// Ingest counters and readiness.
    pub stats: Arc<IngestStats>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// NATS connection, for readiness.
    pub nats: async_nats::Client,
}

/// The router; testable without a socket.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    let stats = &state.stats;
    let connected = state.nats.connection_state() == async_nats::connection::State::Connected;
    let recovered = stats.ready.load(Ordering::Relaxed);
    let ready = connected && recovered;
    let reason = match (connected, recovered) {
        (false, _) => "not connected to NATS",
        (true, false) => "replaying the events stream",
        (true, true) => "consuming live events",
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "reason": reason,
        "nats_connected": connected,
        "recovery": {
            "replayed": stats.recovery_done.load(Ordering::Relaxed),
            "total": stats.recovery_total.load(Ordering::Relaxed),
        },
        "counts": stats.counts(),
    });
    (status, Json(body))
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
