//! The key file: format, permission checks, and crash- and race-safe writes.
//!
//! Format (JSON, so an operator can see which versions exist without a tool):
//!
//! ```json
//! {
//!   "format": "praxis-local-kms-v1",
//!   "key_id": "local",
//!   "primary": "2",
//!   "versions": [
//!     { "version": "1", "key_hex": "<64 hex digits>" },
//!     { "version": "2", "key_hex": "<64 hex digits>" }
//!   ]
//! }
//! ```
//!
//! Versions are decimal numbers "1", "2", ...; `rotate` adds the next one and marks it primary.
//! Old versions stay so that every DEK they wrapped can still be unwrapped (and rewrapped).

use crate::LocalKmsError;
use crypto::{KEY_LEN, Kek};
use serde::{Deserialize, Serialize};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

const FORMAT: &str = "praxis-local-kms-v1";
/// Permission bits a key file may never have: any access for group or others.
const GROUP_OR_OTHER: u32 = 0o077;
/// Largest key file we read: far above any real number of versions, and it keeps a wrong path
/// (a log file, a device) from being read into memory whole.
const MAX_FILE_LEN: u64 = 1 << 20;

/// The versions held in a key file, as KEKs, with the index of the primary one.
pub(crate) struct KeySet {
    pub(crate) key_id: String,
    pub(crate) keks: Vec<Kek>,
    pub(crate) primary: usize,
}

impl KeySet {
    /// The KEK new keys are wrapped with. Always `Some` for a set built here (the index is
    /// checked when a file is parsed), but callers need not rely on that.
    pub(crate) fn primary(&self) -> Option<&Kek> {
        self.keks.get(self.primary)
    }

    pub(crate) fn find(&self, version: &str) -> Option<&Kek> {
        self.keks.iter().find(|kek| kek.version() == version)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    format: String,
    key_id: String,
    primary: String,
    versions: Vec<VersionRepr>,
}

/// One version as stored. Zeroized on drop because `key_hex` is the key in another spelling.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct VersionRepr {
    version: String,
    key_hex: String,
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LocalKmsError {
    let path = path.to_owned();
    move |source| LocalKmsError::Io { action, path, source }
}

fn malformed(path: &Path, reason: impl Into<String>) -> LocalKmsError {
    LocalKmsError::Malformed { path: path.to_owned(), reason: reason.into() }
}

/// Reads and validates the key file at `path`.
///
/// The permission check is made on the opened handle (fstat), not on the path, so the file
/// checked is the file read even if the path is swapped in between.
pub(crate) fn read(path: &Path) -> Result<KeySet, LocalKmsError> {
    // Checked before opening too: opening a FIFO for reading would block until a writer comes.
    if !std::fs::metadata(path).map_err(io_error("inspect", path))?.is_file() {
        return Err(LocalKmsError::NotAFile { path: path.to_owned() });
    }
    let mut file = OpenOptions::new().read(true).open(path).map_err(io_error("open", path))?;
    check_metadata(&file, path)?;
    let mut bytes = Zeroizing::new(Vec::new());
    (&mut file).take(MAX_FILE_LEN + 1).read_to_end(&mut bytes).map_err(io_error("read", path))?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(malformed(path, "larger than 1 MiB"));
    }
    if bytes.is_empty() {
        return Err(malformed(path, "empty"));
    }
    // serde_json's own messages may quote the offending value, which could be key material:
    // report only where the problem is.
    let repr: FileRepr = serde_json::from_slice(&bytes).map_err(|e| {
        malformed(
            path,
            format!("not a key file ({:?} error at line {}, column {})", e.classify(), e.line(), e.column()),
        )
    })?;
    parse(repr, path)
}

fn parse(repr: FileRepr, path: &Path) -> Result<KeySet, LocalKmsError> {
    if repr.format != FORMAT {
        return Err(malformed(path, format!("format is {:?}, expected {FORMAT:?}", repr.format)));
    }
    if repr.versions.is_empty() {
        return Err(malformed(path, "no key versions"));
    }
    let mut keks = Vec::with_capacity(repr.versions.len());
    for entry in &repr.versions {
        if parse_version(&entry.version).is_none() {
            return Err(malformed(path, format!("version {:?} is not a positive decimal number", entry.version)));
        }
        if keks.iter().any(|k: &Kek| k.version() == entry.version) {
            return Err(malformed(path, format!("version {} appears twice", entry.version)));
        }
        let key = Zeroizing::new(
            hex::decode(entry.key_hex.trim())
                .map_err(|_| malformed(path, format!("key of version {} is not hex", entry.version)))?,
        );
        if key.len() != KEY_LEN {
            return Err(malformed(path, format!("key of version {} is not {KEY_LEN} bytes", entry.version)));
        }
        let kek = Kek::new(repr.key_id.clone(), entry.version.clone(), &key)
            .map_err(|e| malformed(path, format!("key id or version: {e}")))?;
        keks.push(kek);
    }
    let primary = keks
        .iter()
        .position(|k| k.version() == repr.primary)
        .ok_or_else(|| malformed(path, format!("primary version {:?} is not among the versions", repr.primary)))?;
    Ok(KeySet { key_id: repr.key_id.clone(), keks, primary })
}

