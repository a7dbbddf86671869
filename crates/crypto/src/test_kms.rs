//! `InMemoryKms`: a `KeyManagement` for tests only.
//!
//! Compiled only for this crate's tests or with the `test-kms` feature. Its KEKs are random and
//! live in process memory, so everything it wrapped is lost when the process exits: it must
//! never back real data. Development uses the `kms-local` adapter (a key file) instead.

use crate::error::{CryptoError, KmsError};
use crate::keys::{DataKey, Kek, KekInfo, KeyContext, WrappedDataKey};
use crate::kms::{KeyManagement, unwrap_with_kek, wrap_with_kek};
use async_trait::async_trait;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A test KMS: AES-256-GCM wrapping (`wrap_with_kek`) under random in-memory KEK versions
/// "1", "2", ..., the newest being primary. Counts calls so tests and benchmarks can see how
/// often the KMS was asked, and can simulate an outage.
pub struct InMemoryKms {
    key_id: String,
    /// Version n is at index n-1; the last one is primary.
    versions: Mutex<Vec<Kek>>,
    unavailable: AtomicBool,
    wrap_calls: AtomicU64,
    unwrap_calls: AtomicU64,
}

impl InMemoryKms {
    pub const BACKEND: &'static str = "in-memory-test";

    /// A KMS with one random KEK, version "1".
    pub fn new(key_id: impl Into<String>) -> Result<Self, CryptoError> {
        let key_id = key_id.into();
        let first = Kek::generate(key_id.clone(), "1")?;
        Ok(Self {
            key_id,
            versions: Mutex::new(vec![first]),
            unavailable: AtomicBool::new(false),
            wrap_calls: AtomicU64::new(0),
            unwrap_calls: AtomicU64::new(0),
        })
    }

    /// Adds a new random KEK version and makes it primary; older versions still unwrap.
    pub fn rotate(&self) -> Result<(), CryptoError> {
        let mut versions = self.versions();
        let next = (versions.len() + 1).to_string();
        versions.push(Kek::generate(self.key_id.clone(), next)?);
        Ok(())
    }

    /// While true, every call fails with `KmsError::Unavailable`.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::Relaxed);
    }

    pub fn wrap_calls(&self) -> u64 {
        self.wrap_calls.load(Ordering::Relaxed)
    }

    pub fn unwrap_calls(&self) -> u64 {
        self.unwrap_calls.load(Ordering::Relaxed)
    }

    fn versions(&self) -> MutexGuard<'_, Vec<Kek>> {
        self.versions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_available(&self) -> Result<(), KmsError> {
        if self.unavailable.load(Ordering::Relaxed) {
            return Err(KmsError::Unavailable("in-memory test KMS set unavailable".to_owned()));
        }
        Ok(())
    }
}

impl fmt::Debug for InMemoryKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryKms").field("key_id", &self.key_id).field("versions", &self.versions().len()).finish()
    }
}

#[async_trait]
impl KeyManagement for InMemoryKms {
    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
        self.check_available()?;
        self.wrap_calls.fetch_add(1, Ordering::Relaxed);
        let versions = self.versions();
        let primary = versions.last().ok_or_else(|| KmsError::KeyNotFound(self.key_id.clone()))?;
        wrap_with_kek(primary, key, ctx)
    }

    async fn unwrap(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<DataKey, KmsError> {
        self.check_available()?;
        self.unwrap_calls.fetch_add(1, Ordering::Relaxed);
        let versions = self.versions();
        let kek = versions
            .iter()
            .find(|kek| kek.id() == wrapped.kek_id && kek.version() == wrapped.kek_version)
            .ok_or_else(|| KmsError::KeyNotFound(format!("{}:{}", wrapped.kek_id, wrapped.kek_version)))?;
        unwrap_with_kek(kek, wrapped, ctx)
    }

    fn key_info(&self) -> KekInfo {
        let version = self.versions().last().map(|k| k.version().to_owned()).unwrap_or_default();
        KekInfo { backend: Self::BACKEND, key_id: self.key_id.clone(), version }
    }

    async fn health_check(&self) -> Result<(), KmsError> {
        self.check_available()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::block_on;
    use kernel::{PatientId, TenantId};

    #[test]
    fn generate_wrap_unwrap_and_outage() {
        block_on(async {
            let kms = InMemoryKms::new("test").unwrap();
            let ctx = KeyContext::patient_data(TenantId::new(), PatientId::new());
            let (dek, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
            assert_eq!(kms.key_info().backend, InMemoryKms::BACKEND);
            assert_eq!(kms.unwrap(&wrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
            assert_eq!((kms.wrap_calls(), kms.unwrap_calls()), (1, 1));

            let other = KeyContext::patient_data(ctx.tenant, PatientId::new());
            assert_eq!(kms.unwrap(&wrapped, &other).await.unwrap_err(), KmsError::InvalidCiphertext);

            kms.set_unavailable(true);
            assert!(kms.unwrap(&wrapped, &ctx).await.unwrap_err().is_retryable());
            assert!(kms.health_check().await.is_err());
            assert!(!format!("{kms:?}").contains("key:"));
        });
    }
}
