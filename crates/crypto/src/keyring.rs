//! A keyring: one primary KMS backend for new keys, any number of older ones for reading.

use crate::error::{CryptoError, KmsError};
use crate::keys::{DataKey, KekInfo, KeyContext, WrappedDataKey};
use crate::kms::KeyManagement;
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;

/// Wraps new DEKs with the primary KEK and unwraps with whichever known KEK wrapped them.
///
/// Why: moving from one backend to another (local key file to AWS KMS, AWS to Vault) cannot
/// re-encrypt every DEK at once. During the migration the old backend stays in the keyring for
/// reading, `rewrap` moves DEK rows over one by one (`needs_rewrap` finds them), and once none
/// is left the old backend is removed from the configuration. Field ciphertexts are untouched.
///
/// The keyring is itself a `KeyManagement`, so the rest of the application holds one
/// `Arc<dyn KeyManagement>` either way. Entries are routed by `key_info().key_id`, read once at
/// construction; a wrapped key naming an unknown KEK id fails with `KmsError::KeyNotFound`.
pub struct Keyring {
    primary_id: String,
    primary: Arc<dyn KeyManagement>,
    /// Every backend including the primary, primary first; ids are unique.
    entries: Vec<(String, Arc<dyn KeyManagement>)>,
}

impl Keyring {
    /// A keyring that wraps with `primary` and can also unwrap with each of `secondaries`.
    /// Fails when two backends report the same key id (routing would be ambiguous).
    pub fn new(
        primary: Arc<dyn KeyManagement>,
        secondaries: impl IntoIterator<Item = Arc<dyn KeyManagement>>,
    ) -> Result<Self, CryptoError> {
        let primary_id = primary.key_info().key_id;
        let mut entries: Vec<(String, Arc<dyn KeyManagement>)> = Vec::new();
        for backend in std::iter::once(primary.clone()).chain(secondaries) {
            let id = backend.key_info().key_id;
            if entries.iter().any(|(known, _)| *known == id) {
                return Err(CryptoError::DuplicateKek(id));
            }
            entries.push((id, backend));
        }
        Ok(Self { primary_id, primary, entries })
    }

    fn backend_for(&self, kek_id: &str) -> Result<&Arc<dyn KeyManagement>, KmsError> {
        self.entries
            .iter()
            .find(|(id, _)| id == kek_id)
            .map(|(_, backend)| backend)
            .ok_or_else(|| KmsError::KeyNotFound(format!("no keyring entry for KEK {kek_id}")))
    }

    /// True when `wrapped` is not under the primary KEK's current version: a rotation or
    /// migration job should `rewrap` it.
    pub fn needs_rewrap(&self, wrapped: &WrappedDataKey) -> bool {
        let primary = self.primary.key_info();
        wrapped.kek_id != primary.key_id || wrapped.kek_version != primary.version
    }

    /// Every backend's current KEK, primary first.
    pub fn backends(&self) -> Vec<KekInfo> {
        self.entries.iter().map(|(_, backend)| backend.key_info()).collect()
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("backends", &self.backends()).finish()
    }
}

#[async_trait]
impl KeyManagement for Keyring {
    async fn generate_data_key(&self, ctx: &KeyContext) -> Result<(DataKey, WrappedDataKey), KmsError> {
        self.primary.generate_data_key(ctx).await
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
        self.primary.wrap(key, ctx).await
    }

