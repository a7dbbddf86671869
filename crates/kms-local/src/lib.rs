//! The local development KMS: a `KeyManagement` whose key-encryption keys live in a file.
//!
//! For development and tests on one machine only. The KEKs are on disk next to the data they
//! protect, so this adapter gives none of the guarantees of a real KMS (no separation of duties,
//! no audit trail of key use, no hardware boundary, crypto-shredding only as good as the
//! deletion of every copy of the key file). The API refuses to start with it in production.
//!
//! What it does guard against:
//! - Other local users: the key file is created with mode 0600 (its directory, when created
//!   here, 0700), and a key file that group or others may access is refused with an error that
//!   says how to fix it. The check is made on the opened file handle.
//! - Races and crashes: a new key file is written to a private temporary file, fsynced and then
//!   hard-linked into place, which fails if the file exists, so two processes starting at once
//!   end up with one key and nobody ever reads a half-written file. Rotation writes a new file
//!   and renames it over the old one under a `<file>.lock` (`create_new`) lock.
//! - Leaks: key bytes are zeroized after use (best effort: serde_json and the allocator may
//!   leave copies of the file's text behind) and never appear in `Debug` output or errors.
//!
//! Wrapping is `crypto::wrap_with_kek` (AES-256-GCM, AAD binding KEK id, KEK version and the
//! `KeyContext`), so a wrapped DEK copied to another patient fails to unwrap.
//!
//! Rotation: `LocalKms::rotate` adds a random KEK version and makes it primary; every version
//! stays in the file so older wrapped DEKs unwrap (and `rewrap` moves them to the primary).
//! Another process sharing the file picks up new versions when asked to unwrap one it does not
//! know (it re-reads the file), and wraps with the new primary after `reload` or a restart.
//!
//! Key file format: see the `keyfile` module (JSON: key id, primary version, hex keys).
//! File I/O is blocking; it happens at start-up, on rotation, and when an unknown version is
//! asked for, which is acceptable for a development backend.

mod keyfile;

use async_trait::async_trait;
use crypto::{
    CryptoError, DataKey, Kek, KekInfo, KeyContext, KeyManagement, KmsError, SettingProblem, SettingsPlace,
    WrappedDataKey,
};
use keyfile::{KeySet, RotationLock};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

/// `KekInfo::backend` of this adapter.
pub const BACKEND: &str = "local";
/// The key id used when the configuration names none.
pub const DEFAULT_KEY_ID: &str = "local";

/// The key file used when the configuration names none (relative to the working directory,
/// under cargo's `target/` so that a development checkout never commits it).
pub const DEFAULT_KEY_FILE: &str = "target/praxis-dev-kms.key";

/// Where the key file is and which key id a new one gets: the adapter's settings, as the
/// application's configuration spells them (`[kms.local]`, or a `[[kms.previous]]` entry with
/// `backend = "local"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalKmsConfig {
    /// The key file; created (with its directory) on first use by the primary backend.
    pub key_file: PathBuf,
    /// The KEK id written into a new key file and expected in an existing one. It becomes
    /// `WrappedDataKey::kek_id`, so it must differ from every other backend in a `Keyring` (two
    /// local backends in one keyring, a migration from one key file to another, need two ids).
    pub key_id: String,
}

impl Default for LocalKmsConfig {
    fn default() -> Self {
        Self::new(DEFAULT_KEY_FILE)
    }
}

impl LocalKmsConfig {
    /// A configuration with the default key id.
    pub fn new(key_file: impl Into<PathBuf>) -> Self {
        Self { key_file: key_file.into(), key_id: DEFAULT_KEY_ID.to_owned() }
    }

    /// Every problem of these settings at `place`, all at once. In production the backend
    /// itself is refused: its keys sit on disk next to the data they protect.
    pub fn problems(&self, place: &SettingsPlace<'_>) -> Vec<SettingProblem> {
        let mut problems = Vec::new();
        if self.key_file.as_os_str().is_empty() {
            problems.push(place.missing("key_file"));
        }
        if self.key_id.trim().is_empty() || self.key_id.len() > Kek::MAX_LABEL_LEN {
            problems.push(place.problem("key_id", format!("must be 1 to {} bytes", Kek::MAX_LABEL_LEN)));
        }
        if place.is_production() {
            problems.push(place.refused(
                "the local development KMS is not allowed in production; configure a real key management service",
            ));
        }
        problems
    }
}

/// Why the key file could not be used. Messages name the file and the fix, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum LocalKmsError {
    #[error("cannot {action} key file {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key file {} has mode {mode:04o}: group and others must have no access to it; fix it with `chmod 600 {}` (and check who may have copied it)",
        path.display(),
        path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("key file {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("key file {} is malformed: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("key file {} holds key id {found:?}, but {expected:?} is configured", path.display())]
    KeyIdMismatch { path: PathBuf, found: String, expected: String },
    #[error(
        "another rotation of key file {} is in progress (lock file {} exists); if none is running, remove the lock file",
        path.display(),
        lock.display()
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("{0}")]
    Other(String),
}

impl From<LocalKmsError> for KmsError {
    fn from(e: LocalKmsError) -> Self {
        KmsError::Other(e.to_string())
    }
}

/// The local development KMS. Cheap to share behind an `Arc`.
pub struct LocalKms {
    path: PathBuf,
    key_id: String,
    keys: RwLock<KeySet>,
    /// This process created the key file when it opened it (see [`LocalKms::created_the_file`]).
    created: bool,
}

