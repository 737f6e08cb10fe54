//! The service assembled: NATS connection, JetStream topology, the ingest task and the
//! HTTP server, with one shutdown path.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{self, HttpState};
use crate::ingest::{self, IngestStats};
use crate::{streams, telemetry};

/// A built service, connected and listening, not yet running.
pub struct App {
    config: Config,
    nats: async_nats::Client,
    js: jetstream::Context,
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    listener: TcpListener,
    stats: Arc<IngestStats>,
    token: CancellationToken,
}

impl App {
    /// Connects to NATS, creates or updates the streams and consumer, binds HTTP.
    /// Fails fast with a message naming what could not be reached.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let nats = async_nats::ConnectOptions::new()
            .name("match-stats")
            .connect(config.nats_url.as_str())
            .await
            .with_context(|| format!("cannot connect to NATS at {}", config.nats_url))?;
        let js = jetstream::new(nats.clone());
        let consumer = streams::ensure(&js, &config).await?;
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen on HTTP_ADDR {}", config.http_addr))?;
        Ok(App {
            config,
            nats,
            js,
            consumer,
            listener,
            stats: Arc::new(IngestStats::default()),
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

    /// Cancelling this token stops the service gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Runs until the shutdown token is cancelled (or ingest fails), then stops pulling,
    /// finishes the batch in flight, flushes acks and closes HTTP within the grace period.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let App {
            config,
            nats,
            js,
            consumer,
            listener,
            stats,
            token,
        } = self;
        tracing::info!(http = %listener.local_addr()?, nats = %config.nats_url, "match-stats running");

        let mut ingest = tokio::spawn(ingest::run(
            js,
            config.topology.clone(),
            consumer,
            stats.clone(),
            config.batch_size as usize,
            token.clone(),
        ));
        let state = HttpState {
            stats,
            metrics: telemetry::metrics(),
            nats: nats.clone(),
        };
        let http_token = token.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, http::router(state))
                .with_graceful_shutdown(http_token.cancelled_owned())
                .await
        });

        // Ingest ends on cancellation (between batches) or on a fatal error; either way,
        // everything stops.
        let ended_first = tokio::select! {
            result = &mut ingest => Some(result),
            _ = token.cancelled() => None,
        };
        token.cancel();
        let ingest_result = match ended_first {
            Some(result) => result,
            None => match tokio::time::timeout(config.shutdown_grace, &mut ingest).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(grace = ?config.shutdown_grace, "ingest did not stop within the grace period; unacked messages will be redelivered");
                    ingest.abort();
                    Ok(Ok(()))
                }
            },
        };
        if let Err(error) = nats.flush().await {
            tracing::warn!(%error, "flushing acks to NATS failed");
        }
        match tokio::time::timeout(config.shutdown_grace, server).await {
            Ok(result) => result.context("HTTP server task")?.context("HTTP server")?,
            Err(_) => tracing::warn!("HTTP server did not close within the grace period"),
        }
        ingest_result.context("ingest task")??;
        tracing::info!("match-stats stopped");
        Ok(())
    }
}
