//! Key types: plaintext keys that zeroize on drop and never print, and the public descriptors
//! (`DekRef`, `WrappedDataKey`, `KeyContext`, `KekInfo`) that may be stored and logged.

use crate::encoding::put_len_prefixed;
use crate::error::CryptoError;
use kernel::{PatientId, TenantId};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of every symmetric key in this crate (AES-256, HMAC-SHA256 keys).
pub const KEY_LEN: usize = 32;

/// Most messages one data key handle may seal.
///
/// NIST SP 800-38D §8.3: with random 96-bit nonces, the total number of invocations of the
/// authenticated encryption function under one key shall not exceed 2^32, which keeps the
/// probability of a nonce collision (which would reveal the XOR of two plaintexts and allow tag
/// forgery) below 2^-32. A DEK belongs to one patient, so 2^32 field writes is far beyond any
/// real record; the limit is enforced per in-memory handle (see `DataKey`) as a backstop against
/// a bug such as an encryption loop, not as the primary control.
pub const MAX_ENCRYPTIONS_PER_DEK: u64 = 1 << 32;

/// 32 secret bytes on the heap, zeroized on drop, masked in Debug. Boxed so that moving the owning
/// value moves a pointer, not the key (a moved array would leave a stale copy behind).
struct KeyBytes(Box<[u8; KEY_LEN]>);

impl KeyBytes {
    fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Box::new([0u8; KEY_LEN]);
        SystemRandom::new().fill(&mut bytes[..]).map_err(|_| CryptoError::Random)?;
        Ok(Self(bytes))
    }

    fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::InvalidInput("key must be exactly 32 bytes"));
        }
        let mut key = Box::new([0u8; KEY_LEN]);
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }
}

impl Drop for KeyBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A plaintext data encryption key (DEK): AES-256-GCM, one per patient (and generation).
///
/// Threats addressed: the key never reaches a log (`Debug` prints a mask), is not `Clone` (so no
/// copies are made by accident; share it with `Arc<DataKey>`), and its bytes are zeroized when
/// the last owner drops it. It also counts how many messages it sealed and refuses to seal more
/// than `MAX_ENCRYPTIONS_PER_DEK`. The counter lives in this handle only: a DEK unwrapped again
/// from the KMS starts at zero. That is acceptable because the real bound (a patient's field
/// writes over their lifetime) is many orders of magnitude below 2^32.
///
/// Limit: ring expands the key into an AES key schedule for each operation and does not zeroize
/// that schedule; it lives briefly on the stack and is overwritten by later calls.
pub struct DataKey {
    key: KeyBytes,
    encryptions: AtomicU64,
}

impl DataKey {
    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self { key: KeyBytes::generate()?, encryptions: AtomicU64::new(0) })
    }

    /// A key from 32 bytes, e.g. the plaintext half of an AWS KMS `GenerateDataKey` answer.
    /// The caller should zeroize its own copy afterwards.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        Ok(Self { key: KeyBytes::from_slice(bytes)?, encryptions: AtomicU64::new(0) })
    }

    /// The raw key, for a KMS adapter to send to the service's encrypt call. Keep the borrow
    /// short; never log it or copy it into an unzeroized buffer.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.key.0
    }

    /// How many messages this handle has sealed.
    pub fn encryptions(&self) -> u64 {
        self.encryptions.load(Ordering::Relaxed)
    }

    /// Counts one more sealing, refusing once the limit is reached.
    pub(crate) fn reserve_encryption(&self) -> Result<(), CryptoError> {
        self.encryptions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < MAX_ENCRYPTIONS_PER_DEK).then_some(n + 1))
            .map(|_| ())
            .map_err(|_| CryptoError::DataKeyExhausted)
    }

    #[cfg(test)]
    pub(crate) fn set_encryptions_for_test(&self, n: u64) {
        self.encryptions.store(n, Ordering::Relaxed);
    }
}

impl ZeroizeOnDrop for DataKey {}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(")?;
        f.write_str(kernel::secret::MASK)?;
        f.write_str(")")
    }
}

/// A key-encryption key (KEK) held in process memory: for the local development KMS adapter
/// (`kms-local`) and the test KMS only. Production KEKs stay inside the KMS and never exist here.
pub struct Kek {
    id: String,
    version: String,
    key: KeyBytes,
}

