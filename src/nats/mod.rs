//! Everything about reaching NATS: the connection ([`connect`]), the writers' JetStream
//! context ([`writers_context`]), the JetStream streams, consumers and buckets the service
//! provisions ([`streams`]), the naming of the events stream's partitions
//! ([`partition`]), and how a partition's pulled messages are cut into batches
//! ([`batches`]).

pub mod batches;
pub mod deliveries;
pub mod partition;
pub mod streams;

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;

use crate::config::Config;

pub use partition::{Partition, Partitioning, partition_of};

/// Publishes one partition's writer has awaiting their acknowledgements at most (a batch's
/// effects go out in windows of this many).
pub const ACKS_IN_FLIGHT_PER_WRITER: usize = 256;

/// Acknowledgements in flight beyond the writers' windows: the other publishers on the
/// context (idle matches' `match_end`, snapshot records, completed match objects).
const ACKS_IN_FLIGHT_OTHERS: usize = 1024;

/// The JetStream context of the command side. async-nats admits a bounded number of
/// publishes awaiting their acks per context (5,000 by default) and makes the next one
/// wait for a free place; a writer sends a window before awaiting it, so writers waiting
/// for places the others hold could all wait for ever. The context admits every writer's
/// full window at once, so none ever waits on another.
pub fn writers_context(client: async_nats::Client, partitions: u16) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .max_ack_inflight(
            usize::from(partitions) * ACKS_IN_FLIGHT_PER_WRITER + ACKS_IN_FLIGHT_OTHERS,
        )
        .build(client)
}

/// How long start-up waits for JetStream to answer its provisioning requests: a NATS
/// cluster electing a leader, or a node just back and catching up, lets requests time
/// out for a few seconds.
pub const PROVISION_PATIENCE: Duration = Duration::from_secs(45);

/// Whether `error` is JetStream not answering yet (a request timed out, or the system
/// temporarily unavailable): worth another try. A refused setting is not, nor "no
/// responders" (a server without JetStream: a configuration error, reported at once).
pub fn is_unanswered(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let text = cause.to_string();
        text.contains("timed out") || text.contains("temporarily unavailable")
    })
}

/// Connects to NATS with the configured authentication and TLS; a refused or
/// unreachable server is an error naming the URL and the cause (no silent retry loop).
pub async fn connect(config: &Config) -> anyhow::Result<async_nats::Client> {
    let auth = &config.nats_auth;
    let mut options = async_nats::ConnectOptions::new().name("match-stats");
    // The client library ignores credentials in a URL: they are taken out of it (so no
    // log shows them) and used as the user and password.
    let (servers, url_credentials) = split_credentials(&config.nats_url).with_context(|| {
        format!(
            "NATS_URL {} is not a list of URLs",
            config.nats_url_redacted()
        )
    })?;
    let user_and_password = match (url_credentials, &auth.nats_user, &auth.nats_password) {
        (Some(_), Some(_), _) => anyhow::bail!(
            "credentials both in NATS_URL and in NATS_USER/NATS_PASSWORD: give them once"
        ),
        (Some(credentials), _, _) => Some(credentials),
        (None, Some(user), Some(password)) => Some((user.clone(), password.clone())),
        _ => None,
    };
    if let Some((user, password)) = user_and_password {
        options = options.user_and_password(user, password);
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
    options
        .connect(servers)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats_url_redacted()))
}

/// A user and its password.
type Credentials = (String, String);

/// The servers of a comma-separated `NATS_URL` without any `user:password@`, and the
/// (percent-decoded) credentials the first of them carried.
fn split_credentials(urls: &str) -> anyhow::Result<(Vec<String>, Option<Credentials>)> {
    use std::str::FromStr as _;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
    };
    let mut credentials = None;
    let mut servers = Vec::new();
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let addr = async_nats::ServerAddr::from_str(url)?;
        if let Some(user) = addr.username() {
            let password = addr.password().unwrap_or_default();
            credentials.get_or_insert((decode(user)?, decode(password)?));
            servers.push(format!(
                "{}://{}:{}",
                addr.scheme(),
                addr.host(),
                addr.port()
            ));
        } else {
            servers.push(url.to_owned());
        }
    }
    Ok((servers, credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_are_taken_out_and_decoded() {
        let (servers, credentials) =
            split_credentials("nats://stats:p%40ss%2Fw@a:4222, nats://b:4223").unwrap();
        assert_eq!(servers, vec!["nats://a:4222", "nats://b:4223"]);
        assert_eq!(credentials, Some(("stats".into(), "p@ss/w".into())));
        let (servers, credentials) = split_credentials("nats://a:4222").unwrap();
        assert_eq!((servers.len(), credentials), (1, None));
    }

    #[test]
    fn only_jetstream_not_answering_is_tried_again() {
        // given the errors start-up meets, as async-nats words them under our context
        let timed_out = anyhow::anyhow!("jetstream request timed out")
            .context("cannot create or update the keys bucket");
        let unavailable = anyhow::anyhow!("JetStream system temporarily unavailable (10008)")
            .context("cannot create or update stream MATCH_EVENTS");
        let refused = anyhow::anyhow!("insufficient resources (10023)")
            .context("cannot create or update stream MATCH_EVENTS");
        let no_jetstream = anyhow::anyhow!("jetstream request failed: no responders")
            .context("cannot create or update stream MATCH_EVENTS");
        // then a timeout and an unavailable system are waited for; the rest fail at once
        assert!(is_unanswered(&timed_out));
        assert!(is_unanswered(&unavailable));
        assert!(!is_unanswered(&refused));
        assert!(!is_unanswered(&no_jetstream));
    }
}
