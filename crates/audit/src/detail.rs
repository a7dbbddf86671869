//! The small JSON detail an audit entry may carry, and its canonical form.
//!
//! An audit trail is kept for years, is append-only and cannot be crypto-shredded, so anything
//! written into it outlives a patient's erasure request. The detail is therefore bounded and
//! screened: it may say *what kind* of thing happened ("reason": "missing_role", "fields": 3), never
//! *to whom* or *what was said*. The screen is a second net, not the first: callers must put only
//! ids and enumerations in it.

use crate::error::{AuditError, echo};
use serde_json::Value;

/// Longest canonical JSON of a detail, in bytes.
pub const MAX_DETAIL_BYTES: usize = 2048;
/// Deepest nesting of objects/arrays; the top-level object is level 1.
pub const MAX_DETAIL_DEPTH: usize = 4;
/// Longest string value, in bytes. Long free text is where personal data hides.
pub const MAX_DETAIL_STRING_BYTES: usize = 256;
/// Longest key, in bytes.
pub const MAX_DETAIL_KEY_BYTES: usize = 64;

/// Key fragments that name personal data or credentials wherever they appear in a key
/// (`patient_email`, `phoneNumber`, `x-api-key`). Matched against the key lower-cased with every
/// non-alphanumeric character removed.
const PII_FRAGMENTS: &[&str] = &[
    "phone",
    "email",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "credential",
    "authorization",
    "cookie",
    "dateofbirth",
    "birthdate",
    "birthday",
    "address",
    "firstname",
    "lastname",
    "surname",
    "fullname",
    "username",
    "displayname",
    "maidenname",
    "content",
    "message",
    "notes",
    "diagnos",
    "symptom",
    "creditcard",
    "cardnumber",
    "insurancenumber",
    "socialsecurity",
];

/// Short words that name personal data only as a whole word (`name`, `first_name`, `nameOfX`), and
/// would give false alarms as fragments (`filename`, `classname`).
const PII_WORDS: &[&str] = &[
    "name", "mail", "note", "body", "text", "dob", "ssn", "iban", "zip", "street", "mobile", "comment", "comments",
    "otp", "pin", "tel",
];

/// Whether a detail key names personal data or a credential.
///
/// Case-, underscore-, hyphen- and camelCase-insensitive: `Phone`, `PHONE_NUMBER`, `phoneNumber`,
/// `e-mail`, `DateOfBirth` and `date_of_birth` all match. It errs on the side of refusing: a
/// harmless key that trips it (`content_type`) is renamed (`media_type`), which costs a minute; a
/// leaked phone number in a permanent log costs far more.
pub fn is_pii_key(key: &str) -> bool {
    let words = Words::of(key);
    PII_FRAGMENTS.iter().any(|fragment| words.joined.contains(fragment))
        || words.iter().any(|word| PII_WORDS.contains(&word))
}

/// A key split into lower-case words at non-alphanumerics and at lower-to-upper camelCase
/// boundaries (`patientFirst_name` -> `patient`, `first`, `name`), held as the words joined
/// (`patientfirstname`) and where each ends: two allocations per key, not one per word (every
/// key of every audit entry's detail passes through here, twice per append).
struct Words {
    joined: String,
    ends: Vec<usize>,
}

impl Words {
    fn of(key: &str) -> Self {
        let mut joined = String::with_capacity(key.len());
        let mut ends = Vec::new();
        let mut word_start = 0;
        let mut prev_lower_or_digit = false;
        for ch in key.chars() {
            if !ch.is_alphanumeric() {
                if joined.len() > word_start {
                    ends.push(joined.len());
                    word_start = joined.len();
                }
                prev_lower_or_digit = false;
                continue;
            }
            if ch.is_uppercase() && prev_lower_or_digit && joined.len() > word_start {
                ends.push(joined.len());
                word_start = joined.len();
            }
            prev_lower_or_digit = ch.is_lowercase() || ch.is_numeric();
            joined.extend(ch.to_lowercase());
        }
        if joined.len() > word_start {
            ends.push(joined.len());
        }
        Self { joined, ends }
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(start, end)| &self.joined[start..end])
    }
}

