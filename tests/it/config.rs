//! Every environment variable, through the real binary: a valid value is taken (as
//! `match-stats config` reports, with source `env`), an invalid one stops start-up with
//! exit code 64 and one line naming the variable. The list is checked against the
//! variables the binary declares, so a new setting without a case here fails.

use std::collections::BTreeSet;
use std::process::Command;

use clap::CommandFactory;
use match_stats::cli::Cli;

/// An invalid value and what the error must say.
type Invalid = Option<(&'static str, &'static str)>;

/// `(variable, valid value, invalid value and what the error must say)`.
const CASES: &[(&str, &str, Invalid)] = &[
    ("WORKERS", "2", Some(("0", "invalid value '0' for WORKERS"))),
    (
        "HTTP_WORKERS",
        "0",
        Some(("x", "invalid value 'x' for HTTP_WORKERS")),
    ),
    (
        "BACKGROUND_WORKERS",
        "0",
        Some(("-1", "invalid value '-1' for BACKGROUND_WORKERS")),
    ),
    (
        "BACKGROUND_NICE",
        "19",
        Some(("20", "invalid value '20' for BACKGROUND_NICE")),
    ),
    (
        "STREAM_MAX_CLIENTS",
        "100",
        Some(("0", "invalid value '0' for STREAM_MAX_CLIENTS")),
    ),
    ("CORS_ALLOWED_ORIGINS", "https://overlay.example", None),
    (
        "COMPLETED_CACHE_MAX_AGE",
        "30s",
        Some(("soon", "invalid value 'soon' for COMPLETED_CACHE_MAX_AGE")),
    ),
    ("API_KEYS", "key-one,key-two", None),
    ("OTEL_SERVICE_NAME", "match-stats-eu", None),
    (
        "DATABASE_URL",
        "postgres://stats:secret@db:5432/match_stats",
        None,
    ),
    (
        "HISTORY_MIN_MATCHES",
        "3",
        Some(("0", "invalid value '0' for HISTORY_MIN_MATCHES")),
    ),
    (
        "RATE_LIMIT_PER_SECOND",
        "20",
        Some(("-1", "invalid value '-1' for RATE_LIMIT_PER_SECOND")),
    ),
    (
        "RATE_LIMIT_BURST",
        "40",
        Some(("0", "invalid value '0' for RATE_LIMIT_BURST")),
    ),
    (
        "REDIS_TLS",
        "true",
        Some(("sure", "invalid value 'sure' for REDIS_TLS")),
    ),
    ("REDIS_TLS_CA", "/etc/redis/ca.pem", None),
    (
        "REDIS_TLS_CERT",
        "/etc/redis/client.pem",
        Some(("/etc/redis/client.pem", "REDIS_TLS_KEY (--redis-tls-key)")),
    ),
    (
        "REDIS_TLS_KEY",
        "/etc/redis/client-key.pem",
        Some((
            "/etc/redis/client-key.pem",
            "REDIS_TLS_CERT (--redis-tls-cert)",
        )),
    ),
    (
        "PPROF_ENABLED",
        "true",
        Some(("yes please", "invalid value 'yes please' for PPROF_ENABLED")),
    ),
    (
        "HTTP_ADDR",
        ":9090",
        Some(("nope", "invalid value 'nope' for HTTP_ADDR")),
    ),
    (
        "CAPACITY_PLAYERS",
        "500000",
        Some(("0", "invalid value '0' for CAPACITY_PLAYERS")),
    ),
    (
        "CAPACITY_MATCHES",
        "250000",
        Some(("-1", "invalid value '-1' for CAPACITY_MATCHES")),
    ),
    (
        "PARTITION_STALL_AFTER",
        "1m",
        Some(("later", "invalid value 'later' for PARTITION_STALL_AFTER")),
    ),
    (
        "ADMIN_ADDR",
        "127.0.0.1:9091",
        Some(("nope", "invalid value 'nope' for ADMIN_ADDR")),
    ),
    (
        "HTTP_HEADER_READ_TIMEOUT",
        "3s",
        Some(("3", "invalid value '3' for HTTP_HEADER_READ_TIMEOUT")),
    ),
    (
        "HTTP_REQUEST_TIMEOUT",
        "20s",
        Some(("soon", "invalid value 'soon' for HTTP_REQUEST_TIMEOUT")),
    ),
    (
        "HTTP_MAX_CONNECTIONS",
        "100",
        Some(("0", "invalid value '0' for HTTP_MAX_CONNECTIONS")),
    ),
    (
        "HTTP_MAX_CONCURRENT_REQUESTS",
        "64",
        Some(("0", "invalid value '0' for HTTP_MAX_CONCURRENT_REQUESTS")),
    ),
    (
        "LOG_LEVEL",
        "debug",
        Some(("=[", "invalid value '=[' for LOG_LEVEL")),
    ),
    (
        "LOG_FORMAT",
        "json",
        Some(("xml", "invalid value 'xml' for LOG_FORMAT")),
    ),
    ("NATS_URL", "nats://10.0.0.1:4222", None),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", None),
    (
        "NATS_USER",
        "stats",
        Some(("stats", "NATS_PASSWORD (--nats-password)")),
    ),
    (
        "NATS_PASSWORD",
        "s3cret",
        Some(("s3cret", "NATS_USER (--nats-user)")),
    ),
    ("NATS_TOKEN", "t0ken", None),
    ("NATS_CREDS", "/etc/nats/user.creds", None),
    ("NATS_TLS_CA", "/etc/nats/ca.pem", None),
    (
        "NATS_TLS_CERT",
        "/etc/nats/client.pem",
        Some(("/etc/nats/client.pem", "NATS_TLS_KEY (--nats-tls-key)")),
    ),
    (
        "NATS_TLS_KEY",
        "/etc/nats/client-key.pem",
        Some((
            "/etc/nats/client-key.pem",
            "NATS_TLS_CERT (--nats-tls-cert)",
        )),
    ),
    (
        "NATS_TLS_REQUIRED",
        "true",
        Some(("maybe", "invalid value 'maybe' for NATS_TLS_REQUIRED")),
    ),
    (
        "EVENTS_STREAM",
        "EVENTS2",
        Some(("a.b", "invalid value 'a.b' for EVENTS_STREAM")),
    ),
    (
        "EVENTS_SUBJECT",
        "game.events",
        Some(("game.*", "invalid value 'game.*' for EVENTS_SUBJECT")),
    ),
    (
        "EVENTS_DUPLICATE_WINDOW",
        "5m",
        Some(("5", "invalid value '5' for EVENTS_DUPLICATE_WINDOW")),
    ),
    (
        "DELTAS_STREAM",
        "DELTAS2",
        Some(("a b", "invalid value 'a b' for DELTAS_STREAM")),
    ),
    (
        "DELTAS_SUBJECT",
        "game.deltas",
        Some((
            "game..deltas",
            "invalid value 'game..deltas' for DELTAS_SUBJECT",
        )),
    ),
    (
        "DELTAS_DUPLICATE_WINDOW",
        "2h",
        Some(("soon", "invalid value 'soon' for DELTAS_DUPLICATE_WINDOW")),
    ),
    (
        "DEAD_LETTER_STREAM",
        "DLQ",
        Some(("d*", "invalid value 'd*' for DEAD_LETTER_STREAM")),
    ),
    (
        "DEAD_LETTER_SUBJECT",
        "game.dlq",
        Some(("game.>", "invalid value 'game.>' for DEAD_LETTER_SUBJECT")),
    ),
    (
        "COMPLETED_BUCKET",
        "completed2",
        Some(("a.b", "invalid value 'a.b' for COMPLETED_BUCKET")),
    ),
    (
        "SNAPSHOT_BUCKET",
        "snapshots2",
        Some(("a/b", "invalid value 'a/b' for SNAPSHOT_BUCKET")),
    ),
    (
        "CONSUMER_NAME",
        "stats-2",
        Some(("a.b", "invalid value 'a.b' for CONSUMER_NAME")),
    ),
    (
        "PARTITIONS",
        "32",
        Some(("0", "invalid value '0' for PARTITIONS")),
    ),
    (
        "PARTITION_PIN_TIMEOUT",
        "20s",
        Some(("never", "invalid value 'never' for PARTITION_PIN_TIMEOUT")),
    ),
    (
        "STREAM_REPLICAS",
        "3",
        Some(("6", "invalid value '6' for STREAM_REPLICAS")),
    ),
    (
        "BATCH_SIZE",
        "512",
        Some(("0", "invalid value '0' for BATCH_SIZE")),
    ),
    (
        "BATCH_LINGER",
        "5ms",
        Some(("soon", "invalid value 'soon' for BATCH_LINGER")),
    ),
    (
        "DELTA_FORMAT",
        "3",
        Some(("4", "invalid value '4' for DELTA_FORMAT")),
    ),
    (
        "BUFFER_SIZE",
        "500",
        Some(("0", "invalid value '0' for BUFFER_SIZE")),
    ),
    (
        "ACK_WAIT",
        "45s",
        Some(("45", "invalid value '45' for ACK_WAIT")),
    ),
    (
        "READY_MAX_PENDING",
        "100",
        Some(("-1", "invalid value '-1' for READY_MAX_PENDING")),
    ),
    (
        "SHUTDOWN_GRACE",
        "20s",
        Some((
            "1 fortnight",
            "invalid value '1 fortnight' for SHUTDOWN_GRACE",
        )),
    ),
    ("REDIS_ADDR", "redis.local:6380", None),
    ("REDIS_USERNAME", "stats", None),
    ("REDIS_PASSWORD", "r3dis", None),
    (
        "REDIS_DB",
        "3",
        Some(("three", "invalid value 'three' for REDIS_DB")),
    ),
    ("REDIS_PREFIX", "ms:", None),
    (
        "REDIS_TIMEOUT",
        "80ms",
        Some(("fast", "invalid value 'fast' for REDIS_TIMEOUT")),
    ),
    (
        "REDIS_WRITE_TIMEOUT",
        "2s",
        Some(("soon", "invalid value 'soon' for REDIS_WRITE_TIMEOUT")),
    ),
    (
        "CACHE_TTL_ACTIVE",
        "20m",
        Some(("20", "invalid value '20' for CACHE_TTL_ACTIVE")),
    ),
    (
        "COMPLETED_RETENTION",
        "48h",
        Some((
            "two days",
            "invalid value 'two days' for COMPLETED_RETENTION",
        )),
    ),
    (
        "CACHE_WRITE_INTERVAL",
        "250ms",
        Some(("-1s", "invalid value '-1s' for CACHE_WRITE_INTERVAL")),
    ),
    (
        "CACHE_RESYNC_INTERVAL",
        "1m",
        Some(("x", "invalid value 'x' for CACHE_RESYNC_INTERVAL")),
    ),
    (
        "SNAPSHOT_EVERY_EVENTS",
        "5000",
        Some(("0", "invalid value '0' for SNAPSHOT_EVERY_EVENTS")),
    ),
    (
        "SNAPSHOT_INTERVAL",
        "10s",
        Some(("10", "invalid value '10' for SNAPSHOT_INTERVAL")),
    ),
    (
        "MATCH_IDLE_TIMEOUT",
        "15m",
        Some(("15", "invalid value '15' for MATCH_IDLE_TIMEOUT")),
    ),
    (
        "COMPLETED_MEMORY_RETENTION",
        "12h",
        Some(("12", "invalid value '12' for COMPLETED_MEMORY_RETENTION")),
    ),
    (
        "EVENTS_MAX_AGE",
        "14d",
        Some(("2 moons", "invalid value '2 moons' for EVENTS_MAX_AGE")),
    ),
];

