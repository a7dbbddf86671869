//! Byte-level helpers shared by the AAD, key context and ciphertext encodings.

use crate::error::CryptoError;

/// Appends `bytes` preceded by its length as a big-endian u64. Length prefixes make the
/// concatenation of several strings unambiguous: ("ab", "c") and ("a", "bc") encode differently.
pub(crate) fn put_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    // usize is at most 64 bits on every supported target, so this cast is lossless.
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A bounds-checked reader over untrusted bytes. Every read either returns exactly the bytes
/// asked for or a `Malformed` error; nothing here can index out of bounds or panic.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CryptoError> {
        if self.rest.len() < n {
            return Err(CryptoError::Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, CryptoError> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CryptoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn remaining(self) -> &'a [u8] {
        self.rest
    }
}
