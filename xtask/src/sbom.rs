//! `cargo xtask sbom`: a CycloneDX 1.5 SBOM (JSON) of the `praxis` binary, written to
//! `target/sbom/praxis.cdx.json`, then checked against Cargo.lock.
//!
//! The tool is `cargo-cyclonedx` (CycloneDX project, crates.io), installed with
//! `cargo install --locked` when missing. It writes its output next to each member's Cargo.toml,
//! so it runs on a copy of the source tree (`git ls-files --cached --others --exclude-standard`)
//! under `target/sbom/src`, never in the work tree other people are editing; paths in the SBOM
//! are rewritten to the real workspace root afterwards.
//!
//! The check: the SBOM exists, names the `praxis` binary, and lists every package that
//! `cargo metadata --filter-platform <host>` resolves as a normal (linked) dependency of the
//! `api` package, transitively, at the version in Cargo.lock. Build-only dependencies
//! (build scripts) are left out of both, as they are not part of the shipped binary.

use crate::pyvenv::tail;
use crate::{target_dir, workspace_root};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The version `cargo install` fetches when the tool is missing (Cargo.lock of the tool: --locked).
const CYCLONEDX_VERSION: &str = "0.5.9";
const PACKAGE: &str = "api";
const BINARY: &str = "praxis";

pub fn run() -> Result<(), String> {
    let sbom = generate()?;
    let summary = check(&workspace_root(), &sbom)?;
    println!("xtask: {} ({summary})", sbom.display());
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn output_of(command: &mut Command, what: &str) -> Result<Vec<u8>, String> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(format!("{what} failed ({}):\n{}", output.status, tail(&output.stderr, 20)))
    }
}

fn ensure_tool() -> Result<(), String> {
    let present = cargo()
        .args(["cyclonedx", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!("xtask: installing cargo-cyclonedx {CYCLONEDX_VERSION} (cargo install --locked; first run only)");
    let status = cargo()
        .args(["install", "--locked", "cargo-cyclonedx", "--version", CYCLONEDX_VERSION])
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("cargo install cargo-cyclonedx failed ({status})")) }
}

/// Writes `target/sbom/praxis.cdx.json` and returns its path.
pub fn generate() -> Result<PathBuf, String> {
    ensure_tool()?;
    let root = workspace_root();
    let out_dir = target_dir().join("sbom");
    let copy = out_dir.join("src");
    if copy.exists() {
        std::fs::remove_dir_all(&copy).map_err(|e| format!("cannot clear {}: {e}", copy.display()))?;
    }
    copy_source_tree(&root, &copy)?;

    println!("xtask: cargo cyclonedx (CycloneDX 1.5, JSON, binary `{BINARY}`)");
    let mut command = cargo();
    command
        .args(["cyclonedx", "--manifest-path"])
        .arg(copy.join("apps/api/Cargo.toml"))
        .args(["--format", "json", "--spec-version", "1.5", "--describe", "binaries", "--no-build-deps", "-q"])
        .current_dir(&copy);
    if let Some(epoch) = commit_epoch(&root) {
        // Reproducible timestamps: the HEAD commit's time, not the wall clock.
        command.env("SOURCE_DATE_EPOCH", epoch);
    }
    output_of(&mut command, "cargo cyclonedx")?;

    let produced = copy.join("apps/api").join(format!("{BINARY}_bin.cdx.json"));
    let text = std::fs::read_to_string(&produced)
        .map_err(|e| format!("cargo cyclonedx did not write {}: {e}", produced.display()))?;
    // The copy's location is an accident of this run; name the real workspace instead.
    let text = text.replace(&copy.display().to_string(), &root.display().to_string());
    let target = out_dir.join(format!("{BINARY}.cdx.json"));
    std::fs::write(&target, text).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    let _ = std::fs::remove_dir_all(&copy);
    Ok(target)
}

fn commit_epoch(root: &Path) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(root).args(["log", "-1", "--format=%ct"]).output().ok()?;
    let epoch = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !epoch.is_empty()).then_some(epoch)
}

/// Tracked and untracked-but-not-ignored files: what a build of this work tree would see.
fn copy_source_tree(root: &Path, copy: &Path) -> Result<(), String> {
    let listing = output_of(
        Command::new("git").arg("-C").arg(root).args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"]),
        "git ls-files",
    )?;
    for path in listing.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let path = String::from_utf8_lossy(path);
        let from = root.join(path.as_ref());
        if !from.is_file() {
            continue; // deleted in the work tree, or a submodule
        }
        let to = copy.join(path.as_ref());
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::copy(&from, &to).map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
    }
    Ok(())
}

/// `(name, version)` of every package the binary links, from `cargo metadata`.
fn linked_packages(root: &Path) -> Result<BTreeSet<(String, String)>, String> {
    let version = output_of(Command::new("rustc").arg("-vV").current_dir(root), "rustc -vV")?;
    let version = String::from_utf8_lossy(&version);
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host:"))
        .map(str::trim)
        .ok_or("rustc -vV did not name the host target")?;
    let metadata = output_of(
        cargo().args(["metadata", "--format-version", "1", "--locked", "--filter-platform", host]).current_dir(root),
        "cargo metadata",
    )?;
    let metadata: Value = serde_json::from_slice(&metadata).map_err(|e| format!("cargo metadata: {e}"))?;
    normal_dependency_closure(&metadata, PACKAGE)
}

