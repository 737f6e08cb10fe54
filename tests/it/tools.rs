//! The hand tools as processes against a real service: `match-stats publish` sends JSON
//! lines (a repeated `event_id` dropped by NATS, a line that is not JSON sent as it is),
//! `match-stats tail` prints the resulting deltas and, with `--dead-letters`, the
//! rejections, as lines and as JSON.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use match_stats_harness::NatsServer;
use serde_json::Value;

use crate::support::ServiceProcess;

fn tool(nats: &NatsServer, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_match-stats"));
    command.args(args).env("NATS_URL", nats.url());
    command
}

/// Runs `tail` with `args` until it printed `n` lines on stdout.
fn tail_lines(nats: &NatsServer, args: &[&str], n: usize) -> Vec<String> {
    tail_until(nats, args, |lines| lines.len() >= n)
}

/// Runs `tail` with `args` until its stdout lines satisfy `done`.
fn tail_until(nats: &NatsServer, args: &[&str], done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut child = tool(nats, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tail");
    let (sender, receiver) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while !done(&lines) {
        match receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("tail {args:?} printed what was expected: {lines:?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_sends_json_lines_and_tail_prints_deltas_and_dead_letters() {
    let nats = NatsServer::start();
    let _service = ServiceProcess::start(&nats).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let event = |id: &str, kind: &str, player: &str, data: &str| {
        let player = if player.is_empty() {
            String::new()
        } else {
            format!(r#""player_id":"{player}","#)
        };
        format!(
            r#"{{"event_id":"{id}","match_id":"tools-1",{player}"event_type":"{kind}","timestamp":"{now}","event_data":{data}}}"#
        )
    };
    let lines = [
        event("t1", "match_start", "", r#"{"map_name":"dust"}"#),
        event("t2", "player_join", "ana", r#"{"player_name":"Ana"}"#),
        event("t3", "player_join", "ben", "{}"),
        event(
            "t4",
            "kill",
            "ana",
            r#"{"killer_id":"ana","victim_id":"ben","weapon":"ak"}"#,
        ),
        event(
            "t4",
            "kill",
            "ana",
            r#"{"killer_id":"ana","victim_id":"ben","weapon":"ak"}"#,
        ),
        event("t5", "teleport", "ana", "{}"),
        "not json at all".to_owned(),
    ];
    let mut publish = tool(&nats, &["publish"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start publish");
    publish
        .stdin
        .take()
        .unwrap()
        .write_all((lines.join("\n") + "\n").as_bytes())
        .unwrap();
    let output = publish.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let results: Vec<&str> = stdout.lines().collect();
    assert_eq!(results.len(), 7, "{stdout}");
    assert!(results[0].contains("stored as MATCH_EVENTS #1 on match_stats.events.tools-1"));
    assert!(
        results[4].contains("duplicate of event_id t4"),
        "{}",
        results[4]
    );
    assert!(
        results[6].contains("match_stats.events.unknown"),
        "{}",
        results[6]
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("6 stored, 1 duplicates"), "{stderr}");
    assert!(stderr.contains("line 7 is not a JSON object"), "{stderr}");

    // Deltas: four applied events (versions 1..=4), as JSON StatDeltas, then as lines.
    let versions = |lines: &[String]| -> Vec<u64> {
        lines
            .iter()
            .flat_map(|l| {
                let delta: Value = serde_json::from_str(l).unwrap();
                assert_eq!(delta["match_id"], "tools-1");
                delta["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["version"].as_u64().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let json_lines = tail_until(
        &nats,
        &["tail", "--all", "--json", "--match", "tools-1"],
        |lines| versions(lines).len() >= 4,
    );
    assert_eq!(
        versions(&json_lines),
        [1, 2, 3, 4],
        "each version once, in order"
    );
    let readable = tail_lines(&nats, &["tail", "--all"], 1);
    assert!(readable[0].starts_with("tools-1 v1"), "{readable:?}");

    // Dead letters: the unknown type and the line that was not JSON, each with its reason.
    let dead = tail_lines(&nats, &["tail", "--all", "--dead-letters", "--json"], 2);
    // (Two partitions: in either order.)
    let mut reasons: Vec<String> = dead
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["malformed", "unknown_event_type"]);
    let only = tail_lines(
        &nats,
        &["tail", "--all", "--dead-letters", "--reason", "malformed"],
        1,
    );
    assert!(
        only[0].starts_with("malformed match_stats.events.unknown"),
        "{only:?}"
    );
    assert!(only[0].contains("not json at all"));
}
