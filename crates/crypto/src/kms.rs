//! The `KeyManagement` port, and the wrap format for KEKs that live in process memory.

use crate::encoding::{Reader, put_len_prefixed};
use crate::envelope::{NONCE_LEN, TAG_LEN, aes_key, random_nonce};
use crate::error::{CryptoError, KmsError};
use crate::keys::{DataKey, KEY_LEN, Kek, KekInfo, KeyContext, WrappedDataKey};
use async_trait::async_trait;
use ring::aead::Nonce;
use zeroize::Zeroizing;

/// A key management service that wraps (encrypts) and unwraps data keys under a KEK it holds.
///
/// Contract for adapters:
/// - `WrappedDataKey::kek_id` is always `key_info().key_id`, so a `Keyring` can route unwraps.
/// - The `KeyContext` is bound to the wrapped key (AWS `EncryptionContext`, Vault `context`, AEAD
///   AAD): unwrapping with any other context fails with `KmsError::InvalidCiphertext`.
/// - Errors are mapped to `KmsError`; network and throttling errors are `Unavailable`.
/// - Implementations never log key material or the plaintext DEK.
#[async_trait]
pub trait KeyManagement: Send + Sync {
    /// A new random DEK and its wrapped form. The default generates the key locally with the
    /// OS CSPRNG and calls `wrap`; adapters whose service generates keys (AWS `GenerateDataKey`)
    /// may override it.
    async fn generate_data_key(&self, ctx: &KeyContext) -> Result<(DataKey, WrappedDataKey), KmsError> {
        let key = DataKey::generate().map_err(|e| KmsError::Other(e.to_string()))?;
        let wrapped = self.wrap(&key, ctx).await?;
        Ok((key, wrapped))
    }

    /// Wraps `key` under the current primary KEK version, bound to `ctx`.
    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError>;

    /// Unwraps a DEK wrapped by this backend (any KEK version it still has).
    async fn unwrap(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<DataKey, KmsError>;

    /// Re-wraps under the current primary KEK version (KEK rotation). The default unwraps and
    /// wraps; services with a native re-encrypt (AWS `ReEncrypt`, Vault `rewrap`) should override
    /// it so the plaintext DEK never leaves the service.
    async fn rewrap(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
        let key = self.unwrap(wrapped, ctx).await?;
        self.wrap(&key, ctx).await
    }

    /// Which KEK `wrap` uses now.
    fn key_info(&self) -> KekInfo;

    /// Checks that the service answers and the key is usable (for readiness probes).
    async fn health_check(&self) -> Result<(), KmsError>;
}

/// Version byte of the in-memory wrap format below.
const WRAP_FORMAT_V1: u8 = 0x01;
const WRAP_AAD_LABEL: &[u8] = b"praxis.dek-wrap.v1";
/// Length of a wrapped key produced by `wrap_with_kek`: version, nonce, 32-byte key, tag.
pub const WRAPPED_KEY_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;

fn wrap_aad(kek_id: &str, kek_version: &str, ctx: &KeyContext) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    put_len_prefixed(&mut out, WRAP_AAD_LABEL);
    put_len_prefixed(&mut out, kek_id.as_bytes());
    put_len_prefixed(&mut out, kek_version.as_bytes());
    put_len_prefixed(&mut out, &ctx.canonical_bytes());
    out
}

/// Wraps `key` with AES-256-GCM under a KEK held in memory (for `kms-local` and tests).
///
/// `ciphertext` = `0x01 || nonce (12) || AES-256-GCM(key) (32) || tag (16)`, 61 bytes, with AAD
/// = `lp("praxis.dek-wrap.v1") || lp(kek id) || lp(kek version) || lp(ctx.canonical_bytes())`.
/// Binding the KEK id and version means a wrapped key relabelled to another KEK version fails
/// to unwrap instead of being tried under the wrong key; binding `ctx` means a wrapped DEK copied
/// to another patient's row fails too.
pub fn wrap_with_kek(kek: &Kek, key: &DataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
    let aes = aes_key(kek.expose_secret()).map_err(|e| KmsError::Other(e.to_string()))?;
    let nonce = random_nonce().map_err(|e| KmsError::Other(e.to_string()))?;
    let aad = wrap_aad(kek.id(), kek.version(), ctx);
    let mut out = Zeroizing::new(Vec::with_capacity(WRAPPED_KEY_LEN));
    out.push(WRAP_FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(key.expose_secret());
    let tag = aes
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from(&aad),
            &mut out[1 + NONCE_LEN..],
        )
        .map_err(|_| KmsError::Other("wrapping failed".to_owned()))?;
    out.extend_from_slice(tag.as_ref());
    Ok(WrappedDataKey { kek_id: kek.id().to_owned(), kek_version: kek.version().to_owned(), ciphertext: out.to_vec() })
}

