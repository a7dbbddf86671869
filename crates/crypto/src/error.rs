//! The crate's two error types: `KmsError` for the key management port (adapters map provider
//! errors to it) and `CryptoError` for everything else.
//!
//! Messages are deliberately short and carry no key material, plaintext or ciphertext bytes. A
//! failed decryption says only that it failed: whether the key, the AAD or the bytes were wrong is
//! exactly what an attacker probing with modified ciphertexts would like to learn.

use thiserror::Error;

/// An error from a key management service (AWS KMS, Vault, Azure Key Vault, a local key file).
///
/// Adapters map their provider's errors to these variants. The API answers 503 (retry later)
/// both for `Unavailable` and for the refusals an operator must fix (`AccessDenied`,
/// `KeyNotFound`, `KeyVersionRetired`: see [`KmsError::needs_operator`]), and 500 for
/// `InvalidCiphertext` and `Other`. The `String` payloads are for logs only: adapters must not
/// put key material or plaintext in them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KmsError {
    /// The service could not be reached or refused for now (network, timeout, throttling, 5xx).
    /// Retryable.
    #[error("key management service unavailable: {0}")]
    Unavailable(String),
    /// The service refused: our credentials may not use this key (or this encryption context).
    #[error("key management service denied access: {0}")]
    AccessDenied(String),
    /// The key (or key version) does not exist, is disabled, or is scheduled for deletion.
    #[error("key not found: {0}")]
    KeyNotFound(String),
    /// The key exists, but the version that wrapped this data key may no longer decrypt: it was
    /// retired by policy (Vault's `min_decryption_version` raised above it). Nothing was
    /// destroyed: lowering the minimum again makes the data readable.
    #[error("key version retired by policy: {0}")]
    KeyVersionRetired(String),
    /// The wrapped key is malformed, or does not authenticate under this key and context.
    #[error("wrapped key is invalid or does not match its context")]
    InvalidCiphertext,
    /// Anything else (unexpected response, local failure).
    #[error("key management error: {0}")]
    Other(String),
}

impl KmsError {
    /// True when the same call may succeed later (the API answers 503 and the client retries).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// True when the service refuses us for a reason only an operator can clear: our credentials
    /// (a revoked or expired token, a lost role assignment), a disabled or deleted key, a retired
    /// key version. Retrying at once does not help, but the request itself is sound: once the
    /// operator fixes the KMS, the same request succeeds, so the client is told to retry later.
    pub fn needs_operator(&self) -> bool {
        matches!(self, Self::AccessDenied(_) | Self::KeyNotFound(_) | Self::KeyVersionRetired(_))
    }
}

/// Errors of envelope encryption, key handling and parsing.
#[derive(Debug, Error)]
pub enum CryptoError {
    /// The ciphertext bytes are not a well-formed field ciphertext (truncated, bad length, bad
    /// UTF-8 in a key id, trailing garbage in text form). The reason names the field, never data.
    #[error("malformed ciphertext: {0}")]
    Malformed(&'static str),
    /// The ciphertext's format version byte is not one this build understands.
    #[error("unsupported ciphertext format version {0}")]
    UnsupportedVersion(u8),
    /// Authentication failed: wrong key, wrong AAD (another tenant, table, column or row), or
    /// modified bytes. Deliberately says nothing about which.
    #[error("decryption failed")]
    Decrypt,
    /// Sealing failed (only possible for inputs beyond AES-GCM's size limit).
    #[error("encryption failed")]
    Encrypt,
    /// A value given to a constructor is out of range (key length, key id length, ...).
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// This in-memory data key handle has sealed `MAX_ENCRYPTIONS_PER_DEK` messages; a new DEK
    /// generation is needed before encrypting more under it.
    #[error("data key reached its encryption limit; rotate the data key")]
    DataKeyExhausted,
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Random,
    /// Two keyring entries claim the same KEK id, so unwrapping would be ambiguous.
    #[error("duplicate key-encryption key id in keyring: {0}")]
    DuplicateKek(String),
    /// The key management service failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
}
