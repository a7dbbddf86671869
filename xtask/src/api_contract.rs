//! The API contract in the gate: the committed OpenAPI document is linted, and the running server
//! is fuzzed against it, so the document says what the server enforces.
//!
//! - `cargo xtask api-lint`: Redocly CLI (npm, pinned with its lock file in `xtask/openapi-lint/`,
//!   installed with `npm ci` into `target/dev-services/openapi-lint`) lints `docs/openapi.json`
//!   with the rules of `redocly.yaml` (its `recommended` set). Any problem fails the step.
//! - `cargo xtask api-fuzz`: schemathesis (PyPI, pinned, in `target/dev-services/schemathesis-venv`)
//!   runs over `praxis serve`, started here on a fresh database as `cargo xtask dev` starts it,
//!   with an admin logged in. Any server error, response outside the document (status, content
//!   type, headers, body schema), invalid input accepted or valid input refused, or request that
//!   an unauthenticated caller gets answered fails the step.
//!
//! Both print what they found. `cargo xtask ci` runs both; `cargo xtask test` runs neither (the
//! fuzz run takes minutes and needs a release-like server of its own, not the test harness).

use crate::pyvenv::{Venv, find_on_path, run_quiet};
use crate::services::{self, Services};
use crate::{target_dir, workspace_root};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What pip installs. Pinned: each release adds checks and changes how inputs are generated, so
/// a new version is adopted on purpose, with its findings fixed in the same change.
pub const SCHEMATHESIS_REQUIREMENT: &str = "schemathesis==4.32.5";
/// Fixed seed: the same inputs on every run, so a failure seen in CI is reproduced locally with
/// `cargo xtask api-fuzz`.
const SEED: &str = "20261205";
/// Test cases per operation and phase. With ~40 operations this keeps the run at a few minutes
/// on a two-core machine (measured in the README's development section).
const MAX_EXAMPLES: &str = "50";
/// The whole schemathesis run is stopped (and the step failed) after this long.
const FUZZ_TIMEOUT: Duration = Duration::from_secs(15 * 60);

const ADMIN_EMAIL: &str = "admin@fuzz.praxis.test";

/// `cargo xtask api-lint`.
pub fn lint() -> Result<(), String> {
    let started = Instant::now();
    let redocly = install_redocly()?;
    let root = workspace_root();
    println!("xtask: api-lint: redocly lint docs/openapi.json (rules: redocly.yaml)");
    let status = Command::new(&redocly)
        .current_dir(&root)
        .args(["lint", "--config", "redocly.yaml", "docs/openapi.json"])
        // No usage reports to Redocly, no update notices: the gate runs offline from registries.
        .env("REDOCLY_TELEMETRY", "off")
        .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", redocly.display()))?;
    if !status.success() {
        return Err(format!("api-lint: docs/openapi.json has problems (redocly lint {status}); see above"));
    }
    println!("xtask: api-lint: no problems ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// Installs the Redocly CLI of `xtask/openapi-lint/package-lock.json` with `npm ci` (the exact
/// tree of the lock file, integrity-checked, no install scripts) unless that lock is installed.
fn install_redocly() -> Result<PathBuf, String> {
    let source = workspace_root().join("xtask").join("openapi-lint");
    let dir = target_dir().join("dev-services").join("openapi-lint");
    let lock = std::fs::read_to_string(source.join("package-lock.json"))
        .map_err(|e| format!("cannot read xtask/openapi-lint/package-lock.json: {e}"))?;
    let marker = dir.join("praxis-installed-lock.json");
    let redocly = dir.join("node_modules").join(".bin").join("redocly");
    if std::fs::read_to_string(&marker).is_ok_and(|installed| installed == lock) && redocly.is_file() {
        return Ok(redocly);
    }
    let npm = find_on_path("npm")
        .ok_or("npm not found; api-lint needs Node.js 20 or later with npm (Debian/Ubuntu: apt-get install -y npm)")?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(source.join(file), dir.join(file)).map_err(|e| format!("cannot copy {file}: {e}"))?;
    }
    println!("xtask: installing the Redocly CLI into {} (npm ci; first run only)", dir.display());
    run_quiet(
        Command::new(npm).current_dir(&dir).args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]),
        "npm ci",
    )
    .map_err(|e| format!("{e}\n(the first run needs access to the npm registry)"))?;
    if !redocly.is_file() {
        return Err(format!("npm ci finished but {} is missing", redocly.display()));
    }
    std::fs::write(&marker, lock).map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    Ok(redocly)
}

