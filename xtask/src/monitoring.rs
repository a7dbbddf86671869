//! `deploy/monitoring/` checks, part of `cargo xtask deploy-check`:
//! - `promtool check rules` on the plain rules file, and `promtool test rules` on its unit tests
//!   (promtool ships in Debian's `prometheus` package; installed with apt when missing and root);
//! - the PrometheusRule's `spec.groups` are the plain file's groups, exactly (no drift);
//! - the Grafana dashboard is JSON with panels, and every metric named by it or by the rules is
//!   one `crates/telemetry/src/metrics.rs` exports (a renamed metric fails here, not on call).

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const RULES: &str = "praxis-rules.yaml";
const RULE_TESTS: &str = "praxis-rules.test.yaml";
const PROMETHEUS_RULE: &str = "prometheusrule.yaml";
const DASHBOARD: &str = "grafana-dashboard.json";

/// Every problem found in `dir` (`deploy/monitoring`); `load_yaml` parses YAML to JSON.
pub fn check(
    dir: &Path,
    metrics_source: &Path,
    load_yaml: impl Fn(&[PathBuf]) -> Result<Vec<(String, Value)>, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    match promtool() {
        Ok(promtool) => {
            for (what, args) in [
                ("promtool check rules", ["check", "rules", RULES]),
                ("promtool test rules", ["test", "rules", RULE_TESTS]),
            ] {
                println!("xtask: deploy-check: {what}");
                problems.extend(run(Command::new(&promtool).args(args).current_dir(dir), what).err());
            }
        }
        Err(problem) => problems.push(problem),
    }
    let known = match std::fs::read_to_string(metrics_source) {
        Ok(source) => exported_metrics(&source),
        Err(e) => return [problems, vec![format!("cannot read {}: {e}", metrics_source.display())]].concat(),
    };
    match load_yaml(&[dir.join(RULES), dir.join(PROMETHEUS_RULE)]) {
        Ok(documents) => {
            let rules = documents.iter().find(|(name, _)| name.ends_with(RULES)).map(|(_, d)| &d["groups"]);
            let operator = documents.iter().find(|(name, _)| name.ends_with(PROMETHEUS_RULE)).map(|(_, d)| d);
            match (rules, operator) {
                (Some(groups), Some(operator)) => {
                    if operator["kind"] != "PrometheusRule" || &operator["spec"]["groups"] != groups {
                        problems.push(format!("{PROMETHEUS_RULE}: spec.groups must equal the groups of {RULES}"));
                    }
                    problems.extend(unknown_metrics(RULES, &expressions(groups), &known));
                }
                _ => problems.push(format!("{RULES} and {PROMETHEUS_RULE} must both exist")),
            }
        }
        Err(e) => problems.push(e),
    }
    match std::fs::read_to_string(dir.join(DASHBOARD))
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| format!("not JSON: {e}")))
    {
        Ok(dashboard) => {
            let exprs = expressions(&dashboard);
            if dashboard["panels"].as_array().is_none_or(Vec::is_empty) || exprs.is_empty() {
                problems.push(format!("{DASHBOARD}: no panels with queries"));
            }
            problems.extend(unknown_metrics(DASHBOARD, &exprs, &known));
        }
        Err(e) => problems.push(format!("{DASHBOARD}: {e}")),
    }
    problems
}

/// promtool from PATH, installed from Debian's `prometheus` package when missing (as root with
/// apt-get, unless PRAXIS_NO_INSTALL is set).
fn promtool() -> Result<PathBuf, String> {
    let find = || {
        std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("promtool")).find(|p| p.is_file()))
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if std::env::var_os("PRAXIS_NO_INSTALL").is_none() && is_root {
        println!("xtask: promtool not found; installing prometheus with apt-get");
        for args in [&["update", "-qq"][..], &["install", "-y", "-qq", "--no-install-recommends", "prometheus"]] {
            let _ = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .status();
        }
    }
    find().ok_or_else(|| "promtool not found (Debian/Ubuntu: apt-get install -y prometheus)".to_owned())
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The Prometheus names of the instruments declared in `source`: each OpenTelemetry name
/// (`praxis.*`, `http.server.*`, `db.client.*` string literals) with dots as underscores.
fn exported_metrics(source: &str) -> BTreeSet<String> {
    source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|literal| {
            ["praxis.", "http.server.", "db.client."].iter().any(|prefix| literal.starts_with(prefix))
                && literal.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
        })
        .map(|name| name.replace('.', "_"))
        .collect()
}

/// Every `expr` string anywhere in `value`.
fn expressions(value: &Value) -> Vec<String> {
    match value {
        Value::Object(map) => map
            .iter()
            .flat_map(|(key, v)| match (key.as_str(), v) {
                ("expr", Value::String(expr)) => vec![expr.clone()],
                _ => expressions(v),
            })
            .collect(),
        Value::Array(items) => items.iter().flat_map(expressions).collect(),
        _ => Vec::new(),
    }
}

/// The metric names in `exprs` that no instrument exports (with its unit and type suffixes).
fn unknown_metrics(file: &str, exprs: &[String], known: &BTreeSet<String>) -> Vec<String> {
    const SUFFIXES: &[&str] = &["_bucket", "_sum", "_count", "_total", "_seconds"];
    let mut problems = Vec::new();
    for expr in exprs {
        let names = without_labels(expr);
        let words = names.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        for word in words.filter(|w| ["praxis_", "http_server_", "db_client_"].iter().any(|p| w.starts_with(p))) {
            let mut base = word;
            while let Some(stripped) = SUFFIXES.iter().find_map(|s| base.strip_suffix(s)) {
                base = stripped;
            }
            if !known.contains(base) && !known.contains(word) {
                problems.push(format!("{file}: `{word}` is not a metric Praxis exports"));
            }
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

/// `expr` without its label matchers (`{...}`) and grouping lists (`by (...)`, `without (...)`):
/// what is left names metrics (and functions).
fn without_labels(expr: &str) -> String {
    let mut kept = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(start) = rest.find(['{', '(']) {
        let (before, from) = rest.split_at(start);
        let grouping =
            from.starts_with('(') && (before.trim_end().ends_with(" by") || before.trim_end().ends_with("without"));
        kept.push_str(before);
        if from.starts_with('{') || grouping {
            let close = if from.starts_with('{') { '}' } else { ')' };
            rest = from.find(close).map_or("", |end| &from[end + 1..]);
            kept.push(' ');
        } else {
            kept.push('(');
            rest = &from[1..];
        }
    }
    kept.push_str(rest);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_checked_against_the_instruments() {
        let known = exported_metrics(
            r#"seconds("praxis.kms.operation.duration", "x") counter("praxis.audit.appends", "Audit.")"#,
        );
        let exprs = vec![
            "histogram_quantile(0.95, sum by (le) (rate(praxis_kms_operation_duration_seconds_bucket[5m])))".to_owned(),
            "sum(rate(praxis_audit_appends_total[5m])) + praxis_audit_apends_total".to_owned(),
        ];
        assert_eq!(
            unknown_metrics("f", &exprs, &known),
            vec!["f: `praxis_audit_apends_total` is not a metric Praxis exports"]
        );
        let grouped = vec!["sum by (praxis_label) (praxis_audit_appends_total{praxis_other=\"x\"})".to_owned()];
        assert!(unknown_metrics("f", &grouped, &known).is_empty());
    }
}
