//! Events as a game server would publish them, built by hand for tests that need one of a
//! kind rather than a contract scenario.

use serde_json::{Value, json};

/// A timestamp in range (2026-01-01T00:00:00Z, Unix milliseconds).
pub const T0: i64 = 1_767_225_600_000;

/// One event, JSON-encoded.
pub fn event(
    id: &str,
    match_id: &str,
    player: Option<&str>,
    kind: &str,
    at: i64,
    data: Value,
) -> Vec<u8> {
    let mut e = json!({
        "event_id": id, "match_id": match_id, "event_type": kind,
        "timestamp": at, "event_data": data,
    });
    if let Some(p) = player {
        e["player_id"] = json!(p);
    }
    serde_json::to_vec(&e).unwrap()
}
