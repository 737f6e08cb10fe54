//! Events the service writes itself, encoded as a game server would publish them.
//!
//! Today one: the `match_end` that ends an idle match (README, "Match lifecycle"), in JSON
//! so that it reads well in the events stream.

use serde::Serialize;

use crate::event::TimestampMs;
use crate::id::MatchId;

#[derive(Serialize)]
struct MatchEnd<'a> {
    event_id: &'a str,
    match_id: MatchId,
    event_type: &'static str,
    timestamp: TimestampMs,
    event_data: EndReason,
}

#[derive(Serialize)]
struct EndReason {
    reason: &'static str,
}

/// The `match_end` of an idle match: at its `last_update`, with `event_data.reason`
/// `idle_timeout`.
pub fn idle_match_end(event_id: &str, match_id: MatchId, last_update: TimestampMs) -> Vec<u8> {
    serde_json::to_vec(&MatchEnd {
        event_id,
        match_id,
        event_type: "match_end",
        timestamp: last_update,
        event_data: EndReason {
            reason: "idle_timeout",
        },
    })
    .expect("events serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_match_end_decodes_as_a_match_end_at_last_update() {
        let id = MatchId::parse("m-1").unwrap();
        let payload = idle_match_end("idle-m-1-7", id, 1_767_225_600_000);
        let event = crate::decode(&payload, 1_767_225_600_000).expect("valid");
        assert_eq!(event.match_id, id);
        assert_eq!(event.event_id.as_str(), "idle-m-1-7");
        assert_eq!(event.timestamp_ms, 1_767_225_600_000);
        assert!(matches!(event.kind, crate::EventKind::MatchEnd));
    }
}
