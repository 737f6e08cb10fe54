//! The service's operational routes: `/health` (liveness), `/ready` (readiness, with
//! why and the replay progress), `/metrics` (Prometheus text),
//! `/api/v1/match-stats/system/stats` and, when enabled, `/debug/pprof/profile`. The API
//! itself is `match_stats_queries::api`; errors are its `ApiError`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use match_stats_queries::ApiState;
use match_stats_queries::api::ApiError;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::command_side::IngestStats;
use crate::query_side::Capacity;

/// What the routes read.
#[derive(Clone)]
pub struct HttpState {
    /// Ingest counters and readiness.
    pub stats: Arc<IngestStats>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// NATS connection, for readiness.
    pub nats: async_nats::Client,
    /// The query side (read model, caches).
    pub api: ApiState,
    /// When the service started.
    pub started: Instant,
    /// Not ready while more events than this wait in the consumer.
    pub ready_max_pending: u64,
    /// What this replica is sized to hold.
    pub capacity: Capacity,
    /// The history writer's figures, when history is configured.
    pub history: Option<Arc<crate::history::HistoryStats>>,
}

/// The operational routes, testable without a socket: those of the public port, and,
/// with `admin`, those of the admin port (`/metrics` and pprof move there).
/// `/debug/pprof/profile` exists only when `PPROF_ENABLED`.
pub fn routers(state: HttpState, pprof: bool, admin: bool) -> (Router, Option<Router>) {
    let public = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/api/v1/match-stats/system/stats", get(system_stats));
    let mut operators = Router::new().route("/metrics", get(metrics));
    if pprof {
        operators = operators.route("/debug/pprof/profile", get(profile));
    }
    if admin {
        let admin = operators
            .route("/health", get(health))
            .route("/ready", get(ready));
        (
            public.with_state(state.clone()),
            Some(admin.with_state(state)),
        )
    } else {
        (public.merge(operators).with_state(state), None)
    }
}

/// Longest CPU profile one request may take.
const MAX_PROFILE_SECONDS: u64 = 300;

/// `GET /debug/pprof/profile?seconds=N` (default 30): samples the process at 100 Hz for N
/// seconds and returns the profile in pprof's protobuf format, as Go's endpoint does
/// (`go tool pprof http://host:8080/debug/pprof/profile`).
async fn profile(
    axum::extract::Query(params): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    let seconds = match params.get("seconds").map(|s| s.parse::<u64>()) {
        None => 30,
        Some(Ok(n)) if (1..=MAX_PROFILE_SECONDS).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "seconds must be an integer from 1 to {MAX_PROFILE_SECONDS}"
            )));
        }
    };
    // A client that goes away stops the profile: the flag is set when this request is
    // dropped, and the sampling thread checks it ten times a second.
    let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(abandoned.clone());
    let result = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        use pprof::protos::Message as _;
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(100)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map_err(|e| e.to_string())?;
        let until = Instant::now() + std::time::Duration::from_secs(seconds);
        while Instant::now() < until {
            if abandoned.load(Ordering::Relaxed) {
                return Err("the client went away".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let report = guard.report().build().map_err(|e| e.to_string())?;
        let profile = report.pprof().map_err(|e| e.to_string())?;
        profile.write_to_bytes().map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok(bytes)) => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
        }
        Ok(Err(error)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("profiling failed (one profile at a time): {error}"),
        )),
        Err(error) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profiling failed: {error}"),
        )),
    }
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    let stats = &state.stats;
    let connected = state.nats.connection_state() == async_nats::connection::State::Connected;
    let recovered = stats.recovered.load(Ordering::Relaxed);
    let caught_up = state.api.model.is_caught_up();
    // While the read model catches up, the API answers from Redis (newer version wins):
    // ready if Redis answers now (a bounded PING), else only once caught up.
    let redis_answers = match (&state.api.redis, caught_up) {
        (Some(redis), false) => redis.ping().await.is_ok(),
        _ => false,
    };
    let lag = stats.consumer_lag();
    let consumer_found = lag.is_some();
    let pending = lag.map_or(0, |l| l.pending);
    let backlog = pending > state.ready_max_pending;
    let ready =
        connected && consumer_found && recovered && !backlog && (caught_up || redis_answers);
    let reason = if !connected {
        "not connected to NATS"
    } else if !consumer_found {
        "the events stream or a partition's durable consumer is missing (or not yet checked)"
    } else if !recovered {
        "replaying the events stream"
    } else if backlog {
        "too many events waiting in the consumer (READY_MAX_PENDING)"
    } else if !caught_up && redis_answers {
        "consuming live events; read model catching up, answering from Redis meanwhile"
    } else if !caught_up {
        "read model catching up on the deltas stream"
    } else {
        "consuming live events"
    };
    metrics::gauge!(crate::metrics::READY).set(if ready { 1.0 } else { 0.0 });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "reason": reason,
        "nats_connected": connected,
        "read_model_caught_up": caught_up,
        "consumer_pending": pending,
        "ready_max_pending": state.ready_max_pending,
        "recovery": {
            "replayed": stats.recovery_done.load(Ordering::Relaxed),
            "total": stats.recovery_total.load(Ordering::Relaxed),
        },
        // A stalled partition does not make the replica unready (the others, and the API,
        // still work): it is shown here and alerted on (match_stats_partition_stalled).
        "partitions_stalled": stats.stalled(),
        "counts": stats.counts(),
        // History never makes the replica unready; its backfill shows here.
        "history": history_json(&state),
    });
    (status, Json(body))
}

