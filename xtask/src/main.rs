//! `cargo xtask <command>`: the project's own tooling.
//!
//! - `dev`: Postgres + Redis (yours via DATABASE_URL/REDIS_URL, or throwaway ones), migrations, a
//!   demo practice, then `praxis serve` on 127.0.0.1:8080. Ctrl-C stops everything.
//! - `test`: the same services, moto (AWS KMS) and OpenBao (Vault) for the KMS adapters' tests,
//!   then every test in the workspace (`cargo test --workspace`).
//! - `bench`: `cargo bench` with the same services as `test` (e.g. `-p api --bench patient_read`).
//! - `ci`: fmt check, clippy -D warnings, tidy, secret scan, OpenAPI lint, tests, API fuzzing,
//!   cargo-deny, SBOM, deploy-check.
//! - `api-lint`: Redocly's recommended rules over `docs/openapi.json` (see `api_contract.rs`).
//! - `api-fuzz`: schemathesis over a running `praxis serve` with a logged-in admin.
//! - `tidy`: the architecture rules (layers, thin routes, adapter edges, no module cycles).
//! - `secrets`: detect-secrets over the tracked tree and the history since the last `v*` tag.
//! - `sbom`: CycloneDX SBOM of the `praxis` binary at `target/sbom/praxis.cdx.json`, checked.
//! - `deploy-check`: linters and hardening rules for `deploy/`.

// This is a command-line tool: printing is its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod api_contract;
mod cmd;
mod deploy;
mod monitoring;
mod moto;
mod openbao;
mod pgbouncer;
mod pyvenv;
mod redis_cluster;
mod sbom;
mod scale_out;
mod secrets;
mod services;
mod tidy;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <dev | test [cargo test args...] | bench [cargo bench args...] | ci | tidy | secrets | api-lint | api-fuzz | sbom | deploy-check>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("dev") => cmd::dev(),
        Some("test") => cmd::test(&args[1..]),
        Some("bench") => cmd::bench(&args[1..]),
        Some("ci") => cmd::ci(),
        Some("tidy") => tidy::run(&workspace_root()),
        Some("secrets") => secrets::run(),
        Some("api-lint") => api_contract::lint(),
        Some("api-fuzz") => cmd::api_fuzz(),
        Some("sbom") => sbom::run(),
        Some("deploy-check") => deploy::run(),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(USAGE.to_owned()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
///
/// Read from `CARGO_MANIFEST_DIR` at run time (`cargo run` and `cargo test` set it), not baked
/// in at compile time: with a shared `CARGO_TARGET_DIR`, a binary built from another checkout
/// would otherwise work on that checkout.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().map(PathBuf::from).unwrap_or(manifest_dir)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { workspace_root().join(dir) }
        }
        _ => workspace_root().join("target"),
    }
}

/// Hex from the OS random source (per-run passwords and tokens; never stored).
pub fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buffer))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}
