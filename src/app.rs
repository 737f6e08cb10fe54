//! The service assembled: [`App::build`] connects (NATS twice: the command side and the
//! query side each on a connection of their own), provisions the streams, consumers and
//! buckets, prepares Redis, binds HTTP and constructs every part; [`App::run_until_stopped`]
//! runs them and drains them on the one shutdown path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream;
use axum::Router;
use match_stats_queries::cache::{CompletedStore, RedisCache, RedisSettings, RedisTls};
use match_stats_queries::edge::{self, EdgeSettings};

use crate::history::HistoryStats;
use crate::history::routes::HistoryState;
use crate::history::writer::HistoryWriter;
use match_stats_queries::live::Live;
use match_stats_queries::{ApiState, ReadModel, api};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::command_side::{Ingest, IngestStats};
use crate::config::{CacheConfig, Config};
use crate::handoff::Handoff;
use crate::ops::{self, HttpState};
use crate::query_side::{CacheWriter, Capacity, Dirty, Projector};
use crate::runtimes::{Runtimes, Yielding};
use crate::{nats, telemetry};

/// Reads the Redis TLS files named by the settings.
fn redis_tls(cache: &CacheConfig) -> anyhow::Result<Option<RedisTls>> {
    if !cache.uses_tls() {
        return Ok(None);
    }
    let read = |var: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {var} {}", path.display()))
    };
    let ca = cache
        .redis_tls_ca
        .as_deref()
        .map(|p| read("REDIS_TLS_CA", p))
        .transpose()?;
    let client = match (&cache.redis_tls_cert, &cache.redis_tls_key) {
        (Some(cert), Some(key)) => {
            Some((read("REDIS_TLS_CERT", cert)?, read("REDIS_TLS_KEY", key)?))
        }
        _ => None,
    };
    Ok(Some(RedisTls { ca, client }))
}

/// The Redis settings of the configuration, values signed with `signing_key`.
pub fn redis_settings(cache: &CacheConfig, signing_key: Vec<u8>) -> anyhow::Result<RedisSettings> {
    Ok(RedisSettings {
        addr: cache.redis_addr.clone(),
        username: cache.redis_username.clone(),
        password: cache.redis_password.clone(),
        db: cache.redis_db,
        prefix: cache.redis_prefix.clone(),
        timeout: cache.redis_timeout,
        write_timeout: cache.redis_write_timeout,
        ttl_active: cache.ttl_active,
        ttl_completed: cache.completed_retention,
        tls: redis_tls(cache)?,
        signing_key,
    })
}

/// Shutdown stopped work in flight: a batch whose effects were not confirmed, or tasks
/// still running when the grace period ended. NATS redelivers what was not acknowledged.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped with work in flight abandoned within the grace period of {0:?} (unacknowledged events will be redelivered)"
)]
pub struct Abandoned(pub std::time::Duration);

/// A built service, connected and listening, not yet running.
pub struct App {
    config: Config,
    nats: async_nats::Client,
    ingest: Ingest,
    projector: Projector,
    cache_writer: Option<CacheWriter>,
    history: Option<HistoryWriter>,
    routes: Router,
    listener: TcpListener,
    admin: Option<(TcpListener, Router)>,
    stats: Arc<IngestStats>,
    api: ApiState,
    token: CancellationToken,
}