/// Companions a variable needs to be valid on its own (they are required together).
fn companions(var: &str) -> &'static [(&'static str, &'static str)] {
    match var {
        "NATS_USER" => &[("NATS_PASSWORD", "s3cret")],
        "NATS_PASSWORD" => &[("NATS_USER", "stats")],
        "NATS_TLS_CERT" => &[("NATS_TLS_KEY", "/k.pem")],
        "NATS_TLS_KEY" => &[("NATS_TLS_CERT", "/c.pem")],
        "REDIS_TLS_CERT" => &[("REDIS_TLS_KEY", "/k.pem")],
        "REDIS_TLS_KEY" => &[("REDIS_TLS_CERT", "/c.pem")],
        _ => &[],
    }
}

/// The binary with only `vars` set (nothing inherited from the test's environment).
fn binary(vars: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_match-stats"))
        .env_clear()
        .envs(vars.iter().copied())
        .args(args)
        .output()
        .expect("run match-stats")
}

#[test]
fn every_variable_has_a_case() {
    let declared: BTreeSet<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    let tested: BTreeSet<String> = CASES.iter().map(|(v, _, _)| v.to_string()).collect();
    assert_eq!(
        declared, tested,
        "every environment variable has a case here"
    );
}

#[test]
fn every_variable_parses_and_its_invalid_value_names_it() {
    for (var, valid, invalid) in CASES {
        let mut vars = vec![(*var, *valid)];
        vars.extend(companions(var).iter().copied());
        let out = binary(&vars, &["config"]);
        assert!(
            out.status.success(),
            "{var}={valid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let settings: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("config prints JSON");
        assert_eq!(settings[var]["source"], "env", "{var}");
        let shown = settings[var]["value"].as_str().unwrap();
        if [
            "REDIS_PASSWORD",
            "NATS_PASSWORD",
            "NATS_TOKEN",
            "API_KEYS",
            "DATABASE_URL",
        ]
        .contains(var)
        {
            assert_eq!(shown, "***", "{var} is redacted");
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains(valid),
                "{var}'s value never printed"
            );
        } else {
            assert_eq!(shown, *valid, "{var}");
        }

        if let Some((bad, message)) = invalid {
            // Alone (without its companion) for the pairs; a bad value for the rest.
            let out = binary(&[(*var, *bad)], &["config"]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{var}={bad}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{var}: one line: {stderr}");
            assert!(
                stderr.starts_with("match-stats: invalid configuration: ")
                    && stderr.contains(message),
                "{var}: {stderr}"
            );
        }
    }
}

#[test]
fn a_flag_overrides_its_variable_and_help_lists_every_variable() {
    let out = binary(&[("BATCH_SIZE", "512")], &["--batch-size", "64", "config"]);
    let settings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            settings["BATCH_SIZE"]["value"].as_str(),
            settings["BATCH_SIZE"]["source"].as_str()
        ),
        (Some("64"), Some("flag"))
    );
    let help = String::from_utf8(binary(&[], &["--help"]).stdout).unwrap();
    for (var, _, _) in CASES {
        assert!(
            help.contains(&format!("[env: {var}")),
            "--help documents {var}"
        );
    }
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(help.trim_end()),
        "README.md's `match-stats --help` block is the binary's --help (regenerate it)"
    );
}