    async fn unwrap(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<DataKey, KmsError> {
        self.backend_for(&wrapped.kek_id)?.unwrap(wrapped, ctx).await
    }

    /// Within the primary backend, delegates to its own `rewrap` (which may be native); from
    /// another backend, unwraps there and wraps with the primary.
    async fn rewrap(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
        if wrapped.kek_id == self.primary_id {
            return self.primary.rewrap(wrapped, ctx).await;
        }
        let key = self.backend_for(&wrapped.kek_id)?.unwrap(wrapped, ctx).await?;
        self.primary.wrap(&key, ctx).await
    }

    fn key_info(&self) -> KekInfo {
        self.primary.key_info()
    }

    /// Healthy only when every backend is: a secondary that cannot unwrap means old rows are
    /// unreadable.
    async fn health_check(&self) -> Result<(), KmsError> {
        for (_, backend) in &self.entries {
            backend.health_check().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_kms::InMemoryKms;
    use crate::test_support::block_on;
    use kernel::{PatientId, TenantId};

    fn ctx() -> KeyContext {
        KeyContext::patient_data(TenantId::new(), PatientId::new())
    }

    #[test]
    fn migrates_from_an_old_backend_to_a_new_primary() {
        block_on(async {
            let old = Arc::new(InMemoryKms::new("old-kek").unwrap());
            let new = Arc::new(InMemoryKms::new("new-kek").unwrap());
            let ctx = ctx();
            let (dek, wrapped_old) = old.generate_data_key(&ctx).await.unwrap();

            let ring = Keyring::new(new.clone(), [old.clone() as Arc<dyn KeyManagement>]).unwrap();
            assert_eq!(ring.key_info().key_id, "new-kek");
            assert!(ring.needs_rewrap(&wrapped_old));
            let via_ring = ring.unwrap(&wrapped_old, &ctx).await.unwrap();
            assert_eq!(via_ring.expose_secret(), dek.expose_secret());

            let wrapped_new = ring.rewrap(&wrapped_old, &ctx).await.unwrap();
            assert_eq!(wrapped_new.kek_id, "new-kek");
            assert!(!ring.needs_rewrap(&wrapped_new));
            // The new primary alone can read it: the old backend may now be retired.
            let alone = new.unwrap(&wrapped_new, &ctx).await.unwrap();
            assert_eq!(alone.expose_secret(), dek.expose_secret());

            let (_, fresh) = ring.generate_data_key(&ctx).await.unwrap();
            assert_eq!(fresh.kek_id, "new-kek");
        });
    }

    #[test]
    fn rotation_within_the_primary_uses_its_rewrap() {
        block_on(async {
            let kms = Arc::new(InMemoryKms::new("kek").unwrap());
            let ring = Keyring::new(kms.clone(), []).unwrap();
            let ctx = ctx();
            let (dek, v1) = ring.generate_data_key(&ctx).await.unwrap();
            assert_eq!(v1.kek_version, "1");
            kms.rotate().unwrap();
            assert!(ring.needs_rewrap(&v1));
            let v2 = ring.rewrap(&v1, &ctx).await.unwrap();
            assert_eq!(v2.kek_version, "2");
            assert!(!ring.needs_rewrap(&v2));
            assert_eq!(ring.unwrap(&v2, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
            assert_eq!(ring.unwrap(&v1, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
        });
    }

    #[test]
    fn unknown_kek_and_duplicates_are_refused() {
        block_on(async {
            let a = Arc::new(InMemoryKms::new("a").unwrap());
            let stranger = InMemoryKms::new("stranger").unwrap();
            let ctx = ctx();
            let (_, wrapped) = stranger.generate_data_key(&ctx).await.unwrap();
            let ring = Keyring::new(a.clone(), []).unwrap();
            assert!(matches!(ring.unwrap(&wrapped, &ctx).await, Err(KmsError::KeyNotFound(_))));
            assert!(matches!(
                Keyring::new(a.clone(), [a.clone() as Arc<dyn KeyManagement>]),
                Err(CryptoError::DuplicateKek(id)) if id == "a"
            ));
        });
    }

    #[test]
    fn health_requires_every_backend() {
        block_on(async {
            let a = Arc::new(InMemoryKms::new("a").unwrap());
            let b = Arc::new(InMemoryKms::new("b").unwrap());
            let ring = Keyring::new(a.clone(), [b.clone() as Arc<dyn KeyManagement>]).unwrap();
            assert!(ring.health_check().await.is_ok());
            b.set_unavailable(true);
            let err = ring.health_check().await.unwrap_err();
            assert!(err.is_retryable());
            assert!(format!("{ring:?}").contains("\"b\""));
        });
    }
}
