//! `match-stats tail`: prints stat deltas (or dead letters) as they arrive, one readable
//! line or one JSON object each: what a game-server developer or an operator watches
//! while trying the service by hand. An ordered consumer of its own (ephemeral, nothing
//! left behind), from new messages on, or from the start with `--all`.

use std::io::Write as _;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use clap::Args;
use futures::StreamExt;
use match_stats_commands::{Change, FieldValue, StatDelta};
use serde_json::json;

use crate::command_side::{
    HEADER_DETAIL, HEADER_REASON, HEADER_SOURCE_SEQUENCE, HEADER_SOURCE_SUBJECT,
};
use crate::config::Config;

/// Changes shown per delta line before "+N more".
const CHANGES_SHOWN: usize = 8;

/// What to follow.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Only this match's deltas.
    #[arg(long = "match", value_name = "ID")]
    pub match_id: Option<String>,
    /// Follow the dead letters instead of the deltas.
    #[arg(long)]
    pub dead_letters: bool,
    /// Only dead letters of this reason (e.g. malformed, invalid_field).
    #[arg(long, value_name = "R", requires = "dead_letters")]
    pub reason: Option<String>,
    /// One JSON object per line instead of readable text.
    #[arg(long)]
    pub json: bool,
    /// From the start of the stream instead of new messages only.
    #[arg(long)]
    pub all: bool,
}

/// Follows the stream until interrupted.
pub async fn run(config: &Config, args: TailArgs) -> anyhow::Result<()> {
    let names = &config.streams;
    let js = jetstream::new(crate::nats::connect(config).await?);
    let (stream, subject) = if args.dead_letters {
        let reason = args.reason.as_deref().unwrap_or("*");
        (
            &names.dead_letter_stream,
            format!("{}.{reason}", names.dead_letter_subject),
        )
    } else {
        let id = args.match_id.as_deref().unwrap_or("*");
        (
            &names.deltas_stream,
            format!("{}.{id}", names.deltas_subject),
        )
    };
    let consumer = js
        .get_stream(stream)
        .await
        .with_context(|| format!("stream {stream} (is the service set up on this NATS?)"))?
        .create_consumer(OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: if args.all {
                DeliverPolicy::All
            } else {
                DeliverPolicy::New
            },
            ..Default::default()
        })
        .await?;
    eprintln!("tail: following {subject} on {stream} (Ctrl-C stops)");
    let mut messages = consumer.messages().await?;
    let mut out = std::io::stdout().lock();
    while let Some(message) = messages.next().await {
        let message = message?;
        let line = if args.dead_letters {
            dead_letter_line(&message, args.json)
        } else {
            match StatDelta::from_msgpack(&message.payload) {
                Ok(delta) if args.json => serde_json::to_string(&delta)?,
                Ok(delta) => delta_line(&delta),
                Err(error) => format!("(not a StatDelta on {}: {error})", message.subject),
            }
        };
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn value(v: &FieldValue) -> String {
    match v {
        FieldValue::Null => "-".into(),
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::Int(i) => i.to_string(),
        FieldValue::Float(f) => format!("{f:.2}"),
        FieldValue::Text(t) => t.to_string(),
        FieldValue::FirstBlood(fb) => format!("{}>{}", fb.killer_id, fb.victim_id),
    }
}

fn change(c: &Change) -> String {
    let who = c
        .player_id
        .map_or_else(|| "match".to_owned(), |p| p.to_string());
    let field = serde_json::to_value(c.field)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", c.field));
    let key = c.key.map(|k| format!("[{k}]")).unwrap_or_default();
    format!(
        "{who}.{field}{key} {}→{}",
        value(&c.before),
        value(&c.after)
    )
}

/// `<match> v<first>[-<last>] (<n> events) <changes>`.
fn delta_line(delta: &StatDelta) -> String {
    let first = delta.entries.first().map_or(0, |e| e.version);
    let last = delta.entries.last().map_or(0, |e| e.version);
    let versions = if first == last {
        format!("v{first}")
    } else {
        format!("v{first}-{last}")
    };
    let changes: Vec<&Change> = delta.entries.iter().flat_map(|e| &e.changes).collect();
    let mut shown: Vec<String> = changes
        .iter()
        .take(CHANGES_SHOWN)
        .map(|c| change(c))
        .collect();
    if changes.len() > CHANGES_SHOWN {
        shown.push(format!("+{} more", changes.len() - CHANGES_SHOWN));
    }
    let ended = match &delta.match_view {
        Some(view) if view.status == match_stats_commands::MatchStatus::Completed => " [completed]",
        _ => "",
    };
    format!(
        "{} {versions} ({} events){ended}: {}",
        delta.match_id,
        delta.entries.len(),
        shown.join(", ")
    )
}

fn header(message: &jetstream::Message, name: &str) -> String {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map_or_else(String::new, |v| v.as_str().to_owned())
}

/// `<reason> <source subject> #<source seq>: <detail> | <payload preview>`.
fn dead_letter_line(message: &jetstream::Message, as_json: bool) -> String {
    let reason = header(message, HEADER_REASON);
    let detail = header(message, HEADER_DETAIL);
    let subject = header(message, HEADER_SOURCE_SUBJECT);
    let sequence = header(message, HEADER_SOURCE_SEQUENCE);
    let text = std::str::from_utf8(&message.payload).ok();
    if as_json {
        use base64::Engine as _;
        let payload = match text {
            Some(text) => json!({"text": text}),
            None => {
                json!({"base64": base64::engine::general_purpose::STANDARD.encode(&message.payload)})
            }
        };
        return json!({
            "reason": reason,
            "detail": detail,
            "source_subject": subject,
            "source_sequence": sequence.parse::<u64>().ok(),
            "payload": payload,
        })
        .to_string();
    }
    let preview: String = match text {
        Some(text) => text.chars().take(120).collect(),
        None => format!("{} bytes of binary (MessagePack?)", message.payload.len()),
    };
    format!("{reason} {subject} #{sequence}: {detail} | {preview}")
}
