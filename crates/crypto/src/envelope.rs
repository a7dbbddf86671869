//! Field ciphertexts: AES-256-GCM under a patient's DEK, in a versioned binary format.
//!
//! # Format, version 1
//!
//! ```text
//! offset      size  field
//! 0           1     format version = 0x01
//! 1           1     n = KEK id length, 1..=255
//! 2           n     KEK id, UTF-8
//! 2+n         1     m = KEK version length, 0..=255
//! 3+n         m     KEK version, UTF-8 (empty when the backend hides versions)
//! 3+n+m       16    DEK reference: patient id (UUID, big-endian bytes)
//! 19+n+m      4     DEK reference: generation (u32, big-endian)
//! 23+n+m      12    nonce (random)
//! 35+n+m      L+16  AES-256-GCM ciphertext of the L plaintext bytes, then the 16-byte tag
//! ```
//!
//! Everything before the nonce is the *header*. The header is authenticated: the AAD given to GCM
//! is `lp("praxis.field.v1") || lp(header) || Aad::encode` (`lp` = u64 big-endian length, then
//! the bytes), so changing any header bit, like any other bit, fails decryption. The shortest
//! valid ciphertext is 52 bytes (1-byte KEK id, empty version, empty plaintext).
//!
//! The DEK reference tells the reader which stored DEK row to fetch, before decrypting.
//! The KEK id and version record which KEK wrapped the DEK *when the field was written*. They are
//! informational (audit, migration progress): rotating or migrating KEKs rewraps the DEK row only
//! and does not touch field ciphertexts, so after a rewrap these header values are stale. The
//! authoritative KEK of a DEK is the `WrappedDataKey` stored in its row.
//!
//! Unknown versions are rejected, lengths are checked before every read, and trailing bytes cannot
//! exist (the body runs to the end). Parsing never panics on any input.

use crate::aad::Aad;
use crate::encoding::{Reader, put_len_prefixed};
use crate::error::CryptoError;
use crate::keys::{DataKey, DekRef, Kek, WrappedDataKey, validate_kek_labels};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kernel::PatientId;
use ring::aead::{AES_256_GCM, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

/// The only ciphertext format version this build writes and reads.
pub const FORMAT_V1: u8 = 0x01;
/// AES-GCM nonce length: 96 bits.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length: 128 bits.
pub const TAG_LEN: usize = 16;

const FIELD_AAD_LABEL: &[u8] = b"praxis.field.v1";

/// The unencrypted, authenticated prefix of a field ciphertext: which keys to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldHeader {
    kek_id: String,
    kek_version: String,
    dek: DekRef,
}

impl FieldHeader {
    /// A header; fails when the KEK id is empty or either label exceeds 255 bytes.
    pub fn new(kek_id: impl Into<String>, kek_version: impl Into<String>, dek: DekRef) -> Result<Self, CryptoError> {
        let (kek_id, kek_version) = validate_kek_labels(kek_id.into(), kek_version.into())?;
        Ok(Self { kek_id, kek_version, dek })
    }

    /// The header for fields sealed under the DEK `dek`, whose stored form is `wrapped`.
    pub fn for_wrapped(dek: DekRef, wrapped: &WrappedDataKey) -> Result<Self, CryptoError> {
        Self::new(wrapped.kek_id.clone(), wrapped.kek_version.clone(), dek)
    }

    /// Reads the header of a ciphertext without decrypting it (and without authenticating it:
    /// use the result only to find the DEK, then let `decrypt_field` verify everything).
    pub fn parse(ciphertext: &[u8]) -> Result<Self, CryptoError> {
        decode_parts(ciphertext).map(|parts| parts.header)
    }

    pub fn kek_id(&self) -> &str {
        &self.kek_id
    }

    pub fn kek_version(&self) -> &str {
        &self.kek_version
    }

    pub fn dek(&self) -> DekRef {
        self.dek
    }

    /// Length of the encoded header in bytes.
    pub fn encoded_len(&self) -> usize {
        1 + 1 + self.kek_id.len() + 1 + self.kek_version.len() + 16 + 4
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(FORMAT_V1);
        // Lengths were checked against Kek::MAX_LABEL_LEN (255) on construction.
        out.push(label_len(&self.kek_id));
        out.extend_from_slice(self.kek_id.as_bytes());
        out.push(label_len(&self.kek_version));
        out.extend_from_slice(self.kek_version.as_bytes());
        out.extend_from_slice(self.dek.patient.as_uuid().as_bytes());
        out.extend_from_slice(&self.dek.generation.to_be_bytes());
    }
}