/// Packages reachable from `package` through normal dependency edges (not dev, not build).
fn normal_dependency_closure(metadata: &Value, package: &str) -> Result<BTreeSet<(String, String)>, String> {
    let packages = metadata["packages"].as_array().ok_or("cargo metadata: no packages")?;
    let by_id: HashMap<&str, (&str, &str)> = packages
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, (p["name"].as_str()?, p["version"].as_str()?))))
        .collect();
    let root_id = packages
        .iter()
        .find(|p| p["name"] == package && p["source"].is_null())
        .and_then(|p| p["id"].as_str())
        .ok_or_else(|| format!("cargo metadata: no workspace package `{package}`"))?;
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .ok_or("cargo metadata: no resolve graph")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root_id];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(node) = nodes.get(id) else { continue };
        for dep in node["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null());
            if normal && let Some(pkg) = dep["pkg"].as_str() {
                stack.push(pkg);
            }
        }
    }
    Ok(seen
        .into_iter()
        .filter(|id| *id != root_id)
        .filter_map(|id| by_id.get(id))
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect())
}

/// Checks the SBOM at `sbom` against the workspace at `root`; returns a one-line summary.
pub fn check(root: &Path, sbom: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(sbom).map_err(|e| format!("cannot read {}: {e}", sbom.display()))?;
    let bom: Value = serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", sbom.display()))?;
    let expected = linked_packages(root)?;
    compare(&bom, &expected)
}

fn compare(bom: &Value, expected: &BTreeSet<(String, String)>) -> Result<String, String> {
    let mut problems = Vec::new();
    if bom["bomFormat"] != "CycloneDX" {
        problems.push("bomFormat is not CycloneDX".to_owned());
    }
    if bom["metadata"]["component"]["name"] != BINARY {
        problems.push(format!("metadata.component is not the `{BINARY}` binary"));
    }
    let components: BTreeSet<(String, String)> = bom["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["name"].as_str()?.to_owned(), c["version"].as_str()?.to_owned())))
        .collect();
    if components.is_empty() {
        problems.push("the SBOM lists no components".to_owned());
    }
    let missing: Vec<String> = expected.difference(&components).map(|(n, v)| format!("{n}@{v}")).collect();
    if !missing.is_empty() {
        problems.push(format!("{} linked crate(s) missing from the SBOM: {}", missing.len(), missing.join(", ")));
    }
    if !problems.is_empty() {
        return Err(format!("SBOM check failed:\n  {}", problems.join("\n  ")));
    }
    let extra = components.difference(expected).count();
    Ok(format!(
        "{} components; all {} linked crates from Cargo.lock present; {extra} extra",
        components.len(),
        expected.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metadata() -> Value {
        json!({
            "packages": [
                {"id": "api-id", "name": "api", "version": "0.1.0", "source": null},
                {"id": "serde-id", "name": "serde", "version": "1.0.0", "source": "registry"},
                {"id": "cc-id", "name": "cc", "version": "1.2.0", "source": "registry"},
                {"id": "proptest-id", "name": "proptest", "version": "1.5.0", "source": "registry"},
                {"id": "itoa-id", "name": "itoa", "version": "1.0.1", "source": "registry"}
            ],
            "resolve": {"nodes": [
                {"id": "api-id", "deps": [
                    {"pkg": "serde-id", "dep_kinds": [{"kind": null, "target": null}]},
                    {"pkg": "cc-id", "dep_kinds": [{"kind": "build", "target": null}]},
                    {"pkg": "proptest-id", "dep_kinds": [{"kind": "dev", "target": null}]}
                ]},
                {"id": "serde-id", "deps": [{"pkg": "itoa-id", "dep_kinds": [{"kind": null, "target": null}]}]},
                {"id": "cc-id", "deps": []},
                {"id": "proptest-id", "deps": []},
                {"id": "itoa-id", "deps": []}
            ]}
        })
    }

    #[test]
    fn closure_follows_normal_edges_only() {
        let closure = normal_dependency_closure(&metadata(), "api").unwrap();
        let names: Vec<&str> = closure.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["itoa", "serde"]);
    }

    #[test]
    fn a_missing_crate_fails_the_check() {
        let expected = normal_dependency_closure(&metadata(), "api").unwrap();
        let complete = json!({"bomFormat": "CycloneDX", "metadata": {"component": {"name": "praxis"}},
            "components": [{"name": "serde", "version": "1.0.0"}, {"name": "itoa", "version": "1.0.1"}]});
        assert!(compare(&complete, &expected).is_ok());
        let stale = json!({"bomFormat": "CycloneDX", "metadata": {"component": {"name": "praxis"}},
            "components": [{"name": "serde", "version": "1.0.0"}, {"name": "itoa", "version": "1.0.0"}]});
        let err = compare(&stale, &expected).unwrap_err();
        assert!(err.contains("itoa@1.0.1"), "{err}");
        let empty = json!({"bomFormat": "CycloneDX", "metadata": {"component": {"name": "praxis"}}, "components": []});
        assert!(compare(&empty, &expected).is_err());
    }
}