/// `cargo xtask api-fuzz`, with `praxis` the binary to serve (built by the caller).
pub fn fuzz(praxis: &Path) -> Result<(), String> {
    let started = Instant::now();
    let venv = Venv::ensure("schemathesis-venv", &[SCHEMATHESIS_REQUIREMENT], "schemathesis")?;

    // Kept after the run (the server's log, the JUnit report); emptied at the start of the next.
    let work_dir = target_dir().join("api-fuzz");
    let _ = std::fs::remove_dir_all(&work_dir);
    std::fs::create_dir_all(&work_dir).map_err(|e| format!("cannot create {}: {e}", work_dir.display()))?;
    let services = Services::start("api-fuzz")?;
    // Not `praxis_test_*`: a test run on the same server drops those when it ends, even while
    // this run uses one. Dropped below when the server is not a throwaway one.
    let database_name = format!("praxis_fuzz_{}", std::process::id());
    let database = services::prepare_app_database(&services.admin_url, &database_name)?;
    let result = fuzz_on(&venv, praxis, &services, &database, &work_dir);
    if !services.runs_postgres() {
        let _ =
            services::psql(&services.admin_url, &format!("DROP DATABASE IF EXISTS \"{database_name}\" WITH (FORCE)"));
    }
    drop(services);
    match &result {
        Ok(()) => println!("xtask: api-fuzz: no failures ({:.0} s)", started.elapsed().as_secs_f64()),
        Err(_) => println!("xtask: api-fuzz: failed after {:.0} s", started.elapsed().as_secs_f64()),
    }
    result
}

fn fuzz_on(
    venv: &Venv,
    praxis: &Path,
    services: &Services,
    database: &services::AppDatabase,
    data_dir: &Path,
) -> Result<(), String> {
    let port = services::free_port()?;
    // One environment for the CLI and the server: the same database, Redis namespace and KMS key.
    let environment: Vec<(&str, String)> = vec![
        ("PRAXIS__DATABASE__URL", database.app_url.clone()),
        ("PRAXIS__DATABASE__OWNER_URL", database.owner_url.clone()),
        ("PRAXIS__REDIS__URL", services.redis_url.clone()),
        ("PRAXIS__REDIS__KEY_PREFIX", format!("praxis-fuzz-{}:", std::process::id())),
        ("PRAXIS__KMS__BACKEND", "local".into()),
        ("PRAXIS__KMS__LOCAL__KEY_FILE", data_dir.join("kms.key").display().to_string()),
        ("PRAXIS__SERVER__BIND", format!("127.0.0.1:{port}")),
        // Every request of the run comes from one address and one user: the default limits
        // would turn most of them into 429s (which the document allows) and test nothing.
        ("PRAXIS__RATE_LIMITS__GLOBAL_PER_MINUTE", "1000000".into()),
        ("PRAXIS__RATE_LIMITS__USER_PER_MINUTE", "1000000".into()),
        ("PRAXIS__TELEMETRY__LOG_FORMAT", "json".into()),
    ];
    let praxis_command = |args: &[&str]| {
        let mut command = Command::new(praxis);
        command.args(args).current_dir(data_dir).envs(environment.iter().map(|(k, v)| (*k, v))).stdin(Stdio::null());
        command
    };
    crate::pyvenv::run_quiet(&mut praxis_command(&["migrate"]), "praxis migrate")?;
    let created = praxis_command(&["tenants", "create", "--name", "Fuzz Practice", "--admin-email", ADMIN_EMAIL])
        .output()
        .map_err(|e| format!("cannot run praxis tenants create: {e}"))?;
    let created_text = String::from_utf8_lossy(&created.stdout).into_owned();
    if !created.status.success() {
        return Err(format!(
            "praxis tenants create failed ({}): {}",
            created.status,
            String::from_utf8_lossy(&created.stderr)
        ));
    }
    let tenant = printed_value(&created_text, "tenant id:")?;
    let password = printed_value(&created_text, "admin password:")?;

    let log_path = data_dir.join("praxis.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let mut server = praxis_command(&["serve"])
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start praxis serve: {e}"))?;
    let outcome = (|| {
        wait_until_ready(&mut server, port, &log_path)?;
        let token = log_in(port, &tenant, &password)?;
        run_schemathesis(venv, port, &token, data_dir)
    })();
    services::signal(server.id(), "INT");
    if services::wait_timeout(&mut server, Duration::from_secs(10)).is_none() {
        let _ = server.kill();
        let _ = server.wait();
    }
    outcome.map_err(|e| format!("{e}\n(the server's log: {})", log_path.display()))
}

/// The value after `label` on its line of `praxis tenants create`'s output.
fn printed_value(output: &str, label: &str) -> Result<String, String> {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("praxis tenants create printed no `{label}`"))
}

