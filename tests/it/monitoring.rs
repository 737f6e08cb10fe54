//! The operator's kit: the alert rules parse (`promtool check rules`) and pass their unit
//! tests (`promtool test rules`, k8s/monitoring/alerts.test.yaml), and every series an
//! alert or a dashboard panel names is one the service exports.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("k8s/monitoring"))
        .output()
        .expect("promtool: `make deps` installs Debian's prometheus package");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

/// The `match_stats_*` and `process_*` names in a text.
fn series_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices("match_stats_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

/// Every series the service describes (histograms also as their `_bucket`, `_sum`,
/// `_count`).
fn exported() -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for (name, _, _) in match_stats::metrics::DESCRIPTIONS
        .iter()
        .chain(match_stats_queries::metrics::DESCRIPTIONS)
    {
        names.insert(name.to_string());
        for suffix in ["_bucket", "_sum", "_count"] {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

#[test]
fn the_alert_rules_parse_and_pass_their_unit_tests() {
    let checked = promtool(&["check", "rules", "alerts.rules.yaml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert is exercised by a unit test.
    let rules = std::fs::read_to_string(repo().join("k8s/monitoring/alerts.rules.yaml")).unwrap();
    let tests = std::fs::read_to_string(repo().join("k8s/monitoring/alerts.test.yaml")).unwrap();
    for line in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "{line} has a unit test"
        );
    }
}

#[test]
fn alerts_name_only_series_the_service_exports() {
    let rules = std::fs::read_to_string(repo().join("k8s/monitoring/alerts.rules.yaml")).unwrap();
    let exported = exported();
    for name in series_in(&rules) {
        assert!(
            exported.contains(&name),
            "alerts.rules.yaml names {name}, which the service does not export"
        );
    }
}

/// Every expression of the dashboard's panels, with its panel's title.
fn dashboard_expressions() -> Vec<(String, String)> {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("k8s/monitoring/dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            out.push((
                panel["title"].as_str().unwrap().to_owned(),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[test]
fn every_dashboard_panel_is_valid_promql_over_exported_series() {
    // Grafana is not installable here: each panel's expression goes through promtool as a
    // recording rule (which parses it as PromQL), and its series are checked against the
    // service's.
    let expressions = dashboard_expressions();
    assert!(expressions.len() >= 12, "the dashboard has its panels");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in expressions.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:panel_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.yaml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "the dashboard's expressions: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = exported();
    for (title, expr) in &expressions {
        for name in series_in(expr) {
            assert!(
                exported.contains(&name),
                "panel {title:?} names {name}, which the service does not export"
            );
        }
    }
    // The ingest rate, lag per partition, freshness, REST by route, cache tiers, dead
    // letters by reason and memory are all there.
    let all: String = expressions.iter().map(|(_, e)| e.as_str()).collect();
    for needle in [
        "match_stats_events_received_total",
        "match_stats_partition_seconds_since_progress",
        "match_stats_processing_latency_bucket",
        "match_stats_http_requests_total",
        "match_stats_cache_hit_ratio",
        "match_stats_dead_letters_total",
        "process_resident_memory_bytes",
    ] {
        assert!(all.contains(needle), "a panel shows {needle}");
    }
}
