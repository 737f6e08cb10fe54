//! The JSON Schema of an event in `docs/asyncapi.json` against the contract's data: every
//! payload the service accepts validates, and every payload rejected for a reason a
//! schema can express does not. Payloads are the JSON vectors as they are, and the
//! MessagePack vectors and scenario lines in their JSON form where that form says the
//! same (no timestamp extension, no `bin`, no non-string key, no NaN).

use match_stats_harness::contract;
use serde_json::Value;

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/asyncapi.json"),
    )
    .expect("docs/asyncapi.json");
    let doc: Value = serde_json::from_str(&text).expect("docs/asyncapi.json is JSON");
    assert_eq!(doc["asyncapi"], "3.0.0");
    jsonschema::draft7::new(&doc["components"]["schemas"]["Event"]).expect("a valid schema")
}

/// The JSON form of a payload, when it has one that says the same.
fn json_form(payload: &[u8]) -> Option<Value> {
    if payload.trim_ascii_start().starts_with(b"{") {
        return serde_json::from_slice(payload).ok();
    }
    let mut reader = payload;
    let value = rmpv::decode::read_value(&mut reader).ok()?;
    if !reader.is_empty() {
        return None;
    }
    to_json(&value)
}

fn to_json(value: &rmpv::Value) -> Option<Value> {
    use rmpv::Value as M;
    Some(match value {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(*b),
        M::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => n.into(),
            (_, Some(n)) => n.into(),
            _ => return None,
        },
        M::F32(f) => serde_json::Number::from_f64(f64::from(*f))?.into(),
        M::F64(f) => serde_json::Number::from_f64(*f)?.into(),
        M::String(s) => Value::String(s.as_str()?.to_owned()),
        M::Array(items) => Value::Array(items.iter().map(to_json).collect::<Option<_>>()?),
        M::Map(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| Some((k.as_str()?.to_owned(), to_json(v)?)))
                .collect::<Option<_>>()?,
        ),
        M::Binary(_) | M::Ext(..) => return None,
    })
}

/// Whether the schema should accept a payload the service decided `expect` for; `None`
/// when a schema cannot tell (the reason depends on the stream or the match).
fn schema_should_accept(expect: &str) -> Option<bool> {
    match expect {
        "accept" | "applied" | "duplicate" | "match_closed" => Some(true),
        "missing_field" | "invalid_field" | "unknown_event_type" | "malformed" => Some(false),
        _ => None, // too_large, timestamp_out_of_range (relative to the stored time)
    }
}

#[test]
fn the_event_schema_accepts_what_the_service_accepts_and_rejects_what_it_rejects() {
    let schema = schema();
    let mut checked = (0, 0);
    let mut check = |what: &str, payload: &[u8], expect: &str| {
        let (Some(should), Some(json)) = (schema_should_accept(expect), json_form(payload)) else {
            return;
        };
        let errors: Vec<String> = schema.iter_errors(&json).map(|e| e.to_string()).collect();
        assert_eq!(
            errors.is_empty(),
            should,
            "{what} (the service says {expect}): {json}\n{errors:?}"
        );
        if should {
            checked.0 += 1;
        } else {
            checked.1 += 1;
        }
    };
    let vectors = contract::vectors();
    for v in &vectors.vectors {
        check(&v.file, &v.payload(), &v.expect);
    }
    for m in contract::scenario("small").messages {
        check(&format!("scenario line {}", m.seq), &m.payload, &m.expect);
    }
    let (accepted, rejected) = checked;
    assert!(
        accepted > 1000 && rejected >= 10,
        "enough cases: {accepted} accepted, {rejected} rejected"
    );
    eprintln!(
        "event schema: {accepted} accepted payloads validate, {rejected} rejected ones do not"
    );
}

#[test]
fn the_json_vectors_themselves_validate() {
    let schema = schema();
    for v in contract::vectors().vectors {
        let payload = v.payload();
        if v.expect == "accept" && payload.trim_ascii_start().starts_with(b"{") {
            let json: Value = serde_json::from_slice(&payload).unwrap();
            assert!(schema.is_valid(&json), "{}: {json}", v.file);
        }
    }
}

/// The stat delta schema of `docs/asyncapi.json` accepts what the service publishes: every
/// delta of the small scenario (folded by the aggregate as the service does), a split
/// entry, a completed match's object, and names that read like statuses.
#[test]
fn the_stat_delta_schema_accepts_every_delta_of_the_scenario_and_a_split_one() {
    use match_stats_commands::{Match, MatchId, Outcome, StatDelta, decode};
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/asyncapi.json"),
    )
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let schema = jsonschema::draft7::new(&doc["components"]["schemas"]["StatDelta"]).unwrap();
    let check = |delta: &StatDelta| {
        let bytes = rmp_serde::to_vec_named(delta).unwrap();
        let json = to_json(&rmpv::decode::read_value(&mut bytes.as_slice()).unwrap()).unwrap();
        let errors: Vec<String> = schema.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{json}\n{errors:?}");
    };
    // As if the stream stored each line long after the scenario's day.
    let stored_at_ms = 4_102_444_800_000;
    let mut matches: std::collections::HashMap<MatchId, Match> = Default::default();
    let mut checked = 0;
    for (i, m) in contract::scenario("small").messages.iter().enumerate() {
        let Ok(event) = decode(&m.payload, stored_at_ms) else {
            continue;
        };
        let aggregate = matches
            .entry(event.match_id)
            .or_insert_with(|| Match::new(event.match_id));
        if let Outcome::Applied(entry) = aggregate.handle(&event, i as u64 + 1) {
            let completed =
                aggregate.stats().status == match_stats_commands::MatchStatus::Completed;
            let delta = StatDelta {
                match_id: event.match_id,
                entries: entry.split(7),
                match_view: completed.then(|| Box::new(aggregate.summary())),
            };
            check(&delta);
            checked += 1;
        }
    }
    assert!(checked > 1000, "{checked} deltas checked");
}