impl Kek {
    /// Longest KEK id or version accepted: both are copied into every field ciphertext header
    /// with a one-byte length.
    pub const MAX_LABEL_LEN: usize = 255;

    /// A KEK from 32 bytes (e.g. read from a key file by `kms-local`).
    pub fn new(id: impl Into<String>, version: impl Into<String>, key: &[u8]) -> Result<Self, CryptoError> {
        let (id, version) = validate_kek_labels(id.into(), version.into())?;
        Ok(Self { id, version, key: KeyBytes::from_slice(key)? })
    }

    /// A fresh random KEK.
    pub fn generate(id: impl Into<String>, version: impl Into<String>) -> Result<Self, CryptoError> {
        let (id, version) = validate_kek_labels(id.into(), version.into())?;
        Ok(Self { id, version, key: KeyBytes::generate()? })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// The raw key, e.g. for `kms-local` to write a new key file. Never log it.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.key.0
    }
}

impl ZeroizeOnDrop for Kek {}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("key", &kernel::secret::MASK)
            .finish()
    }
}

pub(crate) fn validate_kek_labels(id: String, version: String) -> Result<(String, String), CryptoError> {
    if id.is_empty() || id.len() > Kek::MAX_LABEL_LEN {
        return Err(CryptoError::InvalidInput("KEK id must be 1..=255 bytes"));
    }
    if version.len() > Kek::MAX_LABEL_LEN {
        return Err(CryptoError::InvalidInput("KEK version must be at most 255 bytes"));
    }
    Ok((id, version))
}

/// The key for blind indexes (HMAC-SHA256). Separate from every DEK so that an index value says
/// nothing about field ciphertexts and the index can be rebuilt under a new key on its own.
pub struct BlindIndexKey {
    key: KeyBytes,
}

impl BlindIndexKey {
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self { key: KeyBytes::generate()? })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        Ok(Self { key: KeyBytes::from_slice(bytes)? })
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.key.0
    }
}

impl ZeroizeOnDrop for BlindIndexKey {}

impl fmt::Debug for BlindIndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindIndexKey(")?;
        f.write_str(kernel::secret::MASK)?;
        f.write_str(")")
    }
}

/// Which stored DEK a field ciphertext was sealed under: the patient it belongs to and the DEK
/// generation (1, 2, ... each time the patient's DEK is replaced).
///
/// The store keeps wrapped DEKs in a row keyed by `(tenant_id, patient_id, generation)`; the
/// tenant is not repeated here because it is in the AAD and in the request's RLS context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DekRef {
    pub patient: PatientId,
    pub generation: u32,
}

impl DekRef {
    pub const fn new(patient: PatientId, generation: u32) -> Self {
        Self { patient, generation }
    }
}

/// A DEK as the KMS returned it, encrypted under a KEK: safe to store next to the data.
///
/// `kek_id` must equal the `key_info().key_id` of the backend that produced it (the `Keyring`
/// routes unwrap calls by it); `ciphertext` is opaque, in the backend's own format.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDataKey {
    pub kek_id: String,
    pub kek_version: String,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for WrappedDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedDataKey")
            .field("kek_id", &self.kek_id)
            .field("kek_version", &self.kek_version)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// What a DEK is for. Part of the `KeyContext`, so a DEK wrapped for one purpose cannot be
/// unwrapped as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// Field encryption of one patient's data.
    PatientData,
    /// A practice's blind-index (HMAC) key, for equality lookups on encrypted fields.
    BlindIndex,
    /// A practice's audit-checkpoint signing (HMAC) key.
    AuditCheckpoint,
}

impl KeyPurpose {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PatientData => "patient-data",
            Self::BlindIndex => "blind-index",
            Self::AuditCheckpoint => "audit-checkpoint",
        }
    }
}

/// The context a DEK is bound to when wrapped: the AAD at the DEK level.
///
/// Adapters pass it to the KMS (AWS KMS `EncryptionContext`, Vault transit `context`, or as AEAD
/// AAD); the KMS then refuses to unwrap the DEK under any other context, and with AWS it appears
/// in CloudTrail, so every key use is attributable to a tenant and patient. The values are ids,
/// not personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyContext {
    pub tenant: TenantId,
    pub patient: PatientId,
    pub purpose: KeyPurpose,
}

impl KeyContext {
    pub const TENANT_KEY: &'static str = "praxis:tenant_id";
    pub const PATIENT_KEY: &'static str = "praxis:patient_id";
    pub const PURPOSE_KEY: &'static str = "praxis:purpose";

