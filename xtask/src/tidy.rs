//! Architecture check: domain crates stay pure.
//!
//! A domain crate (see DOMAIN_CRATES) may not depend, directly or through anything it pulls in, on
//! a database driver, web framework, cache client, cloud SDK, async runtime, or any adapter crate
//! of this workspace. The check reads `cargo metadata`, so it sees the real resolved graph.

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

/// Crates that hold rules and ports only.
pub const DOMAIN_CRATES: &[&str] =
    &["kernel", "audit", "crypto", "consent", "patients", "appointments", "scheduling", "identity", "webhooks"];

/// Crate name prefixes a domain crate must never reach.
const FORBIDDEN_PREFIXES: &[&str] = &[
    "sqlx",
    "actix",
    "awc",
    "redis",
    "deadpool",
    "aws-",
    "azure_",
    "vaultrs",
    "tokio",
    "hyper",
    "reqwest",
    "tonic",
    "opentelemetry",
];

/// Adapter and application crates of this workspace.
const FORBIDDEN_WORKSPACE_CRATES: &[&str] = &[
    "store-postgres",
    "cache-redis",
    "telemetry",
    "api",
    "testkit",
    "webhook-providers",
    "xtask",
    "kms-local",
    "kms-aws",
    "kms-vault",
    "kms-azure",
];

pub fn run(root: &Path) -> Result<(), String> {
    let violations = check(root)?;
    if violations.is_empty() {
        println!("xtask: tidy: domain crates are pure");
        return Ok(());
    }
    Err(format!("tidy: domain crates depend on I/O or adapter crates:\n  {}", violations.join("\n  ")))
}

/// Every forbidden dependency path, as "domain -> ... -> forbidden".
pub fn check(root: &Path) -> Result<Vec<String>, String> {
    // Only this platform's graph: it is what gets built here, and it needs no download of crates
    // that exist for other platforms only.
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--filter-platform", &host_triple()?])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let metadata: Value = serde_json::from_slice(&output.stdout).map_err(|e| format!("cargo metadata output: {e}"))?;
    violations(&metadata)
}

fn host_triple() -> Result<String, String> {
    let output = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .map_err(|e| format!("cannot run rustc -vV: {e}"))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_owned))
        .ok_or_else(|| "rustc -vV printed no host triple".to_owned())
}

fn violations(metadata: &Value) -> Result<Vec<String>, String> {
    let packages = metadata["packages"].as_array().ok_or("cargo metadata: no packages")?;
    let names: HashMap<&str, &str> =
        packages.iter().filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?))).collect();
    let workspace: BTreeSet<&str> =
        metadata["workspace_members"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let nodes = metadata["resolve"]["nodes"].as_array().ok_or("cargo metadata: no resolve graph")?;
    // Normal (non-dev, non-build) dependency edges only: what ends up in the crate itself.
    let edges: HashMap<&str, Vec<&str>> = nodes
        .iter()
        .filter_map(|node| {
            let id = node["id"].as_str()?;
            let deps = node["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|dep| dep["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null()))
                .filter_map(|dep| dep["pkg"].as_str())
                .collect();
            Some((id, deps))
        })
        .collect();

    let mut found = Vec::new();
    for domain_id in workspace.iter().filter(|id| names.get(*id).is_some_and(|n| DOMAIN_CRATES.contains(n))) {
        // Depth-first search remembering the path, so the report shows how the crate got there.
        let mut stack = vec![(*domain_id, vec![names[domain_id]])];
        let mut seen = BTreeSet::new();
        while let Some((id, path)) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            for dep in edges.get(id).into_iter().flatten() {
                let name = names.get(dep).copied().unwrap_or("?");
                let mut next = path.clone();
                next.push(name);
                let is_workspace_adapter = workspace.contains(dep) && FORBIDDEN_WORKSPACE_CRATES.contains(&name);
                if is_workspace_adapter || FORBIDDEN_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) {
                    found.push(next.join(" -> "));
                } else {
                    stack.push((dep, next));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metadata(edges: &[(&str, &str)]) -> Value {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for (a, b) in edges {
            names.insert(a);
            names.insert(b);
        }
        json!({
            "packages": names.iter().map(|n| json!({"id": n, "name": n})).collect::<Vec<_>>(),
            "workspace_members": ["kernel", "audit", "store-postgres"],
            "resolve": { "nodes": names.iter().map(|n| json!({
                "id": n,
                "deps": edges.iter().filter(|(a, _)| a == n).map(|(_, b)| json!({"pkg": b, "dep_kinds": [{"kind": null}]})).collect::<Vec<_>>()
            })).collect::<Vec<_>>() }
        })
    }

    #[test]
    fn flags_a_domain_crate_reaching_sqlx_through_anything() {
        let found =
            violations(&metadata(&[("audit", "kernel"), ("audit", "helper"), ("helper", "sqlx-core")])).unwrap();
        assert_eq!(found, vec!["audit -> helper -> sqlx-core"]);
    }

    #[test]
    fn flags_a_domain_crate_using_an_adapter_crate() {
        let found = violations(&metadata(&[("audit", "store-postgres")])).unwrap();
        assert_eq!(found, vec!["audit -> store-postgres"]);
    }

    #[test]
    fn adapters_may_use_anything() {
        let found = violations(&metadata(&[("store-postgres", "sqlx"), ("store-postgres", "kernel")])).unwrap();
        assert!(found.is_empty());
    }

    /// The real workspace passes: `cargo test` fails when a domain crate grows an I/O dependency.
    #[test]
    fn workspace_domain_crates_are_pure() {
        let found = check(&crate::workspace_root()).unwrap();
        assert!(found.is_empty(), "domain crates depend on I/O or adapters:\n{}", found.join("\n"));
    }
}
