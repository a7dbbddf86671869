//! The commands themselves.

use crate::openbao::TestVault;
use crate::services::{self, Services};
use crate::{target_dir, tidy, workspace_root};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set by Ctrl-C (SIGINT) or SIGTERM: every long-running command checks it and cleans up.
fn install_interrupt_flag() -> Result<Arc<AtomicBool>, String> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    ctrlc::set_handler(move || handler_flag.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    Ok(flag)
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    // `cargo run` set these for xtask itself. Build scripts that watch one of them (ring's
    // watches CARGO_MANIFEST_DIR) would see a value plain `cargo` never has, and rebuild, with
    // everything above them, whenever a build alternates between `cargo xtask` and plain cargo,
    // or runs from another checkout sharing the target directory (CI's clean clone).
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str()
            && (name.starts_with("CARGO_PKG_")
                || matches!(
                    name,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                ))
        {
            command.env_remove(name);
        }
    }
    command
}

/// Runs a command to completion; a non-zero exit is an error naming the step.
fn run_step(step: &str, command: &mut Command) -> Result<(), String> {
    println!("xtask: {step}");
    let status = command.status().map_err(|e| format!("{step}: cannot start: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{step} failed ({status})")) }
}

/// Builds the `praxis` binary (debug) and returns its path.
fn build_praxis() -> Result<std::path::PathBuf, String> {
    run_step("building praxis", cargo().args(["build", "--package", "api", "--bin", "praxis"]))?;
    Ok(target_dir().join("debug").join("praxis"))
}

/// `cargo xtask api-fuzz`: schemathesis over a freshly built `praxis serve` (`api_contract.rs`).
pub fn api_fuzz() -> Result<(), String> {
    crate::api_contract::fuzz(&build_praxis()?)
}

