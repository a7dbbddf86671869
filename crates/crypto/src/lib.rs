//! Envelope encryption of patient data.
//!
//! Every piece of patient data at rest is a field ciphertext: AES-256-GCM under a per-patient data
//! encryption key (DEK), bound by its AAD to tenant, table, column and row. The DEK is stored only
//! wrapped by a key-encryption key (KEK) held in a key management service, behind the
//! `KeyManagement` port; adapters for AWS KMS, Vault, Azure and a local key file live in their own
//! crates. Destroying a patient's wrapped DEK makes every copy of their data unreadable
//! (crypto-shredding).
//!
//! Reading a field, as the patient store does it:
//! 1. `FieldHeader::parse(&ciphertext)` gives the `DekRef` (patient, generation) to fetch.
//! 2. `DekCache::get_or_try_insert_with` returns the cached DEK or loads the `WrappedDataKey` row
//!    and calls `KeyManagement::unwrap` with the patient's `KeyContext`.
//! 3. `decrypt_field(&dek, &Aad::new(tenant, "patients", "notes", row_id), &ciphertext)`.
//!
//! Writing: `encrypt_field(&dek, &FieldHeader::for_wrapped(dek_ref, &wrapped)?, &aad, value)`.
//!
//! The KMS adapters check their settings in the terms of `SettingsPlace` and `SettingProblem`, so
//! that the application lists every problem of every configured backend with its full path.
//!
//! Pure: no I/O, no clock reads (the cache takes a `kernel::Clock`), no async runtime. Crypto comes
//! from `ring` only; key material is zeroized with `zeroize`.

mod aad;
mod blind_index;
mod cache;
mod encoding;
mod envelope;
mod error;
mod keyring;
mod keys;
mod kms;
mod mac;
mod settings;
#[cfg(any(test, feature = "test-kms"))]
mod test_kms;
#[cfg(test)]
mod test_support;

pub use aad::Aad;
pub use blind_index::{blind_index, normalize_email, normalize_phone};
pub use cache::{DekCache, DekCacheConfig, DekCacheKey, DekCacheStats};
pub use envelope::{
    EncryptedField, FORMAT_V1, FieldHeader, NONCE_LEN, TAG_LEN, decrypt_field, encrypt_field, from_text, to_text,
};
pub use error::{CryptoError, KmsError};
pub use keyring::Keyring;
pub use keys::{
    BlindIndexKey, DataKey, DekRef, KEY_LEN, Kek, KekInfo, KeyContext, KeyPurpose, MAX_ENCRYPTIONS_PER_DEK,
    WrappedDataKey,
};
pub use kms::{KeyManagement, WRAPPED_KEY_LEN, unwrap_with_kek, wrap_with_kek};
pub use mac::{MAC_LEN, MacKey};
pub use settings::{SettingProblem, SettingsPlace};
#[cfg(any(test, feature = "test-kms"))]
pub use test_kms::InMemoryKms;

/// Plaintext returned by `decrypt_field` is wrapped in this; it zeroizes on drop.
pub use zeroize::Zeroizing;
