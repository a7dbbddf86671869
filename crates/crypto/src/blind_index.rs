//! Blind indexes: equality search over encrypted fields.
//!
//! Field ciphertexts use random nonces, so the same email encrypts differently every time and
//! cannot be looked up with `WHERE email = $1`. A blind index stores, next to the ciphertext,
//! `HMAC-SHA256(index key, field, normalised value)`; a lookup computes the same MAC and compares.
//!
//! Threats and limits: without the index key, the MAC reveals nothing about the value and cannot
//! be brute-forced offline, unlike a plain hash of a low-entropy value such as a phone number. It
//! does reveal equality: rows with the same value in the same field share an index value, which is
//! the point. The field name is part of the MAC input, so the same string in two fields (an email
//! used as a username) gives unrelated values and equality does not leak across fields. Use one
//! index key per tenant (or put the tenant in `field`) so equality does not leak across practices.
//! Whoever holds the index key can test guesses, so it is a secret like a DEK.

use crate::encoding::put_len_prefixed;
use crate::keys::BlindIndexKey;
use ring::hmac;

const BLIND_INDEX_LABEL: &[u8] = b"praxis.blind-index.v1";

/// `HMAC-SHA256(key, lp("praxis.blind-index.v1") || lp(field) || lp(value))`, where `lp` is a
/// u64 big-endian length followed by the bytes. Normalise the value first (`normalize_email`,
/// `normalize_phone`) so that equal values written differently match.
pub fn blind_index(key: &BlindIndexKey, field: &str, normalised_value: &str) -> [u8; 32] {
    let mut input = Vec::with_capacity(24 + BLIND_INDEX_LABEL.len() + field.len() + normalised_value.len());
    put_len_prefixed(&mut input, BLIND_INDEX_LABEL);
    put_len_prefixed(&mut input, field.as_bytes());
    put_len_prefixed(&mut input, normalised_value.as_bytes());
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key.bytes()), &input);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Email as indexed: surrounding whitespace trimmed, lowercased. The local part is technically
/// case-sensitive, but no provider treats it so and users type it either way.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Phone number as indexed: whitespace, dashes, dots and parentheses removed, a leading `+`
/// kept. "+49 (151) 123-456" becomes "+49151123456". It does not convert national to
/// international form ("0151..." and "+49151..." stay different): the caller should store numbers
/// in E.164 in the first place.
pub fn normalize_phone(phone: &str) -> String {
    phone.trim().chars().filter(|c| !(c.is_whitespace() || matches!(c, '-' | '.' | '(' | ')'))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> BlindIndexKey {
        BlindIndexKey::generate().unwrap()
    }

    #[test]
    fn email_normalisation() {
        assert_eq!(normalize_email("  Anna.Muster@Example.ORG \n"), "anna.muster@example.org");
        assert_eq!(normalize_email("a@b.c"), "a@b.c");
    }

    #[test]
    fn phone_normalisation() {
        assert_eq!(normalize_phone("+49 (151) 123-456"), "+49151123456");
        assert_eq!(normalize_phone(" 030.1234\t5678 "), "03012345678");
        assert_eq!(normalize_phone("+1-555-0100"), "+15550100");
        assert_eq!(normalize_phone("(0)151 12"), "015112");
    }

    #[test]
    fn equal_normalised_values_match() {
        let k = key();
        let a = blind_index(&k, "email", &normalize_email("Anna@Example.org"));
        let b = blind_index(&k, "email", &normalize_email(" anna@example.ORG"));
        assert_eq!(a, b);
        assert_ne!(a, blind_index(&k, "email", "other@example.org"));
    }

    #[test]
    fn fields_are_domain_separated() {
        let k = key();
        let v = "anna@example.org";
        assert_ne!(blind_index(&k, "email", v), blind_index(&k, "username", v));
        // Length prefixes: moving bytes between field and value changes the index.
        assert_ne!(blind_index(&k, "ab", "c"), blind_index(&k, "a", "bc"));
        assert_ne!(blind_index(&k, "", "abc"), blind_index(&k, "abc", ""));
    }

    #[test]
    fn different_keys_give_different_indexes() {
        let v = "+49151123456";
        assert_ne!(blind_index(&key(), "phone", v), blind_index(&key(), "phone", v));
    }

    #[test]
    fn matches_a_known_answer() {
        // Pins the construction: changing it silently would orphan every stored index.
        let k = BlindIndexKey::from_bytes(&[7u8; 32]).unwrap();
        let mut input = Vec::new();
        put_len_prefixed(&mut input, b"praxis.blind-index.v1");
        put_len_prefixed(&mut input, b"email");
        put_len_prefixed(&mut input, b"a@b.c");
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]), &input);
        assert_eq!(&blind_index(&k, "email", "a@b.c")[..], expected.as_ref());
    }
}
