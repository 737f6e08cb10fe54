//! The command line: `match-stats [serve | demo-feed | loadgen | tail | publish |
//! erase-player | config]` over the
//! service's settings ([`Config`]), and the two ways it reports on them: one line per
//! invalid setting ([`describe_error`], exit code [`EXIT_CONFIG`]) and the effective
//! settings as JSON ([`effective`]).

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::tools::{demo::DemoArgs, loadgen::LoadArgs, publish::PublishArgs, tail::TailArgs};

/// Exit code for an invalid configuration (`EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// match-stats: live match statistics from a NATS JetStream event stream.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to run (default: the service).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Service settings.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Publish simulated matches to the events stream, as game servers would.
    DemoFeed(DemoArgs),
    /// Publish N matches of P players flat out or at a rate, and measure freshness
    /// (publish to delta, optionally publish to visible over REST).
    Loadgen(LoadArgs),
    /// Print stat deltas (or dead letters) as they arrive, one line or JSON object each.
    Tail(TailArgs),
    /// Publish events typed or piped as JSON lines (one per line; Nats-Msg-Id from
    /// event_id), printing what the events stream did with each.
    Publish(PublishArgs),
    /// Erase one player's match history from the history database (DATABASE_URL), and
    /// keep it from being written again (privacy requests).
    ErasePlayer {
        /// The player's id.
        player_id: String,
    },
    /// Print the effective settings as JSON (each with its source; secrets redacted) and
    /// exit.
    Config,
}

/// One line naming the setting (its environment variable and flag) and the problem:
/// every `'--flag <VALUE>'` clap mentions becomes `ENV_VAR (--flag)`.
pub fn describe_error(error: &clap::Error) -> String {
    use clap::CommandFactory;
    let text = error.to_string();
    let mut line = text
        .lines()
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_owned();
    for arg in Cli::command().get_arguments() {
        let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
            continue;
        };
        let env = env.to_string_lossy();
        let value = arg
            .get_value_names()
            .and_then(|names| names.first().map(|n| n.to_string()))
            .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
        let forms = [
            format!("'--{long} <{value}>'"),
            format!("--{long} <{value}>"),
            format!("'--{long}'"),
        ];
        for quoted in forms {
            line = line.replace(&quoted, &format!("{env} (--{long})"));
        }
    }
    line
}

/// The effective settings: `{ENV_VAR: {"value", "source"}}`, where source is `default`,
/// `env` or `flag`, and secrets show as `"***"`.
pub fn effective(matches: &clap::ArgMatches) -> serde_json::Value {
    use clap::CommandFactory;
    use clap::parser::ValueSource;
    let mut out = serde_json::Map::new();
    for arg in Cli::command().get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let id = arg.get_id().as_str();
        let value = matches
            .get_raw(id)
            .and_then(|mut v| v.next())
            .map(|v| v.to_string_lossy().into_owned());
        let source = match matches.value_source(id) {
            Some(ValueSource::DefaultValue) => "default",
            Some(ValueSource::EnvVariable) => "env",
            Some(ValueSource::CommandLine) => "flag",
            _ => "unset",
        };
        let value = match value {
            Some(_) if arg.is_hide_env_values_set() => serde_json::json!("***"),
            Some(v) => serde_json::json!(v),
            None => serde_json::Value::Null,
        };
        out.insert(
            env.to_string_lossy().into_owned(),
            serde_json::json!({"value": value, "source": source}),
        );
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_nats_url_are_never_shown() {
        let mut cli = Cli::try_parse_from([
            "match-stats",
            "--nats-url",
            "nats://u:s3cret@a:4222,nats://b:4222",
        ])
        .unwrap();
        assert_eq!(
            cli.config.nats_url_redacted(),
            "nats://***@a:4222,nats://b:4222"
        );
        cli.config.nats_url = "tls://token@c:4222".into();
        assert_eq!(cli.config.nats_url_redacted(), "tls://***@c:4222");
    }

    #[test]
    fn every_flag_names_its_value_as_its_variable() {
        use clap::CommandFactory;
        let mut differ = Vec::new();
        for arg in Cli::command().get_arguments() {
            let (Some(env), Some(names)) = (arg.get_env(), arg.get_value_names()) else {
                continue;
            };
            let env = env.to_string_lossy();
            if names[0].as_str() != env {
                differ.push(format!("{} <{}>", env, names[0]));
            }
        }
        assert!(
            differ.is_empty(),
            "value names that are not their variables: {differ:?}"
        );
    }

    #[test]
    fn defaults_parse_and_flags_override() {
        let cli = Cli::try_parse_from(["match-stats", "--batch-size", "7"]).unwrap();
        assert_eq!(cli.config.batch_size, 7);
        assert_eq!(cli.config.streams.events_filter(), "match_stats.events.*");
        let err = Cli::try_parse_from(["match-stats", "--batch-size", "0"]).unwrap_err();
        assert!(err.to_string().contains("batch-size"), "{err}");
    }
}