/// Checks a detail against every rule: a JSON object, at most [`MAX_DETAIL_DEPTH`] levels, no
/// PII keys, no floats, strings of at most [`MAX_DETAIL_STRING_BYTES`] without NUL, and a
/// canonical form of at most [`MAX_DETAIL_BYTES`].
///
/// Floats are refused because they do not survive a round trip through Postgres `jsonb` byte for
/// byte (`1e2` comes back as `100`), which would make a stored entry fail verification. NUL is
/// refused because `jsonb` cannot store it.
pub fn validate_detail(detail: &Value) -> Result<(), AuditError> {
    if !detail.is_object() {
        return Err(AuditError::DetailNotObject);
    }
    check_value(detail, 1, "")?;
    let size = canonical_json(detail).len();
    if size > MAX_DETAIL_BYTES {
        return Err(AuditError::DetailTooLarge { size, max: MAX_DETAIL_BYTES });
    }
    Ok(())
}

/// `depth` is the nesting level `value` would have if it is a container.
fn check_value(value: &Value, depth: usize, key: &str) -> Result<(), AuditError> {
    let invalid = |reason| AuditError::DetailInvalidValue { key: echo(key), reason };
    match value {
        Value::Null | Value::Bool(_) => Ok(()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
        Value::Number(_) => Err(invalid("only integers are allowed (floats do not round-trip through jsonb)")),
        Value::String(s) if s.len() > MAX_DETAIL_STRING_BYTES => Err(invalid("string longer than 256 bytes")),
        Value::String(s) if s.contains('\0') => Err(invalid("string contains NUL")),
        Value::String(_) => Ok(()),
        Value::Array(items) => {
            if depth > MAX_DETAIL_DEPTH {
                return Err(AuditError::DetailTooDeep { max: MAX_DETAIL_DEPTH });
            }
            items.iter().try_for_each(|item| check_value(item, depth + 1, key))
        }
        Value::Object(map) => {
            if depth > MAX_DETAIL_DEPTH {
                return Err(AuditError::DetailTooDeep { max: MAX_DETAIL_DEPTH });
            }
            for (child_key, child) in map {
                if child_key.len() > MAX_DETAIL_KEY_BYTES || child_key.contains('\0') {
                    return Err(AuditError::DetailInvalidValue {
                        key: echo(child_key),
                        reason: "key longer than 64 bytes or containing NUL",
                    });
                }
                if is_pii_key(child_key) {
                    return Err(AuditError::DetailPiiKey { key: echo(child_key) });
                }
                check_value(child, depth + 1, child_key)?;
            }
            Ok(())
        }
    }
}

/// The canonical JSON text of a value, as hashed into the chain.
///
/// No whitespace; object members sorted by the UTF-8 bytes of their keys; strings escaped exactly
/// as the crate docs specify; integers in plain decimal. The same value always gives the same
/// bytes, whatever order keys were inserted in or Postgres `jsonb` returns them in, and whatever
/// serde_json features other crates switch on (`preserve_order` changes map order; this function
/// does not depend on it).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // Integers print in plain decimal. Floats never pass validation; a stored row holding one
        // is still encoded deterministically (serde_json's shortest round-trip form).
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, child)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, child);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_pii_keys_are_rejected_in_any_spelling() {
        let keys = [
            "phone",
            "Phone",
            "PHONE_NUMBER",
            "phoneNumber",
            "mobile",
            "email",
            "e_mail",
            "E-Mail",
            "patientEmail",
            "name",
            "first_name",
            "firstName",
            "LastName",
            "patient_name",
            "address",
            "home_address",
            "ipAddress",
            "password",
            "new_password",
            "token",
            "access_token",
            "refreshToken",
            "api_key",
            "x-api-key",
            "content",
            "message",
            "messages",
            "notes",
            "note",
            "session_notes",
            "date_of_birth",
            "DateOfBirth",
            "dob",
            "diagnosis",
            "body",
        ];
        for key in keys {
            assert!(is_pii_key(key), "{key} should be rejected");
            let err = validate_detail(&json!({ key: "x" })).unwrap_err();
            assert!(matches!(err, AuditError::DetailPiiKey { .. }), "{key}: {err:?}");
        }
    }

    #[test]
    fn keys_split_into_lower_case_words() {
        let words = |key: &str| Words::of(key).iter().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(words("patientFirst_name"), ["patient", "first", "name"]);
        assert_eq!(words("__x--Y__"), ["x", "y"]);
        assert_eq!(words("HTTPStatus2xx"), ["httpstatus2xx"]);
        assert_eq!(words("a1B"), ["a1", "b"]);
        assert_eq!(words("ÄrztinName"), ["ärztin", "name"]);
        assert!(words("").is_empty());
        assert!(words("-_.").is_empty());
    }

    #[test]
    fn harmless_keys_pass() {
        for key in [
            "reason",
            "source_ip",
            "provider",
            "fields",
            "count",
            "failed_attempts",
            "window_seconds",
            "purpose",
            "key_version",
            "filename",
            "classname",
            "status",
        ] {
            assert!(!is_pii_key(key), "{key} should pass");
        }
    }

    #[test]
    fn pii_keys_are_found_at_any_depth() {
        let detail = json!({ "changes": [{ "field": "x", "old": { "email": "a@b.c" } }] });
        assert!(matches!(validate_detail(&detail), Err(AuditError::DetailPiiKey { key }) if key == "email"));
    }

    #[test]
    fn error_names_the_key_but_never_the_value() {
        let err = validate_detail(&json!({ "phone": "+4915112345678" })).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("phone"));
        assert!(!text.contains("4915112345678"));
    }

    #[test]
    fn detail_must_be_a_small_shallow_object_of_simple_values() {
        assert!(validate_detail(&json!({})).is_ok());
        assert!(validate_detail(&json!({ "a": { "b": { "c": { "d": 1 } } } })).is_ok());
        assert!(validate_detail(&json!({ "a": [[[1]]] })).is_ok());
        assert!(matches!(validate_detail(&json!(null)), Err(AuditError::DetailNotObject)));
        assert!(matches!(validate_detail(&json!([1])), Err(AuditError::DetailNotObject)));
        assert!(matches!(validate_detail(&json!("x")), Err(AuditError::DetailNotObject)));
        assert!(matches!(
            validate_detail(&json!({ "a": { "b": { "c": { "d": { "e": 1 } } } } })),
            Err(AuditError::DetailTooDeep { max: 4 })
        ));
        assert!(matches!(validate_detail(&json!({ "a": [[[[1]]]] })), Err(AuditError::DetailTooDeep { max: 4 })));
        assert!(matches!(validate_detail(&json!({ "ratio": 0.5 })), Err(AuditError::DetailInvalidValue { .. })));
        assert!(matches!(
            validate_detail(&json!({ "reason": "x".repeat(257) })),
            Err(AuditError::DetailInvalidValue { .. })
        ));
        assert!(matches!(validate_detail(&json!({ "reason": "a\0b" })), Err(AuditError::DetailInvalidValue { .. })));
        assert!(validate_detail(&json!({ "reason": "x".repeat(256) })).is_ok());
    }

    #[test]
    fn detail_size_is_bounded() {
        let mut map = serde_json::Map::new();
        for i in 0..20 {
            map.insert(format!("k{i:02}"), Value::String("x".repeat(100)));
        }
        let detail = Value::Object(map);
        assert!(matches!(validate_detail(&detail), Err(AuditError::DetailTooLarge { max: 2048, .. })));
    }

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        let a: Value =
            serde_json::from_str(r#"{ "b": 1, "a": [true, null, -3], "c": {"z": "q", "y": 18446744073709551615} }"#)
                .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"c":{"y":18446744073709551615,"z":"q"},"a":[true,null,-3],"b":1}"#).unwrap();
        let expected = r#"{"a":[true,null,-3],"b":1,"c":{"y":18446744073709551615,"z":"q"}}"#;
        assert_eq!(canonical_json(&a), expected);
        assert_eq!(canonical_json(&b), expected);
    }

    #[test]
    fn canonical_json_escapes_strings_exactly() {
        let value = json!({ "s": "q\"b\\s/\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}é😀" });
        assert_eq!(canonical_json(&value), "{\"s\":\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}é😀\"}");
        // Same text serde_json produces for strings, so the canonical form is also valid JSON.
        let reparsed: Value = serde_json::from_str(&canonical_json(&value)).unwrap();
        assert_eq!(reparsed, value);
    }

    #[test]
    fn canonical_json_orders_keys_by_utf8_bytes() {
        let value = json!({ "é": 1, "z": 2, "Z": 3, "a": 4 });
        assert_eq!(canonical_json(&value), "{\"Z\":3,\"a\":4,\"z\":2,\"é\":1}");
    }
}