fn label_len(label: &str) -> u8 {
    debug_assert!(label.len() <= Kek::MAX_LABEL_LEN);
    u8::try_from(label.len()).unwrap_or(u8::MAX)
}

/// A decoded field ciphertext. Mostly useful for tests and tools; the store keeps the encoded
/// bytes and calls `decrypt_field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedField {
    pub header: FieldHeader,
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub sealed: Vec<u8>,
}

impl EncryptedField {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header.encoded_len() + NONCE_LEN + self.sealed.len());
        self.header.encode_into(&mut out);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Strict decoding: see the module documentation for what is rejected.
    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let parts = decode_parts(bytes)?;
        Ok(Self { header: parts.header, nonce: parts.nonce, sealed: parts.sealed.to_vec() })
    }
}

struct Parts<'a> {
    header: FieldHeader,
    header_bytes: &'a [u8],
    nonce: [u8; NONCE_LEN],
    sealed: &'a [u8],
}

fn decode_parts(bytes: &[u8]) -> Result<Parts<'_>, CryptoError> {
    let mut r = Reader::new(bytes);
    let version = r.u8("truncated before version")?;
    if version != FORMAT_V1 {
        return Err(CryptoError::UnsupportedVersion(version));
    }
    let id_len = usize::from(r.u8("truncated before KEK id length")?);
    if id_len == 0 {
        return Err(CryptoError::Malformed("empty KEK id"));
    }
    let kek_id = utf8(r.take(id_len, "truncated in KEK id")?, "KEK id is not UTF-8")?;
    let version_len = usize::from(r.u8("truncated before KEK version length")?);
    let kek_version = utf8(r.take(version_len, "truncated in KEK version")?, "KEK version is not UTF-8")?;
    let patient = Uuid::from_bytes(r.array::<16>("truncated in DEK patient id")?);
    let generation = u32::from_be_bytes(r.array::<4>("truncated in DEK generation")?);
    let header_len = 1 + 1 + id_len + 1 + version_len + 16 + 4;
    let nonce = r.array::<NONCE_LEN>("truncated in nonce")?;
    let sealed = r.remaining();
    if sealed.len() < TAG_LEN {
        return Err(CryptoError::Malformed("shorter than the authentication tag"));
    }
    let header_bytes = bytes.get(..header_len).ok_or(CryptoError::Malformed("truncated header"))?;
    let header = FieldHeader { kek_id, kek_version, dek: DekRef::new(PatientId::from_uuid(patient), generation) };
    Ok(Parts { header, header_bytes, nonce, sealed })
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String, CryptoError> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| CryptoError::Malformed(what))
}

/// The AAD given to AES-GCM: a domain label, the header bytes and the caller's `Aad`.
fn gcm_aad(header_bytes: &[u8], aad: &Aad<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + FIELD_AAD_LABEL.len() + 8 + header_bytes.len() + 96);
    put_len_prefixed(&mut out, FIELD_AAD_LABEL);
    put_len_prefixed(&mut out, header_bytes);
    aad.encode_into(&mut out);
    out
}

pub(crate) fn aes_key(key: &[u8; 32]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::InvalidInput("AES-256 key must be 32 bytes"))
}

pub(crate) fn random_nonce() -> Result<[u8; NONCE_LEN], CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    Ok(nonce)
}

/// Encrypts one field value under `dek`, bound to `aad`, with a fresh random nonce.
///
/// Returns the encoded ciphertext (format above). Fails with `DataKeyExhausted` once this DEK
/// handle has sealed `MAX_ENCRYPTIONS_PER_DEK` messages. The plaintext is copied once, into the
/// output buffer, and encrypted there in place; on failure that buffer is zeroized.
pub fn encrypt_field(
    dek: &DataKey,
    header: &FieldHeader,
    aad: &Aad<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let key = aes_key(dek.expose_secret())?;
    let nonce = random_nonce()?;
    dek.reserve_encryption()?;

    let header_len = header.encoded_len();
    let mut out = Vec::with_capacity(header_len + NONCE_LEN + plaintext.len() + TAG_LEN);
    header.encode_into(&mut out);
    let gcm_aad = gcm_aad(&out, aad);
    out.extend_from_slice(&nonce);
    let body_start = out.len();
    out.extend_from_slice(plaintext);

    let sealed = key.seal_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        ring::aead::Aad::from(&gcm_aad),
        &mut out[body_start..],
    );
    match sealed {
        Ok(tag) => {
            out.extend_from_slice(tag.as_ref());
            Ok(out)
        }
        Err(_) => {
            out.zeroize();
            Err(CryptoError::Encrypt)
        }
    }
}

