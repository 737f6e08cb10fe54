//! `match-stats publish`: sends events typed or piped as JSON lines, one per line, to
//! `<EVENTS_SUBJECT>.<match_id>` with `Nats-Msg-Id` from `event_id`, and says for each
//! what the events stream did with it (stored at a sequence, or dropped as a duplicate).
//! For trying the service by hand without the `nats` CLI. A line that is not a JSON
//! object is sent as it is (to see how the service dead-letters it), with a warning.

use std::io::BufRead as _;

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage};
use clap::Args;
use serde_json::Value;

use crate::config::Config;

/// What to publish.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Read the JSON lines from this file instead of standard input.
    #[arg(long, value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// Encode each event as MessagePack (what game servers send) instead of JSON.
    #[arg(long)]
    pub msgpack: bool,
}

/// The subject token of an event's match: its `match_id` when it makes a valid subject
/// token, else `unknown` (the service dead-letters such an event).
fn subject_token(event: &Value) -> String {
    event
        .get("match_id")
        .and_then(Value::as_str)
        .filter(|m| {
            !m.is_empty()
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .unwrap_or("unknown")
        .to_owned()
}

/// Publishes every line; prints one result line each and a summary.
pub async fn run(config: &Config, args: PublishArgs) -> anyhow::Result<()> {
    let js = jetstream::new(crate::nats::connect(config).await?);
    let prefix = &config.streams.events_subject;
    let input: Box<dyn std::io::BufRead> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
        )),
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!("publish: type one JSON event per line (Ctrl-D ends), e.g.");
                eprintln!(
                    r#"  {{"event_id":"e1","match_id":"m1","event_type":"match_start","timestamp":"{}","event_data":{{"map_name":"dust"}}}}"#,
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                );
            }
            Box::new(std::io::stdin().lock())
        }
    };
    let (mut stored, mut duplicates) = (0u64, 0u64);
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed: Option<Value> = serde_json::from_str(line).ok().filter(Value::is_object);
        let (subject, msg_id, payload) = match &parsed {
            Some(event) => {
                let payload = if args.msgpack {
                    rmp_serde::to_vec_named(event).context("MessagePack")?
                } else {
                    line.as_bytes().to_vec()
                };
                let msg_id = event
                    .get("event_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                (
                    format!("{prefix}.{}", subject_token(event)),
                    msg_id,
                    payload,
                )
            }
            None => {
                eprintln!(
                    "publish: line {} is not a JSON object; sent as it is",
                    n + 1
                );
                (format!("{prefix}.unknown"), None, line.as_bytes().to_vec())
            }
        };
        let mut message = PublishMessage::build().payload(payload.into());
        if let Some(id) = &msg_id {
            message = message.message_id(id);
        }
        let ack = js
            .send_publish(subject.clone(), message)
            .await
            .with_context(|| format!("publishing line {}", n + 1))?
            .await
            .with_context(|| format!("the events stream did not store line {}", n + 1))?;
        if ack.duplicate {
            duplicates += 1;
            println!(
                "line {}: duplicate of event_id {} (dropped by NATS)",
                n + 1,
                msg_id.unwrap_or_default()
            );
        } else {
            stored += 1;
            println!(
                "line {}: stored as {} #{} on {subject}",
                n + 1,
                ack.stream,
                ack.sequence
            );
        }
    }
    eprintln!("publish: {stored} stored, {duplicates} duplicates");
    Ok(())
}
