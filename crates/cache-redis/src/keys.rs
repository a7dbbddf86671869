//! How adapters turn caller input into key segments that cannot change the key's structure.

use sha2::{Digest, Sha256};

/// Escapes a class-like segment (a rate-limit class, a webhook provider): ASCII letters, digits,
/// `_`, `.` and `-` stay readable, every other byte becomes `%XX`. The result contains no `:`,
/// no glob character (`* ? [ ] \`) and no whitespace, and distinct inputs give distinct outputs.
pub fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push_str(&hex::encode_upper([byte]));
        }
    }
    out
}

/// A subject segment (an IP, a user id, an event id): the first 128 bits of its SHA-256, in hex.
///
/// Hashing bounds the key length, contains any character, and keeps raw identifiers out of key
/// names. It is not anonymisation: an unkeyed hash of an IPv4 address is easily reversed by
/// enumeration, so the keys are still personal data and expire like the data they count.
pub fn digest(subject: &str) -> String {
    let hash = Sha256::digest(subject.as_bytes());
    hex::encode(&hash[..16])
}

/// Escapes Redis glob characters so a prefix can be used literally in `SCAN ... MATCH`.
pub fn glob_literal(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for ch in literal.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_removes_structure() {
        assert_eq!(escape("global"), "global");
        assert_eq!(escape("login.ip-v4_x"), "login.ip-v4_x");
        assert_eq!(escape("a:b*"), "a%3Ab%2A");
        assert_eq!(escape("%3A"), "%253A");
        assert!(!escape("x y\n[?]\\").contains([' ', '\n', '[', '?', ']', '\\', ':']));
    }

    #[test]
    fn digest_is_fixed_length_hex() {
        let d = digest("a:b*");
        assert_eq!(d.len(), 32);
        assert!(d.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(digest("a:b*"), digest("a:b"));
    }

    #[test]
    fn glob_literal_escapes_patterns() {
        assert_eq!(glob_literal("p*:[x]?\\"), "p\\*:\\[x\\]\\?\\\\");
    }
}
