//! Connections secured as operators run them: NATS with user/password, with a token, and
//! with mutual TLS (certificates generated here); Redis with a password. Right
//! credentials work end to end; wrong ones stop start-up at once with a clear error.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use match_stats_harness::{NatsServer, RedisServer, contract};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};

use crate::support::{self, Service, publish_all};

/// A refused start-up must say so quickly, not retry silently.
const FAIL_FAST: Duration = Duration::from_secs(10);

async fn build_error(config: match_stats::Config) -> String {
    let started = Instant::now();
    let error = match match_stats::App::build(config).await {
        Ok(_) => panic!("start-up should have been refused"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        started.elapsed() < FAIL_FAST,
        "refused after {:?}: {error}",
        started.elapsed()
    );
    error
}

/// Publishes the first 20 scenario messages through `js` and checks the service took them.
async fn flows(service: &Service, js: &jetstream::Context, config: &match_stats::Config) {
    let scenario = contract::scenario("small");
    publish_all(
        js,
        &config.streams.events_subject,
        scenario.messages[..20].iter().map(|m| m.payload.as_slice()),
    )
    .await;
    service.wait_received(20).await;
    crate::support::assert_conservation(&service.http, js, &config.streams.events_stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_user_and_password_and_token() {
    let nats = NatsServer::start_with(&["--user", "stats", "--pass", "s3cret"], None);
    let mut config = support::config(&nats, None);
    config.nats_auth.nats_user = Some("stats".into());
    config.nats_auth.nats_password = Some("s3cret".into());
    let service = Service::start(config.clone()).await;
    let client =
        async_nats::ConnectOptions::with_user_and_password("stats".into(), "s3cret".into())
            .connect(nats.url())
            .await
            .unwrap();
    flows(&service, &jetstream::new(client), &config).await;
    service.stop().await;

    config.nats_auth.nats_password = Some("wrong".into());
    let error = build_error(config).await;
    assert!(
        error.contains("cannot connect to NATS") && error.to_lowercase().contains("authorization"),
        "{error}"
    );

    let nats = NatsServer::start_with(&["--auth", "t0ken"], None);
    let mut config = support::config(&nats, None);
    config.nats_auth.nats_token = Some("t0ken".into());
    Service::start(config.clone()).await.stop().await;
    config.nats_auth.nats_token = None;
    let error = build_error(config).await;
    assert!(error.to_lowercase().contains("authorization"), "{error}");
}

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files.
fn pki(dir: &Path) -> Pki {
    // Distinct subject names: with rcgen's default one everywhere, OpenSSL (Redis) takes
    // a leaf for self-signed.
    let named = |names: Vec<String>, cn: &str| {
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
    };
    let mut ca_params = named(Vec::new(), "match-stats test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let server_key = KeyPair::generate().unwrap();
    let server = named(
        vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
        "127.0.0.1",
    )
    .signed_by(&server_key, &ca)
    .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = named(vec!["match-stats".to_owned()], "match-stats")
        .signed_by(&client_key, &ca)
        .unwrap();
    Pki {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server-key.pem", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client-key.pem", client_key.serialize_pem()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_mutual_tls_with_a_custom_ca() {
    let certs = tempfile::tempdir().unwrap();
    let pki = pki(certs.path());
    let tls = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    let nats = NatsServer::start_with(&[], Some(&tls));
    let mut config = support::config(&nats, None);
    config.nats_auth.nats_tls_ca = Some(pki.ca.clone());
    config.nats_auth.nats_tls_cert = Some(pki.client_cert.clone());
    config.nats_auth.nats_tls_key = Some(pki.client_key.clone());
    let service = Service::start(config.clone()).await;
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
        .require_tls(true)
        .connect(nats.url())
        .await
        .unwrap();
    flows(&service, &jetstream::new(client), &config).await;
    service.stop().await;

    // Without the client certificate the server refuses; without the CA the client does.
    let mut no_client_cert = config.clone();
    no_client_cert.nats_auth.nats_tls_cert = None;
    no_client_cert.nats_auth.nats_tls_key = None;
    let error = build_error(no_client_cert).await;
    assert!(error.contains("cannot connect to NATS"), "{error}");
    let mut no_ca = config;
    no_ca.nats_auth.nats_tls_ca = None;
    let error = build_error(no_ca).await;
    assert!(error.contains("cannot connect to NATS"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_a_password_and_a_clear_error_for_a_wrong_one() {
    // Characters a URL would misread (audit V15: the password was spliced into one).
    const PASSWORD: &str = "r3d/is#@:%41x";
    let nats = NatsServer::start();
    let redis = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let mut config = support::config(&nats, Some(&redis));
    config.cache.redis_password = PASSWORD.into();
    let service = Service::start(config.clone()).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    flows(&service, &js, &config).await;
    // Written through to the password-protected Redis.
    let escaped =
        percent_encoding::utf8_percent_encode(PASSWORD, percent_encoding::NON_ALPHANUMERIC);
    let client =
        redis::Client::open(format!("redis://:{escaped}@127.0.0.1:{}/0", redis.port())).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    wait_for_match_keys(&mut connection).await;
    // The password appears nowhere operators look.
    let stats = reqwest::get(format!("{}/api/v1/match-stats/system/stats", service.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ready = reqwest::get(format!("{}/ready", service.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !stats.contains(PASSWORD) && !ready.contains(PASSWORD),
        "no secret in /system/stats or /ready"
    );
    service.stop().await;

    config.cache.redis_password = "wrong".into();
    let error = build_error(config).await;
    assert!(error.contains("refused the credentials"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_mutual_tls() {
    let certs = tempfile::tempdir().unwrap();
    let pki = pki(certs.path());
    let nats = NatsServer::start();
    let redis = RedisServer::start_tls(&pki.server_cert, &pki.server_key, &pki.ca);
    let mut config = support::config(&nats, Some(&redis));
    config.cache.redis_tls_ca = Some(pki.ca.clone());
    config.cache.redis_tls_cert = Some(pki.client_cert.clone());
    config.cache.redis_tls_key = Some(pki.client_key.clone());
    let service = Service::start(config.clone()).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    flows(&service, &js, &config).await;

    // Read back over TLS with the same client certificate.
    let read = |path: &PathBuf| std::fs::read(path).unwrap();
    let client = redis::Client::build_with_tls(
        redis.url().as_str(),
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read(&pki.client_cert),
                client_key: read(&pki.client_key),
            }),
            root_cert: Some(read(&pki.ca)),
        },
    )
    .unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    wait_for_match_keys(&mut connection).await;
    service.stop().await;
}

/// An operator JWT (nats-jwt issues account and user JWTs, not operators').
fn operator_jwt(operator: &nats_jwt::KeyPair) -> String {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("match-stats-test-{now}"),
        "iat": now,
        "iss": operator.public_key(),
        "sub": operator.public_key(),
        "name": "match-stats test operator",
        "nats": {"type": "operator", "version": 2},
    });
    let claims = b64(claims.to_string().as_bytes());
    let signature = operator
        .sign(format!("{header}.{claims}").as_bytes())
        .unwrap();
    format!("{header}.{claims}.{}", b64(&signature))
}

fn creds_file(dir: &Path, name: &str, jwt: &str, seed: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_credentials_file_in_operator_mode() {
    use nats_jwt::{KeyPair, Token};

    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let account_jwt = Token::new_account(account.public_key())
        .name("stats")
        .sign(&operator);
    // JetStream in operator mode needs a system account.
    let system = KeyPair::new_account();
    let system_jwt = Token::new_account(system.public_key())
        .name("SYS")
        .sign(&operator);
    let config = format!(
        "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {}\n  {}: {}\n}}\n",
        operator_jwt(&operator),
        system.public_key(),
        account.public_key(),
        account_jwt,
        system.public_key(),
        system_jwt
    );
    let nats = NatsServer::start_with(&[], Some(&config));
    let dir = tempfile::tempdir().unwrap();

    let user = KeyPair::new_user();
    let user_jwt = Token::new_user(account.public_key(), user.public_key())
        .name("match-stats")
        .sign(&account);
    let mut settings = support::config(&nats, None);
    settings.nats_auth.nats_creds = Some(creds_file(
        dir.path(),
        "user.creds",
        &user_jwt,
        &user.seed().unwrap(),
    ));
    let client = match_stats::nats::connect(&settings)
        .await
        .expect("connects with the credentials file");
    client.flush().await.expect("the server accepted the user");

    // A user signed by an account the server does not know is refused at once.
    let stranger = KeyPair::new_account();
    let intruder = KeyPair::new_user();
    let intruder_jwt =
        Token::new_user(stranger.public_key(), intruder.public_key()).sign(&stranger);
    settings.nats_auth.nats_creds = Some(creds_file(
        dir.path(),
        "intruder.creds",
        &intruder_jwt,
        &intruder.seed().unwrap(),
    ));
    let error = build_error(settings).await;
    assert!(error.contains("cannot connect to NATS"), "{error}");
}

/// Waits until the service has written a match to Redis.
async fn wait_for_match_keys(connection: &mut redis::aio::MultiplexedConnection) {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("match_stats:match:*")
            .query_async(connection)
            .await
            .unwrap();
        if !keys.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing written to Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