fn wait_until_ready(server: &mut Child, port: u16, log_path: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http(port, "GET", "/health/ready", None, None).is_ok_and(|(status, _)| status == 200) {
            return Ok(());
        }
        if let Ok(Some(status)) = server.try_wait() {
            return Err(format!("praxis serve exited during start-up ({status}); see {}", log_path.display()));
        }
        if Instant::now() > deadline {
            return Err(format!("praxis serve was not ready within 60 s; see {}", log_path.display()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Logs the admin in over HTTP, as a client would, and returns the session token.
fn log_in(port: u16, tenant: &str, password: &str) -> Result<String, String> {
    let body = serde_json::json!({ "practice_id": tenant, "email": ADMIN_EMAIL, "password": password }).to_string();
    let (status, response) = http(port, "POST", "/api/v1/auth/login", Some(&body), None)?;
    if status != 200 {
        return Err(format!("logging in the fuzz admin answered {status}: {response}"));
    }
    let session: serde_json::Value =
        serde_json::from_str(&response).map_err(|e| format!("the login answer is not JSON ({e}): {response}"))?;
    session["token"].as_str().map(str::to_owned).ok_or_else(|| format!("the login answer has no token: {response}"))
}

/// A minimal HTTP/1.1 exchange (`Connection: close`), enough for readiness and login: xtask uses
/// std only. Returns the status and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    json: Option<&str>,
    bearer: Option<&str>,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(token) = bearer {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = json.unwrap_or("");
    if json.is_some() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:.200}"))?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

fn run_schemathesis(venv: &Venv, port: u16, token: &str, data_dir: &Path) -> Result<(), String> {
    let report_dir = data_dir.join("schemathesis-report");
    let mut command = Command::new(venv.bin("schemathesis"));
    command
        // Hypothesis keeps its example database under the working directory: not the source tree.
        .current_dir(data_dir)
        .arg("--no-color")
        .arg("--config-file")
        .arg(workspace_root().join("schemathesis.toml"))
        .args(["run", &format!("http://127.0.0.1:{port}/openapi.json")])
        .args(["--checks", "all"])
        // Every phase: the document's examples, the coverage phase (boundaries and each
        // constraint broken in turn), random fuzzing, and stateful sequences (create, then use).
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES])
        // One worker: with two, hypothesis parses lambda sources with `ast.parse` on two threads,
        // and CPython 3.11 (Debian 12's, and 3.11.7 here) then fails now and then with
        // "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905): a runtime
        // error of the fuzzer that failed CI once, not a finding. One worker also makes a run
        // reproducible from its seed.
        .args(["--workers", "1", "--request-timeout", "10"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // The bearer token above is the run's one credential: no generated cookies, API keys or
        // CSRF tokens beside it (the `ignored_auth` check still sends requests without it).
        .args(["--generation-with-security-parameters", "false"])
        // Logging out or changing the password ends the session every later request uses; both
        // are tested over HTTP by the identity tests (apps/api/tests/it/identity.rs).
        .args(["--exclude-operation-id", "logout", "--exclude-operation-id", "change_password"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report_dir)
        .stdin(Stdio::null());
    println!(
        "xtask: api-fuzz: schemathesis {} over http://127.0.0.1:{port} (seed {SEED}, {MAX_EXAMPLES} examples per operation)",
        SCHEMATHESIS_REQUIREMENT.trim_start_matches("schemathesis==")
    );
    let mut child = command.spawn().map_err(|e| format!("cannot run schemathesis: {e}"))?;
    let status = match services::wait_timeout(&mut child, FUZZ_TIMEOUT) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("api-fuzz: schemathesis did not finish within {} s", FUZZ_TIMEOUT.as_secs()));
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "api-fuzz: schemathesis found failures ({status}); see above (JUnit report in {})",
            report_dir.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::printed_value;

    #[test]
    fn reads_the_practice_and_password_that_tenants_create_prints() {
        let output = "practice created\n  tenant id:      4f9c2d1e-0000-4000-8000-000000000001\n  admin email:    \
                      admin@fuzz.praxis.test\n  admin password: correct-horse-battery\n(the password is shown once)\n";
        assert_eq!(printed_value(output, "tenant id:").unwrap(), "4f9c2d1e-0000-4000-8000-000000000001");
        assert_eq!(printed_value(output, "admin password:").unwrap(), "correct-horse-battery");
        assert!(printed_value("practice created\n", "tenant id:").is_err());
    }
}
