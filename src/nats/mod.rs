//! Everything about reaching NATS: the connection ([`connect`]), the JetStream streams,
//! consumers and buckets the service provisions ([`streams`]), and the naming of the
//! events stream's partitions ([`partition`]).

pub mod partition;
pub mod streams;

use anyhow::Context as _;

use crate::config::Config;

pub use partition::{Partition, Partitioning, partition_of};

/// Connects to NATS with the configured authentication and TLS; a refused or
/// unreachable server is an error naming the URL and the cause (no silent retry loop).
pub async fn connect(config: &Config) -> anyhow::Result<async_nats::Client> {
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
