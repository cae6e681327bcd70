//! `/healthz`, `/readyz` and `/metrics` of the running daemon, and the series the shipped
//! dashboard and rules use.

use super::*;

#[test]
fn healthz_readyz_and_metrics_expose_the_documented_series() {
    let (env, d, a, b) = running();
    assert_eq!(d.get("/healthz").0, 200);
    assert_eq!(d.get("/readyz"), (200, "ready".into()));
    let text = d.metrics();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .or_else(|| line.strip_prefix("# UNIT "))
            .unwrap_or(line);
        assert!(
            name.starts_with("marksync_") || line == "# EOF",
            "unprefixed: {line}"
        );
    }
    let want = union(&[&a, &b]);
    let n_marks: usize = want.values().flat_map(|m| m.values()).map(Vec::len).sum();
    let one = |s: &str| metric(&text, s).unwrap_or_else(|| panic!("missing {s}\n{text}"));
    assert_eq!(
        one(r#"marksync_calls_total{command="set",outcome="ok"}"#),
        2.0
    );
    one(r#"marksync_calls_total{command="clear""#);
    assert_eq!(
        one(r#"marksync_call_duration_seconds_count{command="set"}"#),
        2.0
    );
    one("marksync_call_duration_seconds_bucket");
    assert_eq!(
        one(r#"marksync_reconciles_total{trigger="startup",outcome="ok"}"#),
        1.0
    );
    for t in [
        "files",
        "renewal",
        "retry_pending",
        "reassert",
        "callback",
        "reload",
    ] {
        one(&format!("marksync_reconciles_total{{trigger=\"{t}\""));
    }
    assert_eq!(one("marksync_managed_marks"), n_marks as f64);
    assert_eq!(one("marksync_pending_marks"), 0.0);
    let expiry = one("marksync_mark500_earliest_expiry_timestamp_seconds");
    assert!(
        (expiry - (unix_now() + 72 * HOUR) as f64).abs() < 60.0,
        "{expiry}"
    );
    assert_eq!(one("marksync_desired_errors"), 0.0);
    let last = one("marksync_last_success_timestamp_seconds");
    assert!((last - unix_now() as f64).abs() < 60.0, "{last}");
    let _ = env;
}

/// Issue 16: every `marksync_` series the shipped dashboard and alert rules use is one the
/// running binary serves on `/metrics`, and one the README's metrics table lists.
#[test]
fn every_series_the_dashboard_and_rules_use_is_served_and_documented() {
    let (_env, d, _, _) = running();
    let text = d.metrics();
    let names = |text: &str| -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("marksync_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            // A word that merely contains the prefix (`xmarksync_`) is not a series.
            let before = rest[..at].chars().last();
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.insert(tail[..end].to_string());
            }
            rest = &tail[end..];
        }
        out
    };
    // Samples as served (`name{...} value` or `name value`), histogram parts included.
    let served: std::collections::BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let table: String = readme
        .lines()
        .filter(|l| l.trim_start().starts_with("| `marksync_"))
        .collect::<Vec<_>>()
        .join("\n");
    let documented = names(&table);
    let mut problems = Vec::new();
    for file in [
        "deploy/grafana/marksync.json",
        "deploy/prometheus/marksync-rules.yaml",
    ] {
        let used = names(&std::fs::read_to_string(root.join(file)).unwrap());
        assert!(!used.is_empty(), "{file} uses no series?");
        for name in used {
            if !served.contains(&name) {
                problems.push(format!("{file}: {name} is not served on /metrics"));
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|b| served.contains(&format!("{b}_bucket")))
                })
                .unwrap_or(&name);
            if !documented.contains(base) {
                problems.push(format!(
                    "{file}: {base} is not in the README's metrics table"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}\nserved: {served:?}");
}