fn parse_version(version: &str) -> Option<u32> {
    if version.is_empty() || version.starts_with('0') || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    version.parse().ok()
}

/// Refuses anything but a regular file that only its owner may access.
fn check_metadata(file: &File, path: &Path) -> Result<(), LocalKmsError> {
    let metadata = file.metadata().map_err(io_error("inspect", path))?;
    if !metadata.file_type().is_file() {
        return Err(LocalKmsError::NotAFile { path: path.to_owned() });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & GROUP_OR_OTHER != 0 {
        return Err(LocalKmsError::InsecurePermissions { path: path.to_owned(), mode });
    }
    Ok(())
}

/// Checks the permissions of the file at `path` again (for health checks).
pub(crate) fn check_permissions(path: &Path) -> Result<(), LocalKmsError> {
    let file = OpenOptions::new().read(true).open(path).map_err(io_error("open", path))?;
    check_metadata(&file, path)
}

/// The content of a key file holding `set`.
fn render(set: &KeySet) -> Result<Zeroizing<Vec<u8>>, LocalKmsError> {
    let repr = FileRepr {
        format: FORMAT.to_owned(),
        key_id: set.key_id.clone(),
        primary: set
            .primary()
            .ok_or_else(|| LocalKmsError::Other("no primary key version".to_owned()))?
            .version()
            .to_owned(),
        versions: set
            .keks
            .iter()
            .map(|kek| VersionRepr { version: kek.version().to_owned(), key_hex: hex::encode(kek.expose_secret()) })
            .collect(),
    };
    let mut out = Zeroizing::new(Vec::with_capacity(256 + 100 * set.keks.len()));
    serde_json::to_writer_pretty(&mut *out, &repr).map_err(|e| LocalKmsError::Other(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// A fresh key set with one random version, "1".
pub(crate) fn new_set(key_id: &str) -> Result<KeySet, LocalKmsError> {
    Ok(KeySet { key_id: key_id.to_owned(), keks: vec![Kek::generate(key_id, "1")?], primary: 0 })
}

/// `set` plus a new random version, made primary.
pub(crate) fn with_new_version(set: KeySet) -> Result<KeySet, LocalKmsError> {
    let highest = set.keks.iter().filter_map(|k| parse_version(k.version())).max().unwrap_or(0);
    let next = highest.checked_add(1).ok_or_else(|| LocalKmsError::Other("key version overflow".to_owned()))?;
    let mut keks = set.keks;
    keks.push(Kek::generate(set.key_id.clone(), next.to_string())?);
    let primary = keks.len() - 1;
    Ok(KeySet { key_id: set.key_id, keks, primary })
}

/// Writes `set` as a new key file at `path`, unless one exists. Returns false when another
/// process (or thread) created it first; its file is then the one to use.
///
/// The content goes to a private temporary file first (`create_new`, mode 0600, fsync) which
/// is then hard-linked to `path`: `link` fails if `path` exists, like `create_new`, but a
/// reader can never see a half-written key file, and two processes starting at once agree on
/// one key instead of each writing its own.
pub(crate) fn create(path: &Path, set: &KeySet) -> Result<bool, LocalKmsError> {
    let dir = parent_dir(path);
    if !dir.as_os_str().is_empty() && !dir.exists() {
        // Only the owner may list or enter a directory created for keys.
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_error("create the directory of", path))?;
    }
    let content = render(set)?;
    let tmp = write_temp(path, &content)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(&dir, path)?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_error("create", path)(e)),
    }
}

/// Replaces the key file at `path` by one holding `set` (write to a temporary file, fsync,
/// rename over, fsync the directory), so a crash leaves either the old or the new file whole.
pub(crate) fn replace(path: &Path, set: &KeySet) -> Result<(), LocalKmsError> {
    let content = render(set)?;
    let tmp = write_temp(path, &content)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error("replace", path)(e));
    }
    sync_dir(&parent_dir(path), path)
}

fn write_temp(path: &Path, content: &[u8]) -> Result<PathBuf, LocalKmsError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = sibling(path, &format!("new.{}.{n}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error("create a temporary file next to", path))?;
    let written = file.write_all(content).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error("write a temporary file next to", path)(e));
    }
    Ok(tmp)
}

/// `<dir>/<file name>.<suffix>`.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

fn parent_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Makes a rename or link durable: without it, a crash can forget the new directory entry.
fn sync_dir(dir: &Path, path: &Path) -> Result<(), LocalKmsError> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("sync the directory of", path))
}

/// An exclusive lock for rotation: a `<key file>.lock` file created with `create_new`, removed
/// on drop. A crashed rotation leaves it behind; the error then says to remove it.
pub(crate) struct RotationLock {
    path: PathBuf,
}

impl RotationLock {
    pub(crate) fn acquire(key_file: &Path) -> Result<Self, LocalKmsError> {
        let path = sibling(key_file, "lock");
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(_) => Ok(Self { path }),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                Err(LocalKmsError::Locked { path: key_file.to_owned(), lock: path })
            }
            Err(e) => Err(io_error("lock", key_file)(e)),
        }
    }
}

impl Drop for RotationLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
