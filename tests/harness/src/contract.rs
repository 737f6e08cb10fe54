//! The contract's test data: the repository's own copy in `tests/data/contract/` (or
//! `MATCH_STATS_CONTRACT_DIR`). `contract_copy_is_current` in the integration tests checks
//! that copy against `../shared/contract` whenever that folder exists beside the
//! repository.

use std::path::PathBuf;

use base64::Engine;
use serde::Deserialize;

/// The contract folder: the repository's copy.
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MATCH_STATS_CONTRACT_DIR") {
        return dir.into();
    }
    data_dir().join("contract")
}

/// `tests/data/`: the contract's copy and the project's own cases.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// The shared contract folder beside the repository (`../shared/contract`), if present.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/contract");
    dir.join("CONTRACT.md").exists().then_some(dir)
}

/// `vectors/expected.json`.
#[derive(Debug, Deserialize)]
pub struct Vectors {
    /// The stream's stored time to validate against.
    pub stored_at_ms: i64,
    /// One entry per file.
    pub vectors: Vec<Vector>,
}

/// One vector and its expected outcome.
#[derive(Debug, Deserialize)]
pub struct Vector {
    /// File name in `vectors/`.
    pub file: String,
    /// `accept` or a rejection reason.
    pub expect: String,
    /// The normalized event, for some accepted vectors.
    pub normalized: Option<serde_json::Value>,
}

impl Vector {
    /// The raw payload.
    pub fn payload(&self) -> Vec<u8> {
        std::fs::read(dir().join("vectors").join(&self.file)).expect("vector file")
    }
}

/// Reads `vectors/expected.json`.
pub fn vectors() -> Vectors {
    let text = std::fs::read_to_string(dir().join("vectors/expected.json"))
        .expect("vectors/expected.json");
    serde_json::from_str(&text).expect("vectors/expected.json parses")
}

/// One published message of a scenario.
#[derive(Debug, Clone)]
pub struct ScenarioMessage {
    /// Publish order, from 1.
    pub seq: u64,
    /// The raw payload.
    pub payload: Vec<u8>,
    /// `applied`, `duplicate` or a rejection reason.
    pub expect: String,
}

/// A scenario: its messages and `expected.json`.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Messages in publish order.
    pub messages: Vec<ScenarioMessage>,
    /// `expected.json`: `counts`, `matches`, `leaderboards`.
    pub expected: serde_json::Value,
}

/// Reads `scenarios/<name>/`.
pub fn scenario(name: &str) -> Scenario {
    #[derive(Deserialize)]
    struct Line {
        seq: u64,
        payload_b64: String,
        expect: String,
    }
    let base = dir().join("scenarios").join(name);
    let text = std::fs::read_to_string(base.join("events.jsonl")).expect("events.jsonl");
    let messages = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let line: Line = serde_json::from_str(l).expect("events.jsonl line");
            ScenarioMessage {
                seq: line.seq,
                payload: base64::engine::general_purpose::STANDARD
                    .decode(line.payload_b64)
                    .expect("base64 payload"),
                expect: line.expect,
            }
        })
        .collect();
    let expected = serde_json::from_str(
        &std::fs::read_to_string(base.join("expected.json")).expect("expected.json"),
    )
    .expect("expected.json parses");
    Scenario { messages, expected }
}
