//! Practice-wide MAC keys: HMAC-SHA256 under a 32-byte key that lives wrapped in the KMS
//! (`tenant_keys`) and, unwrapped, only in a `MacKey`. Used to sign audit checkpoints: a
//! checkpoint's MAC can be made and checked only with the KMS's help, so someone who can write
//! the database but cannot use the KMS cannot forge one.
//!
//! Threats addressed: the key never prints (`Debug` is masked) and is zeroized on drop; tags are
//! compared in constant time (`ring::hmac::verify`), so a forger learns nothing from timing
//! about how many leading bytes of a guessed tag were right.
//!
//! Limit, as for `DataKey`: ring derives its HMAC state from the key for each call and does not
//! zeroize it; it lives briefly on the stack and is overwritten by later calls.

use crate::error::CryptoError;
use crate::keys::{DataKey, KEY_LEN};
use ring::hmac;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a tag made by [`MacKey::sign`].
pub const MAC_LEN: usize = 32;

/// An HMAC-SHA256 key. Not `Clone`: share it with `Arc<MacKey>`.
pub struct MacKey {
    key: Box<[u8; KEY_LEN]>,
}

impl MacKey {
    /// The key from a data key the KMS generated or unwrapped (the KMS port speaks `DataKey`);
    /// `key` is dropped, and zeroized, here.
    pub fn from_data_key(key: DataKey) -> Self {
        let mut mac = Self { key: Box::new([0u8; KEY_LEN]) };
        // Copied heap to heap: no stack copy of the key is left behind.
        mac.key.copy_from_slice(key.expose_secret());
        mac
    }

    /// A key from 32 bytes. The caller should zeroize its own copy afterwards.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::InvalidInput("key must be exactly 32 bytes"));
        }
        let mut mac = Self { key: Box::new([0u8; KEY_LEN]) };
        mac.key.copy_from_slice(bytes);
        Ok(mac)
    }

    /// `HMAC-SHA256(key, message)`.
    pub fn sign(&self, message: &[u8]) -> [u8; MAC_LEN] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.key[..]), message);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `tag` is this key's HMAC of `message`, compared in constant time. A tag of the
    /// wrong length is simply `false`.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, &self.key[..]), message, tag).is_ok()
    }
}

impl Drop for MacKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl ZeroizeOnDrop for MacKey {}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(")?;
        f.write_str(kernel::secret::MASK)?;
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HMAC-SHA256 written out from RFC 2104 over the `sha2` crate: an implementation
    /// independent of ring's to check it against.
    fn reference_hmac(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(key);
        let pad = |byte: u8| block.map(|b| b ^ byte);
        let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
        Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
    }

    #[test]
    fn is_hmac_sha256_as_rfc_2104_defines_it() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        let key = MacKey::from_bytes(&bytes).unwrap();
        for message in [&b""[..], b"what do ya want for nothing?", &[0xA5; 1000]] {
            let tag = key.sign(message);
            assert_eq!(tag, reference_hmac(&bytes, message));
            assert!(key.verify(message, &tag));
        }
    }

    #[test]
    fn any_change_to_message_or_tag_fails() {
        let key = MacKey::from_data_key(DataKey::generate().unwrap());
        let tag = key.sign(b"checkpoint");
        assert!(key.verify(b"checkpoint", &tag));
        assert!(!key.verify(b"checkpoinT", &tag));
        for i in 0..MAC_LEN * 8 {
            let mut bad = tag;
            bad[i / 8] ^= 1 << (i % 8);
            assert!(!key.verify(b"checkpoint", &bad), "bit {i}");
        }
        assert!(!key.verify(b"checkpoint", &tag[..31]));
        assert!(!key.verify(b"checkpoint", &[]));
        let other = MacKey::from_data_key(DataKey::generate().unwrap());
        assert!(!other.verify(b"checkpoint", &tag));
    }

    #[test]
    fn the_key_never_prints_and_must_be_32_bytes() {
        let key = MacKey::from_bytes(&[0xAB; 32]).unwrap();
        let printed = format!("{key:?}");
        assert!(printed.contains(kernel::secret::MASK) && !printed.contains("171"), "{printed}");
        assert!(MacKey::from_bytes(&[0; 31]).is_err());
    }
}