    /// The context of a patient's data key.
    pub const fn patient_data(tenant: TenantId, patient: PatientId) -> Self {
        Self { tenant, patient, purpose: KeyPurpose::PatientData }
    }

    /// The context of a practice-wide key (blind index, checkpoint signing). Such keys belong
    /// to no patient, so the patient slot holds the nil UUID, which no patient id ever is
    /// (patient ids are random v4/v7 UUIDs); the purpose keeps them apart from each other.
    pub fn tenant_key(tenant: TenantId, purpose: KeyPurpose) -> Self {
        Self { tenant, patient: PatientId::from_uuid(uuid::Uuid::nil()), purpose }
    }

    /// The context as string pairs, for KMS APIs that take a map (AWS `EncryptionContext`).
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [
            (Self::TENANT_KEY, self.tenant.to_string()),
            (Self::PATIENT_KEY, self.patient.to_string()),
            (Self::PURPOSE_KEY, self.purpose.as_str().to_owned()),
        ]
    }

    /// A canonical, unambiguous byte encoding, for KMS APIs that take one opaque context
    /// (Vault transit `context`, AEAD AAD). Stable: changing it orphans every wrapped DEK.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        put_len_prefixed(&mut out, b"praxis.key-context.v1");
        out.extend_from_slice(self.tenant.as_uuid().as_bytes());
        out.extend_from_slice(self.patient.as_uuid().as_bytes());
        put_len_prefixed(&mut out, self.purpose.as_str().as_bytes());
        out
    }
}

/// Which KEK a backend currently encrypts with, for health endpoints, logs and `needs_rewrap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekInfo {
    /// The backend's name, e.g. "aws-kms", "vault-transit", "local".
    pub backend: &'static str,
    /// The key's stable id (ARN, transit key name, ...); equals `WrappedDataKey::kek_id`.
    pub key_id: String,
    /// The current primary version; empty when the backend hides versions (AWS KMS).
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print_their_bytes() {
        let dek = DataKey::from_bytes(&[0xAB; 32]).unwrap();
        let kek = Kek::new("kek", "1", &[0xAB; 32]).unwrap();
        let bik = BlindIndexKey::from_bytes(&[0xAB; 32]).unwrap();
        for printed in [format!("{dek:?}"), format!("{kek:?}"), format!("{bik:?}")] {
            assert!(printed.contains(kernel::secret::MASK), "{printed}");
            assert!(!printed.to_lowercase().contains("ab, "), "{printed}");
            assert!(!printed.contains("171"), "{printed}");
        }
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(DataKey::from_bytes(&[0; 31]).is_err());
        assert!(DataKey::from_bytes(&[0; 33]).is_err());
        assert!(BlindIndexKey::from_bytes(&[]).is_err());
        assert!(Kek::new("k", "1", &[0; 16]).is_err());
    }

    #[test]
    fn kek_labels_are_bounded() {
        assert!(Kek::generate("", "1").is_err());
        assert!(Kek::generate("k".repeat(256), "1").is_err());
        assert!(Kek::generate("k".repeat(255), "v".repeat(255)).is_ok());
        assert!(Kek::generate("k", "v".repeat(256)).is_err());
    }

    #[test]
    fn generated_keys_differ() {
        let a = DataKey::generate().unwrap();
        let b = DataKey::generate().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn encryption_counter_stops_at_the_limit() {
        let dek = DataKey::generate().unwrap();
        dek.set_encryptions_for_test(MAX_ENCRYPTIONS_PER_DEK - 1);
        assert!(dek.reserve_encryption().is_ok());
        assert!(matches!(dek.reserve_encryption(), Err(CryptoError::DataKeyExhausted)));
        assert_eq!(dek.encryptions(), MAX_ENCRYPTIONS_PER_DEK);
    }

    #[test]
    fn key_context_encodings_separate_fields() {
        let t = TenantId::new();
        let p = PatientId::new();
        let a = KeyContext::patient_data(t, p);
        let b = KeyContext::patient_data(TenantId::from_uuid(*p.as_uuid()), PatientId::from_uuid(*t.as_uuid()));
        assert_ne!(a.canonical_bytes(), b.canonical_bytes());
        assert_eq!(a.pairs()[0].1, t.to_string());
        assert_eq!(a.pairs()[2].1, "patient-data");
    }
}
