//! Python tools from PyPI, each set in its own virtualenv under `target/dev-services/`.
//!
//! The same approach as `moto.rs` (which predates this module and keeps its own copy): a venv is
//! created with the system `python3`, the pinned requirements are installed with pip, and a marker
//! file holding the requirement list is written last, so an interrupted install or a changed pin is
//! installed again on the next run. Needs `python3` with the `venv` module (Debian: `python3-venv`)
//! and access to PyPI for the first install.

use crate::target_dir;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MARKER: &str = "praxis-requirements";

/// A virtualenv with a fixed set of pinned requirements.
#[derive(Debug, Clone)]
pub struct Venv {
    dir: PathBuf,
}

impl Venv {
    /// `target/dev-services/<name>` (or under `CARGO_TARGET_DIR`), installed if needed.
    ///
    /// `probe` is a script the requirements install into `bin/` (e.g. `detect-secrets`): its
    /// absence means the install is incomplete.
    pub fn ensure(name: &str, requirements: &[&str], probe: &str) -> Result<Self, String> {
        Self::ensure_at(&target_dir().join("dev-services").join(name), requirements, probe)
    }

    pub fn ensure_at(dir: &Path, requirements: &[&str], probe: &str) -> Result<Self, String> {
        let venv = Venv { dir: dir.to_path_buf() };
        let wanted = requirements.join("\n");
        let marker = dir.join(MARKER);
        let installed = std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == wanted.trim());
        if installed && venv.bin(probe).is_file() {
            return Ok(venv);
        }
        let python = venv.bin("python3");
        if !python.is_file() {
            let system_python = find_on_path("python3").ok_or_else(|| {
                format!(
                    "python3 not found; {} needs it: apt-get install -y python3 python3-venv",
                    requirements.join(", ")
                )
            })?;
            println!("xtask: creating a Python virtualenv at {}", dir.display());
            // --clear: a half-created venv from an interrupted run is rebuilt, not patched.
            run_quiet(Command::new(system_python).args(["-m", "venv", "--clear"]).arg(dir), "python3 -m venv")
                .map_err(|e| format!("{e} (Debian/Ubuntu: apt-get install -y python3-venv)"))?;
        }
        println!("xtask: installing {} into {} (first run only)", requirements.join(" "), dir.display());
        run_quiet(
            Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
                .args(requirements),
            "pip install",
        )
        .map_err(|e| format!("{e}\n(the first run needs access to PyPI)"))?;
        if !venv.bin(probe).is_file() {
            return Err(format!(
                "pip installed {} but {} is missing",
                requirements.join(" "),
                venv.bin(probe).display()
            ));
        }
        std::fs::write(&marker, wanted).map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
        Ok(venv)
    }

    /// A script or executable in the venv's `bin/`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }
}

/// Runs a command with its output captured; on failure the error carries the last lines of stderr.
pub fn run_quiet(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({}):\n{}", output.status, tail(&output.stderr, 15)))
    }
}

/// The last `lines` lines of a command's output, for error messages.
pub fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.reverse();
    last.join("\n")
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}