fn history_json(state: &HttpState) -> serde_json::Value {
    state
        .history
        .as_ref()
        .map_or_else(|| json!({"enabled": false}), |h| h.to_json())
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    state.api.lookups.publish_hit_ratios();
    state.api.live.publish_gauges();
    metrics_process::Collector::default().collect();
    state.stats.publish_partition_gauges();
    state.capacity.publish_gauges(&state.api.model);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn system_stats(State(state): State<HttpState>) -> Json<serde_json::Value> {
    let counts = state.stats.counts();
    // As the partition loops last read it (every second): no NATS call per request.
    let stats = &state.stats;
    let consumer = json!(stats.consumer_lag());
    let redis = match &state.api.redis {
        None => json!({"configured": false, "healthy": false, "state": "disabled"}),
        Some(redis) => {
            let s = redis.state();
            json!({"configured": true, "healthy": s.as_str() == "closed", "state": s.as_str()})
        }
    };
    // Every partition's counts: this replica's own where it holds the partition, its
    // marker's (as last read, every second) elsewhere: the whole deployment's figures.
    let figures: Vec<serde_json::Value> = stats
        .figures()
        .into_iter()
        .enumerate()
        .map(|(n, f)| {
            let slot = &stats.partitions[n];
            let now = chrono::Utc::now().timestamp_millis();
            let mut entry = f.counters.to_json();
            entry["partition"] = json!(n);
            entry["sequence"] = json!(f.sequence);
            entry["source"] = json!(f.source);
            entry["conserved"] = json!(f.counters.conserved());
            // Written here, or being caught up on (a restore or a replay in progress).
            if slot.writing.load(Ordering::Relaxed)
                || slot.busy_since_ms.load(Ordering::Relaxed) != 0
            {
                entry["seconds_since_progress"] =
                    json!(slot.seconds_since_progress(now, stats.started_ms));
                entry["retry_streak"] = json!(slot.retry_streak.load(Ordering::Relaxed));
                entry["stalled"] = json!(slot.stalled(now, stats.started_ms, stats.stall_after));
            }
            entry
        })
        .collect();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "matches": {"active": counts.matches_active, "completed": counts.matches_completed},
        "events": {
            "received": counts.received,
            "processed": counts.applied,
            "duplicates": counts.duplicates,
            "rejected": counts.rejected,
            "parked": counts.parked,
            "conserved": counts.conserved,
        },
        "consumer_lag": consumer,
        "history": history_json(&state),
        "partitions": {
            "count": stats.partitions.len(),
            "held": counts.partitions_held,
            "writing": counts.partitions_writing,
            "figures": figures,
        },
        "cache": {
            "redis": redis,
            "read_model": {
                "matches": state.api.model.matches().len(),
                "caught_up": state.api.model.is_caught_up(),
            },
            "levels": state.api.lookups.to_json(),
        },
        "timestamp": match_stats_commands::view::rfc3339(chrono::Utc::now().timestamp_millis()),
    }))
}