impl LocalKms {
    /// Opens the key file, creating it with one random KEK version ("1") when it does not exist.
    pub fn open_or_create(config: &LocalKmsConfig) -> Result<Self, LocalKmsError> {
        let path = &config.key_file;
        if !path.exists() {
            let fresh = keyfile::new_set(&config.key_id)?;
            if keyfile::create(path, &fresh)? {
                return Ok(Self { created: true, ..Self::from_set(path, fresh) });
            }
            // Another process created it first: use theirs, read below like any existing file.
        }
        let set = keyfile::read(path)?;
        if set.key_id != config.key_id {
            return Err(LocalKmsError::KeyIdMismatch {
                path: path.clone(),
                found: set.key_id,
                expected: config.key_id.clone(),
            });
        }
        Ok(Self::from_set(path, set))
    }

    /// Opens an existing key file (its key id is the one recorded in it).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, LocalKmsError> {
        let path = path.into();
        let set = keyfile::read(&path)?;
        Ok(Self::from_set(&path, set))
    }

    /// Opens the existing key file of `config`, which must hold the configured key id: an older
    /// backend kept for unwrapping, whose file must not be created afresh (that would be a new
    /// key that unwraps nothing).
    pub fn open_existing(config: &LocalKmsConfig) -> Result<Self, LocalKmsError> {
        let kms = Self::open(&config.key_file)?;
        if kms.key_id != config.key_id {
            return Err(LocalKmsError::KeyIdMismatch {
                path: config.key_file.clone(),
                found: kms.key_id,
                expected: config.key_id.clone(),
            });
        }
        Ok(kms)
    }

    fn from_set(path: &Path, set: KeySet) -> Self {
        Self { path: path.to_owned(), key_id: set.key_id.clone(), keys: RwLock::new(set), created: false }
    }

    /// Whether [`LocalKms::open_or_create`] created the key file, because none was there. Right
    /// on an empty database (development set-up); with keys stored under a lost file it is a
    /// new key that opens none of them, which the server's start-up check refuses.
    pub fn created_the_file(&self) -> bool {
        self.created
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a random KEK version to the key file and makes it primary. Returns the new primary.
    ///
    /// Re-reads the file under the rotation lock first, so a rotation made by another process
    /// meanwhile is kept rather than overwritten.
    pub fn rotate(&self) -> Result<KekInfo, LocalKmsError> {
        let _lock = RotationLock::acquire(&self.path)?;
        let current = self.read_own_file()?;
        let rotated = keyfile::with_new_version(current)?;
        keyfile::replace(&self.path, &rotated)?;
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = rotated;
        Ok(self.key_info())
    }

    /// Re-reads the key file, e.g. after another process rotated it.
    pub fn reload(&self) -> Result<(), LocalKmsError> {
        let set = self.read_own_file()?;
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = set;
        Ok(())
    }

    /// Reads the key file and checks it still holds our key id (it may have been replaced).
    fn read_own_file(&self) -> Result<KeySet, LocalKmsError> {
        let set = keyfile::read(&self.path)?;
        if set.key_id != self.key_id {
            return Err(LocalKmsError::KeyIdMismatch {
                path: self.path.clone(),
                found: set.key_id,
                expected: self.key_id.clone(),
            });
        }
        Ok(set)
    }

    fn keys(&self) -> RwLockReadGuard<'_, KeySet> {
        // A panic while holding the lock cannot leave a half-updated set: it is replaced whole.
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn unwrap_known(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Option<Result<DataKey, KmsError>> {
        let keys = self.keys();
        keys.find(&wrapped.kek_version).map(|kek| crypto::unwrap_with_kek(kek, wrapped, ctx))
    }
}

impl fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys();
        f.debug_struct("LocalKms")
            .field("path", &self.path)
            .field("key_id", &self.key_id)
            .field("versions", &keys.keks.len())
            .field("primary", &keys.primary().map(|k| k.version().to_owned()))
            .finish()
    }
}

#[async_trait]
impl KeyManagement for LocalKms {
    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
        let keys = self.keys();
        let primary = keys.primary().ok_or_else(|| KmsError::KeyNotFound(format!("{}: no primary", self.key_id)))?;
        crypto::wrap_with_kek(primary, key, ctx)
    }

    async fn unwrap(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<DataKey, KmsError> {
        if wrapped.kek_id != self.key_id {
            return Err(KmsError::KeyNotFound(format!("{} is not the local key {}", wrapped.kek_id, self.key_id)));
        }
        if let Some(result) = self.unwrap_known(wrapped, ctx) {
            return result;
        }
        // A version we do not know may have been added by a rotation in another process.
        self.reload()?;
        self.unwrap_known(wrapped, ctx)
            .unwrap_or_else(|| Err(KmsError::KeyNotFound(format!("{}:{}", wrapped.kek_id, wrapped.kek_version))))
    }

    fn key_info(&self) -> KekInfo {
        let version = self.keys().primary().map(|k| k.version().to_owned()).unwrap_or_default();
        KekInfo { backend: BACKEND, key_id: self.key_id.clone(), version }
    }

    /// Fails when the key file is gone or has become accessible to group or others.
    async fn health_check(&self) -> Result<(), KmsError> {
        keyfile::check_permissions(&self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