impl App {
    /// Connects to NATS, creates or updates the streams, buckets and consumers, prepares
    /// the Redis cache, binds HTTP and builds every part. Fails fast with a message naming
    /// what could not be reached; JetStream not answering yet (a cluster electing a
    /// leader) is waited for, up to [`nats::PROVISION_PATIENCE`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // The recorder first: every part registers its series as it is built.
        let _ = telemetry::metrics();
        let nats = nats::connect(&config).await?;
        let js = nats::writers_context(nats.clone(), config.streams.partitions);
        // JetStream not answering yet (a cluster electing a leader, a node just back).
        let (patience, unanswered) = (nats::PROVISION_PATIENCE, nats::is_unanswered);
        let provisioned = crate::retry::within("provisioning", patience, unanswered, || {
            nats::streams::ensure(&js, &config)
        })
        .await?;
        let signing_key = crate::retry::within(
            "reading the cache signing key",
            patience,
            unanswered,
            || nats::streams::cache_signing_key(&js, &config),
        )
        .await?;
        let redis = RedisCache::connect(redis_settings(&config.cache, signing_key)?)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "REDIS_ADDR {:?} is not usable: {e}",
                    config.cache.redis_addr
                )
            })?
            .map(Arc::new);
        let api = ApiState {
            model: Arc::new(ReadModel::default()),
            redis,
            completed: Some(Arc::new(CompletedStore::with_redis_timeout(
                provisioned.completed.clone(),
                config.cache.redis_timeout,
            ))),
            lookups: Default::default(),
            misses: Default::default(),
            live: Arc::new(Live::new(config.edge.stream_max_clients as usize)),
            completed_max_age: config.edge.completed_cache_max_age,
        };
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen on HTTP_ADDR {}", config.http_addr))?;
        let stats = Arc::new(IngestStats::new(
            config.streams.partitions,
            config.lifecycle.partition_stall_after,
        ));
        // Each delta this replica publishes goes to its projector in memory as well.
        let handoff = Arc::new(Handoff::default());
        let ingest = Ingest::new(&config, js, provisioned, stats.clone(), handoff.clone());
        // The query side reads the deltas on a connection of its own: one connection's
        // reader task would otherwise carry events, acks and deltas alike.
        let query_js = jetstream::new(
            nats::connect(&config)
                .await
                .context("the query side's NATS connection")?,
        );
        let dirty = Arc::new(Dirty::default());
        let projector = Projector {
            js: query_js,
            deltas_stream: config.streams.deltas_stream.clone(),
            deltas_subject: config.streams.deltas_subject.clone(),
            model: api.model.clone(),
            dirty: dirty.clone(),
            batch_size: config.batch_size as usize,
            retention: config.cache.completed_retention,
            live: api.live.clone(),
            handoff,
        };
        let cache_writer = api.redis.clone().map(|redis| CacheWriter {
            model: api.model.clone(),
            redis,
            dirty,
            write_interval: config.cache.write_interval,
            resync_interval: config.cache.resync_interval,
        });
        let history_stats = Arc::new(HistoryStats::default());
        let (history, pool) = match config.history.url() {
            None => (None, None),
            Some(url) => {
                let pool = crate::history::store::pool(url)?;
                let writer = HistoryWriter {
                    js: jetstream::new(nats.clone()),
                    config: config.clone(),
                    pool: pool.clone(),
                    model: api.model.clone(),
                    completed: api.completed.clone().expect("the service has the bucket"),
                    stats: history_stats.clone(),
                };
                (Some(writer), Some(pool))
            }
        };
        let history_routes = crate::history::routes::router(HistoryState {
            pool,
            min_matches: config.history.history_min_matches,
        });
        let state = HttpState {
            history: config
                .history
                .url()
                .is_some()
                .then(|| history_stats.clone()),
            stats: stats.clone(),
            metrics: telemetry::metrics(),
            nats: nats.clone(),
            api: api.clone(),
            started: Instant::now(),
            ready_max_pending: config.ready_max_pending,
            capacity: Capacity {
                players: config.lifecycle.capacity_players,
                matches: config.lifecycle.capacity_matches,
            },
        };
        let limits = api::RequestLimits {
            timeout: config.http_limits.http_request_timeout,
            max_concurrent: config.http_limits.http_max_concurrent_requests as usize,
        };
        // With ADMIN_ADDR, /metrics and pprof are served there only.
        let (public_ops, admin_ops) =
            ops::routers(state, config.pprof_enabled, config.admin_addr.is_some());
        let edge = EdgeSettings {
            cors_origins: edge::list(&config.edge.cors_allowed_origins),
            api_keys: edge::list(&config.edge.api_keys),
            rate_limit: (config.edge.rate_limit_per_second > 0).then_some((
                config.edge.rate_limit_per_second,
                config.edge.rate_limit_burst,
            )),
        };
        let routes = api::router(api.clone())
            .merge(history_routes)
            .merge(match_stats_queries::page::router());
        // The probes stay outside the bound on requests in flight.
        let routes = api::with_api_layers(routes, limits, public_ops);
        let routes = edge::with_edge_layers(routes, &edge).layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(telemetry::http_span)
                .on_request(())
                .on_response(telemetry::http_response)
                // Errors are logged where they happen, once.
                .on_failure(()),
        );
        let admin = match (config.admin_addr, admin_ops) {
            (Some(addr), Some(ops)) => Some((
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on ADMIN_ADDR {addr}"))?,
                api::with_api_layers(ops, limits, axum::Router::new()),
            )),
            _ => None,
        };
        Ok(App {
            config,
            nats,
            ingest,
            projector,
            cache_writer,
            history,
            routes,
            listener,
            admin,
            stats,
            api,
            token: CancellationToken::new(),
        })
    }

    /// The bound HTTP address (port 0 in the config picks a free one).
    pub fn http_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// The bound admin address, when `ADMIN_ADDR` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .map(|(listener, _)| listener.local_addr().expect("bound listener"))
    }

    /// Ingest counters, shared with the running service.
    pub fn stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }

    /// The query side's state (read model, caches), shared with the running service.
    pub fn api_state(&self) -> ApiState {
        self.api.clone()
    }

    /// Cancelling this token stops the service gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Runs until the shutdown token is cancelled (or a task fails), then stops pulling,
    /// finishes the batch in flight, flushes acks and closes HTTP, all within the grace
    /// period: past it, the work in flight is abandoned and the result is [`Abandoned`].
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let App {
            config,
            nats,
            ingest,
            projector,
            cache_writer,
            history,
            routes,
            listener,
            admin,
            stats,
            api,
            token,
        } = self;
        tracing::info!(http = %listener.local_addr()?, nats = %config.nats_url_redacted(), redis = api.redis.is_some(), "match-stats running");

        let runtimes = Runtimes::new(&config)?;
        let mut tasks = JoinSet::new();
        tasks.spawn(ingest.run(token.clone()));
        // The read model's projection gives way to ingest while a partition catches up.
        let yielding = Yielding::new(config.background_nice, {
            let stats = stats.clone();
            move || stats.catching_up()
        });
        let background = runtimes.background();
        tasks.spawn_on(projector.run(token.clone(), yielding), &background);
        let writers = runtimes.lowered_writers();
        if let Some(writer) = cache_writer {
            tasks.spawn_on(writer.run(token.clone()), &writers);
        }
        if let Some(history) = history {
            tasks.spawn_on(history.run(token.clone()), &writers);
        }
        let limits = crate::serve::ConnectionLimits {
            header_read_timeout: config.http_limits.http_header_read_timeout,
            max_connections: config.http_limits.http_max_connections as usize,
        };
        let on = runtimes.http();
        let mut servers = JoinSet::new();
        servers.spawn_on(
            crate::serve::serve(listener, routes, limits, token.clone()),
            &on,
        );
        if let Some((listener, routes)) = admin {
            servers.spawn_on(
                crate::serve::serve(listener, routes, limits, token.clone()),
                &on,
            );
        }

        // The first task to end (cancellation, or a fatal error) stops everything.
        let mut first_error = None;
        tokio::select! {
            Some(ended) = tasks.join_next() => {
                if let Ok(Err(error)) | Err(error) = ended.map_err(anyhow::Error::from) {
                    first_error = Some(error);
                }
            }
            _ = token.cancelled() => {}
        }
        token.cancel();
        // Open streams end now, so that the HTTP server can drain.
        api.live.close();
        // Everything from here is bounded by one deadline, whatever NATS and Redis do.
        let deadline = tokio::time::Instant::now() + config.shutdown_grace;
        let drained = tokio::time::timeout_at(deadline, async {
            while let Some(ended) = tasks.join_next().await {
                if let Ok(Err(error)) = ended
                    && first_error.is_none()
                {
                    first_error = Some(error);
                }
            }
        })
        .await;
        let mut abandoned = drained.is_err();
        if abandoned {
            tracing::warn!(grace = ?config.shutdown_grace, "tasks did not stop within the grace period; unacknowledged messages will be redelivered");
            tasks.abort_all();
        }
        match tokio::time::timeout_at(deadline, nats.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "flushing acks to NATS failed"),
            Err(_) => {
                tracing::warn!("flushing acks to NATS did not finish within the grace period")
            }
        }
        if tokio::time::timeout_at(deadline, servers.join_all())
            .await
            .is_err()
        {
            tracing::warn!("HTTP connections did not close within the grace period");
        }
        drop(runtimes);
        if let Some(error) = first_error {
            return Err(error.context("a service task failed"));
        }
        abandoned |= stats.abandoned.load(std::sync::atomic::Ordering::Relaxed) > 0;
        if abandoned {
            return Err(Abandoned(config.shutdown_grace).into());
        }
        tracing::info!("match-stats stopped");
        Ok(())
    }
}
