//! JSON comparison with the contract's tolerance: numbers equal to 1e-9 relative,
//! everything else exactly, every key on both sides.

use serde_json::Value;

/// Relative tolerance for floats.
pub const RELATIVE_TOLERANCE: f64 = 1e-9;

/// Every difference between `actual` and `expected`, one line each with its JSON path.
pub fn differences(actual: &Value, expected: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff("$", actual, expected, &mut out);
    out
}

/// Panics listing the differences, if any.
#[track_caller]
pub fn assert_close(actual: &Value, expected: &Value, what: &str) {
    let diffs = differences(actual, expected);
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

fn diff(path: &str, actual: &Value, expected: &Value, out: &mut Vec<String>) {
    match (actual, expected) {
        (Value::Number(a), Value::Number(e)) => {
            let (a, e) = (
                a.as_f64().unwrap_or(f64::NAN),
                e.as_f64().unwrap_or(f64::NAN),
            );
            let scale = a.abs().max(e.abs()).max(f64::MIN_POSITIVE);
            if a != e && (a - e).abs() / scale > RELATIVE_TOLERANCE {
                out.push(format!("{path}: {a} != expected {e}"));
            }
        }
        (Value::Object(a), Value::Object(e)) => {
            for (k, ev) in e {
                match a.get(k) {
                    Some(av) => diff(&format!("{path}.{k}"), av, ev, out),
                    None => out.push(format!("{path}.{k}: missing (expected {ev})")),
                }
            }
            for k in a.keys().filter(|k| !e.contains_key(*k)) {
                out.push(format!("{path}.{k}: unexpected key"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            if a.len() != e.len() {
                out.push(format!("{path}: {} items != expected {}", a.len(), e.len()));
            }
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                diff(&format!("{path}[{i}]"), av, ev, out);
            }
        }
        (a, e) if a == e => {}
        (a, e) => out.push(format!("{path}: {a} != expected {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_within_tolerance_are_equal_and_others_are_not() {
        assert!(differences(&json!({"a": 1.0000000000001}), &json!({"a": 1.0})).is_empty());
        assert!(differences(&json!({"a": 3}), &json!({"a": 3.0})).is_empty());
        assert_eq!(
            differences(&json!({"a": 1.001}), &json!({"a": 1.0})).len(),
            1
        );
        assert_eq!(differences(&json!({"a": null}), &json!({"a": 0})).len(), 1);
        assert_eq!(differences(&json!({}), &json!({"a": 0})).len(), 1);
        assert_eq!(differences(&json!({"b": 0}), &json!({})).len(), 1);
    }
}