/// Unwraps a key produced by `wrap_with_kek` under `kek` and `ctx`.
///
/// Fails with `KeyNotFound` when `wrapped` names another KEK id or version (the caller picked the
/// wrong KEK), and with `InvalidCiphertext` when the bytes are malformed or do not authenticate.
pub fn unwrap_with_kek(kek: &Kek, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<DataKey, KmsError> {
    if wrapped.kek_id != kek.id() || wrapped.kek_version != kek.version() {
        return Err(KmsError::KeyNotFound(format!("{}:{} is not the KEK given", wrapped.kek_id, wrapped.kek_version)));
    }
    let invalid = |_| KmsError::InvalidCiphertext;
    let mut r = Reader::new(&wrapped.ciphertext);
    let version = r.u8("version").map_err(invalid)?;
    if version != WRAP_FORMAT_V1 || wrapped.ciphertext.len() != WRAPPED_KEY_LEN {
        return Err(KmsError::InvalidCiphertext);
    }
    let nonce = r.array::<NONCE_LEN>("nonce").map_err(invalid)?;
    let mut buf = Zeroizing::new(r.remaining().to_vec());
    let aes = aes_key(kek.expose_secret()).map_err(|e| KmsError::Other(e.to_string()))?;
    let aad = wrap_aad(kek.id(), kek.version(), ctx);
    let plain = aes
        .open_in_place(Nonce::assume_unique_for_key(nonce), ring::aead::Aad::from(&aad), &mut buf[..])
        .map_err(|_| KmsError::InvalidCiphertext)?;
    DataKey::from_bytes(plain).map_err(|_: CryptoError| KmsError::InvalidCiphertext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::{PatientId, TenantId};

    #[test]
    fn wrap_round_trip_and_context_binding() {
        let kek = Kek::generate("local", "1").unwrap();
        let dek = DataKey::generate().unwrap();
        let ctx = KeyContext::patient_data(TenantId::new(), PatientId::new());
        let wrapped = wrap_with_kek(&kek, &dek, &ctx).unwrap();
        assert_eq!(wrapped.ciphertext.len(), WRAPPED_KEY_LEN);
        assert_eq!(wrapped.kek_id, "local");
        let back = unwrap_with_kek(&kek, &wrapped, &ctx).unwrap();
        assert_eq!(back.expose_secret(), dek.expose_secret());

        let other_patient = KeyContext::patient_data(ctx.tenant, PatientId::new());
        assert_eq!(unwrap_with_kek(&kek, &wrapped, &other_patient).unwrap_err(), KmsError::InvalidCiphertext);
        let other_tenant = KeyContext::patient_data(TenantId::new(), ctx.patient);
        assert!(unwrap_with_kek(&kek, &wrapped, &other_tenant).is_err());
    }

    #[test]
    fn every_flipped_bit_of_a_wrapped_key_is_rejected() {
        let kek = Kek::generate("local", "1").unwrap();
        let dek = DataKey::generate().unwrap();
        let ctx = KeyContext::patient_data(TenantId::new(), PatientId::new());
        let wrapped = wrap_with_kek(&kek, &dek, &ctx).unwrap();
        for i in 0..wrapped.ciphertext.len() * 8 {
            let mut bad = wrapped.clone();
            bad.ciphertext[i / 8] ^= 1 << (i % 8);
            assert!(unwrap_with_kek(&kek, &bad, &ctx).is_err(), "bit {i}");
        }
        for len in 0..wrapped.ciphertext.len() {
            let mut short = wrapped.clone();
            short.ciphertext.truncate(len);
            assert_eq!(unwrap_with_kek(&kek, &short, &ctx).unwrap_err(), KmsError::InvalidCiphertext);
        }
    }

    #[test]
    fn wrong_kek_is_rejected() {
        let kek = Kek::generate("local", "1").unwrap();
        let same_label_other_key = Kek::generate("local", "1").unwrap();
        let other_version = Kek::new("local", "2", kek.expose_secret()).unwrap();
        let dek = DataKey::generate().unwrap();
        let ctx = KeyContext::patient_data(TenantId::new(), PatientId::new());
        let wrapped = wrap_with_kek(&kek, &dek, &ctx).unwrap();
        assert_eq!(unwrap_with_kek(&same_label_other_key, &wrapped, &ctx).unwrap_err(), KmsError::InvalidCiphertext);
        assert!(matches!(unwrap_with_kek(&other_version, &wrapped, &ctx), Err(KmsError::KeyNotFound(_))));
        // Relabelling the wrapped key does not help: the label is authenticated.
        let mut relabelled = wrapped.clone();
        relabelled.kek_version = "2".to_owned();
        assert_eq!(unwrap_with_kek(&other_version, &relabelled, &ctx).unwrap_err(), KmsError::InvalidCiphertext);
    }
}