pub fn dev() -> Result<(), String> {
    let interrupted = install_interrupt_flag()?;
    let praxis = build_praxis()?;

    let services = Services::start("dev")?;
    let database = services::prepare_app_database(&services.admin_url, "praxis")?;

    run_step(
        "applying migrations",
        Command::new(&praxis).arg("migrate").env("PRAXIS__DATABASE__OWNER_URL", &database.owner_url),
    )?;
    if database.has_demo_practice()? {
        println!("xtask: the demo practice exists already (its admin password was printed when it was created)");
    } else {
        run_step(
            "creating the demo practice",
            Command::new(&praxis)
                .args([
                    "tenants",
                    "create",
                    "--name",
                    services::DEMO_PRACTICE,
                    "--admin-email",
                    "admin@demo.praxis.test",
                ])
                .env("PRAXIS__DATABASE__URL", &database.app_url),
        )?;
    }

    println!(
        "\nPraxis is starting on http://127.0.0.1:8080\n\
         \x20 readiness:  curl -i http://127.0.0.1:8080/health/ready\n\
         \x20 log in:     curl -s -X POST http://127.0.0.1:8080/api/v1/auth/login -H 'content-type: application/json' \\\n\
         \x20               -d '{{\"practice_id\": \"<tenant id above>\", \"email\": \"admin@demo.praxis.test\", \"password\": \"<password above>\"}}'\n\
         \x20             then send the returned token as `Authorization: Bearer <token>` (see README.md for the API)\n\
         \x20 Postgres (owner): {}\n\
         \x20 Redis:            {}\n\
         Ctrl-C stops Praxis, Postgres and Redis.\n",
        database.owner_url_for_display(),
        services.redis_url
    );
    let mut server = Command::new(&praxis)
        .arg("serve")
        .env("PRAXIS__DATABASE__URL", &database.app_url)
        .env("PRAXIS__REDIS__URL", &services.redis_url)
        .env("PRAXIS__SERVER__BIND", "127.0.0.1:8080")
        .env("PRAXIS__KMS__BACKEND", "local")
        .env(
            "PRAXIS__TELEMETRY__LOG_FORMAT",
            std::env::var("PRAXIS__TELEMETRY__LOG_FORMAT").unwrap_or_else(|_| "pretty".into()),
        )
        .spawn()
        .map_err(|e| format!("cannot start praxis: {e}"))?;
    loop {
        if let Some(status) = server.try_wait().map_err(|e| e.to_string())? {
            drop(services);
            return if status.success() || interrupted.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(format!("praxis exited ({status})"))
            };
        }
        if interrupted.load(Ordering::SeqCst) {
            services::signal(server.id(), "INT");
            let _ = services::wait_timeout(&mut server, Duration::from_secs(10));
            let _ = server.kill();
            drop(services);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Libtest filters of the second run, which repeats these tests on the production shape of a
/// scaled-out deployment: the app's Postgres connections through PgBouncer in transaction mode
/// (pool size 1) and Redis as a three-primary Redis Cluster (`PRAXIS_TEST_APP_VIA_POOLER`, and
/// the cluster's URL as `PRAXIS_TEST_REDIS_URL`). Together they touch every store module (the
/// webhook group commit, the reminder claims, the key rotation included) and every Redis feature.
/// The `it` targets of cache-redis (its whole suite, but its TLS test, which runs a single TLS
/// server of its own) and of the api are run.
pub const SCALED_SUBSET: &[&str] = &[
    // cache-redis: every adapter against the cluster.
    "blocklist::",
    "failures::",
    "fallback::",
    "idempotency::",
    "pipelined::",
    "rate_limit::",
    // api: two instances, sessions, rate limits and their headers, login-failure counters.
    "scale_out::",
    "identity::rate_limit_headers_and_one_limit_across_two_instances",
    "identity::brute_force_is_throttled_and_flagged_once",
    "identity::logout_ends_the_session",
    "identity::api_keys_are_shown_once_scoped_attributable_and_revocable",
    "identity::audit_trail_records_the_session_and_verifies",
    "audit_signing::a_signed_purge_still_verifies_and_another_kms_cannot_vouch_for_it",
    // The block list and the webhook ingest (claims, inbox, group commit).
    "webhooks::blocked_addresses_are_refused",
    "webhooks::stripe_payment_events_set_the_payment_state_of_the_named_appointment",
    "webhooks::stop_over_whatsapp_withdraws_whatsapp_marketing_with_the_message_as_evidence",
    // Appointments, reminder claims with two workers.
    "appointments::twenty_parallel_bookings_of_overlapping_slots_exactly_one_wins",
    "appointments::two_workers_at_once_send_each_reminder_exactly_once",
    "appointments::moving_and_cancelling_replan_and_drop_reminders_and_free_the_slot",
    // Patients (encryption, consents, erasure) and key rotation.
    "patients::consent_lifecycle_over_http",
    "patients::erasure_shreds_the_key_so_no_copy_of_the_data_decrypts",
    "patients::reencrypt_gives_every_patient_a_new_key_and_resumes_without_repeating",
    "keys::rotate_moves_every_dek_to_a_new_local_version_and_keeps_the_keys",
    "keys::an_interrupted_rotation_resumes_without_losing_or_repeating_a_rewrap",
];

/// `cargo xtask test [args]`: every test with Postgres, Redis and the scale-out services; with
/// no arguments, then [`SCALED_SUBSET`] again through PgBouncer and the Redis Cluster.
/// `cargo xtask test --scaled [filters]` runs only that second run (filtered further).
pub fn test(extra_args: &[String]) -> Result<(), String> {
    let interrupted = install_interrupt_flag()?;
    let scaled_only = extra_args.first().is_some_and(|a| a == "--scaled");
    let mut services = Services::start("test")?;
    services.start_aws_kms()?;
    // Not fatal: every other test still runs, and the Vault tests fail saying what is missing.
    if let Err(why) = services.start_vault() {
        println!("xtask: no OpenBao for the Vault KMS tests, which will fail: {why}");
    }
    let role_password = crate::random_hex(16)?;
    let scale_out = crate::scale_out::ScaleOut::start(&mut services, &role_password)?;
    println!("xtask: Postgres at {} and Redis at {}", services.admin_url_for_display(), services.redis_url);

    let base = |redis_url: &str| -> Result<Command, String> {
        let mut command = cargo();
        command
            .env("PRAXIS_TEST_DATABASE_URL", &services.admin_url)
            .env("PRAXIS_TEST_REDIS_URL", redis_url)
            .env("PRAXIS_TEST_ROLE_PASSWORD", &role_password)
            .env(crate::moto::ENDPOINT_VAR, services.aws_kms_endpoint.as_deref().unwrap_or_default())
            .envs(services.vault.as_ref().map_or_else(TestVault::missing_env, TestVault::test_env))
            .envs(scale_out.env())
            // cache-redis's TLS tests start a TLS-only Redis of their own from this binary.
            .env(
                services::REDIS_SERVER_VAR,
                services::redis_server_binary().map_err(|_| {
                    "redis-server not found: cache-redis's TLS tests run a TLS Redis of their own, even with \
                     REDIS_URL set. Install it (Debian/Ubuntu: apt-get install -y redis-server)."
                        .to_owned()
                })?,
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        Ok(command)
    };
    let mut totals = TestTotals::default();
    let mut failed = Vec::new();
    if !scaled_only {
        let mut command = base(&services.redis_url)?;
        // Every test binary runs even when one fails, so one report shows every failure.
        command.args(["test", "--no-fail-fast"]).args(workspace_unless_packages_given(extra_args)).args(extra_args);
        println!("xtask: running the tests (cargo test)");
        let (status, run) = run_tests(command, &interrupted)?;
        totals.add(&run);
        if !status.success() {
            failed.push(format!("tests failed ({status})"));
        }
    }
    if scaled_only || extra_args.is_empty() {
        let cluster_url = scale_out.redis_cluster.url.clone();
        // Filters after `--scaled` replace the subset (libtest runs what matches any filter).
        let filters: Vec<&str> = match extra_args.get(1..) {
            Some(given) if scaled_only && !given.is_empty() => given.iter().map(String::as_str).collect(),
            _ => SCALED_SUBSET.iter().copied().chain(["--skip", "tls::"]).collect(),
        };
        let mut command = base(&cluster_url)?;
        command
            .args(["test", "--no-fail-fast", "--workspace", "--test", "it", "--"])
            .args(filters)
            .env("PRAXIS_TEST_APP_VIA_POOLER", "1");
        println!("xtask: running the scaled-out subset through PgBouncer and a Redis Cluster");
        let (status, run) = run_tests(command, &interrupted)?;
        totals.add(&run);
        if !status.success() {
            failed.push(format!("scaled-out tests failed ({status})"));
        }
    }
    services.drop_test_databases();
    drop(scale_out);
    drop(services);
    println!("tests: {} passed, {} failed, {} skipped", totals.passed, totals.failed, totals.ignored);
    if failed.is_empty() { Ok(()) } else { Err(failed.join("; ")) }
}

/// Runs `cargo test`, passing its output through while adding up the per-binary results.
fn run_tests(
    mut command: Command,
    interrupted: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(std::process::ExitStatus, TestTotals), String> {
    let mut child = command.spawn().map_err(|e| format!("cannot start cargo test: {e}"))?;
    let stdout = child.stdout.take().ok_or("cargo test has no stdout")?;
    let tally = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut totals = TestTotals::default();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            totals.add_line(&line);
        }
        totals
    });
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if interrupted.load(Ordering::SeqCst) {
            let _ = services::wait_timeout(&mut child, Duration::from_secs(10));
            let _ = child.kill();
            return Err("interrupted".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    Ok((status, tally.join().unwrap_or_default()))
}

/// `--workspace`, unless the cargo arguments (those before `--`) pick packages with `-p` or
/// `--package`: cargo lets `--workspace` win over them, so `cargo xtask test -p kms-vault` would
/// otherwise run every test of the workspace.
fn workspace_unless_packages_given(cargo_args: &[String]) -> Option<&'static str> {
    let picks_packages = cargo_args
        .iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg.starts_with("-p") || arg == "--package" || arg.starts_with("--package="));
    (!picks_packages).then_some("--workspace")
}

/// Sums of libtest's `test result:` lines across every test binary.
#[derive(Debug, Default, PartialEq, Eq)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestTotals {
    fn add(&mut self, other: &Self) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Reads `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

/// `cargo bench` with the same services as the tests (benchmarks that talk to Postgres and
/// Redis read the same variables), e.g. `cargo xtask bench -p api --bench middleware`.
pub fn bench(extra_args: &[String]) -> Result<(), String> {
    let services = Services::start("bench")?;
    let role_password = crate::random_hex(16)?;
    let result = run_step(
        "cargo bench",
        cargo()
            .arg("bench")
            .args(extra_args)
            .env("PRAXIS_TEST_DATABASE_URL", &services.admin_url)
            .env("PRAXIS_TEST_REDIS_URL", &services.redis_url)
            .env("PRAXIS_TEST_ROLE_PASSWORD", &role_password),
    );
    services.drop_test_databases();
    result
}

pub fn ci() -> Result<(), String> {
    run_step("cargo fmt --check", cargo().args(["fmt", "--all", "--", "--check"]))?;
    run_step(
        "cargo clippy -D warnings",
        cargo().args(["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"]),
    )?;
    tidy::run(&workspace_root())?;
    crate::secrets::run()?;
    crate::api_contract::lint()?;
    test(&[])?;
    api_fuzz()?;
    deny()?;
    crate::sbom::run()?;
    crate::deploy::run()
}

/// cargo-deny: licences, bans and sources always; advisories only from a local advisory database
/// (this machine may be offline; a stale-but-present database is still checked).
fn deny() -> Result<(), String> {
    if Command::new("cargo-deny").arg("--version").stdout(Stdio::null()).status().map(|s| !s.success()).unwrap_or(true)
    {
        run_step("installing cargo-deny", cargo().args(["install", "--locked", "cargo-deny"]))?;
    }
    run_step("cargo deny check licenses bans sources", cargo().args(["deny", "check", "licenses", "bans", "sources"]))?;
    let advisory_db = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("advisory-dbs"));
    match advisory_db {
        Some(dir) if dir.is_dir() => run_step(
            "cargo deny check advisories (local database)",
            cargo().args(["deny", "check", "--disable-fetch", "advisories"]),
        ),
        _ => {
            println!("xtask: no local advisory database (see docs/operations.md to fetch one); advisories not checked");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{TestTotals, workspace_unless_packages_given};

    #[test]
    fn the_whole_workspace_is_tested_unless_packages_are_picked() {
        let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert_eq!(workspace_unless_packages_given(&args(&[])), Some("--workspace"));
        assert_eq!(workspace_unless_packages_given(&args(&["--", "patients::"])), Some("--workspace"));
        // After `--` the arguments are the test binary's, not cargo's.
        assert_eq!(workspace_unless_packages_given(&args(&["--", "-p"])), Some("--workspace"));
        for picked in [&["-p", "api"][..], &["-papi"], &["--package", "api"], &["--package=api", "--", "x"]] {
            assert_eq!(workspace_unless_packages_given(&args(picked)), None, "{picked:?}");
        }
    }

    #[test]
    fn adds_up_libtest_result_lines() {
        let mut totals = TestTotals::default();
        totals
            .add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s");
        totals.add_line("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        totals.add_line("running 5 tests");
        assert_eq!(totals, TestTotals { passed: 15, failed: 2, ignored: 1 });
    }
}
