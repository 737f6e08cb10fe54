//! The service assembled: NATS connection, JetStream topology, the command side's
//! ingest task, the query side's projector and cache writer, and the HTTP server, with
//! one shutdown path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream;
use match_stats_queries::cache::{CacheError, CompletedStore, RedisCache, RedisSettings, RedisTls};
use match_stats_queries::{ApiState, ReadModel, api};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{self, HttpState};
use crate::ingest::{Ingest, IngestStats};
use crate::project::{self, Dirty};
use crate::{streams, telemetry};

/// Connects to NATS with the configured authentication and TLS; a refused or
/// unreachable server is an error naming the URL and the cause (no silent retry loop).
pub async fn connect_nats(config: &Config) -> anyhow::Result<async_nats::Client> {
    let auth = &config.nats_auth;
    let mut options = async_nats::ConnectOptions::new().name("match-stats");
    if let (Some(user), Some(password)) = (&auth.nats_user, &auth.nats_password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &auth.nats_token {
        options = options.token(token.clone());
    }
    if let Some(creds) = &auth.nats_creds {
        options = options
            .credentials_file(creds)
            .await
            .with_context(|| format!("cannot read NATS_CREDS {}", creds.display()))?;
    }
    if let Some(ca) = &auth.nats_tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&auth.nats_tls_cert, &auth.nats_tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if auth.nats_tls_required || auth.nats_tls_ca.is_some() || auth.nats_tls_cert.is_some() {
        options = options.require_tls(true);
    }
    let servers: Vec<&str> = config.nats_url.split(',').map(str::trim).collect();
    options
        .connect(servers)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats_url_redacted()))
}

/// Bound on the start-up check of Redis (connect and authenticate).
pub const REDIS_STARTUP_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads the Redis TLS files named by the settings.
fn redis_tls(cache: &crate::config::CacheConfig) -> anyhow::Result<Option<RedisTls>> {
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

fn is_auth_error(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
}

/// A built service, connected and listening, not yet running.
pub struct App {
    config: Config,
    nats: async_nats::Client,
    js: jetstream::Context,
    consumers: Vec<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>>,
    snapshots: jetstream::kv::Store,
    replicas: jetstream::kv::Store,
    listener: TcpListener,
    stats: Arc<IngestStats>,
    api: ApiState,
    token: CancellationToken,
}

impl App {
    /// Connects to NATS, creates or updates the streams, bucket and consumer, prepares
    /// the (lazily connected) Redis cache and binds HTTP. Fails fast with a message
    /// naming what could not be reached.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let nats = connect_nats(&config).await?;
        let js = jetstream::new(nats.clone());
        let topology = streams::ensure(&js, &config).await?;
        let redis = match config.cache.redis_url() {
            None => None,
            Some(url) => {
                let settings = RedisSettings {
                    url,
                    prefix: config.cache.redis_prefix.clone(),
                    timeout: config.cache.redis_timeout,
                    ttl_active: config.cache.ttl_active,
                    ttl_completed: config.cache.completed_retention,
                    tls: redis_tls(&config.cache)?,
                };
                let cache = RedisCache::new(settings).map_err(|e| {
                    anyhow::anyhow!(
                        "REDIS_ADDR {:?} is not usable: {e}",
                        config.cache.redis_addr
                    )
                })?;
                // Rejected credentials are a misconfiguration: stop. An unreachable Redis
                // is not an outage: warn and run on the read models.
                match cache.ping_within(REDIS_STARTUP_CHECK).await {
                    Ok(()) => tracing::info!(addr = %config.cache.redis_addr, "redis connected"),
                    Err(CacheError::Redis(e)) if is_auth_error(&e) => {
                        anyhow::bail!(
                            "redis at {} refused the credentials (REDIS_USERNAME/REDIS_PASSWORD): {e}",
                            config.cache.redis_addr
                        )
                    }
                    Err(e) => {
                        tracing::warn!(addr = %config.cache.redis_addr, error = %e, "redis unreachable; serving from memory until it answers")
                    }
                }
                Some(Arc::new(cache))
            }
        };
        let api = ApiState {
            model: Arc::new(ReadModel::default()),
            redis,
            completed: Some(CompletedStore::new(
                topology.completed,
                config.cache.redis_timeout * 4,
            )),
            lookups: Default::default(),
        };
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen on HTTP_ADDR {}", config.http_addr))?;
        let stats = Arc::new(IngestStats::new(config.topology.partitions));
        Ok(App {
            config,
            nats,
            js,
            consumers: topology.consumers,
            snapshots: topology.snapshots,
            replicas: topology.replicas,
            listener,
            stats,
            api,
            token: CancellationToken::new(),
        })
    }

    /// The bound HTTP address (port 0 in the config picks a free one).
    pub fn http_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
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
    /// finishes the batch in flight, flushes acks and closes HTTP within the grace period.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let App {
            config,
            nats,
            js,
            consumers,
            snapshots,
            replicas,
            listener,
            stats,
            api,
            token,
        } = self;
        tracing::info!(http = %listener.local_addr()?, nats = %config.nats_url_redacted(), redis = api.redis.is_some(), "match-stats running");

        let mut tasks = JoinSet::new();
        let ingest = Ingest {
            js: js.clone(),
            topology: config.topology.clone(),
            lifecycle: config.lifecycle.clone(),
            snapshots,
            replicas,
            batch_size: config.batch_size as usize,
            stats: stats.clone(),
        };
        tasks.spawn(ingest.run(consumers, token.clone()));
        let dirty = Arc::new(Dirty::default());
        // The query side reads the deltas on a connection of its own: one connection's
        // reader task would otherwise carry events, acks and deltas alike.
        let query_js = jetstream::new(
            connect_nats(&config)
                .await
                .context("the query side's NATS connection")?,
        );
        tasks.spawn(project::run_projector(
            query_js,
            config.topology.deltas_stream.clone(),
            api.model.clone(),
            dirty.clone(),
            config.batch_size as usize,
            config.cache.completed_retention,
            token.clone(),
        ));
        if let Some(redis) = api.redis.clone() {
            let writer = project::run_cache_writer(
                api.model.clone(),
                redis,
                dirty,
                config.cache.write_interval,
                config.cache.resync_interval,
                token.clone(),
            );
            tasks.spawn(async move {
                writer.await;
                Ok(())
            });
        }
        let state = HttpState {
            stats,
            metrics: telemetry::metrics(),
            nats: nats.clone(),
            api: api.clone(),
            started: Instant::now(),
            ready_max_pending: config.ready_max_pending,
        };
        let routes = api::finish(api::router(api).merge(http::router(state, config.pprof_enabled)));
        let http_token = token.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, routes)
                .with_graceful_shutdown(http_token.cancelled_owned())
                .await
        });

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
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            while let Some(ended) = tasks.join_next().await {
                if let Ok(Err(error)) = ended
                    && first_error.is_none()
                {
                    first_error = Some(error);
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(grace = ?config.shutdown_grace, "tasks did not stop within the grace period; unacked messages will be redelivered");
            tasks.abort_all();
        }
        if let Err(error) = nats.flush().await {
            tracing::warn!(%error, "flushing acks to NATS failed");
        }
        match tokio::time::timeout(config.shutdown_grace, server).await {
            Ok(result) => result.context("HTTP server task")?.context("HTTP server")?,
            Err(_) => tracing::warn!("HTTP server did not close within the grace period"),
        }
        if let Some(error) = first_error {
            return Err(error.context("a service task failed"));
        }
        tracing::info!("match-stats stopped");
        Ok(())
    }
}