/// Decrypts a field ciphertext sealed under `dek` for exactly this `aad`.
///
/// Any difference (another key, tenant, table, column or row, or any modified byte of the
/// ciphertext) gives `CryptoError::Decrypt`. The plaintext comes back in a buffer that is
/// zeroized when dropped.
pub fn decrypt_field(dek: &DataKey, aad: &Aad<'_>, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let parts = decode_parts(ciphertext)?;
    let gcm_aad = gcm_aad(parts.header_bytes, aad);
    let key = aes_key(dek.expose_secret())?;
    let mut buf = Zeroizing::new(parts.sealed.to_vec());
    let plaintext_len = key
        .open_in_place(Nonce::assume_unique_for_key(parts.nonce), ring::aead::Aad::from(&gcm_aad), &mut buf[..])
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buf.truncate(plaintext_len);
    Ok(buf)
}

/// The text form of a ciphertext, for text columns and JSON: unpadded base64url.
pub fn to_text(ciphertext: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ciphertext)
}

/// Parses the text form strictly (no padding, no whitespace, canonical trailing bits).
pub fn from_text(text: &str) -> Result<Vec<u8>, CryptoError> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| CryptoError::Malformed("text form is not unpadded base64url"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::TenantId;

    fn header() -> FieldHeader {
        FieldHeader::new("test-kek", "3", DekRef::new(PatientId::new(), 7)).unwrap()
    }

    #[test]
    fn round_trip_and_header_parse() {
        let dek = DataKey::generate().unwrap();
        let h = header();
        let aad = Aad::new(TenantId::new(), "patients", "notes", Uuid::now_v7());
        let ct = encrypt_field(&dek, &h, &aad, b"hello").unwrap();
        assert_eq!(ct.len(), h.encoded_len() + NONCE_LEN + 5 + TAG_LEN);
        assert_eq!(FieldHeader::parse(&ct).unwrap(), h);
        assert_eq!(&decrypt_field(&dek, &aad, &ct).unwrap()[..], b"hello");
        assert_eq!(dek.encryptions(), 1);
    }

    #[test]
    fn shortest_valid_ciphertext_is_52_bytes() {
        let dek = DataKey::generate().unwrap();
        let h = FieldHeader::new("k", "", DekRef::new(PatientId::new(), 1)).unwrap();
        let aad = Aad::new(TenantId::new(), "t", "c", Uuid::nil());
        let ct = encrypt_field(&dek, &h, &aad, b"").unwrap();
        assert_eq!(ct.len(), 52);
        assert!(decrypt_field(&dek, &aad, &ct).unwrap().is_empty());
        assert!(matches!(FieldHeader::parse(&ct[..51]), Err(CryptoError::Malformed(_))));
    }

    #[test]
    fn unknown_versions_are_rejected() {
        let dek = DataKey::generate().unwrap();
        let aad = Aad::new(TenantId::new(), "t", "c", Uuid::nil());
        let mut ct = encrypt_field(&dek, &header(), &aad, b"x").unwrap();
        for v in [0u8, 2, 0x81, 0xFF] {
            ct[0] = v;
            assert!(matches!(decrypt_field(&dek, &aad, &ct), Err(CryptoError::UnsupportedVersion(x)) if x == v));
        }
    }

    #[test]
    fn exhausted_key_refuses_to_encrypt() {
        let dek = DataKey::generate().unwrap();
        dek.set_encryptions_for_test(crate::MAX_ENCRYPTIONS_PER_DEK);
        let aad = Aad::new(TenantId::new(), "t", "c", Uuid::nil());
        assert!(matches!(encrypt_field(&dek, &header(), &aad, b"x"), Err(CryptoError::DataKeyExhausted)));
    }

    #[test]
    fn text_form_is_strict() {
        let bytes = vec![0xFBu8, 0xFF, 0x00, 0x10];
        let text = to_text(&bytes);
        assert!(!text.contains('=') && !text.contains('+') && !text.contains('/'));
        assert_eq!(from_text(&text).unwrap(), bytes);
        assert!(from_text(&format!("{text}=")).is_err());
        assert!(from_text(&format!(" {text}")).is_err());
        assert!(from_text("+/+/").is_err());
    }
}
