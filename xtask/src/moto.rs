//! moto in server mode: a local AWS KMS look-alike for the `kms-aws` integration tests.
//!
//! moto is a Python package, installed once into a virtualenv at
//! `target/dev-services/moto-venv` (next to the per-run data directories) and reused by later
//! runs. It listens on 127.0.0.1 only, on a free port, and accepts any credentials; the tests
//! find it through `PRAXIS_TEST_AWS_KMS_ENDPOINT`.
//!
//! Needs `python3` with the `venv` module (Debian: `python3-venv`) and access to PyPI for the
//! first install. Uses std only, like the rest of xtask.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What pip installs. Pinned so every machine tests against the same mock: moto's KMS
/// behaviour (which errors it returns, what it enforces) changes between releases.
pub const MOTO_REQUIREMENT: &str = "moto[server]==5.2.5";
/// The variable the kms-aws tests read the endpoint from.
pub const ENDPOINT_VAR: &str = "PRAXIS_TEST_AWS_KMS_ENDPOINT";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Written into the venv after a successful install, holding `MOTO_REQUIREMENT`: a venv
/// without it (interrupted install) or with another requirement is installed into again.
const MARKER: &str = "praxis-moto-requirement";

/// Starts moto on a free loopback port, its log in `data_dir/moto.log`, and waits until it
/// answers HTTP. Returns the child (the caller kills it) and the endpoint URL,
/// e.g. `http://127.0.0.1:40123`.
///
/// The virtualenv is `<data_dir's parent>/moto-venv`, created and filled on first use.
pub fn start_moto(data_dir: &Path) -> Result<(Child, String), String> {
    let parent = data_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent directory for the moto virtualenv", data_dir.display()))?;
    let venv = parent.join("moto-venv");
    ensure_installed(&venv)?;
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;

    let port = free_port()?;
    let log_path = data_dir.join("moto.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let mut child = Command::new(venv.join("bin").join("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start moto_server: {e}"))?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if answers_http(port) {
            println!("xtask: started moto (mock AWS KMS) on 127.0.0.1:{port}");
            return Ok((child, format!("http://127.0.0.1:{port}")));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("moto_server exited during start-up ({status}); see {}", log_path.display()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("moto did not answer HTTP within 60 s; see {}", log_path.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates the virtualenv if needed and installs `MOTO_REQUIREMENT` unless the marker says it
/// is there. Two xtask runs installing at the same moment may both run pip; pip copes.
fn ensure_installed(venv: &Path) -> Result<(), String> {
    let marker = venv.join(MARKER);
    let server = venv.join("bin").join("moto_server");
    let installed = std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == MOTO_REQUIREMENT);
    if installed && server.is_file() {
        return Ok(());
    }
    let python = venv.join("bin").join("python3");
    if !python.is_file() {
        let system_python = find_on_path("python3").ok_or_else(|| {
            "python3 not found; moto (the mock AWS KMS) needs it: apt-get install -y python3 python3-venv".to_owned()
        })?;
        println!("xtask: creating a Python virtualenv for moto at {}", venv.display());
        // --clear: a half-created venv from an interrupted run is rebuilt, not patched.
        run(Command::new(system_python).args(["-m", "venv", "--clear"]).arg(venv), "python3 -m venv")
            .map_err(|e| format!("{e} (Debian/Ubuntu: apt-get install -y python3-venv)"))?;
    }
    println!("xtask: installing {MOTO_REQUIREMENT} into {} (first run only)", venv.display());
    run(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            MOTO_REQUIREMENT,
        ]),
        "pip install moto",
    )?;
    if !server.is_file() {
        return Err(format!("pip installed moto but {} is missing", server.display()));
    }
    std::fs::write(&marker, MOTO_REQUIREMENT).map_err(|e| format!("cannot write {}: {e}", marker.display()))
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!("{what} failed ({}):\n{}", output.status, tail.join("\n")))
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// True when something on the port answers an HTTP request with an HTTP status line.
fn answers_http(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut status_line = [0u8; 12];
    stream.read_exact(&mut status_line).is_ok() && status_line.starts_with(b"HTTP/1.") && status_line[9] == b'2'
}

/// A port that was free a moment ago (the OS picks it).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}
