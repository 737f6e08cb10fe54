//! Any bytes through the decoder and validator; anything accepted through the match
//! aggregate (twice: the second time must be a duplicate) and the REST rendering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use match_stats_commands::{Match, Outcome, decode};

/// 2026-01-01T00:01:00.123Z, as the contract's vectors use.
const STORED_AT_MS: i64 = 1_767_225_660_123;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = decode(data, STORED_AT_MS) {
        let mut m = Match::new(event.match_id);
        let first = m.handle(&event, 1);
        assert!(matches!(first, Outcome::Applied(_)), "a new match applies its first event");
        assert_eq!(m.handle(&event, 2), Outcome::Duplicate);
        let _ = serde_json::to_vec(&m.view()).expect("views serialize");
    }
});
